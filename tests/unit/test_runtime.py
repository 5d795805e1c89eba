"""The emulated container runtime: images, commands, exit statuses, stop semantics, logs."""

from __future__ import annotations

import asyncio

import pytest
from log_texts import text_of, texts

from controlplane.agent.images import (
    InvalidReferenceError,
    NoSuchImageError,
    parse_reference,
    resolve,
)
from controlplane.agent.runtime import (
    AmbiguousContainerError,
    ContainerConfig,
    ContainerState,
    ContainerStateError,
    NetworkAttachment,
    NoSuchContainerError,
    Runtime,
    StartError,
)

WAIT = 30.0
NO_FILE = "No such file or directory"
PING_HEADER = "PING 10.0.0.2 (10.0.0.2): 56 data bytes"
NC_UDP_CLIENT = "nc: UDP needs -l: the emulated container has no stdin to send from"
NC_USAGE = [
    "BusyBox v1.36.1 (emulated) multi-call binary.",
    "",
    "Usage: nc [-w SEC] [-z] HOST PORT | nc -l [-k] -p PORT | nc -u -l -p PORT [-e PROG ARGS]",
]
UNREACHABLE = "ping: sendto: Network is unreachable"  # a container on no network


@pytest.mark.parametrize(
    ("text", "repository", "tag", "digest", "familiar"),
    [
        ("busybox", "docker.io/library/busybox", "latest", "", "busybox:latest"),
        ("nginx:1.25", "docker.io/library/nginx", "1.25", "", "nginx:1.25"),
        ("docker.io/library/alpine:3.19", "docker.io/library/alpine", "3.19", "", "alpine:3.19"),
        ("traefik/whoami", "docker.io/traefik/whoami", "latest", "", "traefik/whoami:latest"),
        ("localhost:5000/app", "localhost:5000/app", "latest", "", "localhost:5000/app:latest"),
        (
            "httpd@sha256:" + "ab" * 32,
            "docker.io/library/httpd",
            "",
            "sha256:" + "ab" * 32,
            "httpd@sha256:" + "ab" * 32,
        ),
    ],
)
def test_references_parse_as_docker_does(
    text: str, repository: str, tag: str, digest: str, familiar: str
) -> None:
    reference = parse_reference(text)
    assert (reference.repository, reference.tag, reference.digest) == (repository, tag, digest)
    assert reference.familiar == familiar


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the image name is empty"),
        ("BusyBox", "repository name must be lowercase"),
        ("busy box", "invalid reference format"),
        ("nginx@sha256:short", "invalid reference format"),
    ],
)
def test_bad_references_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message):
        parse_reference(text)


def test_unknown_images_give_dockers_message() -> None:
    with pytest.raises(NoSuchImageError, match=r"^No such image: nosuch:latest$"):
        resolve("nosuch")
    with pytest.raises(NoSuchImageError, match=r"^No such image: example.com/app:2$"):
        resolve("example.com/app:2")


async def run(runtime: Runtime, image: str, *args: str, **config: object) -> tuple[int, list[str]]:
    container = runtime.create(ContainerConfig(image=image, args=list(args), **config))  # type: ignore[arg-type]
    await runtime.start(container.id)
    code = await asyncio.wait_for(runtime.wait(container.id), WAIT)
    return code, texts(container.logs)


@pytest.mark.parametrize(
    ("image", "args", "code", "output"),
    [
        ("busybox", ["echo", "hello", "world"], 0, ["hello world"]),
        ("busybox", ["true"], 0, []),
        ("busybox", ["false"], 1, []),
        ("busybox", ["sh", "-c", "exit 42"], 42, []),
        ("busybox", ["sh", "-c", "exit 300"], 44, []),
        ("busybox", ["sh", "-c", "false; echo $?; true && echo ok || echo no"], 0, ["1", "ok"]),
        ("busybox", ["sh", "-c", "false && echo never"], 1, []),
        ("busybox", ["sh", "-c", "A=1; export B=2; echo \"$A-${B}\" '$A'"], 0, ["1-2 $A"]),
        ("alpine", ["sh", "-c", "foo; echo $?"], 0, ["sh: foo: not found", "127"]),
        ("alpine", ["sh", "-c", "echo a | cat"], 0, ["a"]),
        ("alpine", ["sh", "-c", "echo 'open"], 2, ["sh: syntax error: unterminated quoted string"]),
        ("alpine", ["sh", "-c", "if true; then echo yes; fi"], 0, ["yes"]),
        ("busybox", ["sh", "-c", "sleep 1000 & echo fg"], 0, ["fg"]),  # the job ends with sh
        ("busybox", ["sh", "-c", "& echo x"], 2, ['sh: syntax error: unexpected "&"']),
        ("busybox", ["nc", "-u", "web", "53"], 1, [NC_UDP_CLIENT, *NC_USAGE]),
        ("busybox", ["sleep", "0.01"], 0, []),
        ("busybox", ["sleep", "soon"], 1, ["sleep: invalid number 'soon'"]),
        ("busybox", ["cat", "/etc/shadow"], 1, [f"cat: can't open '/etc/shadow': {NO_FILE}"]),
        ("busybox", ["sh"], 0, []),
        ("busybox", ["ping", "-c", "1", "web"], 1, ["ping: bad address 'web'"]),
        ("busybox", ["ping", "-c", "1", "10.0.0.2"], 1, [PING_HEADER, UNREACHABLE]),
    ],
)  # fmt: skip
def test_commands_behave_like_a_shell(
    image: str, args: list[str], code: int, output: list[str]
) -> None:
    async def scenario() -> tuple[int, list[str]]:
        return await run(Runtime(), image, *args)

    assert asyncio.run(scenario()) == (code, output)


def test_hostname_env_and_defaults() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        code, lines = await run(runtime, "busybox", "sh", "-c", "hostname; cat /etc/hostname")
        assert code == 0 and lines[0] == lines[1] and len(lines[0]) == 12
        code, lines = await run(runtime, "busybox", "env", hostname="web-1", env=["MODE=lab"])
        assert "HOSTNAME=web-1" in lines and "MODE=lab" in lines and "HOME=/root" in lines
        code, lines = await run(runtime, "alpine")  # default command: sh, no input
        assert (code, lines) == (0, [])

    asyncio.run(scenario())


def test_an_unknown_executable_fails_to_start_as_in_docker() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        for args, message in (
            (["foo"], 'exec: "foo": executable file not found in $PATH'),
            (["/bin/foo"], 'exec: "/bin/foo": stat /bin/foo: no such file or directory'),
        ):
            container = runtime.create(ContainerConfig(image="busybox", args=args))
            with pytest.raises(StartError, match="OCI runtime create failed") as caught:
                await runtime.start(container.id)
            assert message in str(caught.value)
            # As dockerd (seen side by side): still created, with the code and the error,
            # no FinishedAt and no `die` event.
            assert container.state is ContainerState.CREATED and container.failed_to_start
            assert (container.exit_code, container.finished_at_ns) == (127, 0)
            assert container.error == str(caught.value)
        assert "die" not in [e.action for e in runtime.events.kept()]
        # whoami is a scratch image: no shell, no sleep.
        container = runtime.create(ContainerConfig(image="traefik/whoami", command=["sleep"]))
        with pytest.raises(StartError, match='exec: "sleep": executable file not found'):
            await runtime.start(container.id)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("image", "args", "exit_code"),
    [
        ("nginx", [], 0),  # nginx handles SIGTERM
        ("httpd", [], 0),
        ("busybox", ["httpd", "-f"], 0),
        ("traefik/whoami", [], 2),  # a Go program as PID 1
        ("busybox", ["sleep", "1000"], 137),  # PID 1 ignores SIGTERM: killed at the grace end
        ("busybox", ["sh", "-c", "sleep 1000; echo"], 137),
    ],
)
def test_stop_sends_sigterm_then_kills(image: str, args: list[str], exit_code: int) -> None:
    async def scenario() -> None:
        runtime = Runtime()
        container = runtime.create(ContainerConfig(image=image, args=args))
        await runtime.start(container.id)
        assert container.state is ContainerState.RUNNING
        assert await runtime.stop(container.id, grace=0.2) == exit_code
        assert container.state is ContainerState.EXITED

    asyncio.run(scenario())


def test_servers_run_until_stopped_and_log_with_timestamps() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        container = runtime.create(
            ContainerConfig(
                image="nginx:1.25",
                name="web.1.abc",
                networks=[NetworkAttachment("net1", ["10.0.1.3/24"], ["web"])],
            )
        )
        await runtime.start(container.id)
        assert container.argv == ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
        assert container.networks["net1"].addresses == ["10.0.1.3/24"]
        assert runtime.get("web.1.abc") is container
        assert runtime.get(container.id[:8]) is container
        for _ in range(600):  # until the entrypoint has printed its lines (deadline: 30 s)
            lines = runtime.logs(container.id)
            if len(lines) == 3:
                break
            await asyncio.sleep(0.05)
        assert text_of(lines[-1]).endswith("Configuration complete; ready for start up")
        assert all(line.stream == "stdout" and line.timestamp_ns > 0 for line in lines)
        with pytest.raises(ContainerStateError, match="You cannot remove a running container"):
            await runtime.remove(container.id)
        with pytest.raises(ContainerStateError, match="is already running"):
            await runtime.start(container.id)
        await runtime.remove(container.id, force=True)
        with pytest.raises(NoSuchContainerError, match=r"No such container: web\.1\.abc"):
            runtime.get("web.1.abc")

    asyncio.run(scenario())


def test_entrypoint_and_command_overrides_follow_docker() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        args_only = runtime.create(ContainerConfig(image="nginx", args=["nginx", "-v"]))
        assert args_only.argv == ["/docker-entrypoint.sh", "nginx", "-v"]
        entrypoint = runtime.create(ContainerConfig(image="nginx", command=["echo"]))
        assert entrypoint.argv == ["echo"]  # the image's command is dropped
        both = runtime.create(ContainerConfig(image="nginx", command=["echo"], args=["x"]))
        assert both.argv == ["echo", "x"]

    asyncio.run(scenario())


def test_log_buffer_is_bounded() -> None:
    with pytest.raises(ValueError, match="log_lines"):
        Runtime(log_lines=0)

    async def scenario() -> None:
        runtime = Runtime(log_lines=2)
        code, lines = await run(runtime, "busybox", "sh", "-c", "echo 1; echo 2; echo 3")
        assert (code, lines) == (0, ["2", "3"])

    asyncio.run(scenario())


def test_a_reference_is_a_full_id_then_a_name_then_a_unique_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dockerd's order: a container named `c2` is found by its name even when another
    container's id begins with `c2` (ids are random, so this happened 1 time in 256)."""
    ids = iter(["c2" + "a" * 62, "c2" + "b" * 62, "d" * 64])
    monkeypatch.setattr("controlplane.agent.runtime.secrets.token_hex", lambda _n: next(ids))
    runtime = Runtime()
    first = runtime.create(ContainerConfig(image="busybox", name="c1"))
    second = runtime.create(ContainerConfig(image="busybox", name="c3"))
    named_c2 = runtime.create(ContainerConfig(image="busybox", name="c2"))
    assert runtime.get("c2") is named_c2
    assert runtime.get(first.id) is first
    assert runtime.get("c2b") is second
    with pytest.raises(
        AmbiguousContainerError, match=r"^Multiple IDs found with provided prefix: c$"
    ):
        runtime.get("c")
    with pytest.raises(NoSuchContainerError, match=r"^No such container: e$"):
        runtime.get("e")
