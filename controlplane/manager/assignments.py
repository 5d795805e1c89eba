"""What the dispatcher streams to one node: its tasks, the networks, secrets and configs they
use, and the networks of the node's own attachments (the ingress network of its routing mesh).

A task is in a node's set once the scheduler assigned it there (state assigned or later) and
until its desired state is `remove`; the networks, secrets and configs in the set are those its
tasks refer to (a node gets no secret none of its tasks uses, as in swarmkit). A task that has
stopped for good (complete, failed, shutdown, ...) stays in the set until removed, but no
longer holds its secrets and configs: as swarmkit's dispatcher releases a finished task's
dependencies, a node keeps no secret once the last task using it has stopped there. The agent gets
the complete set first, then only changes. A change that matters to the agent is one of spec,
desired state or networks: the agent's own status reports (accepted, running, ...) come back
from the agent itself and are not echoed to it. The changes are worked out from the store's
change events, looking only at the objects they name: a write costs a session what it
changed, not a scan of every task in the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar

from controlplane.manager.tasks import is_attachment
from controlplane.pb.dispatcher_pb2 import Assignment, AssignmentChange, AssignmentsMessage
from controlplane.pb.objects_pb2 import Config, Network, Node, Secret, Task
from controlplane.store import Action, Event, Store
from controlplane.taskstate import TaskState

_ASSIGNED = TaskState.ASSIGNED.rank
_RUNNING = TaskState.RUNNING.rank


def _rank(state: str) -> int:
    try:
        return TaskState(state).rank
    except ValueError:
        return -1


def assigned_to(task: Task, node_id: str) -> bool:
    """Whether `task` is in `node_id`'s set."""
    return (
        task.node_id == node_id
        and not is_attachment(task)  # the node asked for it and holds it already
        and _rank(task.status.state) >= _ASSIGNED
        and task.desired_state != TaskState.REMOVE.value
    )


def node_tasks(store: Store, node_id: str) -> dict[str, Task]:
    return {task.id: task for task in store.list(Task) if assigned_to(task, node_id)}


def _task_key(task: Task) -> bytes:
    """What of a task the agent must hear about again when it changes."""
    copy = Task()
    copy.CopyFrom(task)
    copy.ClearField("meta")
    copy.ClearField("status")  # from assigned on, the status is the agent's own report
    return copy.SerializeToString(deterministic=True)


Referenced: TypeAlias = Network | Secret | Config
RefT = TypeVar("RefT", Network, Secret, Config)
REFERENCED_KINDS: tuple[type[Referenced], ...] = (Network, Secret, Config)
"""The kinds a node gets because its tasks refer to them, in the order they are sent."""


def _object_key(obj: Referenced) -> bytes:
    copy = type(obj).FromString(obj.SerializeToString())
    copy.ClearField("meta")
    return copy.SerializeToString(deterministic=True)


def _references(kind: type[Referenced], task: Task) -> tuple[str, ...]:
    """Ids of the objects of `kind` that `task` holds on its node: its networks, and its
    secrets and configs until it has stopped for good."""
    if kind is Network:
        return tuple(a.network_id for a in task.networks)
    if _rank(task.status.state) > _RUNNING:
        return ()
    container = task.spec.container
    if kind is Secret:
        return tuple(r.secret_id for r in container.secrets)
    return tuple(r.config_id for r in container.configs)


def _assignment(obj: Referenced) -> Assignment:
    if isinstance(obj, Network):
        return Assignment(network=obj)
    if isinstance(obj, Secret):
        return Assignment(secret=obj)
    return Assignment(config=obj)


@dataclass
class _Sent(Generic[RefT]):
    """The objects of one kind in the set: what each task refers to, how many tasks refer to
    each object, and the objects' keys as sent. Counting the references keeps a diff to the
    objects whose use or content changed, whatever the number of tasks on the node."""

    kind: type[RefT]
    keys: dict[str, bytes] = field(default_factory=dict)  # object id -> its key as sent
    by_task: dict[str, tuple[str, ...]] = field(default_factory=dict)
    users: Counter[str] = field(default_factory=Counter)  # object id -> tasks referring to it
    also: frozenset[str] = frozenset()  # wanted besides the tasks' references
    changed: set[str] = field(default_factory=set)  # wanted or not since the last diff

    def track(self, task_id: str, ids: tuple[str, ...]) -> None:
        """`task_id` (in the set) now refers to `ids`."""
        old = self.by_task.get(task_id, ())
        self.by_task[task_id] = ids
        if old == ids:
            return
        for object_id in old:
            self.users[object_id] -= 1
            if not self.users[object_id]:
                del self.users[object_id]
                self.changed.add(object_id)
        for object_id in ids:
            if not self.users[object_id]:
                self.changed.add(object_id)
            self.users[object_id] += 1

    def forget(self, task_id: str) -> None:
        """`task_id` left the set."""
        self.track(task_id, ())
        del self.by_task[task_id]

    def diff(
        self, store: Store, touched: set[str] | None, also: Iterable[str]
    ) -> tuple[list[RefT], list[str]]:
        """Objects to send (newly wanted, or changed if `touched` names them; None: check
        all) and ids to remove, for the tasks' references and `also`; the keys then say what
        was sent."""
        also = frozenset(also)
        candidates = self.changed | (also ^ self.also)
        if touched is None:
            candidates |= self.users.keys() | also | self.keys.keys()
        else:
            candidates |= touched
        self.also, self.changed = also, set()
        updates: list[RefT] = []
        removes: list[str] = []
        for object_id in sorted(candidates):
            wanted = object_id in self.users or object_id in also
            obj = store.get(self.kind, object_id) if wanted else None
            if obj is None:  # not (or no longer) wanted, or not (or no longer) in the store
                if self.keys.pop(object_id, None) is not None:
                    removes.append(object_id)
                continue
            key = _object_key(obj)
            if self.keys.get(object_id) != key:
                self.keys[object_id] = key
                updates.append(obj)
        return updates, removes


def _nothing_sent() -> dict[type[Referenced], _Sent[Any]]:
    return {kind: _Sent(kind) for kind in REFERENCED_KINDS}


class AssignmentSet:
    """The set as last sent to one node, to turn changes of the store into a message of the
    changes to that set."""

    def __init__(self) -> None:
        self._tasks: dict[str, bytes] = {}  # task id -> its key as sent
        self._referenced = _nothing_sent()
        self._node_networks: tuple[str, ...] = ()  # of the node's own attachments
        self._passed: set[str] = set()  # tasks `concerns` let through since the last follow

    def complete(self, store: Store, node_id: str) -> AssignmentsMessage:
        """The whole set, from a read of the store (the first message of a stream)."""
        self._tasks = {}
        self._referenced = _nothing_sent()
        self._passed = set()
        tasks: dict[str, Task | None] = dict(node_tasks(store, node_id))
        message = self._diff(store, node_id, tasks, None, store.get(Node, node_id))
        message.type = AssignmentsMessage.TYPE_COMPLETE
        return message

    def concerns(self, node_id: str, event: Event) -> bool:
        """Whether `follow` could find anything in `event` for `node_id`: a task of the node or
        in the set, the node itself, an object of the set or one the set's tasks or
        attachments want. The session's watch keeps only those (its predicate), so a write
        that concerns no task of a node (a `docker network create`, another node's heartbeat)
        does not wake that node's session: on a leader with five sessions, five wake-ups less
        between the commit and the answer. An object wanted only through a task event not
        followed yet is read from the store when that task is followed, so dropping its own
        events before then loses nothing."""
        obj = event.object
        if event.action is Action.RESTORED or obj is None:
            return True
        if isinstance(obj, Task):
            # A task let through once is let through until followed: its later events must
            # overwrite the earlier one's object, wherever the task went meanwhile.
            if obj.node_id == node_id or obj.id in self._tasks or obj.id in self._passed:
                self._passed.add(obj.id)
                return True
            return False
        if isinstance(obj, Node):
            return obj.id == node_id
        if isinstance(obj, REFERENCED_KINDS):
            sent = self._referenced[type(obj)]
            return obj.id in sent.users or obj.id in sent.keys or obj.id in sent.also
        return True

    def follow(self, store: Store, node_id: str, events: Iterable[Event]) -> AssignmentsMessage:
        """An incremental message with what `events` (Task, Node, Network, Secret and Config
        changes, in commit order, the store being at or past the last) changed in the set;
        maybe nothing."""
        self._passed = set()
        tasks: dict[str, Task | None] = {}
        touched: dict[type[Referenced], set[str]] = {kind: set() for kind in REFERENCED_KINDS}
        node: Node | bool | None = False  # False: the node's attachments did not change
        for event in events:
            obj, deleted = event.object, event.action is Action.DELETED
            if event.action is Action.RESTORED or obj is None:  # anything may have changed
                tasks = {**dict.fromkeys(self._tasks), **node_tasks(store, node_id)}
                return self._diff(store, node_id, tasks, None, store.get(Node, node_id))
            if isinstance(obj, Task):
                tasks[obj.id] = None if deleted else obj
            elif isinstance(obj, Node):
                if obj.id == node_id:
                    node = None if deleted else obj
            elif isinstance(obj, REFERENCED_KINDS):
                touched[type(obj)].add(obj.id)
        return self._diff(store, node_id, tasks, touched, node)

    def _diff(
        self,
        store: Store,
        node_id: str,
        tasks: Mapping[str, Task | None],
        touched: Mapping[type[Referenced], set[str]] | None,
        node: Node | bool | None,
    ) -> AssignmentsMessage:
        """The message for `tasks` (None: deleted) and the referenced objects `touched` (None:
        all of the set's) as they are now, and `node` (False: unchanged)."""
        update, remove = AssignmentChange.ACTION_UPDATE, AssignmentChange.ACTION_REMOVE
        task_updates: list[Task] = []
        task_removes: list[str] = []
        for task_id, task in tasks.items():
            if task is not None and assigned_to(task, node_id):
                for sent in self._referenced.values():
                    sent.track(task_id, _references(sent.kind, task))
                key = _task_key(task)
                if self._tasks.get(task_id) != key:
                    self._tasks[task_id] = key
                    task_updates.append(task)
            elif task_id in self._tasks:
                del self._tasks[task_id]
                for sent in self._referenced.values():
                    sent.forget(task_id)
                task_removes.append(task_id)
        if node is not False:
            attachments = node.attachments if isinstance(node, Node) else ()
            self._node_networks = tuple(a.network_id for a in attachments)
        object_updates: list[Referenced] = []
        object_removes: list[Referenced] = []
        for kind, sent in self._referenced.items():
            also = self._node_networks if kind is Network else ()
            updates, removes = sent.diff(store, None if touched is None else touched[kind], also)
            object_updates += updates
            object_removes += [kind(id=object_id) for object_id in removes]
        message = AssignmentsMessage(
            type=AssignmentsMessage.TYPE_INCREMENTAL, store_index=store.applied_index
        )
        # Referenced objects first, so an agent never holds a task whose network, secret or
        # config it has not been given; removed last, once the tasks using them are gone.
        changes = message.changes
        for obj in object_updates:
            changes.append(AssignmentChange(action=update, assignment=_assignment(obj)))
        for task in task_updates:
            changes.append(AssignmentChange(action=update, assignment=Assignment(task=task)))
        for task_id in task_removes:
            changes.append(
                AssignmentChange(action=remove, assignment=Assignment(task=Task(id=task_id)))
            )
        for obj in object_removes:
            changes.append(AssignmentChange(action=remove, assignment=_assignment(obj)))
        return message
