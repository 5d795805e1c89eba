"""Ports published in host mode, in kernel mode: Docker's port mapping, with nftables.

As Docker, a task with host-mode ports gets an interface on the node's gateway bridge (the
docker_gwbridge, here `swgwbridge` in the node's namespace, 172.18.0.1/16): a veth whose
node end is on the bridge and whose container end is `gwbr0` with the task's gwbridge address
and the container's default route (so answers to clients off the overlay go back through the
node). The node's table `swarmlab_hostports` DNATs each published port of the node's own
addresses (`fib daddr type local`, from elsewhere in prerouting and from the node itself in
output, as Docker's DOCKER chain) to that address and the target port; conntrack takes the
answers back. Only the node running the task has the rule: elsewhere nothing answers.
A task's rules and interface go when it stops (`release`); a port another task of this node
already publishes fails the start with Docker's error. A published port left to the node
(published 0) gets the first free one from 30000 up (Swarm's dynamic range).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from controlplane.datapath.host_ports import GWBRIDGE, HostPortError, host_mode_ports
from controlplane.datapath.kernel import namespaces, nft
from controlplane.pb.objects_pb2 import PortConfig, Task
from controlplane.store.kinds import name_of

log = logging.getLogger("controlplane.datapath.kernel.host_ports")

TABLE = "swarmlab_hostports"
BRIDGE = "swgwbridge"
CONTAINER_LINK = "gwbr0"
DYNAMIC_PORTS = range(30000, 32768)


@dataclass
class _Published:
    netns: str
    ip: str
    link: str  # the veth's end on the bridge
    ports: list[PortConfig]  # as published: the PortStatus


def ruleset(published: list[_Published]) -> str:
    """The node's table: every published port to its task's gwbridge address."""
    rules = [
        f"    fib daddr type local {p.protocol} dport {p.published_port} "
        f"dnat to {task.ip}:{p.target_port}"
        for task in sorted(published, key=lambda t: int(ipaddress.IPv4Address(t.ip)))
        for p in task.ports
    ]
    return nft.local_dnat_table(TABLE, rules)


class KernelHostPorts:
    """One node's host-mode ports in kernel mode (see the module docstring)."""

    def __init__(self, node_netns: str | None) -> None:
        self.node_netns = node_netns
        self._tasks: dict[str, _Published] = {}
        self._bridge_made = False
        self._next_link = 0

    def publish(self, task: Task, container_netns: str) -> list[PortConfig]:
        """Publish `task`'s host-mode ports to its container in `container_netns`; what was
        published (none: the task has no host-mode port). HostPortError, nothing left of the
        task, when a port is taken here."""
        wanted = host_mode_ports(task)
        if not wanted or task.id in self._tasks:
            return self.port_status(task.id)
        ports = self._allocate(task, wanted)
        self._bring_bridge()
        ip, link = self._free_address(), f"swhp{self._next_link}"
        self._next_link += 1
        published = _Published(container_netns, ip, link, ports)
        try:
            self._plug(published)
            self._tasks[task.id] = published
            self._load()
        except Exception:
            self._tasks.pop(task.id, None)
            namespaces.run_in(self.node_netns, ["ip", "link", "del", link], check=False)
            raise
        log.info(
            "event=host_ports_published backend=kernel task=%s ip=%s ports=%s",
            task.id,
            ip,
            ",".join(f"{p.published_port}->{p.target_port}/{p.protocol}" for p in ports),
        )
        return list(ports)

    def _allocate(self, task: Task, wanted: list[PortConfig]) -> list[PortConfig]:
        taken = {
            (p.protocol, p.published_port) for done in self._tasks.values() for p in done.ports
        }
        ports = []
        for p in wanted:
            protocol = p.protocol or "tcp"
            port = p.published_port or next(
                (n for n in DYNAMIC_PORTS if (protocol, n) not in taken), 0
            )
            if not port or (protocol, port) in taken:
                raise HostPortError(
                    "driver failed programming external connectivity on endpoint "
                    f"{name_of(task)}: Bind for 0.0.0.0:{p.published_port} failed: "
                    "port is already allocated"
                )
            taken.add((protocol, port))
            shown = PortConfig()
            shown.CopyFrom(p)
            shown.protocol, shown.published_port = protocol, port
            ports.append(shown)
        return ports

    def _bring_bridge(self) -> None:
        if self._bridge_made:
            return
        node = self.node_netns
        namespaces.run_in(node, ["ip", "link", "del", BRIDGE], check=False)
        namespaces.run_in(node, ["ip", "link", "add", BRIDGE, "type", "bridge"])
        gateway = f"{GWBRIDGE[1]}/{GWBRIDGE.prefixlen}"
        namespaces.run_in(node, ["ip", "addr", "add", gateway, "dev", BRIDGE])
        namespaces.run_in(node, ["ip", "link", "set", BRIDGE, "up"])
        namespaces.sysctl(node, "net.ipv4.ip_forward", "1")
        self._bridge_made = True

    def _plug(self, task: _Published) -> None:
        node, cns = self.node_netns, task.netns
        peer = ["peer", "name", CONTAINER_LINK, "netns", cns]
        namespaces.run_in(node, ["ip", "link", "add", task.link, "type", "veth", *peer])
        namespaces.run_in(node, ["ip", "link", "set", task.link, "master", BRIDGE, "up"])
        for argv in (
            ["ip", "addr", "add", f"{task.ip}/{GWBRIDGE.prefixlen}", "dev", CONTAINER_LINK],
            ["ip", "link", "set", CONTAINER_LINK, "up"],
            ["ip", "route", "replace", "default", "via", str(GWBRIDGE[1])],
        ):
            namespaces.run_in(cns, argv)

    def _load(self) -> None:
        nft.load(self.node_netns, ruleset(list(self._tasks.values())), "host port table")

    def _free_address(self) -> str:
        used = {t.ip for t in self._tasks.values()}
        for host in GWBRIDGE.hosts():
            if host != GWBRIDGE[1] and str(host) not in used:
                return str(host)
        raise HostPortError(f"no free address left on the gateway bridge {GWBRIDGE}")

    def port_status(self, task_id: str) -> list[PortConfig]:
        published = self._tasks.get(task_id)
        return list(published.ports) if published is not None else []

    def tasks(self) -> set[str]:
        return set(self._tasks)

    def release(self, task_id: str) -> None:
        """The task stopped or left: its rules and its gwbridge interface go."""
        published = self._tasks.pop(task_id, None)
        if published is None:
            return
        self._load()
        namespaces.run_in(self.node_netns, ["ip", "link", "del", published.link], check=False)
        log.info("event=host_ports_released backend=kernel task=%s", task_id)

    def show(self) -> str:
        """The node's host port table as `nft list table` prints it ('' when none)."""
        if not self._tasks:
            return ""
        listed = namespaces.run_in(self.node_netns, ["nft", "list", "table", "ip", TABLE], False)
        return f"# kernel: host-mode ports in the node's namespace\n{listed}"

    def close(self) -> None:
        """Every rule, interface and the bridge gone."""
        for published in self._tasks.values():
            namespaces.run_in(self.node_netns, ["ip", "link", "del", published.link], check=False)
        self._tasks.clear()
        if self._bridge_made:
            nft.delete_table(self.node_netns, TABLE)
            namespaces.run_in(self.node_netns, ["ip", "link", "del", BRIDGE], check=False)
            self._bridge_made = False
