"""The runtime's log reads, as `docker logs` and the log publisher use them: since, tail, the
bounded buffer, and following a running container until it exits."""

from __future__ import annotations

import asyncio

from log_texts import texts

from controlplane.agent.log_copier import LogLine
from controlplane.agent.runtime import ContainerConfig, Runtime

WAIT = 30.0


async def run_to_end(runtime: Runtime, script: str) -> str:
    container = runtime.create(ContainerConfig(image="busybox", command=["sh", "-c", script]))
    await runtime.start(container.id)
    await runtime.wait(container.id)
    return container.id


async def read(runtime: Runtime, container_id: str, **options: int | bool) -> list[str]:
    return texts([line async for line in runtime.read_logs(container_id, **options)])  # type: ignore[arg-type]


def test_since_and_tail_select_lines_as_docker_logs() -> None:
    async def main() -> None:
        runtime = Runtime()
        cid = await run_to_end(runtime, "echo one; cat /two; echo three")
        two = "cat: can't open '/two': No such file or directory"
        assert await read(runtime, cid) == ["one", two, "three"]
        assert await read(runtime, cid, tail=2) == [two, "three"]
        assert await read(runtime, cid, tail=0) == []
        assert await read(runtime, cid, tail=10) == ["one", two, "three"]
        lines = runtime.logs(cid)
        assert [line.stream for line in lines] == ["stdout", "stderr", "stdout"]
        assert await read(runtime, cid, since_ns=lines[1].timestamp_ns) == [two, "three"]
        assert await read(runtime, cid, since_ns=lines[2].timestamp_ns + 1) == []
        # An exited container has nothing more to follow: the read ends after its lines.
        assert await read(runtime, cid, follow=True, tail=1) == ["three"]

    asyncio.run(main())


def test_the_buffer_keeps_the_last_lines() -> None:
    async def main() -> None:
        runtime = Runtime(log_lines=2)
        cid = await run_to_end(runtime, "echo 1; echo 2; echo 3; echo 4")
        assert await read(runtime, cid) == ["3", "4"]

    asyncio.run(main())


def test_follow_yields_new_lines_as_written_then_ends_when_the_container_exits() -> None:
    async def main() -> None:
        runtime = Runtime()
        container = runtime.create(
            ContainerConfig(image="busybox", command=["sh", "-c", "echo a; sleep 1000"])
        )
        await runtime.start(container.id)
        seen: list[LogLine] = []

        async def follow() -> None:
            async for line in runtime.read_logs(container.id, follow=True):
                seen.append(line)

        follower = asyncio.create_task(follow())
        async with asyncio.timeout(WAIT):
            while not seen:
                await asyncio.sleep(0.01)
        assert texts(seen) == ["a"]
        assert not follower.done()  # still running: more may come
        await runtime.stop(container.id, grace=0)  # the shell's sleep ignores SIGTERM: killed
        async with asyncio.timeout(WAIT):
            await follower
        assert texts(seen) == ["a"]

    asyncio.run(main())


def test_follow_sees_lines_written_while_it_waits() -> None:
    async def main() -> None:
        runtime = Runtime()
        container = runtime.create(
            ContainerConfig(
                image="busybox", command=["sh", "-c", "echo first; sleep 0.3; echo second"]
            )
        )
        await runtime.start(container.id)
        async with asyncio.timeout(WAIT):
            texts = await read(runtime, container.id, follow=True)
        assert texts == ["first", "second"]

    asyncio.run(main())
