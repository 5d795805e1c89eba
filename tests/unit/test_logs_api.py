"""`/services/{id}/logs` and `/tasks/{id}/logs`: Docker's framing and line format, the query
parameters and their bad values, and the errors, over a LocalBackend and a scripted log
source (the broker's side is tested in tests/integration/test_logbroker.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controlplane.api import create_app
from controlplane.api import logs as logs_api
from controlplane.api.errors import NOT_A_MANAGER_MESSAGE, ApiError
from controlplane.api.local import LocalBackend
from controlplane.api.logs import LogQuery, attrs_text, fixed_time, frame, unframe
from controlplane.manager.log_subscriber import LogStreamError
from controlplane.pb.logbroker_pb2 import (
    LogAttr,
    LogContext,
    LogMessage,
    LogStream,
    SubscribeLogsRequest,
)
from controlplane.pb.objects_pb2 import Service, Task
from controlplane.raft.errors import NO_LEADER_MESSAGE, NoLeaderError
from controlplane.store import Transaction

SERVICE = "svc0000000000000000000001"
TASK = "task000000000000000000001"
NODE = "node0000000000000000000001"
T0 = 1_700_000_000_123_456_789


def line(text: str, stream: int = LogStream.LOG_STREAM_STDOUT, at: int = T0) -> LogMessage:
    return LogMessage(
        context=LogContext(service_id=SERVICE, node_id=NODE, task_id=TASK),
        timestamp_ns=at,
        stream=stream,  # type: ignore[arg-type]
        data=text.encode() + b"\n",
    )


# ---- pure parts -------------------------------------------------------------------------


def test_frame_header_is_stream_three_zero_bytes_and_big_endian_length() -> None:
    assert frame(1, b"hi\n") == b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
    assert frame(2, b"x" * 300)[:8] == b"\x02\x00\x00\x00\x00\x00\x01\x2c"
    assert unframe(frame(1, b"a\n") + frame(3, b"b\n")) == [(1, b"a\n"), (3, b"b\n")]
    # A stream cut inside a header: the whole frames before it.
    assert unframe(frame(1, b"a\n") + frame(2, b"b\n")[:5]) == [(1, b"a\n")]
    assert unframe(b"") == []


def test_fixed_time_keeps_nine_fraction_digits() -> None:
    assert fixed_time(T0) == "2023-11-14T22:13:20.123456789Z"
    assert fixed_time(1_700_000_000_000_000_000) == "2023-11-14T22:13:20.000000000Z"


def test_details_are_sorted_escaped_and_carry_the_swarm_context() -> None:
    message = line("x")
    message.attrs.append(LogAttr(key="a key", value="v,1"))
    assert attrs_text(message) == (
        "a+key=v%2C1,"
        f"com.docker.swarm.node.id={NODE},"
        f"com.docker.swarm.service.id={SERVICE},"
        f"com.docker.swarm.task.id={TASK}"
    )


def test_query_defaults_and_values() -> None:
    query = LogQuery.parse({"stdout": "1", "stderr": "true", "tail": "all"})
    assert (query.stdout, query.stderr, query.follow, query.tail) == (True, True, False, None)
    options = query.options()
    assert list(options.streams) == [LogStream.LOG_STREAM_STDOUT, LogStream.LOG_STREAM_STDERR]
    assert not options.HasField("tail") and not options.follow
    query = LogQuery.parse({"stderr": "1", "tail": "0", "since": "1700000000.5", "follow": "1"})
    options = query.options()
    assert list(options.streams) == [LogStream.LOG_STREAM_STDERR]
    assert options.HasField("tail") and options.tail == 0
    assert options.since_ns == 1_700_000_000_500_000_000 and options.follow
    assert not LogQuery.parse({"stdout": "false", "stderr": "yes"}).stdout


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "Bad parameters: you must choose at least one stream"),
        ({"stdout": "0", "stderr": "no"}, "Bad parameters: you must choose at least one stream"),
        ({"stdout": "1", "tail": "ten"}, 'tail value must be a positive integer or "all"'),
        ({"stdout": "1", "tail": "-2"}, "negative tail values not supported"),
        ({"stdout": "1", "since": "10m"}, "could not parse since timestamp: '10m'"),
        ({"stdout": "1", "until": "2024-01-01"}, "could not parse until timestamp"),
    ],
)
def test_bad_queries_are_refused_as_dockerd_does(query: dict[str, str], message: str) -> None:
    with pytest.raises(ApiError) as caught:
        LogQuery.parse(query)
    assert caught.value.status == 500 and caught.value.message.startswith(message)


def test_line_format_with_details_and_timestamps() -> None:
    message = line("hello")
    assert LogQuery(stdout=True, stderr=True).line(message) == b"hello\n"
    details = LogQuery(stdout=True, stderr=True, details=True).line(message)
    assert details == attrs_text(message).encode() + b" hello\n"
    both = LogQuery(stdout=True, stderr=True, details=True, timestamps=True).line(message)
    assert both == f"{fixed_time(T0)} ".encode() + details


def test_wanted_lines_follow_streams_and_until() -> None:
    query = LogQuery(stdout=False, stderr=True, until_ns=T0)
    assert not query.wants(line("out"))
    assert query.wants(line("err", LogStream.LOG_STREAM_STDERR))
    assert not query.wants(line("late", LogStream.LOG_STREAM_STDERR, at=T0 + 1))


# ---- over HTTP --------------------------------------------------------------------------


class ScriptedSource:
    """Answers every subscription with `batches`, then `error` (if any); records requests."""

    def __init__(
        self, batches: list[list[LogMessage]], error: str = "", refuse: Exception | None = None
    ) -> None:
        self.batches = batches
        self.error = error
        self.refuse = refuse
        self.requests: list[SubscribeLogsRequest] = []
        self.closed = asyncio.Event()

    async def subscribe_logs(
        self, request: SubscribeLogsRequest
    ) -> AsyncGenerator[list[LogMessage], None]:
        self.requests.append(request)
        if self.refuse is not None:
            raise self.refuse
        return self._stream(request.options.follow)

    async def _stream(self, follow: bool) -> AsyncGenerator[list[LogMessage], None]:
        try:
            for batch in self.batches:
                yield batch
            if self.error:
                raise LogStreamError(self.error)
            if follow:
                await asyncio.Event().wait()  # until the client goes away
        finally:
            self.closed.set()


def with_api(
    source: ScriptedSource,
    test: Callable[[TestClient[Any, Any], LocalBackend], Awaitable[None]],
) -> None:
    async def main() -> None:
        backend = LocalBackend()
        service = Service(id=SERVICE)
        service.spec.annotations.name = "web"
        task = Task(id=TASK, service_id=SERVICE, node_id=NODE, slot=1)
        txn = Transaction().create(service).create(task)
        await backend.propose(txn.encode())
        app = logs_api.register(create_app(backend), source)
        async with TestClient(TestServer(app)) as client:
            await test(client, backend)

    asyncio.run(main())


def test_service_logs_stream_multiplexed_frames_with_docker_line_format() -> None:
    source = ScriptedSource(
        [[line("hello"), line("oops", LogStream.LOG_STREAM_STDERR)], [line("bye")]]
    )

    async def test(client: TestClient[Any, Any], _backend: LocalBackend) -> None:
        params = {"stdout": "1", "stderr": "1", "details": "1", "tail": "1"}
        resp = await client.get("/v1.41/services/web/logs", params=params)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/vnd.docker.raw-stream"
        frames = unframe(await resp.read())
        prefix = attrs_text(line("")).encode() + b" "
        assert frames == [(1, prefix + b"hello\n"), (2, prefix + b"oops\n"), (1, prefix + b"bye\n")]
        [request] = source.requests
        assert list(request.selector.service_ids) == [SERVICE] and not request.selector.task_ids
        assert request.options.tail == 1

    with_api(source, test)


def test_task_logs_select_the_task_by_prefix_and_keep_only_asked_streams() -> None:
    source = ScriptedSource([[line("out"), line("err", LogStream.LOG_STREAM_STDERR)]])

    async def test(client: TestClient[Any, Any], _backend: LocalBackend) -> None:
        resp = await client.get(f"/tasks/{TASK[:10]}/logs", params={"stderr": "1"})
        assert resp.status == 200
        assert unframe(await resp.read()) == [(2, b"err\n")]
        assert list(source.requests[0].selector.task_ids) == [TASK]

    with_api(source, test)


def test_a_broken_stream_ends_with_dockerds_error_frame() -> None:
    source = ScriptedSource([[line("first")]], error="rpc error: code = Unavailable desc = gone")

    async def test(client: TestClient[Any, Any], _backend: LocalBackend) -> None:
        resp = await client.get("/services/web/logs", params={"stdout": "1"})
        assert unframe(await resp.read()) == [
            (1, b"first\n"),
            (3, b"Error grabbing logs: rpc error: code = Unavailable desc = gone\n"),
        ]

    with_api(source, test)


def test_a_follower_that_leaves_closes_the_subscription() -> None:
    source = ScriptedSource([[line("first")]])

    async def test(client: TestClient[Any, Any], _backend: LocalBackend) -> None:
        resp = await client.get("/services/web/logs", params={"stdout": "1", "follow": "1"})
        assert resp.status == 200
        assert unframe(await resp.content.readexactly(8 + len(b"first\n"))) == [(1, b"first\n")]
        resp.close()
        async with asyncio.timeout(30):
            await source.closed.wait()

    with_api(source, test)


def test_errors_unknown_service_or_task_worker_refusal_bad_query() -> None:
    source = ScriptedSource(
        [], refuse=LogStreamError("rpc error: code = InvalidArgument desc = no")
    )

    async def test(client: TestClient[Any, Any], backend: LocalBackend) -> None:
        resp = await client.get("/services/nope/logs", params={"stdout": "1"})
        assert (resp.status, await resp.json()) == (404, {"message": "service nope not found"})
        resp = await client.get("/tasks/nope/logs", params={"stdout": "1"})
        assert (resp.status, await resp.json()) == (404, {"message": "task nope not found"})
        resp = await client.get("/services/web/logs")
        assert resp.status == 500
        assert (await resp.json())["message"].startswith("Bad parameters")
        resp = await client.get("/services/web/logs", params={"stdout": "1"})
        assert (resp.status, await resp.json()) == (
            500,
            {"message": "rpc error: code = InvalidArgument desc = no"},
        )
        source.refuse = NoLeaderError()
        resp = await client.get("/services/web/logs", params={"stdout": "1"})
        assert (resp.status, await resp.json()) == (500, {"message": NO_LEADER_MESSAGE})
        backend.set_role("worker")
        resp = await client.get("/services/web/logs", params={"stdout": "1"})
        assert (resp.status, await resp.json()) == (503, {"message": NOT_A_MANAGER_MESSAGE})

    with_api(source, test)


def test_tty_services_get_raw_lines() -> None:
    source = ScriptedSource([[line("plain")]])

    async def test(client: TestClient[Any, Any], backend: LocalBackend) -> None:
        service = backend.store.get(Service, SERVICE)
        assert service is not None
        service.spec.container.tty = True
        await backend.propose(Transaction().update(service).encode())
        resp = await client.get("/services/web/logs", params={"stdout": "1"})
        assert await resp.read() == b"plain\n"

    with_api(source, test)
