"""The IPv4 stack of an emulated container on the userspace data path: ARP, ICMP echo, UDP and
TCP over Ethernet frames, driven by the asyncio loop, one instance per endpoint. It takes
frames in with `receive(frame)` and hands the frames it sends to a callable (the backend's
bridge); it never touches the OS network.

Why our own TCP and not `pytcp` (issue 5 asks to evaluate it first). PyPI's `pytcp` that
installs on Python 3.11 is 2.7.6 (2.7.7+ need 3.12, 3.x need 3.14). Read in a venv, it is one
stack per process: `pytcp.lib.stack` holds module-level singletons (one packet handler, one ARP
cache, one socket table), so two endpoints in one node process would share an address and a
socket table. Its I/O is a TAP device (`/dev/net/tun` with TUNSETIFF: root or CAP_NET_ADMIN,
Linux only), read by RX/TX threads with `select`, and its sockets block on threading
semaphores, so it cannot be fed frames per endpoint from asyncio without patching its
internals. It is also GPLv3, which the Apache-2.0 package cannot link. So this module is ours:
small, per endpoint, asyncio-native, what labs need and no more.

The TCP: RFC 9293's states (handshake, FIN/RST close, TIME-WAIT kept short for a lab),
MSS from the segment MTU, in-order delivery with out-of-order segments held within the receive
window, the peer's window honoured (with a probe when it is zero), retransmission on an RFC
6298 timer (Karn's rule, exponential backoff) going back to the first unacknowledged byte, and
fast retransmit on three duplicate ACKs. No congestion control, window scaling, SACK or
urgent data: the overlay is one hop on loopback.

Service VIPs (`vips.py`): the stack's `Vips` says which addresses of its network are VIPs.
They are local addresses (ICMP to them is looped back, as Docker's /32 alias on the container
interface answers), and a TCP connection or UDP flow to one goes to the task the balancer
picks when it opens, as IPVS's NAT in the sandbox: the connection's segments carry the task's
address on the wire, the application sees the VIP.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Container
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import Enum
from time import monotonic as fine_clock  # not the loop's: uvloop's counts whole ms
from typing import Protocol

from controlplane.datapath.userspace.frames import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST_MAC,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    Arp,
    Ethernet,
    FrameError,
    IcmpEcho,
    IPv4,
    Tcp,
    Udp,
    ip_bytes,
    ip_text,
    ipv4_header,
    mac_bytes,
    pseudo_header_sum,
    tcp_header,
    tcp_ipv4_frame,
    tcp_mss_from,
    tcp_mss_option,
)
from controlplane.datapath.userspace.speedups import tcp_in_ipv4

log = logging.getLogger(__name__)

SendFrame = Callable[[bytes], None]
Burst = AbstractContextManager[object]  # frames sent inside may go together at its end
Address = tuple[str, int]

ARP_RETRY = 0.5  # seconds between ARP requests for one address
ARP_TRIES = 6
ARP_QUEUE = 64  # packets held per address while it resolves
EPHEMERAL = (49152, 65535)
UDP_QUEUE = 1024
TCP_RECEIVE_BUFFER = 65535  # also the largest window without window scaling
TCP_SEND_BUFFER = 256 * 1024
RTO_INITIAL = 1.0
RTO_MIN = 0.2
RTO_MAX = 8.0
TCP_MAX_RETRIES = 10
TIME_WAIT = 1.0  # 2 MSL would be minutes; a lab reuses nothing that fast
DELAYED_ACK = 0.04  # seconds a lone full-sized segment waits for company (Linux's minimum)
VIP_UDP_FLOW_IDLE = 300.0  # seconds a UDP flow to a VIP stays on its task (IPVS's udp timeout)
_MOD = 1 << 32
_IPV4_TYPE = ETHERTYPE_IPV4.to_bytes(2)


class Vips(Protocol):
    """The VIPs of the stack's network and their balancing (`vips.VipBalancer`)."""

    def is_vip(self, ip: bytes) -> bool: ...

    def pick(self, vip: bytes) -> bytes | None: ...

    def serves(self, vip: bytes, backend: bytes) -> bool: ...


class _NoVips:
    def is_vip(self, ip: bytes) -> bool:
        return False

    def pick(self, vip: bytes) -> bytes | None:
        return None

    def serves(self, vip: bytes, backend: bytes) -> bool:
        return False


def _unwrap(wire: int, near: int) -> int:
    """The unbounded sequence number closest to `near` whose low 32 bits are `wire`."""
    return near + ((wire - near + (1 << 31)) % _MOD) - (1 << 31)


@dataclass
class InterfaceCounters:
    """Frames and bytes through the endpoint's interface, as a Linux interface counts them
    (whole Ethernet frames; the host's /sys/class/net/*/statistics)."""

    rx_bytes: int = 0
    rx_packets: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0


class _NoBurst:
    """The burst of a sender whose frames go one by one anyway."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_BURST = _NoBurst()


class IPv4Stack:
    """One endpoint's network stack: its address on the segment, its sockets."""

    def __init__(
        self,
        name: str,
        ip: str,
        mac: str,
        prefix: int,
        mtu: int,
        send_frame: SendFrame,
        vips: Vips | None = None,
        burst: Burst | None = None,
    ) -> None:
        """`burst` is entered around each run of TCP segments a connection sends at once,
        so that the link can send them together (the userspace backend: one GSO send)."""
        self.name = name
        self.ip = ip
        self.mac = mac
        self.mtu = mtu
        self.network = ipaddress.IPv4Network(f"{ip}/{prefix}", strict=False)
        self._netmask = int(self.network.netmask)  # `_route` checks numbers, not text
        self._network_int = int(self.network.network_address)
        self.ip_raw = ip_bytes(ip)
        self._mac = mac_bytes(mac)
        self._wire = send_frame
        self.burst: Burst = burst or _NO_BURST
        self.vips: Vips = vips or _NoVips()
        self._loop = asyncio.get_running_loop()
        self._neighbours: dict[bytes, bytes] = {}
        self._resolving: dict[bytes, tuple[deque[bytes], int, asyncio.TimerHandle]] = {}
        self._pings: dict[tuple[int, int], asyncio.Future[float]] = {}
        self._ping_ident = random.randrange(1 << 16)
        self._ping_seq = 0
        self._udp: dict[int, UdpSocket] = {}
        self._tcp: dict[tuple[int, bytes, int], TcpConnection] = {}
        self._listeners: dict[int, TcpListener] = {}
        self._ident = 0
        self._closed = False
        self.drops: Counter[str] = Counter()
        self.counters = InterfaceCounters()  # what `docker stats` shows as NET I/O

    def _send_frame(self, frame: bytes) -> None:
        self.counters.tx_bytes += len(frame)
        self.counters.tx_packets += 1
        self._wire(frame)

    # ---- frames in ------------------------------------------------------------------------

    def receive(self, frame: bytes) -> None:
        """A frame the bridge delivered to this endpoint."""
        if self._closed:
            return
        self.counters.rx_bytes += len(frame)
        self.counters.rx_packets += 1
        try:
            if frame[12:14] == _IPV4_TYPE:  # nearly every frame: no Ethernet object for it
                # The common TCP packet parsed in one C call where the extension is built
                # (speedups.py); anything else, or a packet not for us, the general way.
                parsed = tcp_in_ipv4(frame, 14, Tcp) if tcp_in_ipv4 is not None else None
                if parsed is not None and parsed[1] == self.ip_raw:
                    self._on_tcp(parsed[0], parsed[2])
                else:
                    self._on_ipv4(IPv4.parse(frame[14:]))
                return
            eth = Ethernet.parse(frame)
            if eth.ethertype == ETHERTYPE_ARP:
                self._on_arp(Arp.parse(eth.payload))
            else:
                self.drops["ethertype"] += 1
        except FrameError as err:
            self.drops["malformed"] += 1
            log.debug("event=frame_dropped endpoint=%s reason=%r", self.name, str(err))

    def _on_arp(self, arp: Arp) -> None:
        if arp.target_ip != self.ip_raw and arp.op == ARP_REQUEST:
            return
        self._learn(arp.sender_ip, arp.sender_mac)
        if arp.op == ARP_REQUEST:
            reply = Arp(ARP_REPLY, self._mac, self.ip_raw, arp.sender_mac, arp.sender_ip)
            self._send_frame(
                Ethernet(arp.sender_mac, self._mac, ETHERTYPE_ARP, reply.pack()).pack()
            )

    def _learn(self, ip: bytes, mac: bytes) -> None:
        self._neighbours[ip] = mac
        pending = self._resolving.pop(ip, None)
        if pending is not None:
            queue, _, timer = pending
            timer.cancel()
            for packet in queue:
                self._send_frame(Ethernet(mac, self._mac, ETHERTYPE_IPV4, packet).pack())

    def _on_ipv4(self, packet: IPv4) -> None:
        if packet.dst != self.ip_raw and not (
            packet.protocol == PROTO_ICMP and self.vips.is_vip(packet.dst)
        ):
            self.drops["not_for_me"] += 1
            return
        if packet.protocol == PROTO_ICMP:
            self._on_icmp(packet, IcmpEcho.parse(packet.payload))
        elif packet.protocol == PROTO_UDP:
            self._on_udp(packet.src, Udp.parse(packet.payload, packet.src, packet.dst))
        elif packet.protocol == PROTO_TCP:
            self._on_tcp(packet.src, Tcp.parse(packet.payload, packet.src, packet.dst))
        else:
            self.drops["protocol"] += 1

    def _on_icmp(self, packet: IPv4, echo: IcmpEcho) -> None:
        if echo.type == ICMP_ECHO_REQUEST:
            reply = IcmpEcho(ICMP_ECHO_REPLY, echo.ident, echo.seq, echo.data)
            self._send_ip(packet.src, PROTO_ICMP, reply.pack(), src=packet.dst)
            return
        waiter = self._pings.get((echo.ident, echo.seq))
        if waiter is not None and not waiter.done():
            waiter.set_result(fine_clock())

    def _on_udp(self, src: bytes, datagram: Udp) -> None:
        sock = self._udp.get(datagram.dst_port)
        if sock is None:
            self.drops["udp_port_closed"] += 1
            return
        sock._deliver(datagram.payload, (ip_text(src), datagram.src_port))

    def _on_tcp(self, src: bytes, segment: Tcp) -> None:
        conn = self._tcp.get((segment.dst_port, src, segment.src_port))
        if conn is not None:
            conn._on_segment(segment)
            return
        listener = self._listeners.get(segment.dst_port)
        if listener is not None and segment.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN:
            listener._on_syn(src, segment)
            return
        if not segment.flags & TCP_RST:
            self._reset_for(src, segment)

    def _reset_for(self, src: bytes, segment: Tcp) -> None:
        """The RST answering a segment for no connection (RFC 9293 3.10.7.1)."""
        if segment.flags & TCP_ACK:
            reply = Tcp(segment.dst_port, segment.src_port, segment.ack, 0, TCP_RST, 0)
        else:
            length = len(segment.payload) + bool(segment.flags & TCP_SYN)
            length += bool(segment.flags & TCP_FIN)
            ack = (segment.seq + length) % _MOD
            reply = Tcp(segment.dst_port, segment.src_port, 0, ack, TCP_RST | TCP_ACK, 0)
        self._send_ip(src, PROTO_TCP, reply.pack(self.ip_raw, src))

    # ---- frames out -----------------------------------------------------------------------

    def _route(self, dst: str) -> bytes:
        raw = ip_bytes(dst)
        if int.from_bytes(raw) & self._netmask != self._network_int:
            raise OSError(
                errno.ENETUNREACH, f"{dst} is outside {self.network}: no route from {self.name}"
            )
        return raw

    def _send_ip(self, dst: bytes, protocol: int, payload: bytes, src: bytes = b"") -> None:
        if self._closed:
            return
        self._ident = (self._ident + 1) & 0xFFFF
        header = ipv4_header(src or self.ip_raw, dst, protocol, len(payload), self._ident)
        mac = self._neighbours.get(dst)
        if mac is not None and dst != self.ip_raw:  # the common case: one copy, no objects
            self._send_frame(b"".join((mac, self._mac, _IPV4_TYPE, header, payload)))
            return
        packet = header + payload
        if dst == self.ip_raw or self.vips.is_vip(dst):
            self._loop.call_soon(self._loopback, packet)  # a local address: never on the wire
            return
        pending = self._resolving.get(dst)
        if pending is None:
            timer = self._loop.call_later(ARP_RETRY, self._arp_retry, dst)
            self._resolving[dst] = (deque([packet], maxlen=ARP_QUEUE), 1, timer)
            self._arp_request(dst)
        else:
            pending[0].append(packet)

    def _send_tcp_frame(
        self,
        dst: bytes,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: bytes,
    ) -> bool:
        """The common segment (no options, to a neighbour whose MAC is known) as one frame
        built at once (`tcp_ipv4_frame`, in C where built); False: the caller takes the
        general path (`_send_ip`: ARP, the loopback, a closed stack)."""
        mac = self._neighbours.get(dst)
        if mac is None or dst == self.ip_raw or self._closed:
            return False
        self._ident = ident = (self._ident + 1) & 0xFFFF
        self._send_frame(
            tcp_ipv4_frame(
                mac,
                self._mac,
                self.ip_raw,
                dst,
                ident,
                src_port,
                dst_port,
                seq,
                ack,
                flags,
                window,
                payload,
            )
        )
        return True

    def _loopback(self, packet: bytes) -> None:
        if not self._closed:
            self._on_ipv4(IPv4.parse(packet))

    def _arp_request(self, dst: bytes) -> None:
        arp = Arp(ARP_REQUEST, self._mac, self.ip_raw, b"\x00" * 6, dst)
        self._send_frame(Ethernet(BROADCAST_MAC, self._mac, ETHERTYPE_ARP, arp.pack()).pack())

    def _arp_retry(self, dst: bytes) -> None:
        queue, tries, _ = self._resolving[dst]
        if tries >= ARP_TRIES:
            del self._resolving[dst]
            self.drops["arp_unresolved"] += len(queue)
            log.info("event=arp_unresolved endpoint=%s ip=%s", self.name, ip_text(dst))
            return
        timer = self._loop.call_later(ARP_RETRY, self._arp_retry, dst)
        self._resolving[dst] = (queue, tries + 1, timer)
        self._arp_request(dst)

    # ---- sockets --------------------------------------------------------------------------

    async def ping(self, dst: str, timeout: float = 2.0, size: int = 56) -> float:
        """One ICMP echo to `dst`: its round-trip time in seconds (TimeoutError if none)."""
        raw = self._route(dst)
        if size > self.mtu - 28:
            raise OSError(errno.EMSGSIZE, f"ping of {size} bytes exceeds the MTU {self.mtu} - 28")
        self._ping_seq = (self._ping_seq + 1) & 0xFFFF
        key = (self._ping_ident, self._ping_seq)
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._pings[key] = waiter
        sent = fine_clock()
        try:
            self._send_ip(raw, PROTO_ICMP, IcmpEcho(ICMP_ECHO_REQUEST, *key, bytes(size)).pack())
            async with asyncio.timeout(timeout):
                return await waiter - sent
        finally:
            del self._pings[key]

    def udp_socket(self, port: int = 0) -> UdpSocket:
        """A UDP socket bound to `port` (0: an ephemeral one)."""
        port = port or self._free_port(self._udp)
        if port in self._udp:
            raise OSError(errno.EADDRINUSE, f"UDP port {port} of {self.ip} is in use")
        sock = UdpSocket(self, port)
        self._udp[port] = sock
        return sock

    def listen(self, port: int, backlog: int = 128) -> TcpListener:
        if port in self._listeners:
            raise OSError(errno.EADDRINUSE, f"TCP port {port} of {self.ip} is already listening")
        listener = TcpListener(self, port, backlog)
        self._listeners[port] = listener
        return listener

    async def connect(self, dst: str, port: int, timeout: float = 30.0) -> TcpConnection:
        """An established TCP connection to (dst, port); to a VIP, to the task its balancer
        picks (the connection's `peer` still says the VIP)."""
        raw = self._route(dst)
        if self.vips.is_vip(raw):
            task = self.vips.pick(raw)
            if task is None:
                raise ConnectionRefusedError(
                    errno.ECONNREFUSED, f"{dst}:{port}: the service has no running task"
                )
            raw = task
        used = {local for local, _, _ in self._tcp} | set(self._listeners)
        conn = TcpConnection(self, self._free_port(used), raw, port)
        conn.peer = (dst, port)
        self._tcp[conn.key] = conn
        conn._open_active()
        try:
            async with asyncio.timeout(timeout):
                await conn._established
        except BaseException:
            conn.abort()
            raise
        return conn

    def _free_port(self, used: Container[int]) -> int:
        for _ in range(EPHEMERAL[1] - EPHEMERAL[0]):
            port = random.randint(*EPHEMERAL)
            if port not in used:
                return port
        raise OSError(errno.EADDRNOTAVAIL, f"no ephemeral port left on {self.ip}")

    def close(self) -> None:
        """The endpoint is gone: every connection resets, every waiter fails."""
        for conn in list(self._tcp.values()):
            conn.abort()
        for listener in list(self._listeners.values()):
            listener.close()
        for sock in list(self._udp.values()):
            sock.close()
        for _, _, timer in self._resolving.values():
            timer.cancel()
        self._resolving.clear()
        self._closed = True


# ---- UDP ------------------------------------------------------------------------------------


@dataclass
class _VipFlow:
    """One UDP flow from this socket to a VIP port: the task it goes to, and when it was
    last used (it idles out as IPVS's UDP connections do)."""

    task: bytes
    last: float


class UdpSocket:
    def __init__(self, stack: IPv4Stack, port: int) -> None:
        self._stack = stack
        self.port = port
        self._queue: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue(UDP_QUEUE)
        self._closed = False
        self._vip_flows: dict[tuple[bytes, int], _VipFlow] = {}  # (VIP, port) -> flow
        self._vip_of: dict[tuple[bytes, int], bytes] = {}  # (task, port) -> VIP, for answers

    def sendto(self, data: bytes, address: Address) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"UDP socket {self.port} is closed")
        if len(data) > self._stack.mtu - 28:
            raise OSError(
                errno.EMSGSIZE,
                f"UDP datagram of {len(data)} bytes exceeds the MTU {self._stack.mtu} - 28",
            )
        dst = self._stack._route(address[0])
        if self._stack.vips.is_vip(dst):
            dst = self._vip_task(dst, address[1])
        datagram = Udp(self.port, address[1], data).pack(self._stack.ip_raw, dst)
        self._stack._send_ip(dst, PROTO_UDP, datagram)

    def _vip_task(self, vip: bytes, port: int) -> bytes:
        """The task this socket's flow to (vip, port) goes to: the one it went to while that
        task runs and the flow is not idle, else the balancer's next pick."""
        vips, now = self._stack.vips, self._stack._loop.time()
        flow = self._vip_flows.get((vip, port))
        if flow is None or now - flow.last > VIP_UDP_FLOW_IDLE or not vips.serves(vip, flow.task):
            task = vips.pick(vip)
            if task is None:
                raise ConnectionRefusedError(
                    errno.ECONNREFUSED, f"{ip_text(vip)}:{port}: the service has no running task"
                )
            if flow is not None:
                self._vip_of.pop((flow.task, port), None)
            flow = _VipFlow(task, now)
            self._vip_flows[(vip, port)] = flow
            self._vip_of[(task, port)] = vip
        flow.last = now
        return flow.task

    async def recvfrom(self) -> tuple[bytes, Address]:
        if self._closed:
            raise OSError(errno.EBADF, f"UDP socket {self.port} is closed")
        return await self._queue.get()

    def _deliver(self, data: bytes, address: Address) -> None:
        vip = self._vip_of.get((ip_bytes(address[0]), address[1])) if self._vip_of else None
        if vip is not None:  # an answer of a task to a flow sent to its VIP: from the VIP
            address = (ip_text(vip), address[1])
        try:
            self._queue.put_nowait((data, address))
        except asyncio.QueueFull:
            self._stack.drops["udp_queue_full"] += 1

    def close(self) -> None:
        self._closed = True
        self._stack._udp.pop(self.port, None)


# ---- TCP ------------------------------------------------------------------------------------


class State(Enum):
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"
    CLOSED = "CLOSED"


# Tuples, not sets: a member is found by identity, where a set would call Enum's Python-level
# __hash__ for every segment.
_SENDING = (State.ESTABLISHED, State.CLOSE_WAIT)
_RECEIVING = (State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2)


@dataclass
class _Timed:
    """The segment being timed for an RTT sample (Karn: never a retransmitted one)."""

    end: int
    sent: float


class TcpListener:
    def __init__(self, stack: IPv4Stack, port: int, backlog: int) -> None:
        self._stack = stack
        self.port = port
        self._backlog = backlog
        self._ready: asyncio.Queue[TcpConnection] = asyncio.Queue()
        self._half_open = 0
        self._closed = False

    def _on_syn(self, src: bytes, segment: Tcp) -> None:
        if self._half_open + self._ready.qsize() >= self._backlog:
            self._stack.drops["tcp_backlog_full"] += 1
            return
        conn = TcpConnection(self._stack, self.port, src, segment.src_port, listener=self)
        self._stack._tcp[conn.key] = conn
        self._half_open += 1
        conn._open_passive(segment)

    def _established(self, conn: TcpConnection) -> None:
        self._half_open -= 1
        self._ready.put_nowait(conn)

    async def accept(self) -> TcpConnection:
        if self._closed:
            raise OSError(errno.EBADF, f"TCP listener {self.port} is closed")
        return await self._ready.get()

    def close(self) -> None:
        self._closed = True
        self._stack._listeners.pop(self.port, None)
        while not self._ready.empty():
            self._ready.get_nowait().abort()


class TcpConnection:
    """One TCP connection. Sequence numbers are kept unbounded (from the random ISS) and
    reduced modulo 2^32 only on the wire."""

    def __init__(
        self,
        stack: IPv4Stack,
        local_port: int,
        remote_ip: bytes,
        remote_port: int,
        listener: TcpListener | None = None,
    ) -> None:
        self._stack = stack
        self._loop = stack._loop
        self.local = (stack.ip, local_port)
        self.peer = (ip_text(remote_ip), remote_port)
        self.key = (local_port, remote_ip, remote_port)
        self._remote_ip = remote_ip
        self._pseudo_sum = pseudo_header_sum(stack.ip_raw, remote_ip, PROTO_TCP, 0)
        self._listener = listener
        self.state = State.CLOSED
        self.mss = stack.mtu - 40
        self._iss = random.randrange(_MOD)
        self._snd_una = self._snd_nxt = self._iss
        self._snd_wnd = 0
        self._buf_start = self._iss + 1  # the sequence number of _send_buf[0]
        self._send_buf = bytearray()
        self._fin_queued = False
        self._fin_seq: int | None = None  # set once the FIN is sent
        self._rcv_nxt = 0
        self._recv_buf = bytearray()
        self._out_of_order: dict[int, tuple[bytes, bool]] = {}
        self._advertised = TCP_RECEIVE_BUFFER
        self._peer_closed = False
        self._error: OSError | None = None
        self._rto = RTO_INITIAL
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._timed: _Timed | None = None
        self._retries = 0
        self._dup_acks = 0
        self._recover: int | None = None  # snd_nxt at the last fast retransmit
        self._timer: asyncio.TimerHandle | None = None
        self._unacked = 0  # in-order segments received since the last ACK sent
        self._short_unacked = False  # one of them was shorter than the MSS (a write's end)
        self._ack_flush_scheduled = False
        self._delayed_ack: asyncio.TimerHandle | None = None
        self._established: asyncio.Future[None] = self._loop.create_future()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._done = asyncio.Event()

    # ---- user side ------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Queue all of `data` for sending; waits while the send buffer is full."""
        view = memoryview(data)
        while view:
            self._raise_if_failed()
            if self.state not in _SENDING or self._fin_queued:
                raise OSError(errno.EPIPE, f"TCP connection {self} is closed for sending")
            room = TCP_SEND_BUFFER - len(self._send_buf)
            if room <= 0:
                self._writable.clear()
                await self._writable.wait()
                continue
            self._send_buf += view[:room]
            view = view[room:]
            self._output()

    async def recv(self, size: int = 65536) -> bytes:
        """Up to `size` bytes, in order; b"" once the peer closed and everything was read."""
        while not self._recv_buf:
            self._raise_if_failed()
            if self._peer_closed or self.state is State.CLOSED:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._recv_buf[:size])
        del self._recv_buf[:size]
        if self._advertised < self.mss <= self._window():
            self._send_ack()  # the window reopened: tell the peer
        return data

    def close(self) -> None:
        """Send a FIN once everything queued has gone (the connection lingers until acked)."""
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED):
            self.abort()
            return
        if self.state in _SENDING and not self._fin_queued:
            self._fin_queued = True
            self.state = State.FIN_WAIT_1 if self.state is State.ESTABLISHED else State.LAST_ACK
            self._output()

    async def wait_closed(self) -> None:
        await self._done.wait()

    def abort(self) -> None:
        """Reset the connection (RST) at once."""
        if self.state not in (State.CLOSED, State.TIME_WAIT, State.SYN_SENT):
            self._segment(TCP_RST | TCP_ACK, self._snd_nxt)
        self._finish(ConnectionResetError(errno.ECONNRESET, f"TCP connection {self} aborted"))

    def __str__(self) -> str:
        return f"{self.local[0]}:{self.local[1]}->{self.peer[0]}:{self.peer[1]}"

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # ---- opening --------------------------------------------------------------------------

    def _open_active(self) -> None:
        self.state = State.SYN_SENT
        self._snd_nxt = self._iss + 1
        self._send_syn(TCP_SYN)

    def _open_passive(self, syn: Tcp) -> None:
        self.state = State.SYN_RECEIVED
        self._rcv_nxt = syn.seq + 1
        self._snd_wnd = syn.window
        self.mss = min(self.mss, tcp_mss_from(syn.options) or 536)
        self._snd_nxt = self._iss + 1
        self._send_syn(TCP_SYN | TCP_ACK)

    def _send_syn(self, flags: int) -> None:
        self._segment(flags, self._iss, options=tcp_mss_option(self._stack.mtu - 40))
        self._arm_timer()

    # ---- segments in ----------------------------------------------------------------------

    def _on_segment(self, seg: Tcp) -> None:
        if self._predicted(seg):
            return
        if self.state is State.SYN_SENT:
            self._on_segment_syn_sent(seg)
            return
        seq = _unwrap(seg.seq, self._rcv_nxt)
        if seg.flags & TCP_RST:
            if self._rcv_nxt <= seq <= self._rcv_nxt + self._window():
                self._finish(ConnectionResetError(errno.ECONNRESET, f"{self} reset by peer"))
            return
        if seg.flags & TCP_SYN:
            if self.state is State.SYN_RECEIVED and seq == self._rcv_nxt - 1:
                self._send_syn(TCP_SYN | TCP_ACK)  # our SYN-ACK was lost
            else:
                self._send_ack()
            return
        if not seg.flags & TCP_ACK:
            return
        if not self._on_ack(seg):
            return
        if self.state is State.CLOSED:
            return
        fin = bool(seg.flags & TCP_FIN)
        if seg.payload or fin:
            in_order = seq == self._rcv_nxt and not self._out_of_order and not fin
            self._on_data(seq, seg.payload, fin)
            if in_order and self._rcv_nxt == seq + len(seg.payload):
                self._ack_later(len(seg.payload))
            else:
                self._send_ack()  # out of order, a hole filled, old data or a FIN: at once
        self._output()

    def _predicted(self, seg: Tcp) -> bool:
        """Header prediction (Van Jacobson's, as in BSD's tcp_input): in ESTABLISHED, the
        segment a receiver mostly gets is the next in order, flags ACK (and PSH), its ACK and
        window what they were, nothing held out of order, room for it all. Such a segment
        changes nothing on the sending side, so it is queued for the reader here and the
        general path (RST, SYN, ACK and FIN processing, output) is skipped."""
        size = len(seg.payload)
        if (
            self.state is not State.ESTABLISHED
            or not size
            or seg.flags & ~TCP_PSH != TCP_ACK
            or seg.seq != self._rcv_nxt % _MOD
            or seg.ack != self._snd_una % _MOD
            or seg.window != self._snd_wnd
            or self._out_of_order
            or size > TCP_RECEIVE_BUFFER - len(self._recv_buf)
        ):
            return False
        self._recv_buf += seg.payload
        self._rcv_nxt += size
        self._readable.set()
        self._ack_later(size)
        return True

    def _on_segment_syn_sent(self, seg: Tcp) -> None:
        ack = _unwrap(seg.ack, self._snd_nxt)
        acceptable = seg.flags & TCP_ACK and ack == self._iss + 1
        if seg.flags & TCP_RST:
            if acceptable:
                self._finish(
                    ConnectionRefusedError(
                        errno.ECONNREFUSED, f"{self.peer[0]}:{self.peer[1]} refused"
                    )
                )
            return
        if not (seg.flags & TCP_SYN and acceptable):
            return
        self._rcv_nxt = seg.seq + 1
        self._snd_una = ack
        self._snd_wnd = seg.window
        self.mss = min(self.mss, tcp_mss_from(seg.options) or 536)
        self._become_established()
        self._send_ack()

    def _become_established(self) -> None:
        self.state = State.ESTABLISHED
        self._retries = 0
        self._cancel_timer()
        if not self._established.done():
            self._established.set_result(None)
        if self._listener is not None:
            self._listener._established(self)
        log.debug("event=tcp_established conn=%s", self)

    def _on_ack(self, seg: Tcp) -> bool:
        """Process the ACK field; False when the segment must be dropped."""
        ack = _unwrap(seg.ack, self._snd_nxt)
        if ack > self._snd_nxt:
            self._send_ack()  # acknowledges something never sent
            return False
        if self.state is State.SYN_RECEIVED:
            if ack != self._iss + 1:
                self._segment(TCP_RST, ack)
                return False
            self._snd_una = ack
            self._snd_wnd = seg.window
            self._become_established()
        if ack > self._snd_una:
            self._acked(ack)
            self._snd_wnd = seg.window
        elif ack == self._snd_una:
            if seg.window == 0:
                self._retries = 0  # a probe answered: the peer is there, its window shut
            in_flight = self._snd_nxt > self._snd_una
            if in_flight and not seg.payload and seg.window == self._snd_wnd:
                self._dup_acks += 1
                if self._dup_acks == 3:
                    self._timed = None
                    self._recover = self._snd_nxt
                    self._transmit_from(self._snd_una, self.mss)
            self._snd_wnd = seg.window
        self._on_fin_acked()
        return True

    def _acked(self, ack: int) -> None:
        self._snd_una = ack
        self._dup_acks = 0
        self._retries = 0
        data_end = ack if self._fin_seq is None else min(ack, self._fin_seq)
        if data_end > self._buf_start:
            del self._send_buf[: data_end - self._buf_start]
            self._buf_start = data_end
            if len(self._send_buf) < TCP_SEND_BUFFER:
                self._writable.set()
        if self._recover is not None:
            if ack < self._recover:  # a partial ACK (RFC 6582): the next hole went too
                self._transmit_from(ack, self.mss)
            else:
                self._recover = None
        if self._timed is not None and ack >= self._timed.end:
            self._rtt_sample(fine_clock() - self._timed.sent)
            self._timed = None
        if self._snd_una == self._snd_nxt:
            self._cancel_timer()
        else:
            self._arm_timer(restart=True)

    def _on_fin_acked(self) -> None:
        if self._fin_seq is None or self._snd_una <= self._fin_seq:
            return
        if self.state is State.FIN_WAIT_1:
            self.state = State.FIN_WAIT_2
        elif self.state is State.CLOSING:
            self._time_wait()
        elif self.state is State.LAST_ACK:
            self._finish(None)

    def _on_data(self, seq: int, payload: bytes, fin: bool) -> None:
        if self.state not in _RECEIVING:
            return  # the peer's FIN came already: this is a retransmission
        if seq > self._rcv_nxt:
            if seq < self._rcv_nxt + self._window() and len(self._out_of_order) < 256:
                self._out_of_order.setdefault(seq, (payload, fin))
            return
        self._accept(seq, payload, fin)
        while self._rcv_nxt in self._out_of_order:
            payload, fin = self._out_of_order.pop(self._rcv_nxt)
            self._accept(self._rcv_nxt, payload, fin)
        for stale in [s for s in self._out_of_order if s < self._rcv_nxt]:
            payload, fin = self._out_of_order.pop(stale)
            self._accept(stale, payload, fin)

    def _accept(self, seq: int, payload: bytes, fin: bool) -> None:
        skip = self._rcv_nxt - seq
        if skip > len(payload):
            return  # entirely old (a FIN already counted included)
        rest = payload[skip:] if skip else payload  # the usual segment: no copy
        window = self._window()
        data = rest[:window] if len(rest) > window else rest
        if data:
            self._recv_buf += data
            self._rcv_nxt += len(data)
            self._readable.set()
        if fin and len(data) == len(rest) and not self._peer_closed:
            self._rcv_nxt += 1
            self._peer_closed = True
            self._readable.set()
            if self.state is State.ESTABLISHED:
                self.state = State.CLOSE_WAIT
            elif self.state is State.FIN_WAIT_1:
                self.state = State.CLOSING
                self._on_fin_acked()
            elif self.state is State.FIN_WAIT_2:
                self._time_wait()

    # ---- segments out ---------------------------------------------------------------------

    def _window(self) -> int:
        return max(0, TCP_RECEIVE_BUFFER - len(self._recv_buf))

    def _segment(self, flags: int, seq: int, payload: bytes = b"", options: bytes = b"") -> None:
        window = self._window()
        if flags & TCP_ACK:
            self._advertised = window
            if self._unacked or self._delayed_ack is not None:
                self._acknowledged_all()
        seq_field = seq % _MOD
        ack_field = self._rcv_nxt % _MOD if flags & TCP_ACK else 0
        if not options and self._stack._send_tcp_frame(
            self._remote_ip,
            self.local[1],
            self.key[2],
            seq_field,
            ack_field,
            flags,
            window,
            payload,
        ):
            return
        header = tcp_header(
            self.local[1],
            self.key[2],
            seq_field,
            ack_field,
            flags,
            window,
            payload,
            self._pseudo_sum + 20 + len(options) + len(payload),
            options,
        )
        self._stack._send_ip(self._remote_ip, PROTO_TCP, header + payload)

    def _send_ack(self) -> None:
        self._segment(TCP_ACK, self._snd_nxt)

    def _ack_later(self, size: int) -> None:
        """Delayed, cumulative ACKs (RFC 1122 4.2.3.2, RFC 5681 4.2): in-order data is
        acknowledged once the datagrams that arrived together are all processed (the backend
        reads them in one batch; the flush runs after it), by one ACK for all of them when
        there are two segments or more or a short one; a lone full-sized segment waits up to
        DELAYED_ACK for another. Data sent meanwhile carries the ACK instead."""
        self._unacked += 1
        self._short_unacked |= size < self.mss
        if not self._ack_flush_scheduled:
            self._ack_flush_scheduled = True
            self._loop.call_soon(self._flush_ack)

    def _flush_ack(self) -> None:
        self._ack_flush_scheduled = False
        if not self._unacked or self.state is State.CLOSED:
            return
        if self._unacked >= 2 or self._short_unacked:
            self._send_ack()
        elif self._delayed_ack is None:
            self._delayed_ack = self._loop.call_later(DELAYED_ACK, self._on_delayed_ack)

    def _on_delayed_ack(self) -> None:
        self._delayed_ack = None
        if self._unacked and self.state is not State.CLOSED:
            self._send_ack()

    def _acknowledged_all(self) -> None:
        """A segment carrying our ACK goes out: nothing received is waiting for one."""
        self._unacked = 0
        self._short_unacked = False
        if self._delayed_ack is not None:
            self._delayed_ack.cancel()
            self._delayed_ack = None

    def _output(self) -> None:
        """Send what the peer's window allows, then the FIN once all data went: one burst."""
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED, State.CLOSED):
            return
        with self._stack.burst:
            self._send_window()

    def _send_window(self) -> None:
        while True:
            end = self._buf_start + len(self._send_buf)
            room = self._snd_una + self._snd_wnd - self._snd_nxt
            if self._snd_nxt < end and room > 0:
                self._transmit_from(self._snd_nxt, min(room, end - self._snd_nxt))
                continue
            if (
                self._fin_queued
                and self._snd_nxt == end
                and (self._fin_seq is None or self._snd_nxt == self._fin_seq)
            ):
                self._fin_seq = end
                self._segment(TCP_FIN | TCP_ACK, end)
                self._snd_nxt = end + 1
                self._arm_timer()
            elif self._snd_wnd == 0 and self._snd_nxt == self._snd_una < end:
                # Data waits on a zero window with nothing in flight: if the segment that
                # reopens it is lost, only a probe finds out (the persist timer).
                self._arm_timer()
            return

    def _transmit_from(self, seq: int, limit: int) -> None:
        """One segment of up to `limit` bytes (and the MSS) starting at `seq`."""
        offset = seq - self._buf_start
        data = bytes(self._send_buf[offset : offset + min(limit, self.mss)])
        if not data:
            if self._fin_seq is not None and seq == self._fin_seq:
                self._segment(TCP_FIN | TCP_ACK, seq)
            return
        self._segment(TCP_ACK | TCP_PSH, seq, data)
        end = seq + len(data)
        if end > self._snd_nxt:
            if self._timed is None:
                self._timed = _Timed(end, fine_clock())
            self._snd_nxt = end
        self._arm_timer()

    # ---- timers ---------------------------------------------------------------------------

    def _rtt_sample(self, rtt: float) -> None:
        """RFC 6298 section 2."""
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._rto = min(RTO_MAX, max(RTO_MIN, self._srtt + 4 * self._rttvar))

    def _arm_timer(self, restart: bool = False) -> None:
        if self._timer is not None and not restart:
            return
        self._cancel_timer()
        self._timer = self._loop.call_later(self._rto, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        self._retries += 1
        if self._retries > TCP_MAX_RETRIES:
            self._finish(
                TimeoutError(
                    errno.ETIMEDOUT, f"{self}: no answer after {TCP_MAX_RETRIES} retransmissions"
                )
            )
            return
        self._rto = min(RTO_MAX, self._rto * 2)
        self._timed = None
        self._recover = None
        if self.state is State.SYN_SENT:
            self._send_syn(TCP_SYN)
        elif self.state is State.SYN_RECEIVED:
            self._send_syn(TCP_SYN | TCP_ACK)
        elif self._snd_wnd == 0 and self._snd_nxt == self._snd_una and self._send_buf:
            self._transmit_from(self._snd_una, 1)  # probe the zero window
        else:
            # Go back to the first unacknowledged byte: what the peer holds out of order it
            # acknowledges at once, the rest goes again as the window allows.
            self._snd_nxt = self._snd_una
            self._output()
        self._arm_timer()

    def _time_wait(self) -> None:
        self.state = State.TIME_WAIT
        self._cancel_timer()
        self._done.set()
        self._loop.call_later(TIME_WAIT, self._finish, None)

    def _finish(self, error: OSError | None) -> None:
        if error is not None and self._error is None and self.state is not State.CLOSED:
            self._error = error
            log.debug("event=tcp_closed conn=%s error=%r", self, str(error))
        if self._listener is not None and self.state is State.SYN_RECEIVED:
            self._listener._half_open -= 1
        self.state = State.CLOSED
        self._cancel_timer()
        self._acknowledged_all()  # nothing more to acknowledge: no delayed ACK left armed
        if self._stack._tcp.get(self.key) is self:
            del self._stack._tcp[self.key]
        if not self._established.done():
            self._established.set_exception(error or ConnectionResetError(f"{self} closed"))
            self._established.exception()  # retrieved here: connect() may be gone already
        self._readable.set()
        self._writable.set()
        self._done.set()
