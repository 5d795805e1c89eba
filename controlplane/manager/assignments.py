"""What the dispatcher streams to one node: its tasks and the networks they use, and the
networks of the node's own attachments (the ingress network of its routing mesh).

A task is in a node's set once the scheduler assigned it there (state assigned or later) and
until its desired state is `remove`; the networks in the set are those its tasks attach to.
The agent gets the complete set first, then only changes. A change that matters to the agent
is one of spec, desired state or networks: the agent's own status reports (accepted, running,
...) come back from the agent itself and are not echoed to it. The changes are worked out from
the store's change events, looking only at the tasks and networks they name: a write costs a
session what it changed, not a scan of every task in the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controlplane.manager.tasks import is_attachment
from controlplane.pb.dispatcher_pb2 import Assignment, AssignmentChange, AssignmentsMessage
from controlplane.pb.objects_pb2 import Network, Node, Task
from controlplane.store import Action, Event, Store
from controlplane.taskstate import TaskState

_ASSIGNED = TaskState.ASSIGNED.rank


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


def _network_key(network: Network) -> bytes:
    copy = Network()
    copy.CopyFrom(network)
    copy.ClearField("meta")
    return copy.SerializeToString(deterministic=True)


class AssignmentSet:
    """The set as last sent to one node, to turn changes of the store into a message of the
    changes to that set."""

    def __init__(self) -> None:
        self._tasks: dict[str, bytes] = {}  # task id -> its key as sent
        self._networks: dict[str, bytes] = {}  # network id -> its key as sent
        self._task_networks: dict[str, tuple[str, ...]] = {}  # of each task in the set
        self._node_networks: tuple[str, ...] = ()  # of the node's own attachments

    def complete(self, store: Store, node_id: str) -> AssignmentsMessage:
        """The whole set, from a read of the store (the first message of a stream)."""
        self._tasks, self._networks, self._task_networks = {}, {}, {}
        tasks: dict[str, Task | None] = dict(node_tasks(store, node_id))
        message = self._diff(store, node_id, tasks, None, store.get(Node, node_id))
        message.type = AssignmentsMessage.TYPE_COMPLETE
        return message

    def follow(self, store: Store, node_id: str, events: Iterable[Event]) -> AssignmentsMessage:
        """An incremental message with what `events` (Task, Network and Node changes, in
        commit order, the store being at or past the last) changed in the set; maybe nothing."""
        tasks: dict[str, Task | None] = {}
        networks: set[str] = set()
        node: Node | bool | None = False  # False: the node's attachments did not change
        for event in events:
            obj, deleted = event.object, event.action is Action.DELETED
            if event.action is Action.RESTORED or obj is None:  # anything may have changed
                tasks = {**dict.fromkeys(self._tasks), **node_tasks(store, node_id)}
                return self._diff(store, node_id, tasks, None, store.get(Node, node_id))
            if isinstance(obj, Task):
                tasks[obj.id] = None if deleted else obj
            elif isinstance(obj, Network):
                networks.add(obj.id)
            elif isinstance(obj, Node) and obj.id == node_id:
                node = None if deleted else obj
        return self._diff(store, node_id, tasks, networks, node)

    def _diff(
        self,
        store: Store,
        node_id: str,
        tasks: Mapping[str, Task | None],
        touched: set[str] | None,
        node: Node | bool | None,
    ) -> AssignmentsMessage:
        """The message for `tasks` (None: deleted) and the networks `touched` (None: all of
        the set's) as they are now, and `node` (False: unchanged)."""
        update, remove = AssignmentChange.ACTION_UPDATE, AssignmentChange.ACTION_REMOVE
        task_updates: list[Task] = []
        task_removes: list[str] = []
        for task_id, task in tasks.items():
            if task is not None and assigned_to(task, node_id):
                self._task_networks[task_id] = tuple(a.network_id for a in task.networks)
                key = _task_key(task)
                if self._tasks.get(task_id) != key:
                    self._tasks[task_id] = key
                    task_updates.append(task)
            elif task_id in self._tasks:
                del self._tasks[task_id]
                del self._task_networks[task_id]
                task_removes.append(task_id)
        if node is not False:
            attachments = node.attachments if isinstance(node, Node) else ()
            self._node_networks = tuple(a.network_id for a in attachments)
        wanted = {n for ids in self._task_networks.values() for n in ids}
        wanted.update(self._node_networks)
        network_updates: list[Network] = []
        for network_id in sorted(wanted):
            if touched is not None and network_id in self._networks and network_id not in touched:
                continue  # sent, and unchanged since
            network = store.get(Network, network_id)
            if network is None:  # not (or no longer) in the store
                wanted.discard(network_id)
                continue
            key = _network_key(network)
            if self._networks.get(network_id) != key:
                self._networks[network_id] = key
                network_updates.append(network)
        network_removes = [n for n in self._networks if n not in wanted]
        for network_id in network_removes:
            del self._networks[network_id]
        message = AssignmentsMessage(
            type=AssignmentsMessage.TYPE_INCREMENTAL, store_index=store.applied_index
        )
        # Networks first, so an agent never holds a task whose network it has not been given.
        changes = message.changes
        for network in network_updates:
            changes.append(AssignmentChange(action=update, assignment=Assignment(network=network)))
        for task in task_updates:
            changes.append(AssignmentChange(action=update, assignment=Assignment(task=task)))
        for task_id in task_removes:
            changes.append(
                AssignmentChange(action=remove, assignment=Assignment(task=Task(id=task_id)))
            )
        for network_id in network_removes:
            changes.append(
                AssignmentChange(
                    action=remove, assignment=Assignment(network=Network(id=network_id))
                )
            )
        return message
