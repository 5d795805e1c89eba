"""Ports published on one node: host-mode ports of a service's tasks (`-p
mode=host,published=8080,target=80`) and the ports of a standalone container (`docker run -p
8080:80 --network my-overlay`). Only the node running the task or container listens, on its
own address, forwarding to it, as Docker's port mapping forwards to the container's address
on `docker_gwbridge`.

Each owner (a task or a container) with published ports gets an interface on the node's
gwbridge: a bridge local to the node (no VXLAN, nothing leaves the node) on Docker's default
docker_gwbridge subnet, 172.18.0.0/16, the node's end holding the gateway .1. Connections and
flows to a published port leave from the gateway and reach the owner's gwbridge address at
the target port, so it sees the gateway as its peer, as behind Docker's userland proxy. The
ports are bound when the container starts: a port another owner of this node holds fails the
start with the port allocator's words (`Bind for 0.0.0.0:8080 failed: port is already
allocated`), one taken outside the emulation with the userland proxy's (`Error starting
userland proxy: listen tcp4 ...: bind: address already in use`); a port left to the node
(0) gets one the OS chooses, a range the first free one. A task's ports are its
`Status.PortStatus`. The ports close when the owner stops or leaves the node.

Addresses: the node is an emulated host whose one address is its lab address (127.77.x.y);
all lab nodes share the machine's loopback. A binding to every address (`-p 8080:80`, Docker's
0.0.0.0) listens on the node's address. A binding to the host's loopback (`-p
127.0.0.1:8080:80`, any 127/8 address) is meant for clients on that host only; the lab's
hosts have no loopback of their own, and the machine's 127.0.0.1 is every node's, where two
nodes publishing 8080 would collide (and one would answer for the other). So it listens on
the node's address too, where the user reaches the node, and is shown as asked
(`127.0.0.1:8080` in `docker port`). Any other address is not the node's: refused with
the userland proxy's words, as dockerd refuses an address its host lacks."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
from dataclasses import dataclass, field, replace

from controlplane.datapath.forwarding import (
    Choose,
    Destination,
    UdpForwarder,
    listen_tcp,
    listen_udp,
)
from controlplane.datapath.ingress import MESH_PROTOCOLS
from controlplane.datapath.program import mac_for
from controlplane.datapath.userspace import IPv4Stack
from controlplane.datapath.userspace.frames import mac_text
from controlplane.pb.objects_pb2 import PortConfig, Task
from controlplane.store.kinds import name_of

log = logging.getLogger("controlplane.datapath.host_ports")

GWBRIDGE = ipaddress.IPv4Network("172.18.0.0/16")  # docker_gwbridge's default subnet
DEFAULT_BRIDGE = ipaddress.IPv4Network("172.17.0.0/16")  # dockerd's docker0 (`bridge`)
GWBRIDGE_MTU = 1500
_GATEWAY = "gateway"


class HostPortError(RuntimeError):
    """A published port could not be bound on this node; the message is Docker's."""


@dataclass(frozen=True)
class HostBinding:
    """One port published on the node for one endpoint: `protocol` `target_port` of the
    endpoint answers on `host_ip`:`published_port` of the node. Asked with published_port 0,
    the node picks one; with `last_port`, the first free one of published_port..last_port
    (`-p 8080-8081:80`). Once bound, published_port is the one bound."""

    protocol: str
    target_port: int
    published_port: int = 0
    last_port: int = 0
    host_ip: str = ""  # "": every address of the node (Docker's 0.0.0.0)
    name: str = ""  # a service port's name, shown back in its PortStatus

    @property
    def shown_ip(self) -> str:
        return self.host_ip or "0.0.0.0"

    def candidates(self) -> range:
        """The ports to try in order (range(0, 1): let the node pick)."""
        return range(self.published_port, max(self.last_port, self.published_port) + 1)

    def asked(self) -> str:
        """The host port as asked, as Docker prints it in a refusal."""
        if self.last_port > self.published_port:
            return f"{self.published_port}-{self.last_port}"
        return str(self.published_port)

    def bound_to(self, port: int) -> HostBinding:
        return replace(self, published_port=port, last_port=0)


def bridge_endpoint_label(container_id: str, container_name: str) -> str:
    """How a refusal names a container's endpoint on the default bridge (as dockerd's: its
    name and the endpoint's id)."""
    endpoint_id = hashlib.sha256(f"bridge/{container_id}".encode()).hexdigest()
    return f"{container_name} ({endpoint_id})"


def host_mode_ports(task: Task) -> list[PortConfig]:
    """The task's ports published in host mode that a userspace stack carries (TCP, UDP)."""
    return [
        p
        for p in task.endpoint.ports
        if p.publish_mode == "host" and (p.protocol or "tcp") in ("tcp", "udp")
    ]


def task_bindings(task: Task) -> list[HostBinding]:
    """The task's host-mode ports as bindings on every address of its node."""
    return [
        HostBinding(p.protocol or "tcp", p.target_port, p.published_port, name=p.name)
        for p in host_mode_ports(task)
    ]


def port_status(bound: list[HostBinding]) -> list[PortConfig]:
    """What a task bound, as its `Status.PortStatus`."""
    return [
        PortConfig(
            name=b.name,
            protocol=b.protocol,
            target_port=b.target_port,
            published_port=b.published_port,
            publish_mode="host",
        )
        for b in bound
    ]


def refusal(endpoint: str, reason: str) -> HostPortError:
    """libnetwork's words when a port mapping of `endpoint` fails."""
    return HostPortError(
        f"driver failed programming external connectivity on endpoint {endpoint}: {reason}"
    )


def already_allocated(binding: HostBinding) -> str:
    """The port allocator's refusal: another endpoint of this node has the port."""
    return f"Bind for {binding.shown_ip}:{binding.asked()} failed: port is already allocated"


class _LocalBridge:
    """Frames between the stacks of a bridge local to the node, by MAC (ARP broadcast to
    all)."""

    def __init__(self, subnet: ipaddress.IPv4Network) -> None:
        self.subnet = subnet
        self.stacks: dict[bytes, IPv4Stack] = {}

    def add(self, name: str, ip: str) -> IPv4Stack:
        mac = mac_for(ip)
        stack = IPv4Stack(name, ip, mac, self.subnet.prefixlen, GWBRIDGE_MTU, self._send)
        self.stacks[bytes.fromhex(mac.replace(":", ""))] = stack
        return stack

    def remove(self, stack: IPv4Stack) -> None:
        self.stacks.pop(bytes.fromhex(stack.mac.replace(":", "")), None)
        stack.close()

    def _send(self, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        dst = frame[:6]
        if dst == b"\xff" * 6:
            targets = [s for s in self.stacks.values() if s.mac != mac_text(frame[6:12])]
        else:
            target = self.stacks.get(dst)
            targets = [target] if target is not None else []
        for stack in targets:
            loop.call_soon(stack.receive, frame)


def _reason(err: OSError) -> str:
    """The OS's reason as Go prints it (asyncio words its own around it)."""
    return (os.strerror(err.errno) if err.errno else str(err)).lower()


def _to(destination: Destination) -> Choose:
    """Every connection and flow of a host port goes to its one task."""
    return lambda: destination


@dataclass
class _Published:
    stack: IPv4Stack
    bound: list[HostBinding] = field(default_factory=list)
    listeners: list[asyncio.Server | UdpForwarder] = field(default_factory=list)


class HostPorts:
    """One node's published ports on `address` (see the module docstring), forwarded over a
    bridge of the node on `subnet` (docker_gwbridge's, or docker0's for the containers on
    the default `bridge` network, which all get their one interface there, ports or not)."""

    def __init__(self, address: str, subnet: ipaddress.IPv4Network = GWBRIDGE) -> None:
        self.address = address
        self.subnet = subnet
        self._bridge = _LocalBridge(subnet)
        self._gateway: IPv4Stack | None = None
        self._owners: dict[str, _Published] = {}

    async def publish(self, task: Task) -> IPv4Stack | None:
        """Bind `task`'s host-mode ports; its stack on the gwbridge (None when it publishes
        none). HostPortError, with nothing left bound, when a port is taken."""
        bindings = task_bindings(task)
        if not bindings:
            return None
        return await self.publish_endpoint(task.id, name_of(task), name_of(task), bindings)

    async def publish_endpoint(
        self, owner: str, name: str, endpoint: str, bindings: list[HostBinding]
    ) -> IPv4Stack:
        """Bind `bindings` for `owner` (a task or a container id) and give it a stack named
        `name` on the gwbridge, where they forward. HostPortError naming `endpoint`, with
        nothing of the owner left bound, when a port is taken or cannot be bound."""
        published = self._owners.get(owner)
        if published is not None:
            return published.stack
        gateway = self.gateway()
        ip = self._free_address()
        published = _Published(self._bridge.add(name, ip))
        self._owners[owner] = published
        try:
            for binding in bindings:
                await self._bind(published, gateway, binding, endpoint)
        except HostPortError:
            self.release(owner)
            raise
        log.info(
            "event=host_ports_published owner=%s address=%s ports=%s",
            owner,
            self.address,
            ",".join(f"{b.published_port}/{b.protocol}" for b in published.bound),
        )
        return published.stack

    async def _bind(
        self, published: _Published, gateway: IPv4Stack, binding: HostBinding, endpoint: str
    ) -> None:
        """The first port of the binding's candidates that is free, bound and forwarding."""
        if binding.protocol not in MESH_PROTOCOLS:
            raise refusal(
                endpoint,
                f"port {binding.target_port}/{binding.protocol}: swarmlab's userspace data path "
                "carries TCP and UDP only; publish it as tcp or udp, or run the lab with "
                "--datapath kernel",
            )
        address = self._listen_address(binding, endpoint)
        taken = self._allocated(binding)
        to_owner = _to((gateway, published.stack.ip, binding.target_port))
        failure: OSError | None = None
        for port in binding.candidates():
            if port and port in taken:
                continue
            label = f"{port or '*'}->{binding.target_port}/{binding.protocol}"
            try:
                if binding.protocol == "tcp":
                    server = await listen_tcp(address, port, to_owner, label)
                    port = int(server.sockets[0].getsockname()[1])
                    published.listeners.append(server)
                else:
                    forwarder = await listen_udp(address, port, to_owner, label)
                    port = forwarder.port
                    published.listeners.append(forwarder)
            except OSError as err:
                failure = err
                continue
            bound = binding.bound_to(port)
            published.bound.append(bound)
            return
        if failure is None:
            raise refusal(endpoint, already_allocated(binding))
        raise refusal(
            endpoint,
            f"Error starting userland proxy: listen {binding.protocol}4 "
            f"{binding.shown_ip}:{binding.asked()}: bind: {_reason(failure)}",
        )

    def _listen_address(self, binding: HostBinding, endpoint: str) -> str:
        """Where `binding` listens (see the module docstring): the node's address, for every
        address and for the loopback; HostPortError for an address the node lacks."""
        if binding.host_ip in ("", "0.0.0.0", self.address):
            return self.address
        if ipaddress.ip_address(binding.host_ip).is_loopback:
            return self.address
        raise refusal(
            endpoint,
            f"Error starting userland proxy: listen {binding.protocol}4 "
            f"{binding.host_ip}:{binding.asked()}: bind: cannot assign requested address",
        )

    def _allocated(self, binding: HostBinding) -> set[int]:
        """The ports this node's port allocator gave on the binding's address, as asked: as
        dockerd's, it tells 127.0.0.1 from 0.0.0.0 (the listen then fails when they meet)."""
        return {
            b.published_port
            for published in self._owners.values()
            for b in published.bound
            if (b.protocol, b.shown_ip) == (binding.protocol, binding.shown_ip)
        }

    def bound(self, owner: str) -> list[HostBinding]:
        """What `owner` has bound (none: nothing published for it)."""
        published = self._owners.get(owner)
        return list(published.bound) if published is not None else []

    def port_status(self, task_id: str) -> list[PortConfig]:
        return port_status(self.bound(task_id))

    def release(self, owner: str) -> None:
        """Close the owner's ports and its gwbridge interface (it stopped or left)."""
        published = self._owners.pop(owner, None)
        if published is None:
            return
        for listener in published.listeners:
            listener.close()
        self._bridge.remove(published.stack)
        log.info("event=host_ports_released owner=%s", owner)

    def owners(self) -> set[str]:
        return set(self._owners)

    def gateway(self) -> IPv4Stack:
        """The node's own interface on the bridge (its gateway, .1), where published ports
        leave from and the node reaches its owners."""
        if self._gateway is None:
            self._gateway = self._bridge.add(_GATEWAY, str(self.subnet[1]))
        return self._gateway

    def stack_named(self, name: str) -> IPv4Stack | None:
        """The interface on the bridge of the owner named `name` (a container's name)."""
        return next((p.stack for p in self._owners.values() if p.stack.name == name), None)

    def stack_of(self, owner: str) -> IPv4Stack | None:
        """The owner's interface on the bridge (None: it has none now)."""
        published = self._owners.get(owner)
        return published.stack if published is not None else None

    def close(self) -> None:
        for owner in list(self._owners):
            self.release(owner)

    def _free_address(self) -> str:
        used = {published.stack.ip for published in self._owners.values()}
        for host in self.subnet.hosts():
            ip = str(host)
            if host != self.subnet[1] and ip not in used:
                return ip
        raise HostPortError(f"no free address left on the node's bridge {self.subnet}")
