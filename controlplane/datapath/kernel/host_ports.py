"""Published ports in kernel mode (host-mode ports of tasks, `docker run -p` of standalone
containers): Docker's port mapping, with nftables.

As Docker, a task or container on an overlay with published ports gets an interface on the
node's gateway bridge (the docker_gwbridge, here `swgwbridge` in the node's namespace,
172.18.0.1/16): a veth whose node end is on the bridge and whose container end is `gwbr0`
with the owner's gwbridge address and the container's default route (so answers to clients
off the overlay go back through the node). One on no overlay is plugged alike, ports or not,
into the node's default bridge (Docker's `bridge` network on docker0: here `swdocker0`,
172.17.0.1/16, its end `eth0`). What owners send off a bridge is masqueraded, as dockerd
does for each bridge's subnet. The node's table `swarmlab_hostports` DNATs each published port of
the node's own addresses (`fib daddr type local`; only that address for a HostIp), from
elsewhere in prerouting and from the node itself in output, as Docker's DOCKER chain, to that
address and the target port; conntrack takes the answers back. Only the node running the
owner has the rule: elsewhere nothing answers. Its rules and interface go when it stops
(`release`); a port another owner of this node already publishes fails the start with
Docker's error. A published port left to the node
(published 0) gets the first free one of the owner's range: from 30000 up for a task
(Swarm's dynamic range), from 32768 up for a container (dockerd's, the kernel's ephemeral
range); a range (`8080-8081:80`) the first free one of it.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from controlplane.datapath.host_ports import (
    GWBRIDGE,
    HostBinding,
    HostPortError,
    already_allocated,
    port_status,
    refusal,
    task_bindings,
)
from controlplane.datapath.kernel import namespaces, nft
from controlplane.datapath.program import mac_for
from controlplane.pb.objects_pb2 import PortConfig, Task
from controlplane.store.kinds import name_of

log = logging.getLogger("controlplane.datapath.kernel.host_ports")

TABLE = "swarmlab_hostports"
DYNAMIC_PORTS = range(30000, 32768)  # a task's published 0
EPHEMERAL_PORTS = range(32768, 61000)  # a container's empty HostPort


@dataclass(frozen=True)
class Bridge:
    """A bridge in the node's namespace that owners are plugged into: its name, subnet
    (the node's end holds the first address, the owners' gateway) and the name of the
    owner's end in its namespace."""

    name: str
    subnet: ipaddress.IPv4Network
    container_link: str

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet[1]


# docker_gwbridge: the second leg of a container on an overlay
GATEWAY_BRIDGE = Bridge("swgwbridge", GWBRIDGE, "gwbr0")
# Docker's default `bridge` network (docker0): a container on no overlay, its only leg
DEFAULT_BRIDGE = Bridge("swdocker0", ipaddress.IPv4Network("172.17.0.0/16"), "eth0")


@dataclass(frozen=True)
class BridgeEndpoint:
    """An owner's interface on a bridge, as `docker inspect` shows a container's network."""

    ip: str
    prefixlen: int
    gateway: str
    mac: str


@dataclass
class _Published:
    netns: str
    ip: str
    link: str  # the veth's end on the bridge
    ports: list[HostBinding]  # as bound
    bridge: Bridge = GATEWAY_BRIDGE


def _daddr(binding: HostBinding) -> str:
    if binding.host_ip in ("", "0.0.0.0"):
        return "fib daddr type local"
    return f"ip daddr {binding.host_ip}"


def _clash(binding: HostBinding, port: int, other: HostBinding) -> bool:
    """Whether `port` for `binding` is what `other` holds (a wildcard holds every address)."""
    addresses = {binding.shown_ip, other.shown_ip}
    return (other.protocol, other.published_port) == (binding.protocol, port) and (
        "0.0.0.0" in addresses or len(addresses) == 1
    )


def ruleset(published: list[_Published]) -> str:
    """The node's table: every published port to its owner's address on its bridge."""
    rules = [
        f"    {_daddr(p)} {p.protocol} dport {p.published_port} dnat to {owner.ip}:{p.target_port}"
        for owner in sorted(published, key=lambda t: int(ipaddress.IPv4Address(t.ip)))
        for p in owner.ports
    ]
    bridges = sorted({owner.bridge for owner in published}, key=lambda b: b.name)
    # from the node's own loopback (`curl 127.0.0.1:8080` on the node): the container
    # answers its gateway, as dockerd's MASQUERADE of local sources does without its proxy
    loopback = [f'    ip saddr 127.0.0.0/8 oifname "{b.name}" masquerade' for b in bridges]
    # what its owners send off the bridge leaves with the node's address (dockerd's
    # MASQUERADE of each bridge's subnet): nothing out there routes back to the bridge
    outbound = [f'    ip saddr {b.subnet} oifname != "{b.name}" masquerade' for b in bridges]
    return nft.local_dnat_table(TABLE, rules, [*(loopback if rules else ()), *outbound])


class KernelHostPorts:
    """One node's published ports in kernel mode (see the module docstring)."""

    def __init__(self, node_netns: str | None) -> None:
        self.node_netns = node_netns
        self._owners: dict[str, _Published] = {}
        self._bridges_made: set[Bridge] = set()
        self._next_link = 0

    def publish(self, task: Task, container_netns: str) -> list[PortConfig]:
        """Publish `task`'s host-mode ports to its container in `container_netns`; what was
        published (none: the task has no host-mode port). HostPortError, nothing left of the
        task, when a port is taken here."""
        wanted = task_bindings(task)
        if wanted:
            self.publish_endpoint(task.id, name_of(task), wanted, container_netns, DYNAMIC_PORTS)
        return self.port_status(task.id)

    def publish_endpoint(
        self,
        owner: str,
        endpoint: str,
        wanted: list[HostBinding],
        container_netns: str,
        dynamic: range = EPHEMERAL_PORTS,
        bridge: Bridge = GATEWAY_BRIDGE,
    ) -> list[HostBinding]:
        """Plug `owner` (a task or container id)'s namespace into the bridge and publish
        `wanted` (maybe none: a container on no overlay is on the bridge all the same, as
        Docker's on its `bridge` network); what was bound. HostPortError naming `endpoint`,
        nothing left of the owner, when a port is taken here; a port left to the node comes
        from `dynamic`. `bridge`: the docker_gwbridge beside an overlay, the default bridge
        for an owner on no overlay."""
        if owner in self._owners:
            return self.bound(owner)
        ports = self._allocate(endpoint, wanted, dynamic)
        self._bring_bridge(bridge)
        ip, link = self._free_address(bridge), f"swhp{self._next_link}"
        self._next_link += 1
        published = _Published(container_netns, ip, link, ports, bridge)
        try:
            self._plug(published)
            self._owners[owner] = published
            self._load()
        except Exception:
            self._owners.pop(owner, None)
            namespaces.run_in(self.node_netns, ["ip", "link", "del", link], check=False)
            raise
        log.info(
            "event=host_ports_published backend=kernel owner=%s ip=%s ports=%s",
            owner,
            ip,
            ",".join(f"{p.published_port}->{p.target_port}/{p.protocol}" for p in ports),
        )
        return list(ports)

    def _allocate(
        self, endpoint: str, wanted: list[HostBinding], dynamic: range
    ) -> list[HostBinding]:
        taken = [p for done in self._owners.values() for p in done.ports]
        ports: list[HostBinding] = []
        for binding in wanted:
            self._check_local(endpoint, binding)
            candidates = binding.candidates() if binding.published_port else dynamic
            port = next((n for n in candidates if not any(_clash(binding, n, t) for t in taken)), 0)
            if not port:
                raise refusal(endpoint, already_allocated(binding))
            bound = binding.bound_to(port)
            taken.append(bound)
            ports.append(bound)
        return ports

    def _check_local(self, endpoint: str, binding: HostBinding) -> None:
        """A HostIp must be one of the node's addresses, as a bind would require."""
        if binding.shown_ip == "0.0.0.0":
            return
        listed = namespaces.run_in(self.node_netns, ["ip", "-o", "-4", "addr", "show"])
        local = {field.partition("/")[0] for line in listed.splitlines() for field in line.split()}
        if binding.host_ip not in local:
            raise refusal(
                endpoint,
                f"Error starting userland proxy: listen {binding.protocol}4 "
                f"{binding.host_ip}:{binding.asked()}: bind: cannot assign requested address",
            )

    def _bring_bridge(self, bridge: Bridge) -> None:
        if bridge in self._bridges_made:
            return
        node, name = self.node_netns, bridge.name
        namespaces.run_in(node, ["ip", "link", "del", name], check=False)
        namespaces.run_in(node, ["ip", "link", "add", name, "type", "bridge"])
        gateway = f"{bridge.gateway}/{bridge.subnet.prefixlen}"
        namespaces.run_in(node, ["ip", "addr", "add", gateway, "dev", name])
        namespaces.run_in(node, ["ip", "link", "set", name, "up"])
        namespaces.sysctl(node, "net.ipv4.ip_forward", "1")
        # a connection to 127.0.0.1 DNATed onto the bridge keeps its loopback source until
        # the masquerade: routed out only with route_localnet (dockerd sets it on docker0)
        namespaces.sysctl(node, f"net.ipv4.conf.{name}.route_localnet", "1")
        self._bridges_made.add(bridge)

    def _plug(self, task: _Published) -> None:
        node, cns, bridge = self.node_netns, task.netns, task.bridge
        link = bridge.container_link
        peer = ["peer", "name", link, "address", mac_for(task.ip), "netns", cns]
        namespaces.run_in(node, ["ip", "link", "add", task.link, "type", "veth", *peer])
        namespaces.run_in(node, ["ip", "link", "set", task.link, "master", bridge.name, "up"])
        for argv in (
            ["ip", "addr", "add", f"{task.ip}/{bridge.subnet.prefixlen}", "dev", link],
            ["ip", "link", "set", link, "up"],
            ["ip", "route", "replace", "default", "via", str(bridge.gateway)],
        ):
            namespaces.run_in(cns, argv)

    def _load(self) -> None:
        nft.load(self.node_netns, ruleset(list(self._owners.values())), "host port table")

    def _free_address(self, bridge: Bridge) -> str:
        used = {t.ip for t in self._owners.values() if t.bridge == bridge}
        for host in bridge.subnet.hosts():
            if host != bridge.gateway and str(host) not in used:
                return str(host)
        raise HostPortError(f"no free address left on the bridge {bridge.name} {bridge.subnet}")

    def endpoint(self, owner: str) -> BridgeEndpoint | None:
        """The owner's interface on its bridge (None: it is not plugged)."""
        published = self._owners.get(owner)
        if published is None:
            return None
        subnet, ip = published.bridge.subnet, published.ip
        return BridgeEndpoint(ip, subnet.prefixlen, str(subnet[1]), mac_for(ip))

    def bound(self, owner: str) -> list[HostBinding]:
        published = self._owners.get(owner)
        return list(published.ports) if published is not None else []

    def port_status(self, task_id: str) -> list[PortConfig]:
        return port_status(self.bound(task_id))

    def owners(self) -> set[str]:
        return set(self._owners)

    def release(self, owner: str) -> None:
        """The owner stopped or left: its rules and its gwbridge interface go."""
        published = self._owners.pop(owner, None)
        if published is None:
            return
        self._load()
        namespaces.run_in(self.node_netns, ["ip", "link", "del", published.link], check=False)
        log.info("event=host_ports_released backend=kernel owner=%s", owner)

    def show(self) -> str:
        """The node's host port table as `nft list table` prints it ('' when none)."""
        if not self._owners:
            return ""
        listed = namespaces.run_in(self.node_netns, ["nft", "list", "table", "ip", TABLE], False)
        return f"# kernel: host-mode ports in the node's namespace\n{listed}"

    def close(self) -> None:
        """Every rule, interface and the bridge gone."""
        for published in self._owners.values():
            namespaces.run_in(self.node_netns, ["ip", "link", "del", published.link], check=False)
        self._owners.clear()
        if self._bridges_made:
            nft.delete_table(self.node_netns, TABLE)
        for bridge in self._bridges_made:
            namespaces.run_in(self.node_netns, ["ip", "link", "del", bridge.name], check=False)
        self._bridges_made.clear()
