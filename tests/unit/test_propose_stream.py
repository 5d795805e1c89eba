"""A follower's forwarded proposals on one `Raft/ProposeStream` to the leader, over real
sockets on loopback: answers matched out of order, the leader's errors as a unary Propose
gives them, and a leader that goes away."""

from __future__ import annotations

import asyncio

import pytest
from polling import eventually

from controlplane.pb import raft_pb2
from controlplane.raft.core import NotLeaderError
from controlplane.raft.errors import (
    InvalidRequestError,
    ProposalTimeoutError,
    RaftError,
    RemoteNotLeaderError,
    TransportError,
)
from controlplane.raft.transport import Transport
from controlplane.raft.types import Message

CLUSTER = 0x5EED
# Each test its own leader address: tests of one file run in parallel (-n 2).
OUT_OF_ORDER, ERRORS, GONE, NOWHERE = (f"127.77.233.{n}:2377" for n in (2, 3, 4, 9))


class HeldLeader:
    """A RaftHandler whose proposals wait until the test applies them (or fails them)."""

    cluster_id = CLUSTER

    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[tuple[int, bytes]]] = {}

    async def propose_local(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        future = self.waiting[data] = asyncio.get_running_loop().create_future()
        return await future

    def apply(self, data: bytes, index: int) -> None:
        self.waiting.pop(data).set_result((index, b"applied " + data))

    def fail(self, data: bytes, err: Exception) -> None:
        self.waiting.pop(data).set_exception(err)

    def deliver(self, message: Message) -> None:
        pass

    def link_closed(self, node_id: int) -> None:
        pass

    async def join(self, request: raft_pb2.JoinRequest) -> raft_pb2.JoinResponse:
        raise NotImplementedError

    async def leave(self, request: raft_pb2.LeaveRequest) -> None:
        raise NotImplementedError

    async def read_index_local(self, timeout: float) -> int:
        raise NotImplementedError

    def status(self) -> raft_pb2.StatusResponse:
        raise NotImplementedError


async def started(handler: HeldLeader, address: str) -> Transport:
    transport = Transport(handler)  # type: ignore[arg-type]  # only what proposals use
    await transport.start(address)
    return transport


def test_proposals_on_one_stream_are_answered_out_of_order_each_to_its_caller() -> None:
    async def scenario() -> None:
        leader = HeldLeader()
        server = await started(leader, OUT_OF_ORDER)
        follower = Transport(HeldLeader())  # type: ignore[arg-type]
        try:
            first = asyncio.create_task(follower.propose(OUT_OF_ORDER, b"first", 5.0))
            second = asyncio.create_task(follower.propose(OUT_OF_ORDER, b"second", 5.0))
            await eventually("both at the leader", lambda: len(leader.waiting) == 2)
            leader.apply(b"second", 8)
            assert await second == (8, b"applied second")
            assert not first.done()
            leader.apply(b"first", 9)
            assert await first == (9, b"applied first")
        finally:
            await follower.stop()
            await server.stop()

    asyncio.run(scenario())


def test_the_leaders_errors_come_back_as_a_unary_propose_gives_them_the_stream_goes_on() -> None:
    async def scenario() -> None:
        leader = HeldLeader()
        server = await started(leader, ERRORS)
        follower = Transport(HeldLeader())  # type: ignore[arg-type]
        try:
            refusals = [
                (b"deposed", NotLeaderError(7), RemoteNotLeaderError),
                (b"bad", InvalidRequestError("no such thing"), InvalidRequestError),
                (b"bug", RuntimeError("a bug on the leader"), RaftError),
            ]
            for data, err, expected in refusals:
                call = asyncio.create_task(follower.propose(ERRORS, data, 5.0))
                await eventually("the proposal at the leader", lambda d=data: d in leader.waiting)
                leader.fail(data, err)
                with pytest.raises(expected) as raised:
                    await call
                assert str(err) in str(raised.value)
            after = asyncio.create_task(follower.propose(ERRORS, b"after", 5.0))
            await eventually("the next proposal", lambda: b"after" in leader.waiting)
            leader.apply(b"after", 3)
            assert await after == (3, b"applied after")
        finally:
            await follower.stop()
            await server.stop()

    asyncio.run(scenario())


def test_a_leader_gone_mid_proposal_leaves_it_unknown_and_a_new_stream_serves_the_next() -> None:
    async def scenario() -> None:
        leader = HeldLeader()
        server = await started(leader, GONE)
        follower = Transport(HeldLeader())  # type: ignore[arg-type]
        try:
            lost = asyncio.create_task(follower.propose(GONE, b"lost", 5.0))
            await eventually("the proposal at the leader", lambda: b"lost" in leader.waiting)
            await server.stop()  # the leader's process goes away with the proposal in flight
            with pytest.raises(ProposalTimeoutError):
                await lost
            again = HeldLeader()
            server = await started(again, GONE)
            next_one = asyncio.create_task(follower.propose(GONE, b"next", 5.0))
            await eventually("the proposal at the new process", lambda: b"next" in again.waiting)
            again.apply(b"next", 1)
            assert await next_one == (1, b"applied next")
        finally:
            await follower.stop()
            await server.stop()

    asyncio.run(scenario())


def test_no_leader_listening_is_a_transport_error_the_proposal_surely_never_left() -> None:
    async def scenario() -> None:
        follower = Transport(HeldLeader())  # type: ignore[arg-type]
        try:
            with pytest.raises(TransportError, match="cannot connect"):
                await follower.propose(NOWHERE, b"nowhere", 0.3)
        finally:
            await follower.stop()

    asyncio.run(scenario())
