"""Task facts shared by the leader's loops and the API: the state ladder, what counts as alive,
the task template a service's tasks are made from, and how a new task is born.

States are swarmkit's, lowercase, in the order a task climbs them. The managers move a task
new -> pending (allocator) -> assigned (scheduler); the agent moves it on from there and
reports back. A task never goes down the ladder; "desired_state" says where the managers want
it to end (running, or shutdown/remove to stop it). A restart's or a rolling update's new task
is made at once with desired state "ready" (the agent prepares it but does not start it) and
moved on to running by the orchestrator once its restart delay ran out and the task it replaces
stopped (`delayed_start.py`), as swarmkit's restart supervisor does.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.ids import new_object_id
from controlplane.pb.objects_pb2 import Cluster, Node, Service, ServiceSpec, Task

STATES = (
    "new",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
    "complete",
    "shutdown",
    "failed",
    "rejected",
    "remove",
    "orphaned",
)
_RANK = {state: rank for rank, state in enumerate(STATES)}

TERMINAL = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
"""Observed states after which the task runs no more (its addresses are free again)."""
FAILED = frozenset({"failed", "rejected"})
DESIRED_READY = "ready"
"""A replacement waiting to start (`delayed_start.py`): prepared on its node, not started."""
DESIRED_RUNNING = "running"
DESIRED_COMPLETE = "complete"
"""A job's task (`jobs.py`): run until it exits, and then done (a restart is a new task)."""
DESIRED_SHUTDOWN = "shutdown"
DESIRED_REMOVE = "remove"

DEFAULT_RESTART_DELAY_NS = 5_000_000_000
DEFAULT_STOP_GRACE_NS = 10_000_000_000
HISTORY_LIMIT = 5
"""Swarm's TaskHistoryRetentionLimit: old tasks kept per slot (or per node, global)."""

MSG_CREATED = "created"
MSG_PENDING = "pending task scheduling"
MSG_ASSIGNED = "scheduler assigned task to node"


def rank(state: str) -> int:
    """Position on the ladder; an unknown state counts as "new" (it has not started)."""
    return _RANK.get(state, 0)


def is_attachment(task: Task) -> bool:
    """A standalone container's network attachment: it runs nothing, has no service, and only
    the allocator and the attach/detach calls deal with it (`network_attachments.py`)."""
    return task.HasField("attachment")


def is_terminal(task: Task) -> bool:
    return task.status.state in TERMINAL


def wants_running(task: Task) -> bool:
    """Meant to run: a service's task (desired "running"), a job's (desired "complete") or a
    replacement that waits to start (desired "ready"): it holds its slot and its node."""
    return task.desired_state in (DESIRED_RUNNING, DESIRED_COMPLETE, DESIRED_READY)


def history_limit(cluster: Cluster | None) -> int:
    """Tasks kept per slot: the cluster's TaskHistoryRetentionLimit, Swarm's 5 when unset
    (0 or less: only the live ones, as swarmkit's task reaper ends up doing)."""
    if cluster is None or not cluster.spec.HasField("task_history_retention_limit"):
        return HISTORY_LIMIT
    return cluster.spec.task_history_retention_limit


def shown_desired_state(task: Task) -> str:
    """The desired state as swarmkit reports it: a finished task will not run again (a
    restart, if any, is a new task), so swarmkit sets it to shutdown as soon as it finishes.
    Our orchestrator keeps such a task's desired state "running" when no restart follows it
    (it marks the slot as still taken); the API shows swarmkit's value. A replacement that
    finished while it waits to start keeps "ready" until its restart, as swarmkit's
    (dockerd's `Ready / Rejected` for a missing image)."""
    if task.desired_state == DESIRED_RUNNING and is_terminal(task):
        return DESIRED_SHUTDOWN
    return task.desired_state


def is_active(task: Task) -> bool:
    """Meant to run and not finished: it counts against a node's load and the service's scale."""
    return wants_running(task) and not is_terminal(task)


def may_hold_resources(task: Task) -> bool:
    """Anything not known to be finished may still run on its node (a task being stopped too)."""
    return not is_terminal(task)


def started_on_node(task: Task) -> bool:
    """Assigned to a node (the agent may run it), as opposed to still in the managers' hands."""
    return bool(task.node_id) and rank(task.status.state) >= rank("assigned")


def task_template(spec: ServiceSpec) -> ServiceSpec:
    """What a task carries of its service: the name (for the task's display name) and the task
    template, without the service-level parts (mode, update policy, ports) whose changes must
    not replace running tasks."""
    template = ServiceSpec()
    template.CopyFrom(spec)
    template.annotations.labels.clear()
    template.ClearField("mode")
    template.ClearField("update_config")
    template.ClearField("rollback_config")
    del template.ports[:]
    template.endpoint_mode = ""
    return template


def is_up_to_date(task: Task, service: Service) -> bool:
    """A task made from the service's current spec (Docker's `_up-to-date` filter)."""
    return task.spec == task_template(service.spec)


def node_is_usable(node: Node | None) -> bool:
    """A node whose tasks still count: it exists, is not down and is not being drained."""
    return (
        node is not None
        and node.status.state != "down"
        and (node.spec.availability or "active") != "drain"
    )


SlotKey = int | str
"""A slot: its number (replicated, and replicated job) or its node id (global, global job)."""


PER_NODE_MODES = ("global", "global_job")


def slot_key(spec: ServiceSpec, task: Task) -> SlotKey:
    """`task`'s slot in its service (of spec `spec`): its node for a global service or job,
    else its replica number."""
    return task.node_id if spec.WhichOneof("mode") in PER_NODE_MODES else task.slot


@dataclass(frozen=True)
class Slot:
    """Where a new task goes: a replica number (replicated) or a node (global)."""

    number: int = 0
    node_id: str = ""


def new_task(service: Service, slot: Slot, now_ns: int) -> Task:
    task = Task(id=new_object_id(), service_id=service.id, slot=slot.number, node_id=slot.node_id)
    task.meta.created_at_ns = task.meta.updated_at_ns = now_ns
    task.spec.CopyFrom(task_template(service.spec))
    task.spec_version = service.spec_version
    task.desired_state = DESIRED_RUNNING
    task.status.state = "new"
    task.status.message = MSG_CREATED
    task.status.timestamp_ns = now_ns
    return task


def note_started(task: Task) -> None:
    """Stamp `started_at_ns` at the first status at or past running (for a task that fails at
    once, that failure): a rolling update's monitor window starts there."""
    if not task.started_at_ns and rank(task.status.state) >= rank("running"):
        task.started_at_ns = task.status.timestamp_ns


def set_status(task: Task, state: str, message: str, now_ns: int, err: str = "") -> None:
    task.status.state = state
    task.status.message = message
    task.status.err = err
    task.status.timestamp_ns = now_ns
    task.meta.updated_at_ns = now_ns
