"""The lab's faults (`faults.py`) applied to gRPC on 2377, on both ends of every call.

Client side, before a call leaves: a partitioned destination fails it with UNAVAILABLE after
the time a connection attempt would take; otherwise the call waits its transmit delay (delay,
jitter, retransmissions of lost segments). Every call names the caller's host in metadata
(`swarmlab-from`): on one machine every loopback connection comes from 127.0.0.1 whatever
address the node has, so the server could not tell otherwise (across real hosts, without that
metadata, the connection's peer address is used).

Server side (`FaultInterceptor`, first of the server's interceptors): a call from a host this
node is partitioned from is refused with UNAVAILABLE, and so is every later message of a
stream opened before the partition, so a partition cuts both directions even when only one
side's plan has changed; answers are delayed as the node's outbound traffic.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from controlplane.faults import FAULTS, Faults, host_of

FROM_KEY = "swarmlab-from"
CONNECT_WAIT = 1.0  # seconds a call to a partitioned host waits before failing, at most

Context = grpc.aio.ServicerContext[Any, Any]

if TYPE_CHECKING:  # generic only in the type stubs
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    _UnaryUnaryInterceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStreamInterceptor = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor
    _UnaryUnaryInterceptor = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStreamInterceptor = grpc.aio.UnaryStreamClientInterceptor


class PartitionedError(Exception):
    """A request cannot reach its destination: the lab partitioned it away."""


def caller_metadata(faults: Faults = FAULTS) -> tuple[tuple[str, str], ...]:
    """Metadata naming this node's host, for calls made without `client_interceptors`."""
    return ((FROM_KEY, faults.local_host),) if faults.local_host else ()


async def wait_transmit(address: str, timeout: float | None, faults: Faults = FAULTS) -> None:
    """Wait as long as a request to `address` takes to get through; raise `PartitionedError`
    (after the time a failing connection attempt takes) when it cannot."""
    delay = faults.transmit_delay(address)
    if delay is None:
        await asyncio.sleep(min(timeout if timeout is not None else CONNECT_WAIT, CONNECT_WAIT))
        raise PartitionedError(f"{host_of(address)} is unreachable (swarmlab partition or loss)")
    if delay > 0:
        await asyncio.sleep(delay)


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None
    )


class _ClientFaults:
    """Both client interceptor kinds the agent's dispatcher calls use (unary and server
    streaming), for a channel to `address`."""

    def __init__(self, address: str, faults: Faults) -> None:
        self._address = address
        self._faults = faults

    async def _admit(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        try:
            await wait_transmit(self._address, details.timeout, self._faults)
        except PartitionedError as err:
            raise _unavailable(str(err)) from None
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *caller_metadata(self._faults))
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_ClientFaults, _UnaryUnaryInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(await self._admit(details), request)


class _UnaryStream(_ClientFaults, _UnaryStreamInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(await self._admit(details), request)


def client_interceptors(address: str, faults: Faults = FAULTS) -> list[Any]:
    """Interceptors for a channel to `address` that apply this node's faults to its calls
    (`Any`: grpc's stubs leave the interceptor type of channels open)."""
    return [_UnaryUnary(address, faults), _UnaryStream(address, faults)]


def caller_host(context: Context) -> str:
    """The calling node's host: what it names in metadata, else the connection's address."""
    for item in context.invocation_metadata() or ():
        key, value = item[0], item[1]
        if key == FROM_KEY and isinstance(value, str) and value:
            return value
    peer = context.peer() or ""  # "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000"
    return host_of(peer.partition(":")[2])


class FaultInterceptor(_ServerInterceptor):
    """The server side of the lab's faults on 2377 (see the module docstring)."""

    def __init__(self, faults: Faults = FAULTS) -> None:
        self._faults = faults

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None:
            return handler
        return _with_faults(handler, self)

    async def refuse_if_cut(self, context: Context, host: str) -> None:
        if self._faults.is_partitioned(host):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"{self._faults.local_host or 'this node'} does not hear from {host} "
                "(swarmlab partition)",
            )

    async def answer_delay(self, context: Context, host: str) -> None:
        """Hold an answer to `host` as long as this node's outbound traffic takes."""
        delay = self._faults.transmit_delay(host)
        if delay is None:
            await self.refuse_if_cut(context, host)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"answer to {host} lost")
        elif delay > 0:
            await asyncio.sleep(delay)

    async def checked(self, context: Context, host: str, requests: Any) -> AsyncIterator[Any]:
        """The requests of a client stream, each refused once `host` is cut off."""
        async for request in requests:
            await self.refuse_if_cut(context, host)
            yield request


def _with_faults(handler: Any, faults: FaultInterceptor) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` behind the fault checks; `Any` because grpc's stubs type handlers for the
    synchronous server while grpc.aio's are coroutines and async generators."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            host = caller_host(context)
            await faults.refuse_if_cut(context, host)
            response = await unary(request, context)
            await faults.answer_delay(context, host)
            return response

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.stream_unary is not None:
        collect = handler.stream_unary

        async def stream_unary(requests: Any, context: Context) -> Any:
            host = caller_host(context)
            await faults.refuse_if_cut(context, host)
            response = await collect(faults.checked(context, host, requests), context)
            await faults.answer_delay(context, host)
            return response

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    streaming = handler.unary_stream or handler.stream_stream
    client_streams = handler.stream_stream is not None

    async def streamed(request: Any, context: Context) -> AsyncIterator[Any]:
        host = caller_host(context)
        await faults.refuse_if_cut(context, host)
        if client_streams:
            request = faults.checked(context, host, request)
        result = streaming(request, context)
        if not inspect.isasyncgen(result):  # a servicer that writes with context.write()
            await result
            return
        async for item in result:
            await faults.refuse_if_cut(context, host)
            await faults.answer_delay(context, host)
            yield item

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streamed, **codec)
    return grpc.stream_stream_rpc_method_handler(streamed, **codec)
