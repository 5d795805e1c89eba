"""Pure address-management primitives used by the allocator: CIDR parsing with Docker's error
wording, lowest-free id spaces (VNIs, ports, host addresses), the default-pool subnet carver and
the per-subnet address space.

Everything here is a function of what is currently allocated, never of history: "next" always
means "lowest free", so a new leader that rebuilds the state from the store hands out exactly
what the old leader would have. (Swarm's IPAM uses a round-robin cursor for addresses, which
avoids reusing a just-freed address; that cursor lives only in the leader's memory and is lost
on failover, so we do not pretend to keep it.)
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network

VNI_FIRST = 4096
"""Swarm's overlay driver allocates VXLAN ids from 4096 (the first one goes to `ingress`)."""
VNI_LAST = (1 << 24) - 1
DYNAMIC_PORT_FIRST = 30000
"""Swarm's dynamic range for published ports that the user left unset."""
DYNAMIC_PORT_LAST = 32767
DEFAULT_ADDR_POOL = "10.0.0.0/8"
DEFAULT_SUBNET_SIZE = 24
MAX_SUBNET_PREFIX = 30
"""A /30 still holds network, gateway, one address and broadcast; anything smaller is useless."""

_CIDR = re.compile(r"[^/\s]+/[0-9]{1,3}")


class AllocatorError(ValueError):
    """A refusal the user can act on. `kind` maps to a status code in the API layer:
    "invalid" (400 InvalidArgument), "conflict" (409/400), "exhausted" (500 ResourceExhausted)."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


def parse_subnet(text: str) -> IPv4Network:
    """Parse a user `--subnet` as Go's net.ParseCIDR would (a prefix length is mandatory, host bits
    are dropped), with dockerd's error text so the CLI prints what real Docker prints."""
    if not _CIDR.fullmatch(text):
        raise AllocatorError(f"Invalid subnet {text} : invalid CIDR address: {text}")
    try:
        net = ip_network(text, strict=False)
    except ValueError:
        raise AllocatorError(f"Invalid subnet {text} : invalid CIDR address: {text}") from None
    if not isinstance(net, IPv4Network):
        raise AllocatorError(
            f"Invalid subnet {text} : IPv6 overlay subnets are not supported by Swarmlab; "
            "use an IPv4 subnet"
        )
    if net.prefixlen > MAX_SUBNET_PREFIX:
        raise AllocatorError(
            f"Invalid subnet {text} : too small for an overlay network; "
            f"use a prefix of /{MAX_SUBNET_PREFIX} or shorter"
        )
    return net


def parse_range(text: str, subnet: IPv4Network, subnet_text: str) -> IPv4Network:
    """`--ip-range` must be a CIDR inside the subnet (swarmkit's wording for its refusals)."""
    if not _CIDR.fullmatch(text):
        raise AllocatorError(f"ipam configuration: invalid range {text}")
    try:
        rng = ip_network(text, strict=False)
    except ValueError:
        raise AllocatorError(f"ipam configuration: invalid range {text}") from None
    if not isinstance(rng, IPv4Network) or not rng.subnet_of(subnet):
        raise AllocatorError(
            f"ipam configuration: subnet {subnet_text} does not contain range {text}"
        )
    return rng


def parse_gateway(text: str, subnet: IPv4Network, subnet_text: str) -> IPv4Address:
    """`--gateway` must be a host address of the subnet (swarmkit's wording where it has one)."""
    try:
        gw = ip_address(text)
    except ValueError:
        raise AllocatorError(f"ipam configuration: invalid gateway {text}") from None
    if not isinstance(gw, IPv4Address) or gw not in subnet:
        raise AllocatorError(
            f"ipam configuration: subnet {subnet_text} does not contain gateway {text}"
        )
    if gw in (subnet.network_address, subnet.broadcast_address):
        raise AllocatorError(
            f"ipam configuration: gateway {text} is the network or broadcast address of "
            f"subnet {subnet_text}; use a host address such as {subnet.network_address + 1}"
        )
    return gw


def mac_address(address: str) -> str:
    """The container MAC as Docker derives it: 02:42 followed by the IPv4 address in hex, so the
    VXLAN FDB and neighbour entries can be computed from the address alone."""
    ip = IPv4Address(address.split("/", 1)[0])
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


class IdSpace:
    """Integers in [first, last], handed out lowest-free, or `serial`ly: from just after the
    last one handed out, wrapping to `first` at the end, as libnetwork's bit sequences do for
    swarmkit's overlay addresses (a freed address comes back only after the others). `_hint` is
    where the search starts: for lowest-free, a lower bound of the lowest free id (every id
    below it is taken), which keeps a long run of allocations linear."""

    def __init__(self, first: int, last: int, serial: bool = False) -> None:
        self.first = first
        self.last = last
        self.serial = serial
        self._used: set[int] = set()
        self._hint = first

    def __contains__(self, value: int) -> bool:
        return value in self._used

    def __len__(self) -> int:
        return len(self._used)

    def take(self) -> int | None:
        """The next free id, now taken; None when the space is full."""
        i = self._free_from(self._hint)
        if i is None and self.serial:
            i = self._free_from(self.first)
        if i is None:
            if not self.serial:
                self._hint = self.last + 1
            return None
        self._used.add(i)
        self._hint = i + 1
        return i

    def _free_from(self, start: int) -> int | None:
        i = start
        while i <= self.last and i in self._used:
            i += 1
        return i if i <= self.last else None

    def reserve(self, value: int) -> bool:
        """Take a specific id; False if it is outside the space or already taken."""
        if not self.first <= value <= self.last or value in self._used:
            return False
        self._used.add(value)
        return True

    def release(self, value: int) -> None:
        """Free an id (idempotent)."""
        if value in self._used:
            self._used.discard(value)
            if not self.serial:
                self._hint = min(self._hint, value)


@dataclass(frozen=True)
class Pool:
    """One allocated IPAM config of a network, as the store keeps it (Network.ipam)."""

    subnet: str
    gateway: str
    ip_range: str = ""


class AddressSpace:
    """Host addresses of one subnet (optionally limited to an ip-range), handed out serially;
    the network, broadcast and gateway addresses are never handed out."""

    def __init__(self, subnet: IPv4Network, gateway: IPv4Address, rng: IPv4Network | None) -> None:
        self.subnet = subnet
        self.gateway = gateway
        self.range = rng
        span = rng if rng is not None else subnet
        self._ids = IdSpace(int(span.network_address), int(span.broadcast_address), serial=True)
        self._fixed = {int(subnet.network_address), int(subnet.broadcast_address), int(gateway)}
        for value in self._fixed:
            self._ids.reserve(value)

    @property
    def pool(self) -> Pool:
        return Pool(str(self.subnet), str(self.gateway), str(self.range) if self.range else "")

    def take(self) -> IPv4Address | None:
        value = self._ids.take()
        return None if value is None else IPv4Address(value)

    def reserve(self, ip: IPv4Address) -> bool:
        """Take a given address; False if it is not allocatable here or already taken."""
        return int(ip) not in self._fixed and self._ids.reserve(int(ip))

    def release(self, ip: IPv4Address) -> None:
        if int(ip) not in self._fixed:
            self._ids.release(int(ip))

    def contains(self, ip: IPv4Address) -> bool:
        return ip in self.subnet

    def cidr(self, ip: IPv4Address) -> str:
        """An address in the CIDR form the store and the Engine API use (10.0.1.2/24)."""
        return f"{ip}/{self.subnet.prefixlen}"


def validate_default_pools(pools: list[str], subnet_size: int) -> list[IPv4Network]:
    """Check `--default-addr-pool` / `--default-addr-pool-mask-length` as given to `swarm init`."""
    if not pools:
        raise AllocatorError("--default-addr-pool: at least one pool is needed")
    nets: list[IPv4Network] = []
    for text in pools:
        if not _CIDR.fullmatch(text):
            raise AllocatorError(
                f"invalid --default-addr-pool {text}: invalid CIDR address: {text}"
            )
        try:
            net = ip_network(text, strict=False)
        except ValueError:
            raise AllocatorError(
                f"invalid --default-addr-pool {text}: invalid CIDR address: {text}"
            ) from None
        if not isinstance(net, IPv4Network):
            raise AllocatorError(
                f"invalid --default-addr-pool {text}: only IPv4 pools are supported"
            )
        if not net.prefixlen <= subnet_size <= MAX_SUBNET_PREFIX:
            raise AllocatorError(
                f"invalid --default-addr-pool-mask-length {subnet_size}: it must be between the "
                f"pool's prefix length ({net.prefixlen} for {text}) and {MAX_SUBNET_PREFIX}"
            )
        for other in nets:
            if net.overlaps(other):
                raise AllocatorError(
                    f"invalid --default-addr-pool {text}: it overlaps the pool {other}"
                )
        nets.append(net)
    return nets


class UsedSpans:
    """The address spans (first, last as integers) of the subnets in use, kept sorted as
    networks come and go, so that carving a new subnet neither converts nor sorts them all."""

    def __init__(self) -> None:
        self._spans: list[tuple[int, int]] = []

    @classmethod
    def of(cls, subnets: Iterable[IPv4Network]) -> UsedSpans:
        used = cls()
        for subnet in subnets:
            used.add(subnet)
        return used

    @staticmethod
    def _span(subnet: IPv4Network) -> tuple[int, int]:
        return int(subnet.network_address), int(subnet.broadcast_address)

    def add(self, subnet: IPv4Network) -> None:
        bisect.insort(self._spans, self._span(subnet))

    def remove(self, subnet: IPv4Network) -> None:
        span = self._span(subnet)
        i = bisect.bisect_left(self._spans, span)
        if i < len(self._spans) and self._spans[i] == span:
            del self._spans[i]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._spans)


def carve(pools: list[IPv4Network], subnet_size: int, used: UsedSpans) -> IPv4Network | None:
    """The first subnet of `subnet_size` in pool order that overlaps nothing in `used`. The used
    spans are merged into disjoint ones first, and each candidate jumps past the span that
    blocks it, so a /8 holding thousands of networks stays cheap."""
    step = 1 << (32 - subnet_size)
    spans: list[list[int]] = []
    for lo, hi in used:
        if spans and lo <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    for pool in pools:
        start = int(pool.network_address)
        end = int(pool.broadcast_address)
        candidate = start
        i = 0
        while candidate + step - 1 <= end:
            while i < len(spans) and spans[i][1] < candidate:
                i += 1  # spans wholly below the candidate block
            if i == len(spans) or spans[i][0] > candidate + step - 1:
                return IPv4Network((candidate, subnet_size))
            blocker = spans[i][1]
            candidate = ((blocker + 1 - start + step - 1) // step) * step + start
    return None
