"""The tasks of the leader's view, indexed the ways its passes look them up: by service, the
standalone attachments apart, by the two states the managers move tasks out of (new for the
allocator, pending for the scheduler), and what the tasks placed on nodes load them with.

Each pass used to scan every task: the allocator for new ones and for endpoints to copy, the
orchestrator to group them by service, the scheduler for pending ones and to count each node's
load. With a service of 1,000 replicas that is 1,000 tasks looked at by every pass, and a
pass runs for every batch of status reports. Kept by the store's change events (`LiveView`),
the index costs a change what that task changed, and a pass what it works on.

The passes edit the view's task objects in place as they build their transaction, so what a
task contributes to a node's load is recorded when it is indexed, not recomputed from the
object later: taking it back out gives back exactly what was put in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from controlplane.manager.tasks import is_active, is_attachment, may_hold_resources
from controlplane.pb.objects_pb2 import Task

_K = TypeVar("_K")

INDEXED_STATES = ("new", "pending")
"""The states whose tasks a pass looks for: the allocator's (new) and the scheduler's."""


def host_ports(task: Task) -> set[tuple[str, int]]:
    """(protocol, published port) of the task's ports published in host mode on a fixed port."""
    return {
        (p.protocol or "tcp", p.published_port)
        for p in task.endpoint.ports
        if p.publish_mode == "host" and p.published_port
    }


@dataclass
class Load:
    """What runs where: active tasks per node and per (node, service), tasks that may hold
    resources per (node, network) and per (node, protocol, host port), and the CPUs and
    memory they reserve per node."""

    total: Counter[str] = field(default_factory=Counter)
    by_service: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_network: Counter[tuple[str, str]] = field(default_factory=Counter)
    host_ports: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    reserved_cpus: Counter[str] = field(default_factory=Counter)  # nano CPUs per node
    reserved_memory: Counter[str] = field(default_factory=Counter)  # bytes per node

    def add(self, placement: Placement, sign: int = 1) -> None:
        """Count a task's placement in (sign 1) or out (sign -1)."""
        node_id = placement.node_id
        if placement.active:
            _bump(self.total, node_id, sign)
            _bump(self.by_service, (node_id, placement.service_id), sign)
        for network_id in placement.networks:
            _bump(self.by_network, (node_id, network_id), sign)
        for protocol, port in placement.host_ports:
            _bump(self.host_ports, (node_id, protocol, port), sign)
        if placement.nano_cpus:
            _bump(self.reserved_cpus, node_id, sign * placement.nano_cpus)
        if placement.memory_bytes:
            _bump(self.reserved_memory, node_id, sign * placement.memory_bytes)


def _bump(counter: Counter[_K], key: _K, sign: int) -> None:
    value = counter[key] + sign
    if value:
        counter[key] = value
    else:
        del counter[key]


@dataclass(frozen=True)
class Placement:
    """What one task on a node counts for in its load."""

    node_id: str
    service_id: str
    active: bool
    networks: tuple[str, ...]
    host_ports: tuple[tuple[str, int], ...]
    nano_cpus: int  # reserved, while it may hold resources
    memory_bytes: int

    @classmethod
    def of(cls, task: Task, node_id: str) -> Placement:
        holds = may_hold_resources(task)
        return cls(
            node_id,
            task.service_id,
            is_active(task),
            tuple(a.network_id for a in task.networks) if holds else (),
            tuple(sorted(host_ports(task))) if holds else (),
            task.spec.resources.reservations.nano_cpus if holds else 0,
            task.spec.resources.reservations.memory_bytes if holds else 0,
        )


def placed(task: Task) -> bool:
    """A task that loads its node: given one and past the managers' states."""
    return bool(task.node_id) and task.status.state not in INDEXED_STATES


@dataclass(frozen=True)
class _Entry:
    """Where a task was indexed: its service (None: an attachment), its indexed state (or
    ""), and its placement (or None)."""

    service_id: str | None
    state: str
    placement: Placement | None


class TaskIndex:
    def __init__(self, tasks: Iterable[Task] = ()) -> None:
        self._by_id: dict[str, Task] = {}
        self._entries: dict[str, _Entry] = {}
        self._by_service: dict[str, dict[str, Task]] = {}  # standalone attachments apart
        self._attachments: dict[str, Task] = {}
        self._by_state: dict[str, dict[str, Task]] = {state: {} for state in INDEXED_STATES}
        self._sorted: list[Task] | None = None
        self.load = Load()
        for task in tasks:
            self.put(task)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, task_id: str) -> Task | None:
        return self._by_id.get(task_id)

    def all(self) -> list[Task]:
        """Every task in id order (sorted again only after a change)."""
        if self._sorted is None:
            self._sorted = [self._by_id[task_id] for task_id in sorted(self._by_id)]
        return self._sorted

    def of_service(self, service_id: str) -> list[Task]:
        """The service's tasks in id order."""
        tasks = self._by_service.get(service_id, {})
        return [tasks[task_id] for task_id in sorted(tasks)]

    def service_ids(self) -> list[str]:
        """The services that have tasks, in id order (some may be gone)."""
        return sorted(self._by_service)

    def attachments(self) -> list[Task]:
        """Standalone containers' network attachments in id order."""
        return [self._attachments[task_id] for task_id in sorted(self._attachments)]

    def in_state(self, state: str) -> list[Task]:
        """The tasks whose observed state, when indexed, was `state` (one of INDEXED_STATES),
        in id order."""
        tasks = self._by_state[state]
        return [tasks[task_id] for task_id in sorted(tasks)]

    def put(self, task: Task) -> None:
        """Index a created or updated task (replacing what its id held)."""
        task_id = task.id
        self.remove(task_id)
        self._by_id[task_id] = task
        self._sorted = None
        service_id: str | None = None
        if is_attachment(task):
            self._attachments[task_id] = task
        else:
            service_id = task.service_id
            self._by_service.setdefault(service_id, {})[task_id] = task
        state = task.status.state if task.status.state in INDEXED_STATES else ""
        if state:
            self._by_state[state][task_id] = task
        placement = Placement.of(task, task.node_id) if placed(task) else None
        if placement is not None:
            self.load.add(placement)
        self._entries[task_id] = _Entry(service_id, state, placement)

    def remove(self, task_id: str) -> None:
        """Forget a task (deleted); nothing happens for an id not indexed."""
        entry = self._entries.pop(task_id, None)
        if entry is None:
            return
        del self._by_id[task_id]
        self._sorted = None
        if entry.service_id is None:
            del self._attachments[task_id]
        else:
            tasks = self._by_service[entry.service_id]
            del tasks[task_id]
            if not tasks:
                del self._by_service[entry.service_id]
        if entry.state:
            del self._by_state[entry.state][task_id]
        if entry.placement is not None:
            self.load.add(entry.placement, -1)
