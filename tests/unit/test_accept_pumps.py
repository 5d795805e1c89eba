"""Accept pumps (controlplane/accept_pumps.py): a grpc.aio server with extra pending call
requests answers its clients exactly as one without: many concurrent calls, aborts, raising
handlers, deadlines, metadata, interceptors, malformed requests, mutual TLS; it stops cleanly
with requests pending; when grpcio's internals are not the ones checked it says so once and
serves as grpc.aio alone does.

Served over real gRPC sockets on 127.77.244.x (this file's range), on ports the kernel picks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import types
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import pytest

from controlplane import accept_pumps
from controlplane.accept_pumps import AcceptPumps, per_method_from_env, unavailable_reason
from controlplane.generic_handlers import register_generic
from controlplane.manager.authz import RoleInterceptor
from controlplane.manager.ca import (
    MANAGER_ROLE,
    WORKER_ROLE,
    NodeIdentity,
    RootCA,
    channel_credentials,
    channel_options,
    server_credentials,
)
from controlplane.pb import control_pb2, control_pb2_grpc, raft_pb2
from controlplane.raft.transport import Credentials, Transport
from tests.polling import eventually

HOST = "127.77.244"
WRITE = "/controlplane.v1.Control/Write"
CLUSTER = "cluster-pumps"
Outcome = tuple[str, str, tuple[tuple[str, str], ...], bytes]


class ScriptedControl(control_pb2_grpc.ControlServicer):
    """`Control/Write` doing what the proposal id says: answer (echoing it and the caller's
    `x-echo` metadata), abort, raise, set a status without aborting, or wait forever."""

    def __init__(self) -> None:
        self.remaining: list[float | None] = []  # time_remaining() seen by waiting calls
        self.waiting = 0

    async def Write(
        self, request: control_pb2.WriteRequest, context: Any
    ) -> control_pb2.WriteResponse:
        kind = request.transaction.proposal_id
        echo = dict(context.invocation_metadata()).get("x-echo", "")
        context.set_trailing_metadata((("x-echo", echo),))
        if kind == b"abort":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "told to abort", (("x-why", "asked"),)
            )
        if kind == b"raise":
            raise RuntimeError("the handler failed")
        if kind == b"status":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details("no such thing")
        if kind == b"wait":
            self.remaining.append(context.time_remaining())
            self.waiting += 1
            await asyncio.Event().wait()
        return control_pb2.WriteResponse(index=len(kind), proposal_id=kind)


class AllowOnlyMarked(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses calls without `x-allow: yes`; counts the methods it was asked about."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        self.seen.append(details.method)
        if ("x-allow", "yes") in tuple(details.invocation_metadata or ()):
            return await continuation(details)

        async def refuse(request: Any, context: Any) -> None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not marked")

        return grpc.unary_unary_rpc_method_handler(refuse)


def internals(**replaced: Any) -> types.SimpleNamespace:
    """What `accept_pumps` sees of grpc's private module, with `replaced` names swapped (or,
    given None, missing); grpc's own server loop keeps the real ones."""
    real = accept_pumps.cygrpc
    names = {name: getattr(real, name) for name in dir(real) if not name.startswith("__")}
    names.update(replaced)
    return types.SimpleNamespace(**{k: v for k, v in names.items() if v is not None})


@pytest.fixture(autouse=True)
def report_again() -> None:
    """Each test sees its own once-per-process report."""
    accept_pumps._report_unavailable.cache_clear()


@contextlib.asynccontextmanager
async def serving(
    servicer: control_pb2_grpc.ControlServicer,
    last_octet: int,
    per_method: int,
    interceptors: Sequence[Any] = (),
) -> AsyncIterator[tuple[str, AcceptPumps]]:
    """A server made as the transport makes its own, with `per_method` pumps."""
    server = grpc.aio.server(interceptors=list(interceptors) or None)
    handlers = register_generic(
        server, [lambda s: control_pb2_grpc.add_ControlServicer_to_server(servicer, s)]
    )
    pumps = AcceptPumps.register(server, handlers, interceptors, per_method=per_method)
    port = server.add_insecure_port(f"{HOST}.{last_octet}:0")
    await server.start()
    pumps.start()
    try:
        yield f"{HOST}.{last_octet}:{port}", pumps
    finally:
        await server.stop(0.2)
        await pumps.drain()


def write_bytes(kind: bytes) -> bytes:
    request = control_pb2.WriteRequest()
    request.transaction.proposal_id = kind
    return request.SerializeToString()


async def outcome(
    channel: grpc.aio.Channel,
    body: bytes,
    metadata: tuple[tuple[str, str], ...] = (),
    timeout: float = 30.0,
) -> Outcome:
    """What a client sees of one raw `Control/Write`: status, details, trailing metadata
    (gRPC's own keys left out) and the answer's bytes."""
    call = channel.unary_unary(WRITE)(body, timeout=timeout, metadata=metadata)
    try:
        answer: bytes = await call
    except grpc.aio.AioRpcError:
        answer = b""
    code = await call.code()
    trailing = tuple(
        (key, str(value))
        for key, value in (await call.trailing_metadata() or ())
        if key.startswith("x-")
    )
    return code.name, await call.details() or "", trailing, answer


CASES: list[tuple[str, bytes, tuple[tuple[str, str], ...], float]] = [
    ("answered", write_bytes(b"ok"), (("x-echo", "hello"),), 30.0),
    ("aborted", write_bytes(b"abort"), (("x-echo", "a"),), 30.0),
    ("raising", write_bytes(b"raise"), (), 30.0),
    ("status set", write_bytes(b"status"), (), 30.0),
    ("deadline", write_bytes(b"wait"), (), 0.5),
    ("malformed request", b"\xff\xff\xff\xff", (), 30.0),
]


def test_pumped_calls_get_what_unpumped_calls_get() -> None:
    """Each kind of call, once through a server without pumps (the reference), then 16 at once
    through one with 2 pumps: every one of them sees the reference's status, details,
    trailing metadata and answer, and the pumps took calls of every kind."""

    async def scenario() -> None:
        reference: dict[str, Outcome] = {}
        async with (
            serving(ScriptedControl(), 1, per_method=0) as (address, plain),
            grpc.aio.insecure_channel(address) as channel,
        ):
            assert plain.methods == ()
            for name, body, metadata, timeout in CASES:
                reference[name] = await outcome(channel, body, metadata, timeout)
        assert reference["answered"][0] == "OK"
        assert reference["aborted"][:3] == (
            "FAILED_PRECONDITION",
            "told to abort",
            (("x-why", "asked"),),
        )
        assert reference["raising"][0] == "UNKNOWN"
        assert reference["status set"][:2] == ("NOT_FOUND", "no such thing")
        assert reference["deadline"][0] == "DEADLINE_EXCEEDED"
        assert reference["malformed request"][0] != "OK"

        servicer = ScriptedControl()
        async with (
            serving(servicer, 2, per_method=2) as (address, pumps),
            grpc.aio.insecure_channel(address) as channel,
        ):
            assert pumps.methods == (WRITE,)
            for name, body, metadata, timeout in CASES:
                before = pumps.accepted
                seen = await asyncio.gather(
                    *(outcome(channel, body, metadata, timeout) for _ in range(16))
                )
                assert set(seen) == {reference[name]}, name
                assert pumps.accepted > before, f"no {name} call went through a pump"
        assert len(servicer.remaining) == 16
        # The client's 0.5 s deadline reached the handler (the clocks differ by a little).
        assert all(r is not None and 0 < r < 1 for r in servicer.remaining)

    asyncio.run(scenario())


def test_many_concurrent_calls_each_get_their_own_answer() -> None:
    async def scenario() -> None:
        async with (
            serving(ScriptedControl(), 3, per_method=4) as (address, pumps),
            grpc.aio.insecure_channel(address) as channel,
        ):
            stub = control_pb2_grpc.ControlStub(channel)
            kinds = [f"write-{i:04d}".encode() for i in range(500)]
            requests = []
            for kind in kinds:
                request = control_pb2.WriteRequest()
                request.transaction.proposal_id = kind
                requests.append(request)
            answers = await asyncio.gather(*(stub.Write(r, timeout=60) for r in requests))
            assert [a.proposal_id for a in answers] == kinds
            assert pumps.accepted > 0

    asyncio.run(scenario())


def test_the_servers_interceptors_see_every_pumped_call() -> None:
    async def scenario() -> None:
        interceptor = AllowOnlyMarked()
        async with (
            serving(ScriptedControl(), 4, per_method=2, interceptors=[interceptor]) as (
                address,
                pumps,
            ),
            grpc.aio.insecure_channel(address) as channel,
        ):
            allowed = (("x-allow", "yes"), ("x-echo", "in"))
            passed = await asyncio.gather(
                *(outcome(channel, write_bytes(b"ok"), allowed) for _ in range(20))
            )
            refused = await asyncio.gather(
                *(outcome(channel, write_bytes(b"ok")) for _ in range(20))
            )
            answer = control_pb2.WriteResponse(index=2, proposal_id=b"ok").SerializeToString()
            assert set(passed) == {("OK", "", (("x-echo", "in"),), answer)}
            assert {r[:2] for r in refused} == {("PERMISSION_DENIED", "not marked")}
            assert interceptor.seen == [WRITE] * 40
            assert pumps.accepted > 0

    asyncio.run(scenario())


def issued(root: RootCA, node_id: str, role: str) -> NodeIdentity:
    identity = NodeIdentity.create(node_id)
    cert = root.issue(identity.csr_pem, node_id, role, CLUSTER)
    return NodeIdentity(identity.node_id, identity.key, identity.csr_pem, cert)


class NoRaft:
    """The Raft side of a transport that only serves `Control` here."""

    cluster_id = 1

    def deliver(self, message: Any) -> None:
        raise AssertionError("no Raft message is expected")

    def link_closed(self, node_id: int) -> None:
        raise AssertionError("no Raft stream is expected")

    async def join(self, request: raft_pb2.JoinRequest) -> raft_pb2.JoinResponse:
        raise NotImplementedError

    async def leave(self, request: raft_pb2.LeaveRequest) -> None:
        raise NotImplementedError

    async def propose_local(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        raise NotImplementedError

    async def read_index_local(self, timeout: float) -> int:
        return 42

    def status(self) -> raft_pb2.StatusResponse:
        raise NotImplementedError


def test_the_transport_pumps_its_hot_methods_over_mutual_tls() -> None:
    """The manager's own server on 2377: mutual TLS and the role check; a manager's writes
    and read barriers are answered through the pumps, a worker's are refused."""
    root = RootCA.create()

    async def scenario() -> None:
        transport = Transport(
            NoRaft(),
            Credentials(
                server=server_credentials(issued(root, "manager-1", MANAGER_ROLE), root),
                interceptors=[RoleInterceptor(root, CLUSTER)],
            ),
        )
        servicer = ScriptedControl()
        address = f"{HOST}.5:2377"
        await transport.start(
            address, [lambda s: control_pb2_grpc.add_ControlServicer_to_server(servicer, s)]
        )
        try:
            pumps = transport._accept_pumps
            assert pumps is not None
            assert set(pumps.methods) == set(accept_pumps.HOT_UNARY_METHODS)
            manager = channel_credentials(issued(root, "manager-2", MANAGER_ROLE), root)
            async with grpc.aio.secure_channel(address, manager, channel_options()) as channel:
                answers = await asyncio.gather(
                    *(outcome(channel, write_bytes(b"tls")) for _ in range(32))
                )
                assert {a[0] for a in answers} == {"OK"}
                read_index = channel.unary_unary(
                    "/controlplane.v1.Raft/ReadIndex",
                    request_serializer=raft_pb2.ReadIndexRequest.SerializeToString,
                    response_deserializer=raft_pb2.ReadIndexResponse.FromString,
                )
                reads = await asyncio.gather(
                    *(read_index(raft_pb2.ReadIndexRequest(), timeout=30) for _ in range(8))
                )
                assert {r.index for r in reads} == {42}
            assert pumps.accepted > 0
            worker = channel_credentials(issued(root, "worker-1", WORKER_ROLE), root)
            async with grpc.aio.secure_channel(address, worker, channel_options()) as channel:
                refused = await asyncio.gather(
                    *(outcome(channel, write_bytes(b"tls")) for _ in range(8))
                )
                assert {r[0] for r in refused} == {"PERMISSION_DENIED"}
        finally:
            await transport.stop()

    asyncio.run(scenario())


def test_stopping_with_requests_pending_and_a_call_in_flight_is_clean() -> None:
    """The pumps' pending requests fail at shutdown, which ends them; the call in flight is
    cancelled; nothing is left running and no exception goes unretrieved."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        unhandled: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
        servicer = ScriptedControl()
        server = grpc.aio.server()
        handlers = register_generic(
            server, [lambda s: control_pb2_grpc.add_ControlServicer_to_server(servicer, s)]
        )
        pumps = AcceptPumps.register(server, handlers, per_method=4)
        port = server.add_insecure_port(f"{HOST}.6:0")
        await server.start()
        pumps.start()
        async with grpc.aio.insecure_channel(f"{HOST}.6:{port}") as channel:
            waiting = asyncio.create_task(outcome(channel, write_bytes(b"wait")))
            await eventually("the call to reach its handler", lambda: servicer.waiting == 1)
            await asyncio.wait_for(server.stop(0.2), 30)
            await asyncio.wait_for(pumps.drain(), 30)
            assert (await waiting)[0] in {"CANCELLED", "UNAVAILABLE"}
        gc.collect()
        await asyncio.sleep(0)
        assert unhandled == []
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())


def test_draining_a_running_server_is_refused() -> None:
    async def scenario() -> None:
        async with serving(ScriptedControl(), 7, per_method=1) as (_address, pumps):
            with pytest.raises(RuntimeError, match="stop the server"):
                await pumps.drain()

    asyncio.run(scenario())


def test_missing_internals_are_reported_once_and_the_server_serves_as_before(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(accept_pumps, "cygrpc", internals(_handle_rpc=None))
    caplog.set_level(logging.WARNING, logger="controlplane.accept_pumps")

    async def scenario() -> None:
        for octet in (8, 8):  # a node starts its server again: still one report
            async with (
                serving(ScriptedControl(), octet, per_method=2) as (address, pumps),
                grpc.aio.insecure_channel(address) as channel,
            ):
                assert pumps.methods == ()
                seen = await asyncio.gather(
                    *(outcome(channel, write_bytes(b"ok")) for _ in range(16))
                )
                assert {s[0] for s in seen} == {"OK"}
                assert pumps.accepted == 0

    asyncio.run(scenario())
    reports = [r.getMessage() for r in caplog.records]
    assert reports == ["event=grpc_accept_pumps_unavailable reason='_handle_rpc is missing'"]


@pytest.mark.parametrize(
    ("what", "patch", "reason"),
    [
        ("another grpcio", lambda m: m.setattr(grpc, "__version__", "1.99.0"), "grpcio 1.99.0"),
        (
            "another signature",
            lambda m: m.setattr(
                accept_pumps,
                "cygrpc",
                internals(_schedule_rpc_coro=lambda rpc_coro, rpc_state, loop: None),
            ),
            "_schedule_rpc_coro takes ('rpc_coro', 'rpc_state', 'loop')",
        ),
        (
            "no AioServer",
            lambda m: m.setattr(accept_pumps, "cygrpc", internals(AioServer=type("Other", (), {}))),
            "no cygrpc.AioServer",
        ),
    ],
)
def test_internals_not_as_checked_are_named(
    monkeypatch: pytest.MonkeyPatch,
    what: str,
    patch: Callable[[pytest.MonkeyPatch], None],
    reason: str,
) -> None:
    async def scenario() -> None:
        server = grpc.aio.server()
        try:
            patch(monkeypatch)
            found = unavailable_reason(server)
            assert found is not None and reason in found, what
        finally:
            monkeypatch.undo()
            await server.stop(None)

    asyncio.run(scenario())


def test_a_type_error_at_run_time_stops_the_pumps_and_the_server_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Internals that pass the checks but refuse their arguments: the calls a pump had
    taken fail, the report is logged once, and grpc.aio's own loop serves the rest."""
    caplog.set_level(logging.WARNING, logger="controlplane.accept_pumps")

    def refusing(rpc_coro: Any, rpc_state: Any, loop: Any, method_name: Any) -> None:
        rpc_coro.close()
        raise TypeError("refused")

    async def scenario() -> None:
        async with (
            serving(ScriptedControl(), 9, per_method=2) as (address, pumps),
            grpc.aio.insecure_channel(address) as channel,
        ):
            monkeypatch.setattr(accept_pumps, "cygrpc", internals(_schedule_rpc_coro=refusing))
            assert pumps.running == 2
            outcomes: list[str] = []

            async def write() -> None:
                outcomes.append((await outcome(channel, write_bytes(b"ok"), timeout=5))[0])

            for _ in range(100):  # until each pump has taken a call (bounded)
                await asyncio.gather(*(write() for _ in range(4)))
                if pumps.running == 0:
                    break
            assert pumps.running == 0
            assert pumps.accepted == 2
            assert sorted(set(outcomes)) == ["CANCELLED", "OK"]
            assert outcomes.count("CANCELLED") == 2
            monkeypatch.undo()
            seen = await asyncio.gather(*(outcome(channel, write_bytes(b"ok")) for _ in range(8)))
            assert {s[0] for s in seen} == {"OK"}

    asyncio.run(scenario())
    reports = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert reports == [
        "event=grpc_accept_pumps_unavailable reason='_handle_rpc or _schedule_rpc_coro: refused'"
    ]


@pytest.mark.parametrize("text", ["-1", "two", "1.5", "65"])
def test_a_bad_pump_count_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv(accept_pumps.PUMPS_ENV, text)
    with pytest.raises(ValueError, match=r"SWARMLAB_ACCEPT_PUMPS=.*0 to 64.*unset it"):
        per_method_from_env()


def test_the_pump_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(accept_pumps.PUMPS_ENV, raising=False)
    assert per_method_from_env() == accept_pumps.DEFAULT_PER_METHOD
    monkeypatch.setenv(accept_pumps.PUMPS_ENV, " 3 ")
    assert per_method_from_env() == 3
    monkeypatch.setenv(accept_pumps.PUMPS_ENV, "0")

    async def scenario() -> None:
        server = grpc.aio.server()
        handlers = register_generic(
            server, [lambda s: control_pb2_grpc.add_ControlServicer_to_server(ScriptedControl(), s)]
        )
        assert AcceptPumps.register(server, handlers).methods == ()
        await server.stop(None)

    asyncio.run(scenario())
