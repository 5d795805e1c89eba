"""busybox's `ip addr` in an emulated container: its loopback and one `ethN` per network
stack it has (in the order of its networks, as Docker names a container's interfaces), with
the endpoint's MAC, address, prefix and MTU (1450, or 1424 on an encrypted overlay), in
busybox's layout; in host mode (`--network host`) the node's interfaces instead: `eth0`
with the node's address, then its bridges, then the veths of the containers on them
(`host_stack.HostNetwork`), with the IPv6 a host has (lo's ::1, each link-local address).
Other `ip` objects are refused with a message saying what is emulated.

Interface indexes are the container's own: lo is 1, ethN is 2N+2 with its veth peer 2N+3 in
the node's sandbox (`eth0@if3`), since an emulated container has no kernel to number them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from controlplane.agent.process import Exec
from controlplane.datapath.userspace.stack import InterfaceCounters

_ADDR_OBJECTS = ("a", "ad", "add", "addr", "addre", "addres", "address")
_SHOW_COMMANDS = ("", "show", "list", "lst", "sh", "ls", "s", "l")


async def ip(process: Exec, argv: list[str]) -> int:
    """`ip [-4] addr [show [dev] IFACE]` (`-4`: IPv4 addresses only, and only the interfaces
    that have one, as busybox shows them)."""
    only_ipv4 = "-4" in argv[1:]
    args = [a for a in argv[1:] if a not in ("-4", "-o")]
    if not args or args[0] not in _ADDR_OBJECTS:
        wanted = args[0] if args else ""
        process.err(
            f"ip: the emulated ip shows addresses only (`ip addr`), not '{wanted}'"
            if wanted
            else "BusyBox ip: usage: ip addr [show [dev] IFACE] (the emulated ip shows addresses)"
        )
        return 1
    command = args[1] if len(args) > 1 else ""
    if command not in _SHOW_COMMANDS:
        process.err(f"ip: the emulated ip cannot '{command}' addresses; only show them")
        return 1
    rest = [a for a in args[2:] if a != "dev"]
    listed = _listed(process)
    if rest:
        listed = [each for each in listed if each.name == rest[0]]
        if not listed:
            process.err(f"ip: can't find device '{rest[0]}'")
            return 1
    for each in listed:
        if only_ipv4 and each.ipv4:
            lines = [each.header, *each.ipv4]
        elif only_ipv4:
            continue
        else:
            lines = [each.header, each.link, *each.ipv4, *each.ipv6]
        for line in lines:
            process.out(line)
    return 0


@dataclass(frozen=True)
class Interface:
    """One interface of the container but lo: an endpoint's `ethN` (a veth, `peer` its
    index in the node's sandbox), or, in host mode, one of the node's."""

    name: str
    index: int
    address: ipaddress.IPv4Interface | None  # None: a bridge port, no IPv4 address
    mac: str
    mtu: int
    counters: InterfaceCounters
    peer: int = 0  # 0: not a veth
    carrier: bool = True
    queue_length: int = 0  # a physical interface's (a veth or bridge has none)
    master: str = ""  # the bridge a node's veth is a port of (host mode)
    link_local: ipaddress.IPv6Interface | None = None  # a host's interface has one

    @property
    def veth(self) -> bool:
        return self.peer != 0


def interfaces(process: Exec) -> list[Interface]:
    """The container's interfaces but lo, in `ip addr`'s order."""
    host = process.net.host
    if host is not None:
        return [
            Interface(
                i.name,
                n + 2,
                i.address,
                i.mac,
                i.mtu,
                InterfaceCounters(),
                peer=i.peer,
                carrier=i.carrier,
                queue_length=i.queue_length,
                master=i.master,
                # none before the first carrier (a bridge with no port yet), as the kernel's
                link_local=i.link_local if i.carrier else None,
            )
            for n, i in enumerate(host.interfaces())
        ]
    return [
        Interface(
            f"eth{n}",
            2 * n + 2,
            ipaddress.IPv4Interface(f"{stack.ip}/{stack.network.prefixlen}"),
            stack.mac,
            stack.mtu,
            stack.counters,
            peer=2 * n + 3,
        )
        for n, stack in enumerate(process.net.stacks)
    ]


_LIFETIME = "       valid_lft forever preferred_lft forever"


@dataclass(frozen=True)
class _Listed:
    """One interface's lines in `ip addr`: its header, link and addresses by family."""

    name: str
    header: str
    link: str
    ipv4: list[str]
    ipv6: list[str]


def _listed(process: Exec) -> list[_Listed]:
    host = process.net.host is not None  # the host's lo has IPv6 (a container's has none)
    found = [
        _Listed(
            "lo",
            "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue qlen 1000",
            "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00",
            ["    inet 127.0.0.1/8 scope host lo", _LIFETIME],
            ["    inet6 ::1/128 scope host ", _LIFETIME] if host else [],
        )
    ]
    for i in interfaces(process):
        name = f"{i.name}@if{i.peer}" if i.veth else i.name
        flags = (
            "BROADCAST,MULTICAST,UP,LOWER_UP" if i.carrier else "NO-CARRIER,BROADCAST,MULTICAST,UP"
        )
        flags += ",M-DOWN" if i.veth else ""
        master = f" master {i.master}" if i.master else ""
        queue = f" qlen {i.queue_length}" if i.queue_length else " "
        ipv4 = []
        if i.address is not None:
            broadcast = i.address.network.broadcast_address
            ipv4 = [f"    inet {i.address} brd {broadcast} scope global {i.name}", _LIFETIME]
        found.append(
            _Listed(
                i.name,
                f"{i.index}: {name}: <{flags}> mtu {i.mtu} qdisc noqueue{master}{queue}",
                f"    link/ether {i.mac} brd ff:ff:ff:ff:ff:ff",
                ipv4,
                [f"    inet6 {i.link_local} scope link ", _LIFETIME] if i.link_local else [],
            )
        )
    return found
