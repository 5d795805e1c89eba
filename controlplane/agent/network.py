"""A container's view of the network: the IPv4 stacks of its endpoints (one per attached
network, from the node's data path) and name resolution through the node's embedded resolver,
as a container whose /etc/resolv.conf says `nameserver 127.0.0.11` (with `options ndots:0`: a
name is asked as given) would resolve. The node answers in-process: no socket between a
container and its own node.
"""

from __future__ import annotations

import errno
import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dnslib import QTYPE, RCODE, DNSError, DNSRecord

from controlplane.datapath.host_ports import DEFAULT_BRIDGE, GWBRIDGE
from controlplane.datapath.resolvconf import EMBEDDED_RESOLVER
from controlplane.datapath.userspace import IPv4Stack
from controlplane.datapath.userspace.stack import InterfaceCounters

if TYPE_CHECKING:
    from controlplane.agent.host_stack import HostNetwork

NODE_BRIDGES = (DEFAULT_BRIDGE, GWBRIDGE)  # a container's default route is via one of these


class StreamConnection(Protocol):
    """A TCP connection: the emulated stack's or a real socket's (`host_stack.py`)."""

    peer: tuple[str, int]
    local: tuple[str, int]

    async def send(self, data: bytes) -> None: ...

    async def recv(self, size: int = 65536) -> bytes: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Listener(Protocol):
    async def accept(self) -> StreamConnection: ...

    def close(self) -> None: ...


class DatagramSocket(Protocol):
    def sendto(self, data: bytes, address: tuple[str, int]) -> None: ...

    async def recvfrom(self) -> tuple[bytes, tuple[str, int]]: ...

    def close(self) -> None: ...


class Stack(Protocol):
    """What a container's programs use of one of its interfaces: an endpoint's emulated
    IPv4 stack (`datapath.userspace.IPv4Stack`), or the node's own network in host mode
    (`host_stack.HostStack`). `network` is what it routes to."""

    @property
    def ip(self) -> str: ...

    @property
    def mac(self) -> str: ...

    @property
    def mtu(self) -> int: ...

    @property
    def network(self) -> ipaddress.IPv4Network: ...

    @property
    def counters(self) -> InterfaceCounters: ...

    async def ping(self, dst: str, timeout: float = 2.0, size: int = 56) -> float: ...

    def udp_socket(self, port: int = 0) -> DatagramSocket: ...

    def listen(self, port: int, backlog: int = 128) -> Listener: ...

    async def connect(self, dst: str, port: int, timeout: float = 30.0) -> StreamConnection: ...


class Networking(Protocol):
    """What the node's data path offers its containers (`datapath.node_datapath`)."""

    async def attach(self, endpoint_name: str, network_ids: Sequence[str]) -> list[IPv4Stack]: ...

    async def resolve(self, query: bytes, network_ids: Sequence[str]) -> bytes | None: ...


@runtime_checkable
class KernelNetworking(Protocol):
    """The node's data path in kernel mode (`datapath.node_datapath`): a container is a
    network namespace running real commands, with the node's resolver inside it."""

    def kernel_netns(self, endpoint_name: str, network_ids: Sequence[str]) -> str | None: ...

    async def serve_names(self, netns: str, network_ids: Sequence[str]) -> Closable: ...


class Closable(Protocol):
    async def close(self) -> None: ...


class NameNotFoundError(LookupError):
    """The resolver knows no address for the name (NXDOMAIN, or no records)."""

    def __init__(self, name: str, rcode: str) -> None:
        super().__init__(f"{name}: {rcode}")
        self.name = name
        self.rcode = rcode


@dataclass(frozen=True)
class Answer:
    """The addresses a query got (`records`: A or AAAA rdata as text) and its rcode."""

    rcode: str
    records: tuple[str, ...]


@dataclass
class ContainerNetwork:
    """One container's stacks, in the order of its networks, and its resolver; `host` is
    the node's network when the container shares it (`--network host`: its one stack is the
    node's, it has no resolver of the node's). `node` is the node's network otherwise: while
    the container has an interface on one of the node's bridges (docker0, docker_gwbridge),
    its default route leads there through the bridge's gateway, and what it reaches beyond
    its own networks it reaches from the node's address, as dockerd masquerades it."""

    network_ids: tuple[str, ...] = ()
    stacks: tuple[Stack, ...] = ()
    networking: Networking | None = None
    host: HostNetwork | None = None
    node: HostNetwork | None = None
    _rng: random.Random = field(default_factory=random.Random)

    nameserver = EMBEDDED_RESOLVER

    async def query(self, name: str, qtype: str = "A") -> Answer:
        """Ask the node's resolver for `name`'s `qtype` records. With no network, as a
        container without a resolver: SERVFAIL."""
        if self.networking is None or not self.network_ids:
            return Answer("SERVFAIL", ())
        request = DNSRecord.question(name, qtype)
        request.header.id = self._rng.randrange(1 << 16)
        raw = await self.networking.resolve(bytes(request.pack()), self.network_ids)
        if raw is None:
            return Answer("SERVFAIL", ())
        try:
            reply = DNSRecord.parse(raw)
        except DNSError:
            return Answer("FORMERR", ())
        wanted = getattr(QTYPE, qtype)
        records = tuple(str(rr.rdata) for rr in reply.rr if rr.rtype == wanted)
        return Answer(RCODE.get(reply.header.rcode), records)

    async def lookup(self, host: str) -> str:
        """The IPv4 address of `host`: an IP literal as is, else the resolver's first A
        record; NameNotFoundError when there is none."""
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            pass
        answer = await self.query(host)
        if not answer.records:
            raise NameNotFoundError(host, answer.rcode if answer.rcode != "NOERROR" else "NODATA")
        return answer.records[0]

    def stack_for(self, ip: str) -> Stack:
        """The stack whose network holds `ip` (the route a container has), else, with a
        default route (an interface on a node's bridge), the node's own network from its
        address (which reaches the lab, and nothing beyond); ENETUNREACH otherwise."""
        address = ipaddress.IPv4Address(ip)
        for stack in self.stacks:
            if address in stack.network:
                return stack
        if self.node is not None and any(s.network in NODE_BRIDGES for s in self.stacks):
            return self.node.stack()
        raise OSError(errno.ENETUNREACH, "Network is unreachable")
