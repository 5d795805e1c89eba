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
- every change of the table (ours or gossiped from others) recomputes the program
  (`program.compute`), and the changes since the last one (`program.diff`) go to whoever
  applies them (a data path backend).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

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
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.objects_pb2 import Network, Task, TaskStatus
from controlplane.store.kinds import name_of

log = logging.getLogger("controlplane.datapath")

ENDPOINT_TABLE = "endpoint_table"  # libnetwork's table name
ENCRYPTED_OPTION = "encrypted"
# Published from `starting` on: as Docker joins a task's sandbox to its networks before the
# container's process starts, the endpoint (and its stack) exists when the program first runs.
_PUBLISHED_STATES = frozenset({"starting", "running"})


class Gossip(Protocol):
    """What this needs of the node's gossip member (`gossip.node.GossipNode`)."""

    def join_network(self, network_id: str) -> None: ...

    def leave_network(self, network_id: str) -> None: ...

    def create_entry(self, network_id: str, table: str, key: str, value: bytes) -> None: ...

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


def _records(task: Task) -> dict[str, tuple[str, EndpointRecord]]:
    """endpoint key -> (network id, record) for each of `task`'s attachments. The endpoint
    is named as the task's container (`name_of`), which the runtime asks the backend for."""
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
        )
        out[f"{task.id}.{attachment.network_id}"] = (attachment.network_id, record)
    return out


class DataPathState:
    def __init__(
        self,
        local: NodeView,
        gossip: Gossip,
        on_change: Callable[[Program, list[Change]], None] = lambda _p, _c: None,
    ) -> None:
        self.local = local
        self._gossip = gossip
        self._on_change = on_change
        self._tasks: dict[str, Task] = {}
        self._networks: dict[str, Network] = {}
        self._running: set[str] = set()  # task ids this node runs, as its worker reports
        self._containers: dict[str, tuple[str, EndpointRecord]] = {}  # standalone endpoints
        self._published: dict[str, str] = {}  # endpoint key -> network id
        self._joined: set[str] = set()
        self.keys: list[DataPathKey] = []
        self.program = Program(node=local)

    # ---- inputs ----------------------------------------------------------------------------

    def assignments(self, tasks: dict[str, Task], networks: dict[str, Network]) -> None:
        """The agent's current assignment set (tasks of this node and their networks)."""
        self._tasks = dict(tasks)
        self._networks.update(networks)
        self._running &= set(tasks)
        self._publish()

    def task_status(self, task_id: str, status: TaskStatus) -> None:
        """A state this node's worker reported for one of its tasks."""
        if status.state in _PUBLISHED_STATES:
            self._running.add(task_id)
        else:
            self._running.discard(task_id)
        self._publish()

    def container_attached(self, key: str, network: Network, record: EndpointRecord) -> None:
        """A standalone container of this node joined `network` (its attachment, allocated
        by the managers, is `record`): published like a task's endpoint, under `key`."""
        self._networks[network.id] = network
        self._containers[key] = (network.id, record)
        self._publish()

    def container_detached(self, key: str) -> None:
        if self._containers.pop(key, None) is not None:
            self._publish()

    def set_keys(self, keys: list[DataPathKey]) -> None:
        """The data path keys the managers handed out, primary first."""
        if keys != self.keys:
            self.keys = list(keys)
            self.refresh()

    def endpoints_changed(self) -> None:
        """NetworkDB's endpoint table changed (ours or gossiped): recompute."""
        self.refresh()

    # ---- publication -----------------------------------------------------------------------

    def _publish(self) -> None:
        wanted: dict[str, tuple[str, EndpointRecord]] = {}
        for task_id in sorted(self._running):
            task = self._tasks.get(task_id)
            if task is not None:
                wanted.update(_records(task))
        wanted.update(self._containers)
        networks = {nid for nid, _ in wanted.values()}
        for nid in sorted(networks - self._joined):
            self._gossip.join_network(nid)
            self._joined.add(nid)
        for key, (nid, record) in sorted(wanted.items()):
            if key not in self._published:
                self._gossip.create_entry(
                    nid, ENDPOINT_TABLE, key, record.SerializeToString(deterministic=True)
                )
                self._published[key] = nid
                log.info(
                    "event=endpoint_published network=%s endpoint=%s ip=%s", nid, key, record.ip
                )
        for key in sorted(set(self._published) - set(wanted)):
            nid = self._published.pop(key)
            self._gossip.delete_entry(nid, ENDPOINT_TABLE, key)
            log.info("event=endpoint_withdrawn network=%s endpoint=%s", nid, key)
        for nid in sorted(self._joined - networks):
            self._gossip.leave_network(nid)
            self._joined.discard(nid)
        self.refresh()

    # ---- the program -----------------------------------------------------------------------

    def records(self) -> Iterable[tuple[str, str, EndpointRecord]]:
        """(network id, key, record) of every endpoint on the networks this node is on."""
        for nid in sorted(self._joined):
            for key, entry in self._gossip.table_entries(nid, ENDPOINT_TABLE).items():
                try:
                    record = EndpointRecord.FromString(entry.value)
                except Exception:  # a peer's garbage must not stop our data path
                    log.warning("event=endpoint_unreadable network=%s key=%s", nid, key)
                    continue
                yield nid, key, record

    def endpoints(self) -> Iterable[Endpoint]:
        for nid, key, record in self.records():
            yield Endpoint(nid, key, record.name, record.ip, record.node_id, tuple(record.aliases))

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
