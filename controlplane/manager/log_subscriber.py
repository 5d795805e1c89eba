"""How a manager's Engine API reaches the log broker: it subscribes on the leader (a follower's
broker does not serve) over a fresh mTLS channel, and hands back the batches of lines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

import grpc

from controlplane.manager.dispatcher import LEADER_TRAILER, RaftView
from controlplane.pb import logbroker_pb2_grpc
from controlplane.pb.logbroker_pb2 import LogMessage, SubscribeLogsMessage, SubscribeLogsRequest
from controlplane.raft.errors import NoLeaderError

ACCEPT_TIMEOUT = 10.0  # seconds for the leader to accept a subscription
REDIRECTS = 2  # a leader that just stepped down names its successor; follow it this often

LogCall = grpc.aio.UnaryStreamCall[SubscribeLogsRequest, SubscribeLogsMessage]


class LogStreamError(Exception):
    """The broker refused or broke the subscription; the message is as dockerd shows a
    swarmkit error (`rpc error: code = ... desc = ...`)."""


def rpc_message(err: grpc.aio.AioRpcError) -> str:
    code = "".join(part.capitalize() for part in err.code().name.split("_"))
    return f"rpc error: code = {code} desc = {err.details()}"


class LogSubscriber:
    """raft_view: this manager's view of Raft (the leader's address). channel_factory:
    `address -> channel` with this manager's credentials."""

    def __init__(
        self,
        raft_view: Callable[[], RaftView],
        channel_factory: Callable[[str], grpc.aio.Channel],
        accept_timeout: float = ACCEPT_TIMEOUT,
    ) -> None:
        self._raft_view = raft_view
        self._channel_factory = channel_factory
        self._accept_timeout = accept_timeout

    async def subscribe_logs(
        self, request: SubscribeLogsRequest
    ) -> AsyncGenerator[list[LogMessage], None]:
        """Open the subscription on the leader, once it accepted it: its batches of lines.

        Raises NoLeaderError when no leader is known or answers, LogStreamError when the
        broker refuses; the returned iterator raises LogStreamError if the stream breaks."""
        address = self._raft_view().leader_address
        for _ in range(REDIRECTS + 1):
            if not address:
                break
            channel = self._channel_factory(address)
            call: LogCall = logbroker_pb2_grpc.LogsStub(channel).SubscribeLogs(request)
            try:
                async with asyncio.timeout(self._accept_timeout):
                    await call.read()  # the broker's acceptance (or its refusal)
            except TimeoutError:
                call.cancel()
                await channel.close(None)
                break
            except grpc.aio.AioRpcError as err:
                await channel.close(None)
                if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    address = _leader_of(err)
                    continue
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    break
                raise LogStreamError(rpc_message(err)) from None
            return _batches(channel, call)
        raise NoLeaderError()


async def _batches(
    channel: grpc.aio.Channel, call: LogCall
) -> AsyncGenerator[list[LogMessage], None]:
    try:
        while True:
            message = await call.read()
            if not isinstance(message, SubscribeLogsMessage):
                return  # grpc.aio.EOF: the broker ended the subscription
            yield list(message.messages)
    except grpc.aio.AioRpcError as err:
        raise LogStreamError(rpc_message(err)) from None
    finally:
        call.cancel()
        await channel.close(None)


def _leader_of(err: grpc.aio.AioRpcError) -> str | None:
    for item in err.trailing_metadata() or ():
        key, value = item[0], item[1]  # type: ignore[index]
        if key == LEADER_TRAILER and isinstance(value, str) and value:
            return value
    return None
