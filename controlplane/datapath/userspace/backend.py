"""The userspace backend: carries out a node's data path `Program` with one asyncio UDP
endpoint on the node's VTEP address and data path port, no privileges, any OS.

Per segment it plays the bridge and VXLAN device Docker creates: a frame from a local endpoint
to another local endpoint is bridged; to a remote MAC it goes, VXLAN-encapsulated with the
segment's VNI, to the VTEP the static fdb names (sealed with ESP first on encrypted segments);
ARP requests are answered from the neighbour table and the local endpoints (Docker's
proxy/l2miss setup), never flooded; anything else with no fdb entry is dropped and counted.
Received VXLAN for a VNI the node holds goes to the local endpoint with the frame's MAC.

On the wire an encrypted segment's datagram is ESP (see `esp.py`): SPI, sequence number, IV,
ciphertext of the VXLAN UDP datagram (its checksum zero as VXLAN senders send it, RFC 7348
section 5: the ICV covers every byte), ICV. The receiver tells the two apart by the first four
bytes: a VXLAN header with only the I flag reads 0x08000000, an ESP packet starts with its SPI
(an SPI the node holds wins, should one ever equal that word). Plain VXLAN arriving for an
encrypted segment is dropped: the policy requires ESP.

System calls: a TCP connection's run of segments is a burst (`IPv4Stack.burst`) whose
datagrams go at its end, one UDP GSO send per run of equal sizes to one VTEP, and reads take
what UDP GRO coalesced, cut back into datagrams (`udp_offload.py`); the kernel still carries
one datagram per frame. Where the kernel has neither, one datagram per call.

`apply(program)` diffs the program against the one applied and carries out only the changes,
so applying the same program twice does nothing. Every drop is counted with its reason, per
segment where the segment is known, per node before that (ESP that cannot be opened, unknown
VNIs): what a `swarmlab datapath` view shows.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from controlplane.datapath.program import (
    DEFAULT_DATA_PATH_PORT,
    Change,
    FdbEntry,
    LocalEndpoint,
    NeighEntry,
    Policy,
    Program,
    SecurityAssociation,
    Segment,
    diff,
)
from controlplane.datapath.userspace import speedups
from controlplane.datapath.userspace.esp import EspError, InboundSA, OutboundSA
from controlplane.datapath.userspace.frames import (
    ARP_REPLY,
    ARP_REQUEST,
    ETHERTYPE_ARP,
    PROTO_UDP,
    VXLAN_HEADER,
    Arp,
    Ethernet,
    FrameError,
    Vxlan,
    ip_bytes,
    mac_bytes,
    udp_header_without_checksum,
    udp_payload,
    vxlan_vni,
)
from controlplane.datapath.userspace.stack import IPv4Stack, Vips
from controlplane.datapath.userspace.udp_offload import (
    GRO_CONTROL_SPACE,
    Offloads,
    enable_offloads,
    gro_segment_size,
    gso_control,
    gso_runs,
    split_coalesced,
)

log = logging.getLogger(__name__)

_VXLAN_WORD = b"\x08\x00\x00\x00"
_ETHERTYPE_ARP = ETHERTYPE_ARP.to_bytes(2)
_SOCKET_BUFFER = 4 * 1024 * 1024
READ_BATCH = 64  # datagrams read per wake-up of the loop before others get their turn
_GSO_REFUSED = (errno.EIO, errno.EINVAL, errno.EMSGSIZE, errno.EOPNOTSUPP)  # by the route
_DATAGRAM_MAX = 65535
_MSG_TRUNC = socket.MSG_TRUNC


@dataclass
class SegmentCounters:
    """Traffic of one segment: frames to and from other VTEPs, frames bridged between local
    endpoints, ARP requests answered, and drops by reason."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bridged: int = 0
    arp_answered: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "bridged": self.bridged,
            "arp_answered": self.arp_answered,
            "dropped": dict(sorted(self.dropped.items())),
        }


@dataclass
class _Segment:
    network_id: str
    name: str
    vni: int
    mtu: int
    prefix: int
    encrypted: bool
    endpoints: dict[bytes, IPv4Stack] = field(default_factory=dict)  # by MAC
    by_name: dict[str, IPv4Stack] = field(default_factory=dict)
    fdb: dict[bytes, tuple[str, int]] = field(default_factory=dict)  # MAC -> (VTEP, port)
    peers: set[str] = field(default_factory=set)  # the VTEPs of the fdb, checked per datagram
    neigh: dict[bytes, bytes] = field(default_factory=dict)  # IP -> MAC
    counters: SegmentCounters = field(default_factory=SegmentCounters)
    vxlan_header: bytes = b""  # what goes in front of every frame sent to another VTEP
    outbox: dict[tuple[str, int], _Outbox] = field(default_factory=dict)  # by VTEP, in a burst

    def __post_init__(self) -> None:
        self.set_vni(self.vni)

    def set_vni(self, vni: int) -> None:
        self.vni = vni
        self.vxlan_header = Vxlan(vni, b"").pack()

    def set_fdb(self, mac: bytes, dest: tuple[str, int] | None) -> None:
        """Add (or with None remove) an fdb entry, keeping `peers` in step."""
        if dest is None:
            self.fdb.pop(mac, None)
        else:
            self.fdb[mac] = dest
        self.peers = {vtep for vtep, _ in self.fdb.values()}


@dataclass(slots=True)
class _Outbox:
    """The datagrams a burst produced for one VTEP on one segment, in order: sent together
    at the burst's end (one GSO send per run of equal sizes)."""

    datagrams: list[bytes] = field(default_factory=list)
    frame_sizes: list[int] = field(default_factory=list)  # what the counters count


class _Burst:
    """What the endpoints' stacks enter around a run of TCP segments (`IPv4Stack.burst`):
    the backend queues their datagrams and sends them when the outermost burst ends."""

    __slots__ = ("_backend",)

    def __init__(self, backend: UserspaceBackend) -> None:
        self._backend = backend

    def __enter__(self) -> None:
        self._backend._bursts += 1

    def __exit__(self, *exc: object) -> None:
        backend = self._backend
        backend._bursts -= 1
        if not backend._bursts and backend._sending:
            backend._flush()


class DataPathError(RuntimeError):
    """The backend cannot do what was asked (not started, wrong node, unknown endpoint)."""


class UserspaceBackend:
    """One node's userspace data path. `await start()`, then `apply(program)` as programs
    change; `endpoint(network_id, name)` is the stack of a local container."""

    def __init__(
        self,
        vtep: str,
        port: int = DEFAULT_DATA_PATH_PORT,
        vips: Callable[[str], Vips] | None = None,
        offloads: bool = True,
    ) -> None:
        """`vips(network_id)` gives the VIPs the stacks on that network route (none without);
        `offloads=False` keeps to one datagram per system call even where the kernel offers
        UDP GSO/GRO."""
        self.vtep = vtep
        self.port = port
        self._vips = vips
        self._want_offloads = offloads
        self.offloads = Offloads(gso=False, gro=False)
        self._sending: list[_Segment] = []  # segments with an outbox, in a burst
        self._batching = False  # GSO on and the backend open: a burst's sends wait for its end
        self._bursts = 0  # bursts entered and not left (a burst may start inside another)
        self._burst = _Burst(self)
        self._vtep_raw = ip_bytes(vtep)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop reading the socket
        self._applied: Program | None = None
        self._segments: dict[str, _Segment] = {}
        self._by_vni: dict[int, _Segment] = {}
        self._inbound: dict[int, InboundSA] = {}
        self._outbound: dict[int, OutboundSA] = {}
        self._policies: dict[str, Policy] = {}  # by peer VTEP
        self.node_drops: Counter[str] = Counter()

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the VTEP socket and read it from the loop: a non-blocking socket the loop
        watches, drained up to READ_BATCH datagrams per wake-up (an asyncio datagram
        transport reads one per wake-up, and every wake-up costs a turn of the loop). UDP
        GSO and GRO are turned on where the kernel has them (see `udp_offload.py`)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
            sock.bind((self.vtep, self.port))
        except OSError as err:
            sock.close()
            raise DataPathError(
                f"cannot bind the data path to {self.vtep}:{self.port}/udp: {err.strerror}; "
                "choose a free address or another --data-path-port"
            ) from None
        self.offloads = enable_offloads(sock, self._want_offloads)
        self._batching = self.offloads.gso
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._read_ready)
        self._sock = sock
        log.info(
            "event=datapath_started backend=userspace vtep=%s port=%d gso=%s gro=%s",
            self.vtep,
            self.port,
            _on_off(self.offloads.gso),
            _on_off(self.offloads.gro),
        )
        speedups.report_implementation()

    def close(self) -> None:
        """Close every endpoint (their connections reset, the resets sent at once, after
        what a burst queued) and the socket; callable from outside the loop too."""
        self._flush()
        self._batching = False
        for seg in self._segments.values():
            for stack in seg.endpoints.values():
                stack.close()
        self._segments.clear()
        self._by_vni.clear()
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._applied = None

    # ---- programs -------------------------------------------------------------------------

    def apply(self, program: Program) -> list[Change]:
        """Bring the data path to `program`; returns the changes carried out."""
        if self._sock is None:
            raise DataPathError("the userspace data path is not started: await start() first")
        if (program.node.vtep, program.node.port) != (self.vtep, self.port):
            raise DataPathError(
                f"program for {program.node.vtep}:{program.node.port} applied to the data path "
                f"on {self.vtep}:{self.port}; start a backend on the node's own VTEP"
            )
        changes = diff(self._applied, program)
        replaced: set[str] = set()  # segments deleted, pending a re-add with new attributes
        for change in changes:
            self._carry_out(program, change, replaced)
        for network_id in replaced:
            self._remove_segment(network_id)
        self._applied = program
        if changes:
            log.info("event=datapath_applied vtep=%s changes=%d", self.vtep, len(changes))
        return changes

    def _carry_out(self, program: Program, change: Change, replaced: set[str]) -> None:
        nid, item, adding = change.network_id, change.item, change.op == "add"
        if change.what == "segment":
            if adding:
                self._add_segment(program.segments[nid], replaced)
            else:
                replaced.add(nid)
        elif change.what == "endpoint":
            assert isinstance(item, LocalEndpoint)
            if adding:
                self._add_endpoint(nid, item)
            else:
                self._remove_endpoint(nid, item)
        elif change.what == "fdb":
            assert isinstance(item, FdbEntry)
            dest = (item.vtep, item.port) if adding else None
            self._segments[nid].set_fdb(mac_bytes(item.mac), dest)
        elif change.what == "neigh":
            assert isinstance(item, NeighEntry)
            neigh = self._segments[nid].neigh
            if adding:
                neigh[ip_bytes(item.ip)] = mac_bytes(item.mac)
            else:
                neigh.pop(ip_bytes(item.ip), None)
        elif change.what == "sa":
            assert isinstance(item, SecurityAssociation)
            self._change_sa(item, adding)
        elif change.what == "policy":
            assert isinstance(item, Policy)
            if adding:
                self._policies[item.dst] = item
            elif self._policies.get(item.dst) == item:
                del self._policies[item.dst]

    def _change_sa(self, sa: SecurityAssociation, adding: bool) -> None:
        if sa.direction == "in":
            if adding:
                self._inbound[sa.spi] = InboundSA(sa)
            else:
                self._inbound.pop(sa.spi, None)
        elif adding:
            self._outbound[sa.spi] = OutboundSA(sa)
        else:
            self._outbound.pop(sa.spi, None)

    def _add_segment(self, wanted: Segment, replaced: set[str]) -> None:
        prefix = ipaddress.IPv4Interface(wanted.gateway).network.prefixlen
        seg = self._segments.get(wanted.network_id)
        if seg is not None and wanted.network_id in replaced:
            # Same network with new attributes (MTU, encryption): its entries stay.
            replaced.discard(wanted.network_id)
            self._by_vni.pop(seg.vni, None)
            seg.name, seg.mtu = wanted.name, wanted.mtu
            seg.set_vni(wanted.vni)
            seg.prefix, seg.encrypted = prefix, wanted.encrypted
            for stack in seg.endpoints.values():
                stack.mtu = wanted.mtu
        else:
            seg = _Segment(
                wanted.network_id, wanted.name, wanted.vni, wanted.mtu, prefix, wanted.encrypted
            )
            self._segments[wanted.network_id] = seg
        self._by_vni[seg.vni] = seg

    def _remove_segment(self, nid: str) -> None:
        seg = self._segments.pop(nid)
        self._by_vni.pop(seg.vni, None)
        for stack in seg.endpoints.values():
            stack.close()

    def _add_endpoint(self, nid: str, ep: LocalEndpoint) -> None:
        seg = self._segments[nid]
        mac = mac_bytes(ep.mac)
        stack = IPv4Stack(
            ep.name,
            ep.ip,
            ep.mac,
            seg.prefix,
            seg.mtu,
            functools.partial(self._bridge, seg),
            self._vips(nid) if self._vips is not None else None,
            self._burst,
        )
        seg.endpoints[mac] = stack
        seg.by_name[ep.name] = stack

    def _remove_endpoint(self, nid: str, ep: LocalEndpoint) -> None:
        seg = self._segments[nid]
        stack = seg.endpoints.pop(mac_bytes(ep.mac), None)
        if stack is not None:
            seg.by_name.pop(stack.name, None)
            stack.close()

    # ---- what others read -----------------------------------------------------------------

    def endpoint(self, network_id: str, name: str) -> IPv4Stack:
        """The IPv4 stack of the local endpoint `name` on network `network_id`."""
        seg = self._segments.get(network_id)
        stack = seg.by_name.get(name) if seg is not None else None
        if stack is None:
            raise DataPathError(
                f"no local endpoint {name!r} on network {network_id!r} at {self.vtep}; "
                "the program has none (is the container attached on this node?)"
            )
        return stack

    def counters(self) -> dict[str, SegmentCounters]:
        """The traffic counters of every segment, by network id."""
        return {nid: seg.counters for nid, seg in self._segments.items()}

    # ---- frames from local endpoints ------------------------------------------------------

    def _bridge(self, seg: _Segment, frame: bytes) -> None:
        """A frame from a local endpoint (its stack built it: only ARP needs a closer look)."""
        if len(frame) < 14:
            seg.counters.dropped["malformed_from_endpoint"] += 1
            return
        if frame[12:14] == _ETHERTYPE_ARP:
            try:
                eth = Ethernet.parse(frame)
                self._proxy_arp(seg, eth, Arp.parse(eth.payload))
            except FrameError:
                seg.counters.dropped["malformed_from_endpoint"] += 1
            return
        dst = frame[:6]
        local = seg.endpoints.get(dst)
        if local is not None:
            seg.counters.bridged += 1
            self._deliver_soon(local, frame)
            return
        dest = seg.fdb.get(dst)
        if dest is None:
            reason = "not_flooded" if dst[0] & 1 else "unknown_mac"
            seg.counters.dropped[reason] += 1
            return
        self._send(seg, dest, seg.vxlan_header + frame)

    @staticmethod
    def _deliver_soon(stack: IPv4Stack, frame: bytes) -> None:
        """Hand a frame to a local endpoint from the loop, not from inside the sender's call
        (a synchronous answer would recurse: data, ACK, data, ... on one stack)."""
        asyncio.get_running_loop().call_soon(stack.receive, frame)

    def _proxy_arp(self, seg: _Segment, eth: Ethernet, arp: Arp) -> None:
        """Answer an endpoint's ARP request from the neighbour table (remote endpoints) or the
        local endpoints, as Docker's overlay does; nothing is broadcast."""
        if arp.op != ARP_REQUEST:
            seg.counters.dropped["arp_reply_from_endpoint"] += 1
            return
        mac = seg.neigh.get(arp.target_ip)
        if mac is None:
            mac = next((m for m, s in seg.endpoints.items() if s.ip_raw == arp.target_ip), None)
        asker = seg.endpoints.get(arp.sender_mac)
        if mac is None or asker is None:
            seg.counters.dropped["arp_miss"] += 1
            return
        reply = Arp(ARP_REPLY, mac, arp.target_ip, arp.sender_mac, arp.sender_ip)
        seg.counters.arp_answered += 1
        self._deliver_soon(asker, Ethernet(arp.sender_mac, mac, ETHERTYPE_ARP, reply.pack()).pack())

    def _send(self, seg: _Segment, dest: tuple[str, int], vxlan: bytes) -> None:
        """Within a burst and with GSO, queue a datagram for `dest`: the burst's datagrams go
        at its end (`_flush`); else send it at once (one datagram gains nothing by waiting)."""
        if self._sock is None:
            return
        datagram = vxlan
        if seg.encrypted:
            policy = self._policies.get(dest[0])
            sa = self._outbound.get(policy.spi) if policy is not None else None
            if sa is None:
                seg.counters.dropped["no_outbound_sa"] += 1
                return
            # No UDP checksum inside ESP: the ICV authenticates every byte already.
            inner_header = udp_header_without_checksum(self.port, dest[1], len(vxlan))
            try:
                datagram = sa.seal(vxlan, PROTO_UDP, prefix=inner_header)
            except EspError as err:
                seg.counters.dropped[err.reason] += 1
                return
        if not (self._bursts and self._batching):
            self._send_one(seg, dest, datagram, len(vxlan) - 8)
            return
        outbox = seg.outbox.get(dest)
        if outbox is None:
            if not seg.outbox:
                self._sending.append(seg)
            outbox = seg.outbox[dest] = _Outbox()
        outbox.datagrams.append(datagram)
        outbox.frame_sizes.append(len(vxlan) - 8)

    def _flush(self) -> None:
        """Send what the bursts queued, per segment and VTEP, in order."""
        sending, self._sending = self._sending, []
        for seg in sending:
            outboxes, seg.outbox = seg.outbox, {}
            for dest, outbox in outboxes.items():
                self._send_outbox(seg, dest, outbox)

    def _send_outbox(self, seg: _Segment, dest: tuple[str, int], outbox: _Outbox) -> None:
        datagrams, sizes = outbox.datagrams, outbox.frame_sizes
        for start, end in gso_runs(datagrams):
            if end - start > 1 and self._send_gso(seg, dest, outbox, start, end):
                continue
            for index in range(start, end):  # GSO refused: one by one
                self._send_one(seg, dest, datagrams[index], sizes[index])

    def _send_gso(
        self, seg: _Segment, dest: tuple[str, int], outbox: _Outbox, start: int, end: int
    ) -> bool:
        """datagrams[start:end] (one size, the last maybe shorter) in one send; False when
        GSO is off or the route refused it: the caller sends them one by one."""
        if not self.offloads.gso or self._sock is None:
            return False
        run = outbox.datagrams[start:end]
        try:
            self._sock.sendmsg(run, gso_control(len(run[0])), 0, dest)
        except (BlockingIOError, InterruptedError):
            seg.counters.dropped["send_buffer_full"] += len(run)  # UDP: lost; TCP resends
            return True
        except OSError as err:
            if err.errno in _GSO_REFUSED:
                self._gso_refused(err)
                return False
            self._send_failed(err, len(run))
            return True
        seg.counters.frames_out += len(run)
        seg.counters.bytes_out += sum(outbox.frame_sizes[start:end])
        return True

    def _send_one(
        self, seg: _Segment, dest: tuple[str, int], datagram: bytes, frame_bytes: int
    ) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(datagram, dest)
        except (BlockingIOError, InterruptedError):
            seg.counters.dropped["send_buffer_full"] += 1  # UDP: lost; TCP retransmits
            return
        except OSError as err:
            self._send_failed(err, 1)
            return
        seg.counters.frames_out += 1
        seg.counters.bytes_out += frame_bytes

    def _send_failed(self, err: OSError, count: int) -> None:
        self.node_drops["send_error"] += count
        log.debug("event=datapath_send_error vtep=%s error=%r", self.vtep, str(err))

    def _gso_refused(self, err: OSError) -> None:
        """The route refuses GSO (a device without checksum offload, say): from now on one
        datagram per send, as on a kernel without it."""
        self.offloads = Offloads(gso=False, gro=self.offloads.gro)
        self._batching = False
        log.warning(
            "event=datapath_gso_off vtep=%s reason=%r: sending one datagram per call",
            self.vtep,
            str(err),
        )

    # ---- datagrams from other VTEPs -------------------------------------------------------

    def _read_ready(self) -> None:
        """Read up to READ_BATCH datagrams (a GRO read may bring several at once)."""
        if self.offloads.gro:
            self._read_coalesced()
            return
        sock = self._sock
        for _ in range(READ_BATCH):
            if sock is None:
                return  # closed by what the last datagram set off
            try:
                data, addr = sock.recvfrom(_DATAGRAM_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # an ICMP error queued on the socket, say
                self._receive_failed(err)
                return
            self._received(data, addr)
            sock = self._sock

    def _read_coalesced(self) -> None:
        sock = self._sock
        read = 0
        while read < READ_BATCH:
            if sock is None:
                return
            try:
                data, ancdata, flags, addr = sock.recvmsg(_DATAGRAM_MAX, GRO_CONTROL_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                self._receive_failed(err)
                return
            if not ancdata and not flags & _MSG_TRUNC:  # one datagram, as it came
                self._received(data, addr)
                read += 1
            else:
                datagrams = split_coalesced(data, gro_segment_size(ancdata))
                if flags & _MSG_TRUNC:
                    datagrams.pop()  # cut short by the buffer: not a datagram any more
                    self.node_drops["truncated_datagram"] += 1
                for datagram in datagrams:
                    if self._sock is None:
                        return
                    self._received(datagram, addr)
                read += len(datagrams) or 1
            sock = self._sock

    def _receive_failed(self, err: OSError) -> None:
        self.node_drops["receive_error"] += 1
        log.debug("event=datapath_receive_error vtep=%s error=%r", self.vtep, str(err))

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        head = data[:4]
        encrypted = head != _VXLAN_WORD or (
            bool(self._inbound) and int.from_bytes(head) in self._inbound
        )
        try:
            payload = self._open_esp(data, addr) if encrypted else data
            vni = vxlan_vni(payload)
        except EspError as err:
            self.node_drops[err.reason] += 1
            return
        except FrameError:
            self.node_drops["malformed_vxlan"] += 1
            return
        seg = self._by_vni.get(vni)
        if seg is None:
            self.node_drops["unknown_vni"] += 1
            return
        if seg.encrypted and not encrypted:
            seg.counters.dropped["plaintext_on_encrypted_network"] += 1
            return
        if addr[0] not in seg.peers:
            seg.counters.dropped["unknown_peer"] += 1
            return
        frame = payload[VXLAN_HEADER:]
        if len(frame) < 14:
            seg.counters.dropped["malformed_frame"] += 1  # not even an Ethernet header
            return
        local = seg.endpoints.get(frame[:6])
        if local is None:
            seg.counters.dropped["no_local_endpoint"] += 1
            return
        seg.counters.frames_in += 1
        seg.counters.bytes_in += len(frame)
        local.receive(frame)

    def _open_esp(self, data: bytes, addr: tuple[str, int]) -> bytes:
        spi = int.from_bytes(data[:4])
        sa = self._inbound.get(spi)
        if sa is None:
            raise EspError("esp_unknown_spi", f"ESP with SPI {spi:#010x} from {addr[0]}: no SA")
        if sa.sa.src != addr[0]:
            raise EspError(
                "esp_wrong_peer", f"SPI {spi:#010x} belongs to {sa.sa.src}, not {addr[0]}"
            )
        next_header, inner = sa.open(data)
        if next_header != PROTO_UDP:
            raise EspError("esp_not_udp", f"ESP next header {next_header} is not UDP (17)")
        try:
            return udp_payload(inner, sa.src_raw, self._vtep_raw)
        except FrameError as err:
            raise EspError("esp_malformed", f"the UDP datagram inside ESP: {err}") from None


def _on_off(flag: bool) -> str:
    return "on" if flag else "off"
