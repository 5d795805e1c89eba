"""Services registered through their generic handlers only (controlplane/generic_handlers.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from controlplane.generic_handlers import register_generic
from controlplane.pb import control_pb2, control_pb2_grpc, objects_pb2, raft_pb2_grpc

ADDRESS = "127.77.159.1:0"  # any free port


class RecordingServer:
    """Stands in for a grpc.aio server: records what a registration hands it."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered.append(service)


def test_only_the_generic_handlers_reach_the_server() -> None:
    server = RecordingServer()
    register_generic(
        server,  # type: ignore[arg-type]
        [
            lambda s: control_pb2_grpc.add_ControlServicer_to_server(
                control_pb2_grpc.ControlServicer(), s
            ),
            lambda s: raft_pb2_grpc.add_RaftServicer_to_server(raft_pb2_grpc.RaftServicer(), s),
        ],
    )
    assert [h.service_name() for h in server.generic] == [
        "controlplane.v1.Control",
        "controlplane.v1.Raft",
    ]
    assert server.registered == []


class AnsweringControl(control_pb2_grpc.ControlServicer):
    async def Write(
        self, request: control_pb2.WriteRequest, context: Any
    ) -> control_pb2.WriteResponse:
        return control_pb2.WriteResponse(
            index=7,
            result=objects_pb2.StoreTransactionResult(ok=True),
            proposal_id=request.transaction.proposal_id,
        )


def test_a_generated_stub_reaches_a_method_served_generically() -> None:
    """The generated client stubs name their methods as registered ones; the server finds
    them through the generic handlers all the same, and an unknown method is UNIMPLEMENTED."""
    asyncio.run(serve_and_call())


async def serve_and_call() -> None:
    server = grpc.aio.server()
    register_generic(
        server, [lambda s: control_pb2_grpc.add_ControlServicer_to_server(AnsweringControl(), s)]
    )
    port = server.add_insecure_port(ADDRESS)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.77.159.1:{port}") as channel:
            stub = control_pb2_grpc.ControlStub(channel)
            request = control_pb2.WriteRequest()
            request.transaction.proposal_id = b"p1"
            response = await stub.Write(request, timeout=10)
            assert (response.index, response.result.ok, response.proposal_id) == (7, True, b"p1")
            unknown = channel.unary_unary("/controlplane.v1.Control/NoSuchMethod")
            try:
                await unknown(b"", timeout=10)
            except grpc.aio.AioRpcError as err:
                assert err.code() is grpc.StatusCode.UNIMPLEMENTED
            else:
                raise AssertionError("a method no service has was answered")
    finally:
        await server.stop(None)
