"""The lab's faults on real gRPC calls over loopback: callers name their host, a partition
refuses calls on both ends, and a stream opened before a partition is cut at its next message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from controlplane.faults import FaultPlan, Faults
from controlplane.faults_grpc import (
    FaultInterceptor,
    caller_host,
    caller_metadata,
    client_interceptors,
)

SERVER_HOST = "127.77.189.1"
CLIENT_HOST = "127.77.189.2"


class EchoServer:
    """`/test.Echo/Who` answers the caller's host; `/test.Echo/Count` counts a client stream."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.calls = 0
        self.received = asyncio.Queue[bytes]()
        self.server = grpc.aio.server(interceptors=[FaultInterceptor(faults)])
        handlers = {
            "Who": grpc.unary_unary_rpc_method_handler(self._who),
            "Count": grpc.stream_unary_rpc_method_handler(self._count),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Echo", handlers),)
        )
        port = self.server.add_insecure_port(f"{SERVER_HOST}:0")
        self.address = f"{SERVER_HOST}:{port}"

    async def _who(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        return caller_host(context).encode()

    async def _count(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        count = 0
        async for request in requests:
            count += 1
            await self.received.put(request)
        return str(count).encode()


async def _with_server(server_faults: Faults, client_faults: Faults, test: Any) -> None:
    echo = EchoServer(server_faults)
    await echo.server.start()
    channel = grpc.aio.insecure_channel(
        echo.address, interceptors=client_interceptors(echo.address, client_faults)
    )
    try:
        await test(echo, channel)
    finally:
        await channel.close()
        await echo.server.stop(None)


def _faults(host: str, plan: FaultPlan | None = None) -> Faults:
    faults = Faults(plan)
    faults.local_host = host
    return faults


def test_calls_name_their_host_and_pass_when_nothing_is_wrong() -> None:
    async def test(echo: EchoServer, channel: grpc.aio.Channel) -> None:
        assert await channel.unary_unary("/test.Echo/Who")(b"") == CLIENT_HOST.encode()

    asyncio.run(_with_server(_faults(SERVER_HOST), _faults(CLIENT_HOST), test))


def test_a_server_partitioned_from_the_caller_refuses_it() -> None:
    async def test(echo: EchoServer, channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.Echo/Who")(b"")
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert f"{SERVER_HOST} does not hear from {CLIENT_HOST}" in str(caught.value.details())
        assert echo.calls == 0

    server = _faults(SERVER_HOST, FaultPlan(frozenset({CLIENT_HOST})))
    asyncio.run(_with_server(server, _faults(CLIENT_HOST), test))


def test_a_caller_partitioned_from_the_server_never_reaches_it() -> None:
    async def test(echo: EchoServer, channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.Echo/Who")(b"", timeout=0.2)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert f"{SERVER_HOST} is unreachable" in str(caught.value.details())
        assert echo.calls == 0

    client = _faults(CLIENT_HOST, FaultPlan(frozenset({SERVER_HOST})))
    asyncio.run(_with_server(_faults(SERVER_HOST), client, test))


def test_a_stream_opened_before_the_partition_is_cut_at_its_next_message() -> None:
    async def test(echo: EchoServer, channel: grpc.aio.Channel) -> None:
        call: Any = channel.stream_unary("/test.Echo/Count")(
            metadata=caller_metadata(_faults(CLIENT_HOST))
        )
        await call.write(b"before")
        assert await asyncio.wait_for(echo.received.get(), 10) == b"before"
        echo.faults.install(FaultPlan(frozenset({CLIENT_HOST})))  # only the server's side
        await call.write(b"after")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(call, 10)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert echo.received.empty()

    asyncio.run(_with_server(_faults(SERVER_HOST), _faults(CLIENT_HOST), test))
