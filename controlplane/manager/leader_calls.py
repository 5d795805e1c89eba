"""Calls the leader serves (`Control.CreateNetwork`, and the API's writes and read barriers),
made from any manager: run here when this manager leads, sent to the leader's 2377 otherwise,
as swarmkit's managers proxy their control API to the leader. A follower's Engine API thus
never allocates from its own replica.

Writes and read barriers are the Raft driver's own (`RaftDriver.propose`, whose forwarded
writes share one `Raft/ProposeStream` to the leader, and `linearizable_read`). A network
create takes the same route (`RaftDriver.on_leader`): chosen again while leadership moves, when
a leader answers "not the leader" or a connection cannot be made (the request surely did not
arrive), until the deadline; with no leader known for two election timeouts the call fails
with Docker's "The swarm does not have a leader". A connection lost mid-call is not retried:
the leader may have carried it out. Its channels to the leader stay open between calls (one
TLS handshake per leader), and calls go through the lab's faults (`faults_grpc.py`) as every
other call on 2377. A write answers once this manager has applied it, so its client reads it
here next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import grpc

from controlplane.faults_grpc import caller_metadata
from controlplane.manager.network_create import NetworkCreator
from controlplane.manager.refusals import refusal_from
from controlplane.pb import control_pb2, control_pb2_grpc
from controlplane.pb.objects_pb2 import Network, NetworkSpec
from controlplane.raft.driver import RaftDriver
from controlplane.raft.errors import ProposalTimeoutError, TransportError, rpc_error
from controlplane.raft.transport import GRPC_OPTIONS, TLS_OPTIONS, reach

if TYPE_CHECKING:
    from controlplane.pb.control_pb2_grpc import ControlAsyncStub

T = TypeVar("T")


class LeaderCalls:
    def __init__(
        self,
        driver: RaftDriver,
        networks: NetworkCreator,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._driver = driver
        self._networks = networks
        self._credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def create_network(self, spec: NetworkSpec, timeout: float) -> Network:
        """Create a network on the leader; once this manager's store has it, return it as
        committed. Raises what `NetworkCreator.create` raises, wherever it ran."""
        deadline = self._now() + timeout

        async def local() -> tuple[int, Network]:
            return await self._networks.create(spec, self._remaining(deadline))

        async def remote(channel: grpc.aio.Channel) -> tuple[int, Network]:
            request = control_pb2.CreateNetworkRequest(
                spec=spec, timeout_seconds=self._remaining(deadline)
            )
            stub: ControlAsyncStub = control_pb2_grpc.ControlStub(channel)
            response: control_pb2.CreateNetworkResponse = await stub.CreateNetwork(
                request, timeout=self._remaining(deadline), metadata=caller_metadata()
            )
            return response.index, response.network

        async def forward(address: str) -> tuple[int, Network]:
            return await self._forward(address, remote, deadline)

        index, network = await self._driver.on_leader(local, forward, deadline)
        await self._driver.wait_applied(index, self._remaining(deadline))
        return network

    async def propose(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        """Commit `data` through the leader; (index, the store's result) once applied here."""
        return await self._driver.propose(data, timeout)

    async def linearizable_read(self, timeout: float) -> int:
        """Wait until this manager's store holds every write committed before the call."""
        return await self._driver.linearizable_read(timeout)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close(grace=None)

    # ---- routing ----------------------------------------------------------------------------

    async def _forward(
        self,
        address: str,
        remote: Callable[[grpc.aio.Channel], Awaitable[T]],
        deadline: float,
    ) -> T:
        channel = self._channel(address)
        await reach(channel, address, self._remaining(deadline), refused_at_once=True)
        try:
            return await remote(channel)
        except grpc.aio.AioRpcError as err:
            refusal = refusal_from(err)
            if refusal is not None:
                raise refusal from None
            error = rpc_error(err)
            if isinstance(error, TransportError):  # connected, then lost: outcome unknown
                error = ProposalTimeoutError(f"connection to {address} lost mid-request")
            raise error from err

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(address, self._credentials, TLS_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(address, GRPC_OPTIONS)
            self._channels[address] = channel
        return channel

    def _remaining(self, deadline: float) -> float:
        return max(0.0, deadline - self._now())

    def _now(self) -> float:
        """The event loop's clock (the driver's deadlines are in it). The loop is looked up
        once: Python 3.11's `get_running_loop()` makes a getpid() system call each time, and a
        write asks for the time three times here."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()
