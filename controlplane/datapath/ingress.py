"""The ingress routing mesh, in userspace: every node listens on its own address at each port
published in ingress mode (`-p 8080:80`, `/udp`, both) and forwards each TCP connection or
UDP flow to one of the service's running tasks, on any node, through the ingress overlay.

Where a node learns the published ports and the tasks behind them: from NetworkDB, as
libnetwork's service records do. A task's endpoint record on the ingress network carries its
service's ingress ports (`EndpointRecord.ingress_ports`, copied from the allocated endpoint the
task holds), and every node, running a task or not, is on the ingress network through its own
sandbox endpoint (Docker's `ingress-sbox`, an address the managers allocate per node), so every
node holds the same table of (port -> tasks) and follows it as tasks come and go, through the
gossip that already carries the overlay. The other route, the dispatcher sending every service
with published ports to every node, would put a second copy of the endpoint data on a second
channel, and the node would still need the tasks' addresses from NetworkDB.

Connections leave from the node's sandbox stack (an `IPv4Stack` on the ingress segment) to the
service's VIP on the ingress network, so the task sees the sandbox's ingress address as the
peer, as behind Docker's DNAT to the ingress VIP, IPVS and SNAT in `ingress-sbox`. The
balancing is the VIP's (`vips.py`: round robin over the running tasks, per TCP connection and
per UDP flow), the same that serves containers connecting to a VIP: one balancer, one
behaviour. The port table still lists each port's tasks: a port with no task left has no
listener, and the next connection is refused (Docker's is refused or reset too: nothing
accepts for the service). The userspace stacks carry TCP and UDP only: a port published as
`/sctp` is allocated and shown by inspect, never listened on: `docker service create/update`
prints a warning for it (`unserved_port_warnings`, in the API's `Warnings`, as dockerd reports
what it cannot honour). Ports published in host mode are not the mesh's: `host_ports.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from controlplane.datapath.forwarding import Destination, UdpForwarder, listen_tcp, listen_udp
from controlplane.datapath.userspace import IPv4Stack
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.objects_pb2 import PortConfig

log = logging.getLogger("controlplane.datapath.ingress")

MESH_PROTOCOLS = ("tcp", "udp")  # what the userspace stacks carry; not SCTP


def unserved_port_warnings(ports: Iterable[PortConfig]) -> list[str]:
    """What `docker service create/update` prints for ports the data path will not carry
    (the API's `Warnings`, as dockerd returns its own): SCTP, in either publish mode."""
    warnings = []
    for p in ports:
        protocol = p.protocol or "tcp"
        if protocol not in MESH_PROTOCOLS:
            shown = f"{p.published_port or p.target_port}/{protocol}"
            warnings.append(
                f"port {shown} is allocated, but swarmlab's userspace data path carries TCP "
                "and UDP only: nothing will listen on it"
            )
    return warnings


@dataclass(frozen=True, order=True)
class PublishedPort:
    protocol: str  # "tcp" | "udp"
    port: int


@dataclass(frozen=True, order=True)
class Backend:
    """One task behind a published port: its address on ingress and its target port."""

    ip: str
    port: int
    task_id: str


@dataclass(frozen=True)
class MeshService:
    """What a published port forwards to: the service's VIP on ingress at the target port,
    and the tasks behind it (sorted; for the view and to know whether to listen)."""

    service_id: str
    service_name: str
    vip: str
    target_port: int
    backends: tuple[Backend, ...]


def mesh_table(records: Iterable[EndpointRecord]) -> dict[PublishedPort, MeshService]:
    """Published port -> the service and tasks behind it, from the ingress network's endpoint
    records of running tasks. Should two services claim one port (only while a stale record
    lingers: the allocator gives a port to one service), the lower service id keeps it, and it
    is logged."""
    grouped: dict[PublishedPort, dict[str, tuple[str, str, int, list[Backend]]]] = {}
    for record in records:
        if record.service_disabled or not record.vip:
            continue  # starting, or no VIP to forward to (ingress services always have one)
        for p in record.ingress_ports:
            if p.protocol not in MESH_PROTOCOLS or not p.published_port:
                continue
            key = PublishedPort(p.protocol, p.published_port)
            services = grouped.setdefault(key, {})
            entry: tuple[str, str, int, list[Backend]] = (
                record.service_name,
                record.vip,
                p.target_port,
                [],
            )
            _, _, _, backends = services.setdefault(record.service_id, entry)
            backends.append(Backend(record.ip, p.target_port, record.task_id))
    table: dict[PublishedPort, MeshService] = {}
    for key, services in sorted(grouped.items()):
        chosen = min(services)
        if len(services) > 1:
            log.warning(
                "event=published_port_conflict port=%d/%s services=%s kept=%s",
                key.port,
                key.protocol,
                ",".join(sorted(services)),
                chosen,
            )
        name, vip, target, backends = services[chosen]
        table[key] = MeshService(chosen, name, vip, target, tuple(sorted(set(backends))))
    return table


SandboxStack = Callable[[], IPv4Stack | None]


class IngressMesh:
    """One node's routing mesh on `address`. `update(table)` makes the listeners follow the
    table (bind new ports, close the ports no task publishes any more); `close()` ends all."""

    def __init__(self, address: str, sandbox: SandboxStack) -> None:
        self.address = address
        self._sandbox = sandbox
        self._table: dict[PublishedPort, MeshService] = {}
        self._tcp: dict[int, asyncio.Server] = {}
        self._udp: dict[int, UdpForwarder] = {}
        self._wanted: dict[PublishedPort, MeshService] = {}
        self._reconciling: asyncio.Task[None] | None = None
        self.failed: dict[PublishedPort, str] = {}  # ports that could not be bound, and why
        self.connections = 0  # connections and flows forwarded, for the view

    @property
    def table(self) -> dict[PublishedPort, MeshService]:
        return dict(self._table)

    def update(self, table: dict[PublishedPort, MeshService]) -> None:
        """Follow `table` (from a synchronous callback): binding happens on the loop, one
        reconciliation at a time, always toward the latest table."""
        self._wanted = dict(table)
        if self._reconciling is None or self._reconciling.done():
            self._reconciling = asyncio.get_running_loop().create_task(self._reconcile())

    async def settled(self) -> None:
        """Wait for the listeners to match the last table given."""
        while self._reconciling is not None and not self._reconciling.done():
            await self._reconciling

    async def _reconcile(self) -> None:
        while True:
            wanted = self._wanted
            self._table = dict(wanted)
            for key in sorted(set(self._bound()) - set(wanted)):
                self._unbind(key)
            for key in sorted(set(wanted) - set(self._bound())):
                await self._bind(key, wanted[key])
            if self._wanted is wanted:
                return

    def _bound(self) -> list[PublishedPort]:
        return [PublishedPort("tcp", p) for p in self._tcp] + [
            PublishedPort("udp", p) for p in self._udp
        ]

    async def _bind(self, key: PublishedPort, service: MeshService) -> None:
        label = f"{key.port}/{key.protocol}"
        try:
            if key.protocol == "tcp":
                self._tcp[key.port] = await listen_tcp(
                    self.address, key.port, lambda: self._choose(key), label
                )
            else:
                self._udp[key.port] = await listen_udp(
                    self.address, key.port, lambda: self._choose(key), label
                )
        except OSError as err:
            self.failed[key] = f"cannot listen on {self.address}:{key.port}/{key.protocol}: {err}"
            log.warning(
                "event=publish_failed port=%d/%s service=%s error=%r",
                key.port,
                key.protocol,
                service.service_name,
                str(err),
            )
            return
        self.failed.pop(key, None)
        log.info(
            "event=port_published address=%s port=%d/%s service=%s tasks=%d",
            self.address,
            key.port,
            key.protocol,
            service.service_name,
            len(service.backends),
        )

    def _unbind(self, key: PublishedPort) -> None:
        if key.protocol == "tcp":
            self._tcp.pop(key.port).close()
        else:
            self._udp.pop(key.port).close()
        log.info("event=port_unpublished address=%s port=%d/%s", self.address, *_show(key))

    def close(self) -> None:
        if self._reconciling is not None:
            self._reconciling.cancel()
        for key in self._bound():
            self._unbind(key)

    def _choose(self, key: PublishedPort) -> Destination | None:
        service = self._table.get(key)
        stack = self._sandbox()
        if stack is None or service is None:
            return None
        self.connections += 1
        return stack, service.vip, service.target_port


def _show(key: PublishedPort) -> tuple[int, str]:
    return key.port, key.protocol
