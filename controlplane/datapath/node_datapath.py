"""One node's overlay data path, assembled: the endpoint publication and program
(`attachments.DataPathState`), the userspace backend carrying the program out on the node's
VTEP, and the embedded resolver its containers ask (Docker's 127.0.0.11).

Every change of the endpoint table (ours or gossiped) recomputes the program, applies the
changes to the backend and rebuilds the resolver's name table from the endpoint records of the
networks this node is on. Containers reach this through two calls (the runtime's
`Networking`): `attach`, which hands a container the IPv4 stacks of its endpoints once they
exist and the node holds its networks' tables, and `resolve`, the resolver in-process (no
socket between a container and its own node).

Service VIPs (`vips.VipBalancers`) follow the same table: a task's record carries its
service's VIP on the network, so a service name resolves to its VIP on each network it is on
(`tasks.<service>` to the task addresses), and every stack this node creates routes the VIPs
of its network: ping to a VIP is answered locally, each TCP connection and UDP flow to a VIP
goes to one running task, round robin (Docker's alias + IPVS in each sandbox). Services in
`endpoint_mode=dnsrr` have no VIP: their name resolves to the tasks' addresses.

The routing mesh (`ingress.IngressMesh`) follows the same table: the ingress network's
records say which ports to listen on; it forwards each connection or flow from this node's
ingress sandbox stack to the service's ingress VIP, so the mesh and containers balance alike.
Ports published in host mode (`host_ports.HostPorts`) listen only on the node running the
task, forwarding to that task: they are bound when its container attaches (its gwbridge stack
comes with its overlay stacks), shown in its running status (`PortStatus`: this is the
agent's task observer, and adds them before the status is sent), and closed when it stops.
A standalone container's ports (`docker run -p`) are published the same way when it attaches:
its registry says which (`expect_ports`) before the start and releases them after the exit.

In kernel mode (`--datapath kernel`, `kernel/`), the backend is a `KernelBackend`: the same
program on real devices, containers being namespaces that run real commands; `attach` then
hands out no stacks (`kernel_netns` names the container's namespace, `serve_names` puts the
resolver at 127.0.0.11 inside it), an encrypted network the kernel cannot carry fails the
attach at once with the backend's reason, and the routing mesh is nftables (`KernelMesh`)
instead of listening sockets. VIPs in kernel mode are Docker's: each container namespace
holds its networks' VIPs on its loopback and an nftables table balancing connections and flows
to them over the running tasks (`kernel.vips.KernelVips`), following the same VIP table;
host-mode ports are nftables DNAT in the node's namespace to the task's interface on the
node's gateway bridge (`kernel.host_ports.KernelHostPorts`). A task or container on no overlay
gets a namespace of its own on the node's default bridge, published ports or not (Docker's
`bridge` network on docker0, `kernel.host_ports.DEFAULT_BRIDGE`: `KernelBackend.bridge_netns`,
plugged as a published owner with maybe no port;
`bridge_endpoint` says where, for `docker inspect`), and `docker run --network none` one with
only its loopback; either goes when the container's ports are released (it stopped).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from controlplane.datapath.attachments import INGRESS_SANDBOX, DataPathState, Gossip
from controlplane.datapath.dns import Resolver
from controlplane.datapath.host_ports import (
    HostBinding,
    HostPortError,
    HostPorts,
    task_bindings,
)
from controlplane.datapath.ingress import IngressMesh, mesh_table
from controlplane.datapath.kernel import KernelBackend, KernelError
from controlplane.datapath.kernel.containers import ContainerDns
from controlplane.datapath.kernel.host_ports import (
    DEFAULT_BRIDGE,
    DYNAMIC_PORTS,
    EPHEMERAL_PORTS,
    GATEWAY_BRIDGE,
    BridgeEndpoint,
    KernelHostPorts,
)
from controlplane.datapath.kernel.mesh import KernelMesh
from controlplane.datapath.kernel.vips import KernelVips
from controlplane.datapath.names import NamesError, NameTable, name_record
from controlplane.datapath.network_view import LocalNetworkView, local_network_view
from controlplane.datapath.program import Change, DataPathKey, NodeView, Program
from controlplane.datapath.userspace import (
    DataPathError,
    IPv4Stack,
    SegmentCounters,
    UserspaceBackend,
)
from controlplane.datapath.vips import VipBalancers, VipService, render_vips
from controlplane.gossip.networkdb_types import WatchEvent
from controlplane.pb.objects_pb2 import Network, Task, TaskStatus

log = logging.getLogger("controlplane.datapath.node")

ATTACH_TIMEOUT = 15.0  # seconds a starting container waits for its endpoints and tables
_POLL = 0.05


class NodeGossip(Gossip, Protocol):
    """The node's gossip member as this needs it (`gossip.node.GossipNode`)."""

    def network_ready(self, network_id: str) -> bool: ...


class DataPathBackend(Protocol):
    """What both backends (`UserspaceBackend`, `KernelBackend`) offer the node."""

    async def start(self) -> None: ...

    def apply(self, program: Program) -> list[Change]: ...

    def close(self) -> None: ...

    def counters(self) -> dict[str, SegmentCounters]: ...


class AttachError(RuntimeError):
    """A container's endpoints did not come up on this node; says which and why."""


@dataclass(frozen=True)
class _ContainerPorts:
    """A standalone container's ports to publish when it attaches."""

    owner: str  # the container's id
    endpoint: str  # its gwbridge endpoint, as a refusal names it
    bindings: list[HostBinding]
    isolated: bool = False  # `--network none`: kernel mode gives it a namespace with only lo


class NodeDataPath:
    """See the module docstring. `await start()` binds the VTEP; `stop()` releases it."""

    def __init__(
        self,
        local: NodeView,
        gossip: NodeGossip,
        upstreams: Sequence[tuple[str, int]] | None = None,
        publish_address: str = "",
        backend: KernelBackend | None = None,
        udp_offloads: bool = True,
    ) -> None:
        """`upstreams` are where the resolver forwards names it does not own (None: the
        node's /etc/resolv.conf, as Docker); `publish_address` is where published ports
        listen (default: the VTEP's address); `backend`: a kernel one (default userspace,
        with UDP GSO/GRO unless `udp_offloads` is False)."""
        self._gossip = gossip
        self.vips = VipBalancers()
        self.backend: DataPathBackend = backend or UserspaceBackend(
            local.vtep, local.port, self.vips.for_network, offloads=udp_offloads
        )
        self._kernel = backend
        self._kernel_mesh: KernelMesh | None = None
        self._kernel_vips = KernelVips()
        self.resolver = Resolver(upstreams=upstreams)
        self.state = DataPathState(
            local, gossip, on_change=self._program_changed, request_refresh=self._follow_soon
        )
        self.mesh = IngressMesh(publish_address or local.vtep, self._sandbox_stack)
        self.host_ports = HostPorts(publish_address or local.vtep)
        self._kernel_host_ports = KernelHostPorts(backend.node_netns) if backend else None
        self._container_ports: dict[str, _ContainerPorts] = {}  # by container name
        self._bridged: dict[str, str] = {}  # kernel: owner -> its container on no overlay
        self._started = False
        self._endpoints_pending = False  # endpoint changes not followed yet

    async def start(self) -> None:
        """Bind the VTEP; DataPathError naming the address when it cannot."""
        await self.backend.start()
        if self._kernel is None:  # the ingress sandbox's gwbridge endpoint: dockerd's first
            await self.host_ports.publish_endpoint(
                INGRESS_SANDBOX, INGRESS_SANDBOX, f"gateway_{INGRESS_SANDBOX}", []
            )
        self._started = True
        self.state.refresh()
        self.backend.apply(self.state.program)
        self._update_vips()
        self._update_mesh()

    def stop(self) -> None:
        self._started = False
        self._endpoints_pending = False
        self.mesh.close()
        self.host_ports.close()
        if self._kernel_host_ports is not None:
            self._kernel_host_ports.close()
        if self._kernel_mesh is not None:
            self._kernel_mesh.close()
            self._kernel_mesh = None
        self._kernel_vips.close()
        self.backend.close()

    # ---- inputs ----------------------------------------------------------------------------

    @property
    def program(self) -> Program:
        """The program, with any endpoint change of this turn followed first."""
        self._settle_endpoints()
        return self.state.program

    def set_keys(self, keys: list[DataPathKey]) -> None:
        self.state.set_keys(keys)

    def networks(self) -> list[Network]:
        """The networks this node's containers are attached to (what a worker can inspect)."""
        return self.state.networks()

    def local_view(self, network_id: str) -> LocalNetworkView | None:
        """This node's view of `network_id` for `docker network inspect` (None: not on it)."""
        hosts = {m.node_id: m.data_path_addr for m in self._gossip.live_members()}
        hosts[self.program.node.node_id] = self.program.node.vtep
        return local_network_view(
            self.program, network_id, self.state.records(), hosts, self.state.lb_indexes.index
        )

    def platform_note(self, network_id: str) -> str:
        """Why this node's segment of `network_id` is not what the network asks ("" if it
        is): a Windows node on an encrypted network."""
        segment = self.program.segments.get(network_id)
        return segment.platform_note if segment is not None else ""

    def assignments(self, tasks: dict[str, Task], networks: dict[str, Network]) -> None:
        """The agent's assignment set: the endpoints follow; host ports of tasks gone close."""
        self.state.assignments(tasks, networks)
        for task_id in self._published_tasks() - set(tasks):
            self._release_host_ports(task_id)

    def task_status(self, task_id: str, status: TaskStatus) -> None:
        """A state the worker is about to report: a running task's status gets the host ports
        bound for it (Status.PortStatus); a task no longer starting or running closes them."""
        if status.state == "running":
            del status.port_status[:]
            kernel = self._kernel_host_ports
            ports = kernel.port_status(task_id) if kernel else self.host_ports.port_status(task_id)
            status.port_status.extend(ports)
        elif status.state != "starting":
            self._release_host_ports(task_id)
        self.state.task_status(task_id, status)

    def _published_tasks(self) -> set[str]:
        kernel = self._kernel_host_ports
        owners = kernel.owners() if kernel is not None else self.host_ports.owners()
        containers = {ports.owner for ports in self._container_ports.values()}
        return owners - containers - {INGRESS_SANDBOX}

    def _release_host_ports(self, task_id: str) -> None:
        if self._kernel_host_ports is not None:
            try:
                self._kernel_host_ports.release(task_id)
            except KernelError as err:
                log.error("event=host_ports_not_released task=%s error=%s", task_id, err)
            self._drop_bridged(task_id)
        else:
            self.host_ports.release(task_id)

    def _drop_bridged(self, owner: str) -> None:
        """The namespace made for `owner`'s container on no overlay goes with its ports."""
        name = self._bridged.pop(owner, None)
        if name is not None and self._kernel is not None:
            try:
                self._kernel.drop_bridge_netns(name)
            except KernelError as err:
                log.error("event=bridge_netns_not_removed container=%s error=%s", name, err)

    def endpoint_event(self, _event: WatchEvent) -> None:
        """NetworkDB's endpoint table changed: the program and the names follow, once for
        all the changes delivered in one turn of the event loop. A bulk sync or a gossip
        packet delivers tens to hundreds of entries at once, and each rebuild reads every
        endpoint: one per entry made a service of N tasks cost every node N^2 (with 1,000
        tasks, two thirds of a manager's CPU). Readers of the names settle first."""
        self._follow_soon()

    def _follow_soon(self) -> None:
        """The endpoints (gossiped or our own publication) changed: follow at the end of
        this turn of the event loop (at once without a running loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): now
            self._endpoints_pending = True
            self._settle_endpoints()
            return
        if not self._endpoints_pending:
            self._endpoints_pending = True
            loop.call_soon(self._settle_endpoints)

    def _settle_endpoints(self) -> None:
        if not self._endpoints_pending:
            return
        self._endpoints_pending = False
        self.state.endpoints_changed()
        self._rebuild_names()
        self._update_vips()
        self._update_mesh()

    def _program_changed(self, program: Program, changes: list[Change]) -> None:
        if self._started:
            try:
                self.backend.apply(program)
            except KernelError as err:  # the kernel refused a step: said, retried next change
                log.error("event=datapath_apply_failed backend=kernel error=%s", err)
        self._rebuild_names()
        self._update_vips()
        self._update_mesh()

    def _update_vips(self) -> None:
        self.vips.update((nid, record) for nid, _, record in self.state.records())
        if self._kernel is None or not self._started:
            return
        wanted: dict[str, dict[str, VipService]] = {}  # container namespace -> its VIPs
        for network_id, segment in self.program.segments.items():
            network_vips = self.vips.services.get(network_id, {})
            if not network_vips:
                continue  # no table where there is nothing to balance
            for endpoint in segment.local:
                try:
                    netns = self._kernel.container_netns(network_id, endpoint.name)
                except DataPathError:
                    continue  # a refused network: the container has no interface on it
                wanted.setdefault(netns, {}).update(network_vips)
        self._kernel_vips.update(wanted)

    def _update_mesh(self) -> None:
        if not self._started:
            return
        ingress_id = self.state.ingress_id
        if self.program.segments.get(ingress_id) is None:
            self.mesh.update({})  # no sandbox on ingress (yet): nothing to forward through
            return
        records = (r for nid, _, r in self.state.records() if nid == ingress_id)
        if self._kernel is None:
            self.mesh.update(mesh_table(records))
            return
        try:
            if self._kernel_mesh is None:
                sandbox = self._kernel.container_netns(ingress_id, INGRESS_SANDBOX)
                mesh = KernelMesh(self._kernel.node_netns, sandbox)
                mesh.start()
                self._kernel_mesh = mesh
            self._kernel_mesh.update(mesh_table(records))
        except (DataPathError, KernelError) as err:
            log.warning("event=kernel_mesh_not_updated error=%s", err)

    def _sandbox_stack(self) -> IPv4Stack | None:
        if not isinstance(self.backend, UserspaceBackend):
            return None
        try:
            return self.backend.endpoint(self.state.ingress_id, INGRESS_SANDBOX)
        except DataPathError:
            return None

    def _rebuild_names(self) -> None:
        records = []
        for nid, key, record in self.state.records():
            try:
                records.append(name_record(nid, key, record))
            except NamesError as err:  # one peer's bad record must not hide the others
                log.warning("event=name_unusable network=%s key=%s error=%s", nid, key, err)
        try:
            table = NameTable.build(records, self.state.network_names())
        except NamesError as err:
            log.warning("event=names_not_rebuilt error=%s", err)
            return
        self.resolver.replace(table)

    # ---- what containers use (the runtime's Networking) ------------------------------------

    async def attach(
        self, endpoint_name: str, network_ids: Sequence[str], timeout: float = ATTACH_TIMEOUT
    ) -> list[IPv4Stack]:
        """The stacks of container `endpoint_name` on `network_ids` (in that order), once
        the program holds them and this node holds the networks' endpoint tables."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            missing = [n for n in network_ids if not self._gossip.network_ready(n)]
            try:
                stacks = self._local_endpoints(endpoint_name, network_ids)
            except DataPathError as err:
                problem = str(err)
            else:
                if not missing:
                    return stacks + await self._host_ports(endpoint_name, network_ids)
                problem = f"the tables of network(s) {', '.join(missing)} are not synced yet"
            if asyncio.get_running_loop().time() >= deadline:
                if problem.startswith("the tables"):
                    # Names of others may come a little later; the container can run.
                    log.warning("event=attach_unsynced endpoint=%s %s", endpoint_name, problem)
                    return stacks + await self._host_ports(endpoint_name, network_ids)
                raise AttachError(
                    f"container {endpoint_name!r} has no network endpoint after {timeout:.0f}s: "
                    f"{problem}"
                )
            await asyncio.sleep(_POLL)

    def _local_endpoints(self, name: str, network_ids: Sequence[str]) -> list[IPv4Stack]:
        """The stacks of `name` (none in kernel mode, once its namespace is wired); a
        refused network fails at once, whatever the timeout."""
        if isinstance(self.backend, UserspaceBackend):
            return [self.backend.endpoint(n, name) for n in network_ids]
        assert self._kernel is not None
        for network_id in network_ids:
            refused = self._kernel.refusal(network_id)
            if refused:
                raise AttachError(refused)
            self._kernel.container_netns(network_id, name)
        return []

    async def _host_ports(self, endpoint_name: str, network_ids: Sequence[str]) -> list[IPv4Stack]:
        """The gwbridge stack of a task with host-mode ports or of a container with published
        ports, its ports bound (kernel mode: DNATed to its namespace, no stack). A task's
        refusal is an AttachError (its status says it); a container's is the HostPortError,
        in Docker's words for its start."""
        task = self.state.task_named(endpoint_name)
        if task is not None:
            try:
                bindings = task_bindings(task)
                return await self._publish(
                    task.id, endpoint_name, endpoint_name, bindings, network_ids, DYNAMIC_PORTS
                )
            except HostPortError as err:
                raise AttachError(str(err)) from None
        ports = self._container_ports.get(endpoint_name)
        if ports is None:
            return []
        if ports.isolated:
            return self._isolate(ports.owner, endpoint_name)
        return await self._publish(
            ports.owner, endpoint_name, ports.endpoint, ports.bindings, network_ids, EPHEMERAL_PORTS
        )

    def _isolate(self, owner: str, endpoint_name: str) -> list[IPv4Stack]:
        """`--network none` in kernel mode: a namespace of its own with only its loopback
        (emulated in userspace mode, whose containers have only a loopback anyway)."""
        if self._kernel is not None:
            self._bridged[owner] = endpoint_name
            try:
                self._kernel.bridge_netns(endpoint_name)
            except (DataPathError, KernelError) as err:
                self._bridged.pop(owner)
                raise AttachError(str(err)) from None
        return []

    async def _publish(
        self,
        owner: str,
        endpoint_name: str,
        endpoint: str,
        bindings: list[HostBinding],
        network_ids: Sequence[str],
        dynamic: range,
    ) -> list[IPv4Stack]:
        """Bind `bindings` for `owner`; in kernel mode a port left to the node comes from
        `dynamic` (Swarm's range for a task, dockerd's ephemeral one for a container), and
        an owner on no overlay is plugged into the bridge even with no binding. In
        userspace mode an owner on overlays gets its gwbridge interface (its `eth1`) with or
        without bindings, as Docker gives every container on an overlay one."""
        if self._kernel_host_ports is None:
            if not bindings and not network_ids:
                return []
            stack = await self.host_ports.publish_endpoint(owner, endpoint_name, endpoint, bindings)
            return [stack]
        if not bindings and network_ids:
            return []
        assert self._kernel is not None
        netns = self.kernel_netns(endpoint_name, network_ids)
        bridge = GATEWAY_BRIDGE if netns is not None else DEFAULT_BRIDGE
        if netns is None:  # on no overlay: on the node's default bridge, as Docker puts it
            try:
                netns = self._kernel.bridge_netns(endpoint_name)
            except (DataPathError, KernelError) as err:
                raise AttachError(str(err)) from None
            self._bridged[owner] = endpoint_name
        try:
            self._kernel_host_ports.publish_endpoint(
                owner, endpoint, bindings, netns, dynamic, bridge
            )
        except KernelError as err:
            self._drop_bridged(owner)
            raise AttachError(str(err)) from None
        except HostPortError:
            self._drop_bridged(owner)
            raise
        return []

    def expect_ports(
        self,
        owner: str,
        endpoint_name: str,
        endpoint: str,
        bindings: list[HostBinding],
        isolated: bool = False,
    ) -> None:
        """Standalone container `endpoint_name` (id `owner`) publishes `bindings` at its next
        attach (none: in kernel mode it is still plugged into the bridge when on no
        overlay); `endpoint` is how a refusal names its gwbridge endpoint; `isolated`
        (`--network none`): no bridge, no port, a namespace with only its loopback."""
        self._container_ports[endpoint_name] = _ContainerPorts(
            owner, endpoint, list(bindings), isolated
        )

    def bridge_endpoint(self, endpoint_name: str) -> BridgeEndpoint | None:
        """Where kernel container `endpoint_name` (on no overlay) is on the node's bridge;
        None when it is not (userspace mode, on an overlay, `--network none`, stopped)."""
        kernel = self._kernel_host_ports
        owner = next((o for o, name in self._bridged.items() if name == endpoint_name), None)
        return kernel.endpoint(owner) if kernel is not None and owner is not None else None

    def gateway_endpoint(self, endpoint_name: str) -> BridgeEndpoint | None:
        """Where container `endpoint_name` (or the ingress sandbox) is on the node's userspace
        docker_gwbridge now; None when it is not (kernel mode: not tracked here)."""
        stack = self.host_ports.stack_named(endpoint_name)
        if stack is None:
            return None
        gateway = str(self.host_ports.subnet[1])
        return BridgeEndpoint(stack.ip, stack.network.prefixlen, gateway, stack.mac)

    def published_ports(self, owner: str) -> list[HostBinding]:
        """What the container (or task) `owner` has bound on this node now."""
        kernel = self._kernel_host_ports
        return kernel.bound(owner) if kernel is not None else self.host_ports.bound(owner)

    def release_ports(self, owner: str) -> None:
        """The container stopped: its ports close and are forgotten."""
        self._container_ports = {
            name: ports for name, ports in self._container_ports.items() if ports.owner != owner
        }
        self._release_host_ports(owner)

    async def resolve(self, query: bytes, network_ids: Sequence[str]) -> bytes | None:
        self._settle_endpoints()
        return await self.resolver.handle(query, network_ids)

    def kernel_netns(self, endpoint_name: str, network_ids: Sequence[str]) -> str | None:
        """The namespace of a kernel-mode container (None in userspace mode, and for one on
        no overlay that has no namespace: a task container of a node out of a swarm)."""
        if self._kernel is None:
            return None
        if not network_ids:
            return self._kernel.bridged_netns(endpoint_name)
        return self._kernel.container_netns(network_ids[0], endpoint_name)

    async def serve_names(self, netns: str, network_ids: Sequence[str]) -> ContainerDns:
        """The node's resolver at 127.0.0.11:53 inside a kernel container's namespace."""
        dns = ContainerDns(self.resolver, netns, network_ids)
        await dns.start()
        return dns

    # ---- the view ---------------------------------------------------------------------------

    def vips_text(self) -> str:
        """The VIPs this node's sandboxes route and their tasks (`vips.render_vips`)."""
        return render_vips(self.vips.services, self.state.network_names())

    def kernel_view(self) -> str:
        """The kernel's own view of this data path ('' in userspace mode)."""
        if self._kernel is None:
            return ""
        host_ports = self._kernel_host_ports.show() if self._kernel_host_ports else ""
        return self._kernel.show() + self._kernel_vips.show() + host_ports

    def counters(self) -> dict[str, Any]:
        """Traffic per segment (by network id) and the node's drops outside any segment."""
        counted = self.backend.counters()
        return {
            "segments": {
                nid: {
                    "network": seg.name,
                    "transport": "esp" if seg.encrypted else "vxlan",
                    **counted[nid].as_dict(),
                }
                for nid, seg in self.state.program.segments.items()
                if nid in counted
            },
            "node_drops": dict(sorted(self.backend.node_drops.items()))
            if isinstance(self.backend, UserspaceBackend)
            else {},
            "udp_offloads": asdict(self.backend.offloads)
            if isinstance(self.backend, UserspaceBackend)
            else None,
        }


def render_counters(counters: dict[str, Any]) -> str:
    """The counters as `swarmlab datapath` prints them under the program."""
    lines = ["counters:"]
    for seg in sorted(counters["segments"].values(), key=lambda s: str(s["network"])):
        drops = ", ".join(f"{k}={v}" for k, v in seg["dropped"].items()) or "none"
        lines.append(
            f"  {seg['network']} ({seg['transport']}): frames in {seg['frames_in']} "
            f"out {seg['frames_out']}, bytes in {seg['bytes_in']} out {seg['bytes_out']}, "
            f"bridged {seg['bridged']}, arp answered {seg['arp_answered']}, drops: {drops}"
        )
    node_drops = ", ".join(f"{k}={v}" for k, v in counters["node_drops"].items()) or "none"
    lines.append(f"  node drops: {node_drops}")
    offloads = counters.get("udp_offloads")
    if offloads is not None:
        shown = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in offloads.items())
        lines.append(f"  udp offloads: {shown}")
    return "\n".join(lines) + "\n"
