"""gRPC transport between managers on 2377 (grpc.aio).

Outbound, each peer has its own bounded queue and its own long-lived client stream, so a peer
that is down or slow never delays the others: when its queue is full, messages to it are dropped
(Raft retransmits) and counted. Snapshots travel on a separate stream in fixed-size chunks.
Inbound, the servicer checks what it is given (cluster id, sender, chunk order, sizes) and hands
good messages to a `RaftHandler`, which is the driver.

Credentials are pluggable: pass grpc server/channel credentials for mutual TLS, or none for
plain TCP on loopback labs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import grpc

from controlplane.accept_pumps import AcceptPumps
from controlplane.faults import FAULTS
from controlplane.faults_grpc import PartitionedError, caller_metadata, wait_transmit
from controlplane.generic_handlers import register_generic
from controlplane.pb import raft_pb2, raft_pb2_grpc
from controlplane.raft.codec import CodecError, message_from_pb, message_to_pb
from controlplane.raft.errors import (
    ERROR_TRAILER,
    ProposalTimeoutError,
    TransportError,
    error_from_kind,
    error_kind,
    rpc_error,
    status_code,
)
from controlplane.raft.types import Message, MessageType, Snapshot
from controlplane.stream_calls import StreamAnswers, StreamCalls, answered_error

log = logging.getLogger("controlplane.raft.transport")
T = TypeVar("T")

MAX_GRPC_MESSAGE = 16 << 20
SNAPSHOT_CHUNK = 1 << 20
MAX_SNAPSHOT = 2 << 30
PEER_QUEUE = 4096
BATCH_BYTES = 4 << 20
# Proposals one ProposeStream may have in flight on the leader (a follower forwards each of
# its clients' writes there); past it the stream's next message waits for an answer.
MAX_PROPOSALS_IN_FLIGHT = 1024

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # gRPC waits 1 s before the first reconnect, growing to 120 s: a manager back from a
    # restart would not hear from its peers for that long. Capped at 250 ms (with the
    # peer stream's own backoff, below): a restarted lab manager hears its leader 0.3 s
    # after it starts (median of 10), where a 1 s cap took 0.8 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 250),
]
# The server must accept the clients' keepalive pings on idle streams (a `docker service logs
# -f` with nothing to say, an idle watch): gRPC's default allows one per 5 minutes and after
# two early ones answers GOAWAY "too_many_pings", which ended such streams after 30 s.
SERVER_OPTIONS = [*GRPC_OPTIONS, ("grpc.http2.min_ping_interval_without_data_ms", 5_000)]


class RaftHandler(Protocol):
    """What the transport needs from the node it serves (implemented by the driver)."""

    cluster_id: int

    def deliver(self, message: Message) -> None: ...

    def link_closed(self, node_id: int) -> None: ...

    async def join(self, request: raft_pb2.JoinRequest) -> raft_pb2.JoinResponse: ...

    async def leave(self, request: raft_pb2.LeaveRequest) -> None: ...

    async def propose_local(self, data: bytes, timeout: float) -> tuple[int, bytes]: ...

    async def read_index_local(self, timeout: float) -> int: ...

    def status(self) -> raft_pb2.StatusResponse: ...


@dataclass
class Credentials:
    """TLS material for 2377; `None` fields mean plain TCP. `interceptors` authorize calls
    (see `manager/authz.py`)."""

    server: grpc.ServerCredentials | None = None
    channel: grpc.ChannelCredentials | None = None
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = ()


# Managers are named by role in their certificates (they carry no IP address), so a client
# checks "is this a manager of my swarm" rather than "is this the host I dialled".
TLS_OPTIONS = [*GRPC_OPTIONS, ("grpc.ssl_target_name_override", "swarm-manager")]


class _OnceLogger:
    """Logs a given (peer, reason) once until it recovers, so a dead peer does not flood logs."""

    def __init__(self) -> None:
        self._seen: dict[object, set[str]] = {}

    def warn(self, key: object, reason: str, text: str) -> None:
        reasons = self._seen.setdefault(key, set())
        if reason not in reasons:
            reasons.add(reason)
            log.warning(text)

    def clear(self, key: object) -> None:
        if key in self._seen:
            del self._seen[key]


def _each(requests: AsyncIterator[T] | Iterator[T]) -> AsyncIterator[T]:
    """Requests of a client stream; grpc.aio hands an async iterator (used as it is: a
    wrapping generator costs a resumption per message), the stubs allow a plain one too."""
    if isinstance(requests, Iterator):
        return _from_plain(requests)
    return requests


async def _from_plain(requests: Iterator[T]) -> AsyncIterator[T]:
    for request in requests:
        yield request


class _Peer:
    """The outbound side to one peer: a queue drained into one client stream.

    Each stream write carries everything queued at that moment (up to a size budget). When
    the stream breaks, the call is cancelled and a new one opened after a backoff; messages
    in flight are lost, which Raft tolerates by design.
    """

    def __init__(self, transport: Transport, node_id: int, address: str) -> None:
        self.node_id = node_id
        self.address = address
        self.queue: asyncio.Queue[raft_pb2.Message] = asyncio.Queue(PEER_QUEUE)
        self.dropped = 0
        self._transport = transport
        self.channel = transport.open_channel(address)
        self.stub = raft_pb2_grpc.RaftStub(self.channel)
        self._task = asyncio.create_task(self._run(), name=f"raft-peer-{node_id:016x}")

    async def _run(self) -> None:
        # Reconnect at once the first time: a broken stream usually means the peer restarted
        # since we last wrote to it (followers write to each other only during elections).
        backoff = 0.0
        retry: raft_pb2.MessageBatch | None = None
        while True:
            # No request iterator: grpc.aio then lets us write() to the call directly.
            call = self.stub.Stream(metadata=caller_metadata())  # type: ignore[call-arg]
            batch = retry
            try:
                while True:
                    if batch is None:
                        batch = await self._next_batch()
                    await call.write(batch)
                    batch = retry = None
                    backoff = 0.0
                    self._transport.reachable(self.node_id)
            except asyncio.CancelledError:
                call.cancel()
                raise
            except Exception as err:  # a broken stream, whatever grpc calls it
                call.cancel()
                self._transport.unreachable(self.node_id, _describe(err))
                # A write that failed on a stale stream never left: send it once more on the
                # new one. Dropping it cost an election a whole extra timeout when it was a
                # vote request to a follower restarted since (measured: 1-1.3 s per failover).
                retry = batch if retry is None else None
                await asyncio.sleep(backoff)
                backoff = min(max(2 * backoff, 0.05), 0.25)

    async def _next_batch(self) -> raft_pb2.MessageBatch:
        batch = raft_pb2.MessageBatch()
        batch.messages.append(await self.queue.get())
        size = batch.messages[0].ByteSize()
        while size < BATCH_BYTES and not self.queue.empty():
            message = self.queue.get_nowait()
            size += message.ByteSize()
            batch.messages.append(message)
        return batch

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.channel.close(None)


def _describe(err: Exception) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    return repr(err)


class Transport:
    def __init__(self, handler: RaftHandler, credentials: Credentials | None = None) -> None:
        self._handler = handler
        self._credentials = credentials or Credentials()
        self._peers: dict[int, _Peer] = {}
        self._server: grpc.aio.Server | None = None
        self._accept_pumps: AcceptPumps | None = None
        self._snapshot_tasks: set[asyncio.Task[None]] = set()
        self._call_channels: dict[str, grpc.aio.Channel] = {}  # see `call`
        self._propose_streams: dict[str, StreamCalls[Any, raft_pb2.ProposeResponse]] = {}
        self._request_ids = 0
        self._warned = _OnceLogger()
        self._failing: set[int] = set()  # peers whose last send failed
        # Called with (peer id, failed) once a snapshot stream ends.
        self.on_snapshot_sent: Callable[[int, bool], None] = lambda _peer, _failed: None
        # Fills in a snapshot the core handed out without its data (the driver keeps the data
        # on disk); called in a thread, it may read files.
        self.load_snapshot: Callable[[Snapshot], Snapshot] = lambda snapshot: snapshot
        self.on_unreachable: Callable[[int], None] = lambda _peer: None

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(
        self, listen: str, services: Sequence[Callable[[grpc.aio.Server], None]] = ()
    ) -> None:
        """Serve Raft, plus any other services sharing port 2377, on `listen`."""
        interceptors = list(self._credentials.interceptors)
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors or None)
        servicer = _Servicer(self._handler, self._warned)
        handlers = register_generic(
            server,
            [lambda s: raft_pb2_grpc.add_RaftServicer_to_server(servicer, s), *services],
        )
        pumps = AcceptPumps.register(server, handlers, interceptors)
        try:
            if self._credentials.server is not None:
                port = server.add_secure_port(listen, self._credentials.server)
            else:
                port = server.add_insecure_port(listen)
        except RuntimeError:  # grpcio raises this where older versions returned port 0
            port = 0
        if port == 0:
            raise TransportError(
                f"cannot listen on {listen}: the address is in use (another process listens "
                f"on its port, maybe on every address: a dockerd in swarm mode holds *:2377) "
                f"or not available"
            )
        await server.start()
        pumps.start()
        self._server = server
        self._accept_pumps = pumps

    async def stop(self) -> None:
        for task in self._snapshot_tasks:
            task.cancel()
        for peer in list(self._peers.values()):
            await peer.close()
        self._peers.clear()
        streams, self._propose_streams = self._propose_streams, {}
        for stream in streams.values():
            await stream.close()
        channels, self._call_channels = self._call_channels, {}
        for channel in channels.values():
            await channel.close(None)
        if self._server is not None:
            await self._server.stop(grace=0.2)
        if self._accept_pumps is not None:
            await self._accept_pumps.drain()

    def open_channel(self, address: str) -> grpc.aio.Channel:
        if self._credentials.channel is not None:
            return grpc.aio.secure_channel(address, self._credentials.channel, TLS_OPTIONS)
        return grpc.aio.insecure_channel(address, GRPC_OPTIONS)

    # ---- peers ------------------------------------------------------------------------------

    async def set_peers(self, peers: dict[int, str]) -> None:
        """Make the outbound side match the membership (id -> address), ourselves excluded."""
        for node_id in list(self._peers):
            if peers.get(node_id) != self._peers[node_id].address:
                await self._peers.pop(node_id).close()
                self._failing.discard(node_id)
        for node_id, address in peers.items():
            if node_id not in self._peers:
                self._peers[node_id] = _Peer(self, node_id, address)

    def reachable(self, node_id: int) -> None:
        self._warned.clear(node_id)
        self._failing.discard(node_id)

    def unreachable(self, node_id: int, reason: str) -> None:
        self._warned.warn(node_id, "down", f"event=peer_unreachable peer={node_id:016x} {reason}")
        self._failing.add(node_id)
        self.on_unreachable(node_id)

    def delivering(self, node_id: int) -> bool:
        """False while sends to the peer fail (swarmkit's `transport.Active`): a new leader
        knows a dead peer is gone at its first send, long before an election timeout."""
        return node_id not in self._failing

    # ---- sending ----------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        peer = self._peers.get(message.to)
        if peer is None:
            # Not a member we know how to reach (yet): Raft will retry; a snapshot must be
            # reported as failed or the follower would wait for it forever.
            if message.type is MessageType.SNAPSHOT:
                self.on_snapshot_sent(message.to, True)
            return
        # Lab faults (controlplane/faults.py): a partition or loss drops the message, as
        # the network would; a delay holds it back.
        if FAULTS.should_drop(peer.address):
            if message.type is MessageType.SNAPSHOT:
                self.on_snapshot_sent(message.to, True)
            return
        delay = FAULTS.delay_for(peer.address)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._enqueue, peer, message)
        else:
            self._enqueue(peer, message)

    def _enqueue(self, peer: _Peer, message: Message) -> None:
        if message.type is MessageType.SNAPSHOT:
            task = asyncio.create_task(self._send_snapshot(peer, message))
            self._snapshot_tasks.add(task)
            task.add_done_callback(self._snapshot_tasks.discard)
            return
        try:
            peer.queue.put_nowait(message_to_pb(message, self._handler.cluster_id))
        except asyncio.QueueFull:
            peer.dropped += 1
            self._warned.warn(
                peer.node_id, "full", f"event=peer_queue_full peer={peer.node_id:016x} dropping"
            )
            self.on_unreachable(peer.node_id)

    async def _send_snapshot(self, peer: _Peer, message: Message) -> None:
        assert message.snapshot is not None
        snapshot = message.snapshot
        if not snapshot.data:
            try:
                snapshot = await asyncio.to_thread(self.load_snapshot, snapshot)
            except Exception as err:
                log.error("event=snapshot_unreadable peer=%016x error=%r", peer.node_id, str(err))
                self.on_snapshot_sent(peer.node_id, True)
                return
            message = replace(message, snapshot=snapshot)
        data = snapshot.data
        header = message_to_pb(message, self._handler.cluster_id)

        async def chunks() -> AsyncIterator[raft_pb2.SnapshotChunk]:
            offset = 0
            while True:
                piece = data[offset : offset + SNAPSHOT_CHUNK]
                last = offset + len(piece) >= len(data)
                yield raft_pb2.SnapshotChunk(
                    message=header if offset == 0 else None,
                    offset=offset,
                    data=piece,
                    last=last,
                    total_size=len(data),
                )
                offset += len(piece)
                if last:
                    return

        failed = True
        try:
            await peer.stub.InstallSnapshot(chunks(), timeout=60 + len(data) / (1 << 20))
            failed = False
            log.info(
                "event=snapshot_sent peer=%016x index=%d bytes=%d",
                peer.node_id,
                snapshot.meta.index,
                len(data),
            )
        except grpc.aio.AioRpcError as err:
            log.warning("event=snapshot_failed peer=%016x error=%s", peer.node_id, err.details())
        finally:
            # Always report, even when cancelled: the leader waits for this to move on.
            self.on_snapshot_sent(peer.node_id, failed)

    # ---- requests to a given manager --------------------------------------------------------

    async def call(
        self, address: str, method: str, request: Any, timeout: float, *, to_leader: bool = False
    ) -> Any:
        """A unary Raft request to a manager that may not be a peer (join, forwarding).
        `to_leader`: the request goes to whoever leads and its caller tries the next leader
        on a `TransportError` (`RaftDriver.on_leader`), so a refused connection fails at once.

        The channel to each address stays open between calls: a follower forwards every
        write it is given to the leader, and a channel per call (a connection, and on 2377 a
        TLS handshake) cost more than the write itself (bench/README.md, session 8)."""
        channel = self._call_channel(address)
        try:
            return await call_on(
                channel, address, method, request, timeout, refused_at_once=to_leader
            )
        except TransportError:
            if not to_leader:
                await self._forget(address)
            raise

    async def propose(self, address: str, data: bytes, timeout: float) -> tuple[int, bytes]:
        """Forward a proposal to the leader at `address`: (index, result) once the leader
        has applied it. Proposals to one address share one long-lived `ProposeStream` (a
        message on it costs the leader about a third of a unary call's gRPC work); errors
        are those of a unary `Propose` (see `call_on`); a refused connection fails at once,
        as for `call(..., to_leader=True)`."""
        channel = self._call_channel(address)
        await reach(channel, address, timeout, refused_at_once=True)
        stream = self._propose_streams.get(address)
        if stream is None or stream.broken:
            if stream is not None:
                await stream.close()
            # No request iterator: grpc.aio then lets the stream write() and read() directly.
            call = raft_pb2_grpc.RaftStub(channel).ProposeStream(metadata=caller_metadata())  # type: ignore[call-arg]
            stream = self._propose_streams[address] = StreamCalls(
                call, _request_id_of, f"proposal stream to {address}"
            )
        self._request_ids += 1
        request = raft_pb2.ProposeRequest(
            data=data, timeout_seconds=timeout, request_id=self._request_ids
        )
        response = await stream.request(request, request.request_id, timeout + 1.0)
        if response.error_kind:
            raise error_from_kind(response.error_kind, response.error_message)
        return response.index, response.result

    async def _forget(self, address: str) -> None:
        """Close the channel (and proposal stream) to a manager we could not reach: the next
        request opens a fresh one. A kept channel to a manager that died waits out gRPC's
        reconnect backoff once it is back, and failovers measured 1.5-3.8 s instead of
        0.1-0.5 s in 7 of 8 trials (`bench/cluster.py`, the lab profile) when it was kept."""
        stream = self._propose_streams.pop(address, None)
        if stream is not None:
            await stream.close()
        channel = self._call_channels.pop(address, None)
        if channel is not None:
            await channel.close(None)

    def _call_channel(self, address: str) -> grpc.aio.Channel:
        channel = self._call_channels.get(address)
        if channel is None:
            channel = self._call_channels[address] = self.open_channel(address)
        return channel


def _request_id_of(response: raft_pb2.ProposeResponse) -> int:
    return response.request_id


async def call(
    address: str,
    method: str,
    request: Any,
    timeout: float,
    credentials: grpc.ChannelCredentials | None = None,
    stub_class: Callable[[grpc.aio.Channel], Any] = raft_pb2_grpc.RaftStub,
) -> Any:
    """One unary gRPC request to a manager on a channel of its own (a joiner's, before it
    has a transport); see `call_on`."""
    channel = (
        grpc.aio.secure_channel(address, credentials, TLS_OPTIONS)
        if credentials is not None
        else grpc.aio.insecure_channel(address, GRPC_OPTIONS)
    )
    async with channel:
        return await call_on(channel, address, method, request, timeout, stub_class)


async def call_on(
    channel: grpc.aio.Channel,
    address: str,
    method: str,
    request: Any,
    timeout: float,
    stub_class: Callable[[grpc.aio.Channel], Any] = raft_pb2_grpc.RaftStub,
    *,
    refused_at_once: bool = False,
) -> Any:
    """One unary gRPC request to the manager at `address` on `channel`.

    Raises `TransportError` when no connection could be made (the request surely did not
    arrive; see `reach` for `refused_at_once`), the remote's own error when it answered with
    one, and `ProposalTimeoutError` when the link failed mid-call (the outcome is unknown).
    """
    await reach(channel, address, timeout, refused_at_once=refused_at_once)
    try:
        return await getattr(stub_class(channel), method)(
            request, timeout=timeout, metadata=caller_metadata()
        )
    except grpc.aio.AioRpcError as err:
        error = rpc_error(err)
        if isinstance(error, TransportError):
            # Connected, then lost: the request may have been carried out.
            error = ProposalTimeoutError(f"connection to {address} lost mid-request")
        raise error from err


async def reach(
    channel: grpc.aio.Channel, address: str, timeout: float, *, refused_at_once: bool = False
) -> None:
    """Wait until a request could leave for `address`: `TransportError` (the request surely
    did not arrive) if no connection comes within a second at most, or if the lab's faults
    (controlplane/faults.py) partition us from it. `refused_at_once`: also as soon as a
    connection attempt fails (a dead manager's port refuses at once), rather than through
    gRPC's reconnect attempts for that second: a follower forwarding to a leader that just
    died then learns the next leader's address a second sooner (`swarmlab failover`: the first
    write 1.11 s after the kill, every trial, with the new leader elected in 0.05-0.5 s)."""
    try:
        connect_wait = max(0.05, min(timeout, 1.0))
        await wait_transmit(address, connect_wait)
        ready = _connected_or_refused(channel) if refused_at_once else channel.channel_ready()
        await asyncio.wait_for(ready, timeout=connect_wait)
    except (TimeoutError, PartitionedError, ConnectionRefusedError) as err:
        raise TransportError(f"cannot connect to {address}") from err


async def _connected_or_refused(channel: grpc.aio.Channel) -> None:
    """Until `channel` is connected; `ConnectionRefusedError` once an attempt has failed."""
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            raise ConnectionRefusedError
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


class _Servicer(raft_pb2_grpc.RaftServicer):
    def __init__(self, handler: RaftHandler, warned: _OnceLogger) -> None:
        self._handler = handler
        self._warned = warned

    def _accept(self, pb: raft_pb2.Message, data: bytes = b"") -> Message | None:
        if pb.cluster_id != self._handler.cluster_id:
            self._warned.warn(
                pb.cluster_id,
                "cluster",
                f"event=foreign_message from={pb.__getattribute__('from'):016x} "
                f"cluster={pb.cluster_id:016x} ours={self._handler.cluster_id:016x} dropped",
            )
            return None
        try:
            return message_from_pb(pb, data)
        except CodecError as err:
            self._warned.warn("codec", str(err), f"event=malformed_message error={err!r}")
            return None

    async def Stream(
        self,
        request_iterator: AsyncIterator[raft_pb2.MessageBatch] | Iterator[raft_pb2.MessageBatch],
        context: grpc.aio.ServicerContext[raft_pb2.MessageBatch, raft_pb2.Ack],
    ) -> raft_pb2.Ack:
        sender = 0  # a stream carries one peer's messages
        try:
            async for batch in _each(request_iterator):
                for pb in batch.messages:
                    message = self._accept(pb)
                    if message is not None:
                        sender = message.frm
                        self._handler.deliver(message)
        finally:
            # Ended, failed or cancelled (the peer's process died: its OS closed the socket).
            if sender:
                self._handler.link_closed(sender)
        return raft_pb2.Ack()

    async def InstallSnapshot(
        self,
        request_iterator: AsyncIterator[raft_pb2.SnapshotChunk] | Iterator[raft_pb2.SnapshotChunk],
        context: grpc.aio.ServicerContext[raft_pb2.SnapshotChunk, raft_pb2.Ack],
    ) -> raft_pb2.Ack:
        header: raft_pb2.Message | None = None
        buffer = bytearray()
        async for chunk in _each(request_iterator):
            if header is None:
                if not chunk.HasField("message") or chunk.offset != 0:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, "snapshot stream must start at offset 0"
                    )
                header = chunk.message
            if chunk.offset != len(buffer):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"snapshot chunk out of order: offset {chunk.offset}, expected {len(buffer)}",
                )
            if chunk.total_size > MAX_SNAPSHOT or len(buffer) + len(chunk.data) > MAX_SNAPSHOT:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "snapshot too large")
            buffer += chunk.data
            if chunk.last:
                if len(buffer) != chunk.total_size:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"snapshot truncated: {len(buffer)} of {chunk.total_size} bytes",
                    )
                break
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "snapshot stream ended early")
        assert header is not None
        message = self._accept(header, bytes(buffer))
        if message is None or message.type is not MessageType.SNAPSHOT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a snapshot message")
        assert message is not None
        self._handler.deliver(message)
        return raft_pb2.Ack()

    async def Join(
        self,
        request: raft_pb2.JoinRequest,
        context: grpc.aio.ServicerContext[raft_pb2.JoinRequest, raft_pb2.JoinResponse],
    ) -> raft_pb2.JoinResponse:
        return await answer_rpc(context, self._handler.join(request))

    async def Leave(
        self,
        request: raft_pb2.LeaveRequest,
        context: grpc.aio.ServicerContext[raft_pb2.LeaveRequest, raft_pb2.Ack],
    ) -> raft_pb2.Ack:
        await answer_rpc(context, self._handler.leave(request))
        return raft_pb2.Ack()

    async def _propose(self, request: raft_pb2.ProposeRequest) -> tuple[int, bytes]:
        timeout = min(max(request.timeout_seconds, 0.1), 120.0)
        return await self._handler.propose_local(request.data, timeout)

    async def Propose(
        self,
        request: raft_pb2.ProposeRequest,
        context: grpc.aio.ServicerContext[raft_pb2.ProposeRequest, raft_pb2.ProposeResponse],
    ) -> raft_pb2.ProposeResponse:
        index, result = await answer_rpc(context, self._propose(request))
        return raft_pb2.ProposeResponse(index=index, result=result)

    async def ProposeStream(  # type: ignore[override]  # grpc.aio: answers by context.write
        self,
        requests: AsyncIterator[raft_pb2.ProposeRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Each request is a proposal of its own, answered once applied (so possibly out of
        order) with its request id, or with the error a unary Propose would fail with."""
        answers = StreamAnswers(context, self._answer_proposal, MAX_PROPOSALS_IN_FLIGHT)
        await answers.serve(_each(requests), "ProposeRequest")

    async def _answer_proposal(self, request: raft_pb2.ProposeRequest) -> raft_pb2.ProposeResponse:
        try:
            index, result = await self._propose(request)
        except Exception as err:
            kind, message = answered_error(err)
            return raft_pb2.ProposeResponse(
                request_id=request.request_id, error_kind=kind, error_message=message
            )
        return raft_pb2.ProposeResponse(request_id=request.request_id, index=index, result=result)

    async def ReadIndex(
        self,
        request: raft_pb2.ReadIndexRequest,
        context: grpc.aio.ServicerContext[raft_pb2.ReadIndexRequest, raft_pb2.ReadIndexResponse],
    ) -> raft_pb2.ReadIndexResponse:
        timeout = min(max(request.timeout_seconds, 0.1), 120.0)
        index = await answer_rpc(context, self._handler.read_index_local(timeout))
        return raft_pb2.ReadIndexResponse(index=index)

    async def Status(
        self,
        request: raft_pb2.StatusRequest,
        context: grpc.aio.ServicerContext[raft_pb2.StatusRequest, raft_pb2.StatusResponse],
    ) -> raft_pb2.StatusResponse:
        return self._handler.status()


async def answer_rpc(context: grpc.aio.ServicerContext[Any, Any], work: Awaitable[T]) -> T:
    """Await a handler call, turning our errors into gRPC statuses with the same message."""
    try:
        return await work
    except Exception as err:
        kind = error_kind(err)
        if kind is None:
            raise
        await context.abort(status_code(kind), str(err), ((ERROR_TRAILER, kind),))
        raise AssertionError("unreachable") from err
