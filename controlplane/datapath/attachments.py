"""A node's side of the overlay: which of its tasks are attached to which networks, what it
publishes about them in NetworkDB, and the data path program that follows from everyone's
publications.

The flow, as in Docker's overlay driver and NetworkDB:
- the agent's assignments say which networks exist for this node's tasks (VNI, subnet,
  gateway, encryption) and which address each task has on each;
- when a task starts running, the node joins those networks in NetworkDB and publishes one
  `EndpointRecord` per attachment in the `endpoint_table`; when it stops or goes away, the
  entries are deleted, and the node leaves a network once nothing of its own is on it;
- a standalone container (`docker run --network`) is published the same way, from the
  attachment the managers allocated for it (`container_attached`/`container_detached`);
- the node's own ingress sandbox (Docker's `ingress-sbox`, an address the managers allocated
  on the ingress network, from the node's record) is published the same way, whether or not
  the node runs a task: the routing mesh's connections leave from it (`ingress.py`); a task's
  record on the ingress network carries its service's ingress ports;
- a task's record carries its service's VIP on that network (none for `endpoint_mode=dnsrr`)
  and is marked `service_disabled` until the task runs, as libnetwork enables a task's
  service binding once its container started: the VIP balances to running tasks only
  (`vips.py`);
- every change of the table (ours or gossiped from others) recomputes the program
  (`program.compute`), and the changes since the last one (`program.diff`) go to whoever
  applies them (a data path backend).

Publication follows what changed: a task's reported status publishes or withdraws that task's
records only, and asks for the program to be recomputed (`request_refresh`, which a node
coalesces into one recomputation per event-loop turn). Rebuilding every record and the program
for each status made a node of k tasks spend O(k^2) while they started, enough to miss its
heartbeats with 500 of them. The assignments, standalone containers and the ingress sandbox
still publish everything (rarer, and they change which records exist as a whole). Records read
back from NetworkDB are decoded once per entry value, not on every read.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from controlplane.datapath.network_view import LoadBalancerIndexes
from controlplane.datapath.program import (
    Change,
    DataPathKey,
    Endpoint,
    NetworkView,
    NodeView,
    Program,
    compute,
    diff,
)
from controlplane.gossip.networkdb_types import EntryView
from controlplane.gossip.types import NodeMeta
from controlplane.node_local_networks import is_node_local
from controlplane.pb.datapath_pb2 import EndpointRecord, IngressPort
from controlplane.pb.objects_pb2 import Network, NetworkAttachment, Task, TaskStatus
from controlplane.store.kinds import name_of

log = logging.getLogger("controlplane.datapath")

ENDPOINT_TABLE = "endpoint_table"  # libnetwork's table name
ENCRYPTED_OPTION = "encrypted"
# Published from `starting` on: as Docker joins a task's sandbox to its networks before the
# container's process starts, the endpoint (and its stack) exists when the program first runs.
_PUBLISHED_STATES = frozenset({"starting", "running"})
INGRESS_SANDBOX = "ingress-sbox"  # the name of a node's endpoint on the ingress network


class Gossip(Protocol):
    """What this needs of the node's gossip member (`gossip.node.GossipNode`)."""

    def join_network(self, network_id: str) -> None: ...

    def leave_network(self, network_id: str) -> None: ...

    def create_entry(self, network_id: str, table: str, key: str, value: bytes) -> None: ...

    def update_entry(self, network_id: str, table: str, key: str, value: bytes) -> None: ...

    def delete_entry(self, network_id: str, table: str, key: str) -> None: ...

    def table_entries(self, network_id: str, table: str) -> dict[str, EntryView]: ...

    def live_members(self) -> list[NodeMeta]: ...


def network_view(network: Network) -> NetworkView | None:
    """A Network object as the program needs it; None until the allocator has filled it."""
    if not network.vni or not network.ipam:
        return None
    return NetworkView(
        network_id=network.id,
        name=network.spec.annotations.name,
        vni=network.vni,
        subnet=network.ipam[0].subnet,
        gateway=network.ipam[0].gateway,
        encrypted=ENCRYPTED_OPTION in network.spec.driver_options,
    )


def node_view(meta: NodeMeta) -> NodeView:
    if meta.platform.startswith("windows"):
        return NodeView(meta.node_id, meta.data_path_addr, meta.data_path_port, "windows")
    return NodeView(meta.node_id, meta.data_path_addr, meta.data_path_port, "linux")


def _records(task: Task, ingress_id: str, running: bool) -> dict[str, tuple[str, EndpointRecord]]:
    """endpoint key -> (network id, record) for each of `task`'s attachments. The endpoint
    is named as the task's container (`name_of`), which the runtime asks the backend for; it
    carries the service's VIP on the network, and on the ingress network (`ingress_id`) the
    ports published there."""
    out: dict[str, tuple[str, EndpointRecord]] = {}
    name = name_of(task)
    for attachment in task.networks:
        if not attachment.addresses:
            continue
        record = EndpointRecord(
            name=name,
            ip=attachment.addresses[0].partition("/")[0],
            node_id=task.node_id,
            aliases=list(attachment.aliases),
            service_name=task.spec.annotations.name,
            service_id=task.service_id,
            task_id=task.id,
            vip=task.endpoint.virtual_ips.get(attachment.network_id, "").partition("/")[0],
            service_disabled=not running,
        )
        if attachment.network_id == ingress_id:
            record.ingress_ports.extend(
                IngressPort(
                    protocol=p.protocol or "tcp",
                    target_port=p.target_port,
                    published_port=p.published_port,
                )
                for p in task.endpoint.ports
                if (p.publish_mode or "ingress") == "ingress" and p.published_port
            )
        out[f"{task.id}.{attachment.network_id}"] = (attachment.network_id, record)
    return out


class DataPathState:
    def __init__(
        self,
        local: NodeView,
        gossip: Gossip,
        on_change: Callable[[Program, list[Change]], None] = lambda _p, _c: None,
        request_refresh: Callable[[], None] | None = None,
    ) -> None:
        """`request_refresh` is called when the publication changed and the program should
        follow (soon: the caller coalesces); without it the program is recomputed at once."""
        self.local = local
        self._gossip = gossip
        self._on_change = on_change
        self._request_refresh = request_refresh or self.refresh
        self._tasks: dict[str, Task] = {}
        self._networks: dict[str, Network] = {}
        self._running: set[str] = set()  # task ids this node starts or runs, as reported
        self._serving: set[str] = set()  # of those, the ones running (VIPs balance to them)
        self._containers: dict[str, tuple[str, EndpointRecord]] = {}  # standalone endpoints
        self._published: dict[str, tuple[str, bytes]] = {}  # endpoint key -> (network, record)
        self._published_on: Counter[str] = Counter()  # network id -> endpoints published on it
        self._task_keys: dict[str, set[str]] = {}  # task id -> its published endpoint keys
        self._decoded: dict[tuple[str, str], tuple[bytes, EndpointRecord]] = {}
        self._sandbox: NetworkAttachment | None = None  # this node's ingress attachment
        self._joined: set[str] = set()
        self.keys: list[DataPathKey] = []
        self.program = Program(node=local)
        self.lb_indexes = LoadBalancerIndexes()  # `network inspect -v`'s LocalLBIndex

    # ---- inputs ----------------------------------------------------------------------------

    def assignments(self, tasks: dict[str, Task], networks: dict[str, Network]) -> None:
        """The agent's current assignment set (tasks of this node and their networks: the
        overlays, not the node's own `host` or `bridge` a task may name)."""
        self._tasks = dict(tasks)
        self._networks.update({k: n for k, n in networks.items() if not is_node_local(n)})
        self._running &= set(tasks)
        self._serving &= set(tasks)
        self._publish()

    def task_status(self, task_id: str, status: TaskStatus) -> None:
        """A state this node's worker reported for one of its tasks."""
        if status.state in _PUBLISHED_STATES:
            self._running.add(task_id)
        else:
            self._running.discard(task_id)
        if status.state == "running":
            self._serving.add(task_id)
        else:
            self._serving.discard(task_id)
        self._publish_task(task_id)

    def container_attached(self, key: str, network: Network, record: EndpointRecord) -> None:
        """A standalone container of this node joined `network` (its attachment, allocated
        by the managers, is `record`): published like a task's endpoint, under `key`."""
        self._networks[network.id] = network
        self._containers[key] = (network.id, record)
        self._publish()

    def container_detached(self, key: str) -> None:
        if self._containers.pop(key, None) is not None:
            self._publish()

    def node_attachments(self, attachments: Iterable[NetworkAttachment]) -> None:
        """The node's own attachments, from its record (the ingress sandbox's address)."""
        sandbox = next((a for a in attachments if a.addresses), None)
        if sandbox != self._sandbox:
            self._sandbox = sandbox
            self._publish()

    def set_keys(self, keys: list[DataPathKey]) -> None:
        """The data path keys the managers handed out, primary first."""
        if keys != self.keys:
            self.keys = list(keys)
            self.refresh()

    def endpoints_changed(self) -> None:
        """NetworkDB's endpoint table changed (ours or gossiped): recompute."""
        self.refresh()

    def task_named(self, container_name: str) -> Task | None:
        """The assigned task whose container is `container_name`, if any."""
        return next((t for t in self._tasks.values() if name_of(t) == container_name), None)

    # ---- publication -----------------------------------------------------------------------

    @property
    def ingress_id(self) -> str:
        """The ingress network's id, once the assignments brought it ("" before)."""
        return next((nid for nid, n in self._networks.items() if n.spec.ingress), "")

    def _task_records(self, task_id: str, ingress_id: str) -> dict[str, tuple[str, EndpointRecord]]:
        """What `task_id` should have published now: nothing unless it starts or runs."""
        task = self._tasks.get(task_id)
        if task is None or task_id not in self._running:
            return {}
        return _records(task, ingress_id, task_id in self._serving)

    def _wanted(self) -> dict[str, tuple[str, EndpointRecord]]:
        """Every record this node should publish; notes which keys are whose task's."""
        ingress_id = self.ingress_id
        wanted: dict[str, tuple[str, EndpointRecord]] = {}
        self._task_keys = {}
        for task_id in sorted(self._running):
            records = self._task_records(task_id, ingress_id)
            if records:
                self._task_keys[task_id] = set(records)
                wanted.update(records)
        wanted.update(self._containers)
        sandbox = self._sandbox
        if sandbox is not None and sandbox.network_id in self._networks:
            record = EndpointRecord(
                name=INGRESS_SANDBOX,
                ip=sandbox.addresses[0].partition("/")[0],
                node_id=self.local.node_id,
            )
            key = f"{INGRESS_SANDBOX}-{self.local.node_id}.{sandbox.network_id}"
            wanted[key] = (sandbox.network_id, record)
        return wanted

    def _publish(self) -> None:
        """Publish everything wanted, withdraw everything else."""
        wanted = self._wanted()
        self._sync(wanted, set(self._published))

    def _publish_task(self, task_id: str) -> None:
        """Publish or withdraw one task's records, leaving every other record alone."""
        wanted = self._task_records(task_id, self.ingress_id)
        self._sync(wanted, self._task_keys.pop(task_id, set()))
        if wanted:
            self._task_keys[task_id] = set(wanted)

    def _sync(self, wanted: dict[str, tuple[str, EndpointRecord]], owned: set[str]) -> None:
        """Make NetworkDB hold `wanted` and none of the `owned` keys not in it: join the
        networks first, leave those left with nothing of ours last."""
        for nid in sorted({nid for nid, _ in wanted.values()} - self._joined):
            self._gossip.join_network(nid)
            self._joined.add(nid)
        for key, (nid, record) in sorted(wanted.items()):
            value = record.SerializeToString(deterministic=True)
            published = self._published.get(key)
            if published == (nid, value):
                continue
            if published is None:
                self._gossip.create_entry(nid, ENDPOINT_TABLE, key, value)
            else:  # keys name their network: only the record changed (its ingress ports)
                self._gossip.update_entry(nid, ENDPOINT_TABLE, key, value)
                self._published_on[published[0]] -= 1
            self._published[key] = (nid, value)
            self._published_on[nid] += 1
            log.info("event=endpoint_published network=%s endpoint=%s ip=%s", nid, key, record.ip)
        for key in sorted(owned - set(wanted)):
            published = self._published.pop(key, None)
            if published is None:
                continue
            nid = published[0]
            self._published_on[nid] -= 1
            self._gossip.delete_entry(nid, ENDPOINT_TABLE, key)
            log.info("event=endpoint_withdrawn network=%s endpoint=%s", nid, key)
        for nid in sorted(n for n in self._joined if self._published_on[n] <= 0):
            self._gossip.leave_network(nid)
            self._joined.discard(nid)
            del self._published_on[nid]
        self._request_refresh()

    # ---- the program -----------------------------------------------------------------------

    def records(self) -> Iterable[tuple[str, str, EndpointRecord]]:
        """(network id, key, record) of every endpoint on the networks this node is on."""
        decoded: dict[tuple[str, str], tuple[bytes, EndpointRecord]] = {}
        for nid in sorted(self._joined):
            for key, entry in self._gossip.table_entries(nid, ENDPOINT_TABLE).items():
                known = self._decoded.get((nid, key))
                if known is not None and known[0] == entry.value:
                    record = known[1]
                else:
                    try:
                        record = EndpointRecord.FromString(entry.value)
                    except Exception:  # a peer's garbage must not stop our data path
                        log.warning("event=endpoint_unreadable network=%s key=%s", nid, key)
                        continue
                decoded[(nid, key)] = (entry.value, record)
                yield nid, key, record
        self._decoded = decoded

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint on this node's networks; the services' load balancers follow them."""
        found, services = [], []
        for nid, key, record in self.records():
            found.append(
                Endpoint(nid, key, record.name, record.ip, record.node_id, tuple(record.aliases))
            )
            if record.service_id:
                services.append((record.service_id, nid))
        self.lb_indexes.follow(services)
        return found

    def networks(self) -> list[Network]:
        return list(self._networks.values())

    def network_names(self) -> dict[str, str]:
        """network id -> name, of the networks this node's tasks are attached to."""
        return {nid: n.spec.annotations.name for nid, n in self._networks.items()}

    def refresh(self) -> Program:
        views = [v for v in (network_view(n) for n in self._networks.values()) if v is not None]
        nodes = [node_view(meta) for meta in self._gossip.live_members()]
        program = compute(self.local, nodes, views, self.endpoints(), self.keys)
        changes = diff(self.program, program)
        self.program = program
        if changes:
            self._on_change(program, changes)
        return program
