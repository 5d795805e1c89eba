"""The node's own network, as a container run with `--network host` sees it: real sockets on
the emulated node's address instead of an emulated stack, as Docker gives such a container the
host's network namespace.

A server in it (`nc -l`, `httpd`, the nginx/whoami images) listens on the node's address: its
port is a real socket there, reachable by anything that reaches the node (another node's
host-mode container, a client of the machine), and taken from every other server of the node
(a second `nc -l -p 80` gets `Address in use`, as on one host). Its clients connect from the
node's address. The emulated node's network is the lab's: all lab nodes share the machine's
loopback (127/8); the node also reaches the containers on its bridges (TCP and ping to a
docker0 or docker_gwbridge address go through the node's interface there, as a host's do).
Anything else (an overlay address, the internet) is unreachable from the node (`Network is
unreachable`): the emulation sends no traffic off the machine. Ping to the lab uses an ICMP
socket, which the OS gives to root or to a group in `net.ipv4.ping_group_range`; others get
busybox's `permission denied`.

`HostNetwork` also describes the node's interfaces for `ip addr`, `ifconfig` and `hostname
-i` in such a container: `eth0` holding the node's address, then the node's bridges
(`docker0`, `docker_gwbridge`) as the node has them, then the veths of the containers on
those bridges, each with its IPv6 link-local address as a host's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic as fine_clock  # not the loop's: uvloop's counts whole ms
from typing import TYPE_CHECKING

from controlplane.datapath.program import mac_for
from controlplane.datapath.userspace.frames import internet_checksum
from controlplane.datapath.userspace.stack import InterfaceCounters

if TYPE_CHECKING:
    from controlplane.agent.network import Stack, StreamConnection

HOST_REACH = ipaddress.IPv4Network("127.0.0.0/8")  # what the emulated node's network reaches
NODE_PREFIX = 24  # the lab's nodes are 127.77.<lab>.x: one /24 (its underlay)
HOST_MTU = 1500
_UDP_QUEUE = 256
_ICMP_ECHO_REQUEST, _ICMP_ECHO_REPLY = 8, 0


@dataclass(frozen=True)
class HostInterface:
    """One interface of the node as `ip addr` lists it (not lo: every listing has that)."""

    name: str
    address: ipaddress.IPv4Interface | None  # None: a bridge port (a veth), no IPv4 address
    mac: str
    mtu: int = HOST_MTU
    carrier: bool = True  # a bridge with no port up has none (`NO-CARRIER`)
    queue_length: int = 0  # a physical interface's (a bridge has none)
    master: str = ""  # the bridge a veth is a port of
    peer: int = 0  # a veth's: its other end's index, in the container's namespace

    @property
    def link_local(self) -> ipaddress.IPv6Interface:
        """Its IPv6 link-local address, which the kernel derives from the MAC (EUI-64): the
        host's interfaces have one, as `ip addr` in host mode shows."""
        octets = [int(part, 16) for part in self.mac.split(":")]
        eui = [octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:]]
        return ipaddress.IPv6Interface((bytes([0xFE, 0x80, *[0] * 6, *eui]), 64))


def bridge_port(bridge: str, owner: str, peer: int) -> HostInterface:
    """The node's end of `owner`'s veth on `bridge` (`peer`: the container's end's index),
    named and addressed as the kernel does (`veth` and 7 hex digits, a random local MAC),
    here from a hash of both, so the same each time it is listed."""
    digest = hashlib.sha256(f"{bridge}/{owner}".encode()).digest()
    mac = ":".join(f"{b:02x}" for b in [(digest[0] & 0xFE) | 0x02, *digest[1:6]])
    return HostInterface(f"veth{digest.hex()[:7]}", None, mac, master=bridge, peer=peer)


class SocketConnection:
    """A real TCP connection with the emulated stack's connection interface
    (`network.StreamConnection`, what `nc`, `wget` and `http11` use)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.peer: tuple[str, int] = writer.get_extra_info("peername")[:2]
        self.local: tuple[str, int] = writer.get_extra_info("sockname")[:2]

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def recv(self, size: int = 65536) -> bytes:
        return await self._reader.read(size)

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer.transport.abort()


class HostListener:
    """A real listening TCP socket: bound at once (so a taken port fails the `listen` call,
    as the emulated stack's does), served by an asyncio server once the loop runs it."""

    def __init__(self, sock: socket.socket) -> None:
        self.port: int = sock.getsockname()[1]
        self._sock = sock
        self._ready: asyncio.Queue[SocketConnection] = asyncio.Queue()
        self._closed = False
        self._server: asyncio.Server | None = None
        self._starting = asyncio.create_task(self._serve(sock), name=f"host-listen-{self.port}")

    async def _serve(self, sock: socket.socket) -> None:
        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._ready.put_nowait(SocketConnection(reader, writer))

        try:
            self._server = await asyncio.start_server(connected, sock=sock)
        except BaseException:
            sock.close()
            raise

    async def accept(self) -> SocketConnection:
        if self._closed:
            raise OSError(errno.EBADF, f"TCP listener {self.port} is closed")
        return await self._ready.get()

    def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        else:  # closed before the loop ran the server: the socket is still ours to close
            self._starting.cancel()
            self._sock.close()
        while not self._ready.empty():
            self._ready.get_nowait().abort()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[tuple[bytes, tuple[str, int]]]) -> None:
        self._queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # dropped, as a full socket buffer does
            self._queue.put_nowait((data, (str(addr[0]), int(addr[1]))))


class HostUdpSocket:
    """A real UDP socket, bound at once, with the emulated stack's UDP socket interface."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.port: int = sock.getsockname()[1]
        self._queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(_UDP_QUEUE)
        self._transport: asyncio.BaseTransport | None = None
        self._starting = asyncio.create_task(self._receive(), name=f"host-udp-{self.port}")

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self._queue), sock=self._sock
            )
        except BaseException:
            self._sock.close()
            raise

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        if self._sock.fileno() < 0:
            raise OSError(errno.EBADF, f"UDP socket {self.port} is closed")
        _reachable(address[0])
        self._sock.sendto(data, address)

    async def recvfrom(self) -> tuple[bytes, tuple[str, int]]:
        if self._sock.fileno() < 0:
            raise OSError(errno.EBADF, f"UDP socket {self.port} is closed")
        return await self._queue.get()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        else:
            self._starting.cancel()
            self._sock.close()


def _reachable(ip: str) -> None:
    """ENETUNREACH for a destination the node's real sockets do not reach (its UDP goes to
    the lab's loopback only)."""
    if ipaddress.IPv4Address(ip) not in HOST_REACH:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")


class HostStack:
    """The node's network as a stack (`network.Stack`): sockets on `ip`, the node's address;
    TCP and ping to an address on one of the node's bridges go through the node's interface
    there (`gateways`: docker0's, docker_gwbridge's), as a host reaches its containers."""

    name = "host"
    mtu = HOST_MTU
    network = ipaddress.IPv4Network("0.0.0.0/0")  # routed here: `_route` says where it goes

    def __init__(self, ip: str, gateways: Callable[[], list[Stack]] = list) -> None:
        self.ip = ip
        self.mac = mac_for(ip)
        self.counters = InterfaceCounters()  # a host-mode container has no interface of its own
        self._gateways = gateways

    def _route(self, dst: str) -> Stack | None:
        """The node's bridge interface `dst` is behind (None: the lab's loopback, a real
        socket); ENETUNREACH for anywhere else."""
        address = ipaddress.IPv4Address(dst)
        if address in HOST_REACH:
            return None
        for gateway in self._gateways():
            if address in gateway.network:
                return gateway
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    def _bound(self, kind: socket.SocketKind, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.ip, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def listen(self, port: int, backlog: int = 128) -> HostListener:
        sock = self._bound(socket.SOCK_STREAM, port)
        sock.listen(backlog)
        return HostListener(sock)

    def udp_socket(self, port: int = 0) -> HostUdpSocket:
        return HostUdpSocket(self._bound(socket.SOCK_DGRAM, port))

    async def connect(self, dst: str, port: int, timeout: float = 30.0) -> StreamConnection:
        """A TCP connection from the node's address to (dst, port), or from its bridge
        interface to a container there."""
        gateway = self._route(dst)
        if gateway is not None:
            return await gateway.connect(dst, port, timeout)
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(dst, port, local_addr=(self.ip, 0))
        return SocketConnection(reader, writer)

    async def ping(self, dst: str, timeout: float = 2.0, size: int = 56) -> float:
        """One ICMP echo from the node's address to `dst`: its round-trip time in seconds
        (TimeoutError if none came back); PermissionError when the OS gives no ICMP socket."""
        gateway = self._route(dst)
        if gateway is not None:
            return await gateway.ping(dst, timeout, size)
        sock = _icmp_socket()
        try:
            sock.bind((self.ip, 0))
            loop = asyncio.get_running_loop()
            ident, seq = sock.getsockname()[1] & 0xFFFF, 1
            request = _echo(ident, seq, bytes(size))
            sent = fine_clock()
            sock.sendto(request, (dst, 0))  # one small datagram (uvloop has no sock_sendto)
            async with asyncio.timeout(timeout):
                while True:
                    reply = await loop.sock_recv(sock, 65536)
                    if _is_reply(reply, sock.type == socket.SOCK_RAW, seq):
                        return fine_clock() - sent
        finally:
            sock.close()


def _icmp_socket() -> socket.socket:
    """An ICMP datagram socket where the OS allows one, else a raw one (root)."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    except PermissionError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    return sock


def _echo(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    checksum = internet_checksum(header + payload)
    return struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, checksum, ident, seq) + payload


def _is_reply(packet: bytes, with_ip_header: bool, seq: int) -> bool:
    """Whether `packet` is the echo reply to `seq` (a raw socket's comes with its IP header;
    it also sees the request itself on loopback, which this tells apart)."""
    icmp = packet[(packet[0] & 0x0F) * 4 :] if with_ip_header else packet
    if len(icmp) < 8:
        return False
    kind, _, _, _, reply_seq = struct.unpack("!BBHHH", icmp[:8])
    return bool(kind == _ICMP_ECHO_REPLY and reply_seq == seq)


class HostNetwork:
    """The emulated node's network for its host-mode containers: its address and hostname,
    and its interfaces (`bridges` says which of the node's bridges exist now)."""

    def __init__(
        self,
        address: str,
        hostname: str,
        bridges: Callable[[], list[HostInterface]] = list,
        gateways: Callable[[], list[Stack]] = list,
        ports: Callable[[], list[HostInterface]] = list,
    ) -> None:
        """`gateways`: the node's interfaces on its userspace bridges now; `ports`: the
        veths of the containers on them now (`bridge_port`)."""
        self.address = address
        self.hostname = hostname
        self._bridges = bridges
        self._gateways = gateways
        self._ports = ports

    def stack(self) -> HostStack:
        return HostStack(self.address, self._gateways)

    def interfaces(self) -> list[HostInterface]:
        """The node's interfaces but lo, in `ip addr`'s order: eth0 first, then its bridges,
        then the veths of the containers on them."""
        eth0 = HostInterface(
            "eth0",
            ipaddress.IPv4Interface(f"{self.address}/{NODE_PREFIX}"),
            mac_for(self.address),
            queue_length=1000,
        )
        return [eth0, *self._bridges(), *self._ports()]

    def hosts_file(self) -> bytes:
        """The node's /etc/hosts, which a host-mode container shares: the node's name on its
        address (what `hostname -i` prints there)."""
        return (
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{self.address}\t{self.hostname}\n"
        ).encode()
