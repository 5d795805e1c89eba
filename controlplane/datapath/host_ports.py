"""Ports published in host mode (`-p mode=host,published=8080,target=80`): only a node running
a task of the service listens, on its own address, forwarding to that task, as Docker's port
mapping forwards to the container's address on `docker_gwbridge`.

Each task with host-mode ports gets an interface on the node's gwbridge: a bridge local to the
node (no VXLAN, nothing leaves the node) on Docker's default docker_gwbridge subnet,
172.18.0.0/16, the node's end holding the gateway .1. Connections and flows to a published
port leave from the gateway and reach the task's gwbridge address at the target port, so the
task sees the gateway as its peer, as behind Docker's userland proxy. The ports are bound when
the task's container starts: a port already taken on the node fails the start with Docker's
error (the scheduler avoids such nodes, so only a port taken outside the swarm does that); a
port left to the node (published 0) gets one the OS chooses. What was bound is the task's
`Status.PortStatus`. The ports close when the task stops or leaves the node.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field

from controlplane.datapath.forwarding import (
    Choose,
    Destination,
    UdpForwarder,
    listen_tcp,
    listen_udp,
)
from controlplane.datapath.program import mac_for
from controlplane.datapath.userspace import IPv4Stack
from controlplane.pb.objects_pb2 import PortConfig, Task
from controlplane.store.kinds import name_of

log = logging.getLogger("controlplane.datapath.host_ports")

GWBRIDGE = ipaddress.IPv4Network("172.18.0.0/16")  # docker_gwbridge's default subnet
GWBRIDGE_MTU = 1500
_GATEWAY = "gateway"


class HostPortError(RuntimeError):
    """A host-mode port could not be bound on this node; the message is Docker's."""


def host_mode_ports(task: Task) -> list[PortConfig]:
    """The task's ports published in host mode that a userspace stack carries (TCP, UDP)."""
    return [
        p
        for p in task.endpoint.ports
        if p.publish_mode == "host" and (p.protocol or "tcp") in ("tcp", "udp")
    ]


class _LocalBridge:
    """Frames between the stacks of the gwbridge, by MAC (ARP broadcast to all)."""

    def __init__(self) -> None:
        self.stacks: dict[bytes, IPv4Stack] = {}

    def add(self, name: str, ip: str) -> IPv4Stack:
        mac = mac_for(ip)
        stack = IPv4Stack(name, ip, mac, GWBRIDGE.prefixlen, GWBRIDGE_MTU, self._send)
        self.stacks[bytes.fromhex(mac.replace(":", ""))] = stack
        return stack

    def remove(self, stack: IPv4Stack) -> None:
        self.stacks.pop(bytes.fromhex(stack.mac.replace(":", "")), None)
        stack.close()

    def _send(self, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        dst = frame[:6]
        if dst == b"\xff" * 6:
            targets = [s for s in self.stacks.values() if s.mac != _mac_text(frame[6:12])]
        else:
            target = self.stacks.get(dst)
            targets = [target] if target is not None else []
        for stack in targets:
            loop.call_soon(stack.receive, frame)


def _to(destination: Destination) -> Choose:
    """Every connection and flow of a host port goes to its one task."""
    return lambda: destination


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass
class _Published:
    stack: IPv4Stack
    ports: list[PortConfig] = field(default_factory=list)  # as bound: the PortStatus
    listeners: list[asyncio.Server | UdpForwarder] = field(default_factory=list)


class HostPorts:
    """One node's host-mode ports on `address` (see the module docstring)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._bridge = _LocalBridge()
        self._gateway: IPv4Stack | None = None
        self._tasks: dict[str, _Published] = {}

    async def publish(self, task: Task) -> IPv4Stack | None:
        """Bind `task`'s host-mode ports; its stack on the gwbridge (None when it publishes
        none). HostPortError, with nothing left bound, when a port is taken."""
        ports = host_mode_ports(task)
        if not ports:
            return None
        published = self._tasks.get(task.id)
        if published is not None:
            return published.stack
        gateway = self._gateway or self._bridge.add(_GATEWAY, str(GWBRIDGE[1]))
        self._gateway = gateway
        ip = self._free_address()
        published = _Published(self._bridge.add(name_of(task), ip))
        self._tasks[task.id] = published
        for p in ports:
            protocol = p.protocol or "tcp"
            label = f"{p.published_port or '*'}->{p.target_port}/{protocol}"
            to_task = _to((gateway, ip, p.target_port))
            try:
                if protocol == "tcp":
                    server = await listen_tcp(self.address, p.published_port, to_task, label)
                    bound = int(server.sockets[0].getsockname()[1])
                    published.listeners.append(server)
                else:
                    forwarder = await listen_udp(self.address, p.published_port, to_task, label)
                    bound = forwarder.port
                    published.listeners.append(forwarder)
            except OSError as err:
                self.release(task.id)
                raise HostPortError(
                    "driver failed programming external connectivity on endpoint "
                    f"{name_of(task)}: Bind for {self.address}:{p.published_port} failed: "
                    f"port is already allocated ({err.strerror})"
                ) from None
            shown = PortConfig()
            shown.CopyFrom(p)
            shown.protocol, shown.published_port = protocol, bound
            published.ports.append(shown)
        log.info(
            "event=host_ports_published task=%s address=%s ports=%s",
            task.id,
            self.address,
            ",".join(f"{p.published_port}/{p.protocol}" for p in published.ports),
        )
        return published.stack

    def port_status(self, task_id: str) -> list[PortConfig]:
        published = self._tasks.get(task_id)
        return list(published.ports) if published is not None else []

    def release(self, task_id: str) -> None:
        """Close the task's ports and its gwbridge interface (the task stopped or left)."""
        published = self._tasks.pop(task_id, None)
        if published is None:
            return
        for listener in published.listeners:
            listener.close()
        self._bridge.remove(published.stack)
        log.info("event=host_ports_released task=%s", task_id)

    def tasks(self) -> set[str]:
        return set(self._tasks)

    def close(self) -> None:
        for task_id in list(self._tasks):
            self.release(task_id)

    def _free_address(self) -> str:
        used = {published.stack.ip for published in self._tasks.values()}
        for host in GWBRIDGE.hosts():
            ip = str(host)
            if host != GWBRIDGE[1] and ip not in used:
                return ip
        raise HostPortError(f"no free address left on docker_gwbridge {GWBRIDGE}")
