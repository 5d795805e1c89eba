"""The gRPC transport between managers, over real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest
from polling import eventually

from controlplane.pb import raft_pb2
from controlplane.raft.errors import TransportError
from controlplane.raft.transport import GRPC_OPTIONS, SERVER_OPTIONS, Transport
from controlplane.raft.types import Message, MessageType

CLUSTER = 0x5EED
SENDER = "127.77.150.1:2377"
RECEIVER = "127.77.150.2:2377"


class Inbox:
    """A RaftHandler that only collects what arrives."""

    cluster_id = CLUSTER

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.closed_links: list[int] = []

    def deliver(self, message: Message) -> None:
        self.messages.append(message)

    def link_closed(self, node_id: int) -> None:
        self.closed_links.append(node_id)

    async def join(self, request: raft_pb2.JoinRequest) -> raft_pb2.JoinResponse:
        raise NotImplementedError

    async def leave(self, request: raft_pb2.LeaveRequest) -> None:
        raise NotImplementedError

    async def propose_local(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        raise NotImplementedError

    async def read_index_local(self, timeout: float) -> int:
        raise NotImplementedError

    def status(self) -> raft_pb2.StatusResponse:
        raise NotImplementedError


def vote_request(term: int) -> Message:
    return Message(MessageType.PRE_VOTE, to=2, frm=1, term=term, index=7, log_term=3)


def test_a_message_to_a_restarted_peer_is_not_lost_on_the_stale_stream() -> None:
    """Followers write to each other only during elections, so their stream to a peer that
    restarted since is stale; the first write fails on it and must go out again on a new
    stream, or the vote request is lost and the election waits a whole extra timeout."""

    async def scenario() -> None:
        sender = Transport(Inbox())
        first, second = Inbox(), Inbox()
        receiver = Transport(first)
        await sender.start(SENDER)
        await receiver.start(RECEIVER)
        try:
            await sender.set_peers({2: RECEIVER})
            sender.send(vote_request(term=5))
            await eventually("the first message", lambda: first.messages)
            assert first.messages == [vote_request(term=5)]

            await receiver.stop()  # the peer dies...
            receiver = Transport(second)
            await receiver.start(RECEIVER)  # ...and comes back, with nothing sent meanwhile
            sender.send(vote_request(term=6))
            await eventually("the message sent after the restart", lambda: second.messages)
            assert second.messages == [vote_request(term=6)]
        finally:
            await sender.stop()
            await receiver.stop()

    asyncio.run(scenario())


def test_a_peer_is_not_delivering_while_sends_to_it_fail() -> None:
    """What `docker node ls` shows as Unreachable on a new leader: its first send to a dead
    peer fails, where the Raft core would count the peer as heard for an election timeout;
    the peer is delivering again once a send gets through."""

    async def scenario() -> None:
        sender, inbox = Transport(Inbox()), Inbox()
        await sender.start(SENDER)
        receiver: Transport | None = None
        try:
            await sender.set_peers({2: RECEIVER})  # nothing listens there yet
            assert sender.delivering(2)
            sender.send(vote_request(term=5))
            await eventually("the failed send", lambda: not sender.delivering(2))
            receiver = Transport(inbox)
            await receiver.start(RECEIVER)
            sender.send(vote_request(term=6))
            await eventually("a delivered message", lambda: inbox.messages)
            await eventually("delivering again", lambda: sender.delivering(2))
        finally:
            await sender.stop()
            if receiver is not None:
                await receiver.stop()

    asyncio.run(scenario())


def test_the_receiver_hears_when_the_senders_stream_ends() -> None:
    """A crashed leader's OS closes its sockets: its followers learn it at once (the core
    takes it as a hint to campaign early, see `RaftNode.report_leader_gone`)."""

    async def scenario() -> None:
        sender, inbox = Transport(Inbox()), Inbox()
        receiver = Transport(inbox)
        await sender.start(SENDER)
        await receiver.start(RECEIVER)
        try:
            await sender.set_peers({2: RECEIVER})
            sender.send(vote_request(term=5))
            await eventually("the message", lambda: inbox.messages)
            assert inbox.closed_links == []
            await sender.stop()
            await eventually("the end of the stream", lambda: inbox.closed_links)
            assert inbox.closed_links == [1]
        finally:
            await sender.stop()
            await receiver.stop()

    asyncio.run(scenario())


def test_the_server_takes_the_keepalive_pings_its_clients_send() -> None:
    """A stream idle for long (`docker service logs -f` of a quiet service) gets the client's
    keepalive pings only; a server that allows fewer answers GOAWAY "too_many_pings" after
    two strikes, and the CLI printed `Error grabbing logs: ... Too many pings` after 30 s."""
    client = dict(GRPC_OPTIONS)
    server = dict(SERVER_OPTIONS)
    assert client["grpc.keepalive_permit_without_calls"] == 1
    assert (
        server["grpc.http2.min_ping_interval_without_data_ms"] <= client["grpc.keepalive_time_ms"]
    )


def test_a_port_taken_on_every_address_is_named_in_the_error() -> None:
    """A dockerd in swarm mode listens on *:2377: a lab node's Raft port on a loopback address
    cannot be bound, and `swarmlab up` said `internal error: RuntimeError: Failed to bind`."""

    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("0.0.0.0", 0))
            taken.listen()
            port = taken.getsockname()[1]
            transport = Transport(Inbox())
            words = r"127\.77\.125\.1:\d+: the address is in use .*dockerd in swarm mode"
            with pytest.raises(TransportError, match=words):
                await transport.start(f"127.77.125.1:{port}")
            await transport.stop()

    asyncio.run(scenario())
