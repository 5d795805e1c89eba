"""busybox's `ip addr` in an emulated container: its loopback and one `ethN` per network
stack it has (in the order of its networks, as Docker names a container's interfaces), with
the endpoint's MAC, address, prefix and MTU (1450, or 1424 on an encrypted overlay), in
busybox's layout. Other `ip` objects are refused with a message saying what is emulated.

Interface indexes are the container's own: lo is 1, ethN is 2N+2 with its veth peer 2N+3 in
the node's sandbox (`eth0@if3`), since an emulated container has no kernel to number them.
"""

from __future__ import annotations

from controlplane.agent.process import Exec

_ADDR_OBJECTS = ("a", "ad", "add", "addr", "addre", "addres", "address")
_SHOW_COMMANDS = ("", "show", "list", "lst", "sh", "ls", "s", "l")


async def ip(process: Exec, argv: list[str]) -> int:
    """`ip [-4] addr [show [dev] IFACE]`."""
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
    interfaces = _interfaces(process)
    if rest:
        chosen = [lines for name, lines in interfaces if name == rest[0]]
        if not chosen:
            process.err(f"ip: can't find device '{rest[0]}'")
            return 1
    else:
        chosen = [lines for _, lines in interfaces]
    for lines in chosen:
        for line in lines:
            process.out(line)
    return 0


def _interfaces(process: Exec) -> list[tuple[str, list[str]]]:
    found = [
        (
            "lo",
            [
                "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue qlen 1000",
                "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00",
                "    inet 127.0.0.1/8 scope host lo",
                "       valid_lft forever preferred_lft forever",
            ],
        )
    ]
    for n, stack in enumerate(process.net.stacks):
        name, index = f"eth{n}", 2 * n + 2
        found.append(
            (
                name,
                [
                    f"{index}: {name}@if{index + 1}: <BROADCAST,MULTICAST,UP,LOWER_UP,M-DOWN> "
                    f"mtu {stack.mtu} qdisc noqueue ",
                    f"    link/ether {stack.mac} brd ff:ff:ff:ff:ff:ff",
                    f"    inet {stack.ip}/{stack.network.prefixlen} brd "
                    f"{stack.network.broadcast_address} scope global {name}",
                    "       valid_lft forever preferred_lft forever",
                ],
            )
        )
    return found
