"""busybox's `ifconfig` in an emulated container: lo and the interfaces `ip addr` lists
(`iproute.py`), sorted by name as busybox sorts them, each with its address, flags and
counters in busybox's layout (an endpoint's counters are its stack's; lo and the node's
interfaces in host mode count nothing, and show the IPv6 addresses a host has). `ifconfig
IFACE` shows one; setting one is refused."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from controlplane.agent.iproute import Interface, interfaces
from controlplane.agent.process import Exec
from controlplane.datapath.userspace.stack import InterfaceCounters

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_LOOPBACK = Interface(
    "lo",
    1,
    ipaddress.IPv4Interface("127.0.0.1/8"),
    "00:00:00:00:00:00",
    65536,
    InterfaceCounters(),
    queue_length=1000,
)
_HOST_LOOPBACK = replace(_LOOPBACK, link_local=ipaddress.IPv6Interface("::1/128"))


async def ifconfig(process: Exec, argv: list[str]) -> int:
    """`ifconfig [-a] [IFACE]`."""
    args = [a for a in argv[1:] if a != "-a"]
    if len(args) > 1:
        process.err(
            "ifconfig: the emulated ifconfig shows interfaces only; it cannot set "
            + " ".join(args[1:])
        )
        return 1
    loopback = _HOST_LOOPBACK if process.net.host is not None else _LOOPBACK
    shown = sorted([loopback, *interfaces(process)], key=lambda i: i.name)
    if args:
        shown = [i for i in shown if i.name == args[0]]
        if not shown:
            process.err(
                f"ifconfig: {args[0]}: error fetching interface information: Device not found"
            )
            return 1
    for interface in shown:
        for line in _block(interface):
            process.out(line)
    return 0


def _block(interface: Interface) -> list[str]:
    """One interface's lines, ending with busybox's blank line."""
    address, counters, pad = interface.address, interface.counters, " " * 10
    addresses: list[str] = []
    if interface.name == "lo":
        link, flags = "Local Loopback  ", "UP LOOPBACK RUNNING"
        assert address is not None
        addresses.append(f"inet addr:{address.ip}  Mask:{address.netmask}")
    else:
        link = f"Ethernet  HWaddr {interface.mac.upper()}  "
        flags = f"UP BROADCAST{' RUNNING' if interface.carrier else ''} MULTICAST"
        if address is not None:  # a bridge port has none
            addresses.append(
                f"inet addr:{address.ip}  Bcast:{address.network.broadcast_address}  "
                f"Mask:{address.netmask}"
            )
    if interface.link_local is not None:
        scope = "Host" if interface.name == "lo" else "Link"
        addresses.append(f"inet6 addr: {interface.link_local} Scope:{scope}")
    rx, tx = counters.rx_bytes, counters.tx_bytes
    return [
        f"{interface.name:<9} Link encap:{link}",
        *(f"{pad}{line}" for line in addresses),
        f"{pad}{flags}  MTU:{interface.mtu}  Metric:1",
        f"{pad}RX packets:{counters.rx_packets} errors:0 dropped:0 overruns:0 frame:0",
        f"{pad}TX packets:{counters.tx_packets} errors:0 dropped:0 overruns:0 carrier:0",
        f"{pad}collisions:0 txqueuelen:{interface.queue_length} ",
        f"{pad}RX bytes:{rx} ({_human(rx)})  TX bytes:{tx} ({_human(tx)})",
        "",
    ]


def _human(count: int) -> str:
    """busybox's short size: one decimal and a binary unit (`0.0 B`, `1.1 KiB`)."""
    value, unit = float(count), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {_UNITS[unit]}"
