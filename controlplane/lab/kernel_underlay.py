"""The lab's underlay in kernel mode (`swarmlab up --datapath kernel`): each node's data path
lives in its own network namespace, `<prefix>-<m1|w1|win1...>`, holding the node's data path
address 10.201.<lab>.<n> (n: the last byte of the node's loopback address), all plugged into
one bridge in a namespace of its own, `<prefix>-ul` (as a real swarm's hosts on one LAN; the
bridge's namespace has no firewall, so the host's rules never see the frames). The nodes'
control plane (API, Raft, gossip) stays on loopback; `--data-path-addr` sends the overlay
through the underlay.

Every namespace the lab's kernel data paths make starts with `<prefix>-` too, so `remove`
also clears what a SIGKILLed node left behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.datapath.kernel import namespaces

UNDERLAY_LINK = "ul0"


def default_prefix(lab: int) -> str:
    return f"swk{lab}"


_ROLES = {"manager": "m", "worker": "w", "windows": "win"}


def short_name(node: str) -> str:
    """manager-1 -> m1, worker-2 -> w2, windows-1 -> win1 (names stay short)."""
    role, _, number = node.partition("-")
    return f"{_ROLES.get(role, role)}{number}"


@dataclass(frozen=True)
class KernelUnderlay:
    lab: int
    prefix: str

    def node_netns(self, node: str) -> str:
        return f"{self.prefix}-{short_name(node)}"

    def datapath_address(self, loopback: str) -> str:
        return f"10.201.{self.lab}.{loopback.rsplit('.', 1)[1]}"

    def node_arguments(self, node: str) -> list[str]:
        """What `swarmlab node run` needs to program its data path in the kernel here."""
        return [
            "--datapath",
            "kernel",
            "--datapath-netns",
            self.node_netns(node),
            "--datapath-prefix",
            f"{self.prefix}-{short_name(node)}-",
        ]

    def create(self, nodes: Sequence[tuple[str, str]]) -> None:
        """The bridge and a namespace per (node name, loopback address), afresh."""
        self.remove()
        bridge = f"{self.prefix}-ul"
        namespaces.create(bridge)
        namespaces.run_in(bridge, ["ip", "link", "add", UNDERLAY_LINK, "type", "bridge"])
        namespaces.run_in(bridge, ["ip", "link", "set", UNDERLAY_LINK, "up"])
        for name, loopback in nodes:
            netns, port = self.node_netns(name), f"ul-{short_name(name)}"
            namespaces.create(netns)
            for argv in (
                ["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns],
                ["ip", "link", "set", port, "master", UNDERLAY_LINK, "up"],
            ):
                namespaces.run_in(bridge, argv)
            address = self.datapath_address(loopback)
            namespaces.run_in(netns, ["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
            namespaces.run_in(netns, ["ip", "link", "set", "eth0", "up"])

    def remove(self) -> None:
        """Every namespace of this lab's underlay and data paths."""
        for name in namespaces.listed():
            if name.startswith(f"{self.prefix}-"):
                namespaces.remove(name)
