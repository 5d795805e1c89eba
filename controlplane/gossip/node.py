"""A gossip node on real sockets: SWIM and NetworkDB over UDP and TCP on 7946 (asyncio).

The two sans-IO cores (`swim.SwimNode`, `networkdb.NetworkDB`) decide everything; this driver
only moves bytes and time. UDP datagrams carry SWIM packets (NetworkDB's table gossip rides in
their user messages); TCP connections carry one request and one answer each: push-pull state
exchange, NetworkDB bulk sync, the TCP fallback ping, and a view of this node for the CLI.
Every datagram and frame is sealed by `envelope.PacketSealer` (AES-GCM when a keyring is
given). Whatever arrives broken, forged, replayed or malformed is dropped and counted by
reason, and never reaches the cores; the first refusal of each kind from each peer is also
logged (`event=gossip_refused`), the rest only counted, so a misconfigured peer cannot flood
the log.

Swarm members gossip with the managers' keys (`await_keys`): as libnetwork's agent, which is
only set up once the keys are available, such a node seals nothing, accepts nothing and joins
nobody until `set_keys` installs its first keys (from its first dispatcher session message);
`set_keys` then follows every rotation.

TCP frames: a 4-byte big-endian length, then the sealed payload; inside, one byte giving the
length of the sender's name, the name, and the encoded request (or just the encoded answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import random
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.faults import FAULTS, Faults
from controlplane.gossip import codec
from controlplane.gossip.config import GossipConfig
from controlplane.gossip.envelope import EnvelopeError, PacketSealer
from controlplane.gossip.keyring import Keyring, key_id
from controlplane.gossip.networkdb import NetworkDB, NetworkDBConfig
from controlplane.gossip.networkdb_types import (
    BulkSyncRequest,
    ClusterBroadcast,
    EntryView,
    SendTo,
    TableGossip,
    TableSync,
)
from controlplane.gossip.swim import SwimNode
from controlplane.gossip.types import (
    Ack,
    Address,
    EventKind,
    MemberEvent,
    MemberState,
    NodeMeta,
    Packet,
    Ping,
    PushPull,
    PushPullRequest,
    SendPacket,
    TcpPing,
    UserMessage,
    UserMsg,
    UserState,
)

log = logging.getLogger("controlplane.gossip")

MAX_FRAME = 64 << 20
_LENGTH = struct.Struct(">I")
USER_STATE_REFRESH = 1.0  # seconds between refreshes of the NetworkDB state sent in push-pull
JOIN_RETRY_MIN = 0.5  # seconds before the first retry of a join that found nobody
JOIN_RETRY_MAX = 10.0
REFUSALS_LOGGED_MAX = 256  # (reason, peer) pairs logged once each; beyond, refusals are counted


class FrameError(Exception):
    """A TCP exchange failed: the peer is down, slow, or sent something unacceptable."""


@dataclass(frozen=True)
class GossipOptions:
    name: str
    listen: Address
    advertise: Address
    meta: NodeMeta
    config: GossipConfig
    networkdb: NetworkDBConfig
    keyring: Keyring | None = None
    # A swarm member: without `keyring`, wait for `set_keys` instead of gossiping in plaintext.
    await_keys: bool = False


class GossipKeysError(ValueError):
    """Keys given to a node that cannot take them (none, or a plaintext node)."""


class GossipNode:
    def __init__(
        self, options: GossipOptions, rng: random.Random | None = None, faults: Faults = FAULTS
    ) -> None:
        self.options = options
        self._faults = faults  # the lab's partition, delay and loss (controlplane/faults.py)
        self.name = options.name
        self._rng = rng or random.Random()
        self._loop = asyncio.get_running_loop()
        self.swim = SwimNode(
            options.name,
            options.advertise,
            options.meta,
            options.config,
            now=self._loop.time(),
            rng=self._rng,
            # A restart outranks everything said about the previous run (milliseconds).
            incarnation=time.time_ns() // 1_000_000,
        )
        self.networkdb = NetworkDB(options.name, options.networkdb, self._rng)
        self._sealer: PacketSealer | None = (
            None
            if options.await_keys and options.keyring is None
            else PacketSealer(options.keyring)
        )
        self._refusals_logged: set[tuple[str, str]] = set()
        host = options.listen[0]
        self._source = None if host in ("", "0.0.0.0", "::") else (host, 0)
        self.drops: Counter[str] = Counter()
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._wake = asyncio.Event()
        self._sleep_until = -math.inf  # the deadline the loop sleeps until (-inf: awake)
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_user_state = 0.0
        self._seeds: list[Address] = []
        self._next_join = 0.0
        self._join_backoff = JOIN_RETRY_MIN
        self._failed: dict[str, tuple[Address, float]] = {}  # name -> (address, failed since)
        self._next_reconnect = 0.0

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self, seeds: list[Address]) -> None:
        host, port = self.options.listen
        self._udp, _ = await self._loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(host, port)
        )
        self._server = await asyncio.start_server(self._serve_tcp, host, port)
        self._seeds = list(seeds)
        self._loop_task = asyncio.create_task(self._run(), name=f"gossip-{self.name}")
        log.info("event=gossip_started name=%s listen=%s:%d", self.name, host, port)

    async def stop(self, *, leave: bool = True, timeout: float = 3.0) -> None:
        """Leave gracefully (tell the others) unless `leave` is False, then close sockets."""
        if leave and not self.swim.left:
            self.swim.leave(self._loop.time())
            self._wake.set()
            deadline = self._loop.time() + timeout
            while not self.swim.leave_finished and self._loop.time() < deadline:
                await asyncio.sleep(0.02)
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._udp is not None:
            self._udp.close()

    async def _run(self) -> None:
        while True:
            now = self._loop.time()
            self.swim.tick(now)
            self.networkdb.tick(now)
            self._maybe_join(now)
            self._maybe_reconnect(now)
            if now >= self._next_user_state:
                state = codec.encode_network_state(self.networkdb.local_state())
                self.swim.set_user_state(state)
                self._next_user_state = now + USER_STATE_REFRESH
            self._drain()
            deadline = min(
                self.swim.next_deadline(), self.networkdb.next_deadline(), self._next_user_state
            )
            if self._seeds and self._sealer is not None:
                deadline = min(deadline, self._next_join)
            if self._failed:
                deadline = min(deadline, self._next_reconnect)
            self._sleep_until = deadline
            delay = max(0.0, deadline - self._loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            self._sleep_until = -math.inf  # awake: nothing needs to wake us

    def _maybe_join(self, now: float) -> None:
        """Join through the seeds, and again (backing off) while nobody else is known: a seed
        that is not up yet, or a lost push-pull, must not leave this node alone for good."""
        if not self._seeds or now < self._next_join or self._sealer is None:
            return
        if self.swim.member_count(MemberState.ALIVE, MemberState.SUSPECT) > 1:
            self._seeds = []  # we are in: SWIM keeps us there from now on
            return
        self.swim.join(now, self._seeds)
        self._next_join = now + self._join_backoff
        self._join_backoff = min(self._join_backoff * 2, JOIN_RETRY_MAX)

    def _maybe_reconnect(self, now: float) -> None:
        """Remember members declared dead (SWIM forgets them after GossipToTheDeadTime) and,
        every reconnect interval, push-pull with one of them at random, as NetworkDB does: if
        it is back (a healed partition), the exchange tells each side the other lives."""
        config = self.options.config
        for member in self.swim.members():
            if member.name == self.name:
                continue
            if member.state is MemberState.DEAD:
                self._failed.setdefault(member.name, (member.addr, now))
            else:  # alive again, suspect (so in contact), or left on purpose
                self._failed.pop(member.name, None)
        self._failed = {
            name: failure
            for name, failure in self._failed.items()
            if now - failure[1] < config.reconnect_for
        }
        if not self._failed or now < self._next_reconnect or self.swim.left:
            return
        self._next_reconnect = now + config.reconnect_interval
        name = self._rng.choice(sorted(self._failed))
        self.swim.join(now, [self._failed[name][0]])

    # ---- outputs of the cores ---------------------------------------------------------------

    def _drain(self) -> None:
        """Carry out what the cores asked for; loops because each may feed the other."""
        while True:
            outputs: list[Any] = [*self.swim.take_outputs(), *self.networkdb.take_outputs()]
            if not outputs:
                return
            now = self._loop.time()
            for output in outputs:
                self._carry_out(now, output)

    def _carry_out(self, now: float, output: Any) -> None:
        match output:
            case SendPacket(dst, packet):
                self._send_datagram(dst, packet)
            case PushPullRequest(dst, request):
                self._spawn(self._push_pull(dst, request))
            case TcpPing(dst, ping, timeout):
                self._spawn(self._tcp_ping(dst, ping, timeout))
            case MemberEvent(kind, member):
                self._member_event(now, kind, member.name)
            case UserMessage(sender, data):
                self._networkdb_message(now, sender, data)
            case UserState(sender, data, _join):
                try:
                    state = codec.decode_network_state(data)
                except codec.CodecError:
                    self.drops["bad_user_state"] += 1
                    return
                self.networkdb.merge_remote_state(now, sender, state)
            case SendTo(name, message):
                self._send_table_gossip(name, message)
            case ClusterBroadcast(message, key):
                self.swim.queue_broadcast(codec.encode_networkdb(message), key.encode())
            case BulkSyncRequest(name, request):
                self._spawn(self._bulk_sync(name, request))
            case _:
                raise TypeError(f"unknown output {output!r}")

    def _member_event(self, now: float, kind: EventKind, name: str) -> None:
        log.info("event=member_%s name=%s", kind.value.replace("-", "_"), name)
        self._wake.set()  # the loop follows who is dead (`_maybe_reconnect`) at once
        if kind in (EventKind.JOIN, EventKind.ALIVE_AGAIN):
            self.networkdb.node_alive(now, name)
        elif kind is EventKind.DEAD:
            self.networkdb.node_failed(now, name)
        elif kind is EventKind.LEFT:
            self.networkdb.node_left(now, name)

    def _networkdb_message(self, now: float, sender: str, data: bytes) -> None:
        try:
            message = codec.decode_networkdb(data)
        except codec.CodecError:
            self.drops["bad_networkdb_message"] += 1
            return
        self.networkdb.receive(now, sender, message)

    def _address_of(self, name: str) -> Address | None:
        member = self.swim.member(name)
        return member.addr if member is not None else None

    def _send_table_gossip(self, name: str, message: TableGossip) -> None:
        dst = self._address_of(name)
        if dst is None:
            self.drops["unknown_destination"] += 1
            return
        packet = Packet(self.name, (UserMsg(codec.encode_networkdb(message)),))
        self._send_datagram(dst, packet)

    def _send_datagram(self, dst: Address, packet: Packet) -> None:
        if self._udp is None:
            return
        if self._sealer is None:
            self.drops["no_keys_out"] += 1
            return
        if self._faults.should_drop(dst[0]):
            self.drops["lab_fault_out"] += 1
            return
        sealed = self._sealer.seal(codec.encode_packet(packet), now=time.time(), aad=b"udp")
        delay = self._faults.delay_for(dst[0])
        if delay > 0:
            self._loop.call_later(delay, self._udp.sendto, sealed, dst)
        else:
            self._udp.sendto(sealed, dst)

    def _cut_off(self, sender: str, src: Address) -> bool:
        """Whether the lab partitioned this node from `sender` (known by name: on one machine
        every datagram and connection comes from 127.0.0.1)."""
        host = (self._address_of(sender) or src)[0]
        if self._faults.is_partitioned(host):
            self.drops["lab_partition_in"] += 1
            return True
        return False

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- inbound ----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, src: Address) -> None:
        if self._sealer is None:
            self.drops["no_keys"] += 1
            return
        try:
            payload = self._sealer.open(data, now=time.time(), aad=b"udp")
            packet = codec.decode_packet(payload)
        except EnvelopeError as err:
            self._refused(err, src[0])
            return
        except codec.CodecError:
            self.drops["malformed"] += 1
            return
        if self._cut_off(packet.sender, src):
            return
        self.swim.receive_packet(self._loop.time(), src, packet)
        self._drain()
        self._wake_if_due_sooner()

    def _wake_if_due_sooner(self) -> None:
        """Wake the loop when what a datagram did moved a deadline before the one it sleeps
        until. Every timer of the loop is a deadline, so a wake for anything else would run
        the ticks with nothing due: an idle lab node received a datagram every 25 ms or so,
        and each ran the whole loop."""
        due = min(self.swim.next_deadline(), self.networkdb.next_deadline())
        if due < self._sleep_until:
            self._wake.set()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(self.options.config.tcp_timeout):
                payload = await self._read_frame(reader, peer[0])
                sender, request = _split_sender(payload)
                if self._cut_off(sender, (peer[0], peer[1])):
                    return
                answer = self._answer(sender, (peer[0], peer[1]), codec.decode_request(request))
                await self._write_frame(writer, codec.encode_response(answer))
        except (FrameError, codec.CodecError, TimeoutError, OSError) as err:
            self.drops[_reason(err)] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self._drain()
        self._wake.set()

    def _answer(self, sender: str, peer: Address, request: Any) -> Any:
        now = self._loop.time()
        src = self._address_of(sender) or peer
        match request:
            case PushPull():
                return self.swim.handle_push_pull(now, src, request)
            case TableSync():
                return self.networkdb.bulk_sync_request(now, sender, request)
            case Ping():
                ack = self.swim.handle_tcp_ping(now, src, request)
                return ack if ack is not None else codec.ErrorReply("not the ping's target")
            case codec.ViewRequest():
                return codec.View(json.dumps(self.view()))
        return codec.ErrorReply(f"unsupported request {type(request).__name__}")

    # ---- outbound TCP exchanges -------------------------------------------------------------

    async def _exchange(self, dst: Address, request: Any, timeout: float) -> Any:
        """One TCP request/answer with `dst`; raises FrameError on any failure."""
        if self._sealer is None:
            raise FrameError("no gossip keys yet")
        try:
            async with asyncio.timeout(timeout):
                delay = self._faults.transmit_delay(dst[0])
                if delay is None:  # partitioned: the connection attempt times out
                    await asyncio.sleep(timeout)
                elif delay > 0:
                    await asyncio.sleep(delay)
                # From our own address, so the peer can name us in what it logs and counts.
                reader, writer = await asyncio.open_connection(
                    dst[0], dst[1], local_addr=self._source
                )
                try:
                    name = self.name.encode()
                    await self._write_frame(
                        writer, bytes([len(name)]) + name + codec.encode_request(request)
                    )
                    return codec.decode_response(await self._read_frame(reader, dst[0]))
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (TimeoutError, OSError, codec.CodecError) as err:
            raise FrameError(f"{type(err).__name__}: {err}") from err

    async def _push_pull(self, dst: Address, request: PushPull) -> None:
        response: PushPull | None = None
        try:
            answer = await self._exchange(dst, request, self.options.config.tcp_timeout)
            response = answer if isinstance(answer, PushPull) else None
        except FrameError as err:
            log.debug("event=push_pull_failed dst=%s:%d error=%r", dst[0], dst[1], str(err))
        self.swim.push_pull_result(self._loop.time(), dst, response)
        self._drain()
        self._wake.set()

    async def _tcp_ping(self, dst: Address, ping: Ping, timeout: float) -> None:
        acked = False
        with contextlib.suppress(FrameError):
            answer = await self._exchange(dst, ping, timeout)
            acked = isinstance(answer, Ack) and answer.seq == ping.seq
        self.swim.tcp_ping_result(self._loop.time(), ping.seq, acked)
        self._drain()
        self._wake.set()

    async def _bulk_sync(self, name: str, request: TableSync) -> None:
        dst = self._address_of(name)
        response: TableSync | None = None
        if dst is not None:
            with contextlib.suppress(FrameError):
                answer = await self._exchange(
                    dst, request, self.options.networkdb.bulk_sync_timeout
                )
                response = answer if isinstance(answer, TableSync) else None
        self.networkdb.bulk_sync_result(self._loop.time(), name, response)
        self._drain()
        self._wake.set()

    async def _read_frame(self, reader: asyncio.StreamReader, peer: str) -> bytes:
        if self._sealer is None:
            raise FrameError("no_keys")
        try:
            header = await reader.readexactly(_LENGTH.size)
            (length,) = _LENGTH.unpack(header)
            if length > MAX_FRAME:
                raise FrameError(f"frame of {length} bytes is over the {MAX_FRAME}-byte limit")
            sealed = await reader.readexactly(length)
        except asyncio.IncompleteReadError as err:
            raise FrameError("connection closed mid-frame") from err
        try:
            return self._sealer.open(sealed, now=time.time(), aad=b"tcp")
        except EnvelopeError as err:
            self._log_refusal(err, peer)
            raise FrameError(str(err.reason)) from err

    async def _write_frame(self, writer: asyncio.StreamWriter, payload: bytes) -> None:
        if self._sealer is None:
            raise FrameError("no_keys")
        sealed = self._sealer.seal(payload, now=time.time(), aad=b"tcp")
        writer.write(_LENGTH.pack(len(sealed)) + sealed)
        await writer.drain()

    def _refused(self, err: EnvelopeError, peer: str) -> None:
        self.drops[str(err.reason)] += 1
        self._log_refusal(err, peer)

    def _log_refusal(self, err: EnvelopeError, peer: str) -> None:
        """Log the first refusal of each reason from each peer; later ones are only counted
        (`drops` in the view), so a peer with the wrong keys is visible but cannot flood."""
        seen = (str(err.reason), peer)
        if seen in self._refusals_logged or len(self._refusals_logged) >= REFUSALS_LOGGED_MAX:
            return
        self._refusals_logged.add(seen)
        log.warning(
            "event=gossip_refused peer=%s reason=%s detail=%r next=counted_in_drops",
            peer,
            err.reason,
            str(err),
        )

    # ---- keys -------------------------------------------------------------------------------

    def set_keys(self, keys: Sequence[bytes]) -> None:
        """Gossip with `keys` from now on: `keys[0]` seals, every one of them opens.

        The first call ends the wait of an `await_keys` node: it joins its seeds. Later calls
        follow a rotation in libnetwork's order (`handleKeyChange`: add the new key, switch the
        primary, then remove the key no longer distributed), so a packet sealed by a peer one
        step ahead or behind still opens here.
        """
        if not keys:
            raise GossipKeysError("no gossip keys given: pass the primary key first")
        if self._sealer is None:
            self._sealer = PacketSealer(Keyring(keys[0], keys[1:]))
            log.info(
                "event=gossip_keys_installed primary=%s keys=%d", key_id(keys[0]).hex(), len(keys)
            )
            self._kick()
            return
        keyring = self._sealer.keyring
        if keyring is None:
            raise GossipKeysError(
                f"gossip node {self.name} runs in plaintext; start it with keys or await_keys"
            )
        added = [key for key in keys if key not in keyring]
        for key in added:
            keyring.install(key)
        switched = keyring.primary != keys[0]
        if switched:
            keyring.use(keys[0])
        removed = [key for key in keyring.keys if key not in keys]
        for key in removed:
            keyring.remove(key)
        if added or switched or removed:
            log.info(
                "event=gossip_keys_rotated primary=%s added=%d removed=%d",
                key_id(keys[0]).hex(),
                len(added),
                len(removed),
            )

    @property
    def awaiting_keys(self) -> bool:
        """An `await_keys` node that has no keys yet (it gossips with nobody)."""
        return self._sealer is None

    # ---- NetworkDB API (for the data path and the CLI) -------------------------------------

    def join_network(self, network_id: str) -> None:
        self.networkdb.join_network(self._loop.time(), network_id)
        self._kick()

    def set_role(self, role: str) -> None:
        """Publish this node's new role (after a promotion or a demotion): members learn it
        under a new incarnation, so the old metadata loses everywhere."""
        if self.swim.meta.role != role:
            self.swim.update_meta(self._loop.time(), dataclasses.replace(self.swim.meta, role=role))
            self._kick()

    def leave_network(self, network_id: str) -> None:
        self.networkdb.leave_network(self._loop.time(), network_id)
        self._kick()

    def create_entry(self, network_id: str, table: str, key: str, value: bytes) -> None:
        self.networkdb.create_entry(self._loop.time(), table, network_id, key, value)
        self._kick()

    def update_entry(self, network_id: str, table: str, key: str, value: bytes) -> None:
        self.networkdb.update_entry(self._loop.time(), table, network_id, key, value)
        self._kick()

    def delete_entry(self, network_id: str, table: str, key: str) -> None:
        self.networkdb.delete_entry(self._loop.time(), table, network_id, key)
        self._kick()

    def table_entries(self, network_id: str, table: str) -> dict[str, EntryView]:
        return self.networkdb.entries(network_id, table)

    def network_ready(self, network_id: str) -> bool:
        """Joined `network_id` and holds its tables: synced with a peer, or no peer has it.
        "No peer" counts only once this node is in the cluster: before its first join
        answers, it cannot know who else is on the network (a container started then would
        find none of the names published before it)."""
        db = self.networkdb
        if db.synced(network_id):
            return True
        return network_id in db.networks() and not db.peers(network_id) and self.in_cluster()

    def in_cluster(self) -> bool:
        """Whether this node's join went through: it was given no seeds (the swarm's first
        node), or it knows another member."""
        return not self._seeds or self.swim.member_count(MemberState.ALIVE, MemberState.SUSPECT) > 1

    def live_members(self) -> list[NodeMeta]:
        """The metadata of members alive or suspected (still reachable), this node included."""
        return [
            m.meta
            for m in self.swim.members()
            if m.state in (MemberState.ALIVE, MemberState.SUSPECT)
        ]

    def _kick(self) -> None:
        self._drain()
        self._wake.set()

    # ---- view -------------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """This node's gossip view: members as it sees them, its health, what it dropped, and
        the NetworkDB tables it holds."""
        members = [
            {
                "name": m.name,
                "address": f"{m.addr[0]}:{m.addr[1]}",
                "state": m.state.label(),
                "incarnation": m.incarnation,
                "role": m.meta.role,
                "node_id": m.meta.node_id,
            }
            for m in sorted(self.swim.members(), key=lambda m: m.name)
        ]
        keyring = self._sealer.keyring if self._sealer is not None else None
        networks = {}
        for network in self.networkdb.networks():
            networks[network] = {
                "peers": sorted(self.networkdb.peers(network)),
                "entries": [
                    {
                        "table": e.table,
                        "key": e.key,
                        "value": e.value.decode(errors="replace"),
                        "owner": e.owner,
                        "ltime": e.ltime,
                        "deleted": e.deleted,
                        "hidden": e.hidden,
                    }
                    for e in self.networkdb.records(network)
                ],
            }
        return {
            "name": self.name,
            "incarnation": self.swim.incarnation,
            "health_score": self.swim.health_score,
            "encrypted": self._sealer is None or self._sealer.encrypted,
            "awaiting_keys": self.awaiting_keys,
            # Key ids (hashes, not secret), the primary first: what a rotation changes.
            "keys": [key_id(k).hex() for k in (keyring.keys if keyring is not None else ())],
            "members": members,
            "networks": networks,
            "drops": dict(self.drops),
            "swim_counters": dataclasses.asdict(self.swim.counters),
            "networkdb_stats": dataclasses.asdict(self.networkdb.stats),
        }


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, node: GossipNode) -> None:
        self._node = node

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._node.datagram_received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self._node.drops["udp_error"] += 1


def _split_sender(payload: bytes) -> tuple[str, bytes]:
    if not payload or len(payload) < 1 + payload[0]:
        raise FrameError("frame too short for its sender name")
    length = payload[0]
    try:
        return payload[1 : 1 + length].decode(), payload[1 + length :]
    except UnicodeDecodeError as err:
        raise FrameError("sender name is not UTF-8") from err


def _reason(err: BaseException) -> str:
    if isinstance(err, FrameError):
        return f"tcp_{err}".split(":")[0].replace(" ", "_")[:40]
    if isinstance(err, codec.CodecError):
        return "tcp_malformed"
    if isinstance(err, TimeoutError):
        return "tcp_timeout"
    return "tcp_error"


async def query_view(address: Address, keyring: Keyring | None = None) -> dict[str, Any]:
    """Ask a running gossip node for its view (what `swarmlab gossip view` prints)."""
    sealer = PacketSealer(keyring)
    name = b"swarmlab-cli"
    payload = bytes([len(name)]) + name + codec.encode_request(codec.ViewRequest())
    async with asyncio.timeout(5.0):
        reader, writer = await asyncio.open_connection(address[0], address[1])
        try:
            sealed = sealer.seal(payload, now=time.time(), aad=b"tcp")
            writer.write(_LENGTH.pack(len(sealed)) + sealed)
            await writer.drain()
            (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
            answer = codec.decode_response(
                sealer.open(await reader.readexactly(length), now=time.time(), aad=b"tcp")
            )
        except asyncio.IncompleteReadError as err:
            raise FrameError(
                f"{address[0]}:{address[1]} closed the connection: wrong or missing key?"
            ) from err
        finally:
            writer.close()
    if not isinstance(answer, codec.View):
        raise FrameError(f"unexpected answer {answer!r}")
    result: dict[str, Any] = json.loads(answer.json)
    return result
