"""The ingress routing mesh in kernel mode, with nftables (IPVS, Docker's way, is missing from
many kernels, this one included): as kube-proxy's nftables mode, DNAT balanced with
`numgen inc mod N` over one chain per task.

The path of a connection to a published port, as Docker's (node -> `ingress_sbox` -> task):
- the node's namespace DNATs the published port of its own addresses (connections from
  elsewhere, and from the node itself) to its ingress sandbox, across a veth pair
  (`swgw0` 169.254.77.1 in the node, `gw0` 169.254.77.2 in the sandbox: Docker's
  docker_gwbridge link);
- the sandbox (the namespace of the node's `ingress-sbox` endpoint on the ingress overlay)
  DNATs it to one of the service's tasks, `numgen inc` taking each in turn (IPVS's round
  robin), and masquerades it out of its overlay interface, so the task answers the sandbox
  whatever node it runs on; conntrack takes the answer back the same way.

The tables are rendered here (pure, from `ingress.mesh_table`) and loaded whole with
`nft -f` (one transaction: a table is replaced at once, never half-written). A port with no
task has no rule: the connection is refused by the node.
"""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.datapath.ingress import MESH_PROTOCOLS, MeshService, PublishedPort
from controlplane.datapath.kernel import namespaces, nft
from controlplane.datapath.kernel.namespaces import KernelError

NODE_SIDE, SANDBOX_SIDE = "169.254.77.1", "169.254.77.2"
NODE_LINK, SANDBOX_LINK = "swgw0", "gw0"
TABLE = "swarmlab_ingress"
MeshTable = Mapping[PublishedPort, MeshService]


def node_ruleset(table: MeshTable) -> str:
    """The node namespace's table: every published port on the node's own addresses to the
    sandbox, from outside (prerouting) and from the node itself (output)."""
    rules = [
        f"    fib daddr type local {port.protocol} dport {port.port} dnat to {SANDBOX_SIDE}"
        for port in sorted(table)
        if port.protocol in MESH_PROTOCOLS and table[port].backends
    ]
    return nft.local_dnat_table(TABLE, rules)


def sandbox_ruleset(table: MeshTable, overlay_link: str = "eth0") -> str:
    """The sandbox's table: each published port balanced over its tasks, SNAT to the
    sandbox's overlay address."""
    dispatch: list[str] = []
    chains: list[str] = []
    for port in sorted(table):
        service = table[port]
        if port.protocol not in MESH_PROTOCOLS:
            continue
        rule, targets = nft.balanced(
            f'iifname "{SANDBOX_LINK}" {port.protocol} dport {port.port}',
            f"{port.protocol}_{port.port}",
            [
                (
                    f"meta l4proto {port.protocol} dnat to {b.ip}:{b.port}",
                    f"task {b.task_id[:12]} of {service.service_name}",
                )
                for b in service.backends
            ],
        )
        dispatch += rule
        chains += targets
    return nft.replace_table(
        TABLE,
        [
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            *dispatch,
            "  }",
            *chains,
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f'    oifname "{overlay_link}" masquerade',
            "  }",
        ],
    )


class KernelMesh:
    """The routing mesh of one node: `start()` links the node's namespace and its ingress
    sandbox, `update(table)` loads both tables when the table changed, `close()` undoes it."""

    def __init__(self, node_netns: str | None, sandbox_netns: str) -> None:
        self.node_netns = node_netns
        self.sandbox_netns = sandbox_netns
        self._loaded: tuple[str, str] | None = None

    def start(self) -> None:
        if not namespaces.exists(self.sandbox_netns):
            raise KernelError(
                f"the ingress sandbox namespace {self.sandbox_netns!r} does not exist: the node "
                "has no endpoint on the ingress network yet"
            )
        node, sandbox = self.node_netns, self.sandbox_netns
        namespaces.run_in(node, ["ip", "link", "del", NODE_LINK], check=False)
        for argv in (
            [
                "ip",
                "link",
                "add",
                NODE_LINK,
                "type",
                "veth",
                "peer",
                "name",
                SANDBOX_LINK,
                "netns",
                sandbox,
            ],
            ["ip", "addr", "add", f"{NODE_SIDE}/30", "dev", NODE_LINK],
            ["ip", "link", "set", NODE_LINK, "up"],
        ):
            namespaces.run_in(node, argv)
        for argv in (
            ["ip", "addr", "add", f"{SANDBOX_SIDE}/30", "dev", SANDBOX_LINK],
            ["ip", "link", "set", SANDBOX_LINK, "up"],
            ["ip", "route", "replace", "default", "via", NODE_SIDE],
        ):
            namespaces.run_in(sandbox, argv)
        for name in (node, sandbox):
            namespaces.sysctl(name, "net.ipv4.ip_forward", "1")

    def update(self, table: MeshTable) -> bool:
        """Load the tables of `table`; False when they are already loaded."""
        wanted = (node_ruleset(table), sandbox_ruleset(table))
        if wanted == self._loaded:
            return False
        nft.load(self.node_netns, wanted[0], "mesh table")
        nft.load(self.sandbox_netns, wanted[1], "mesh table")
        self._loaded = wanted
        return True

    def close(self) -> None:
        for name in (self.node_netns, self.sandbox_netns):
            if name is None or namespaces.exists(name):
                nft.delete_table(name, TABLE)
        namespaces.run_in(self.node_netns, ["ip", "link", "del", NODE_LINK], check=False)
        self._loaded = None
