"""What the dispatcher streams to one node: its tasks and the networks they use, and the
networks of the node's own attachments (the ingress network of its routing mesh).

A task is in a node's set once the scheduler assigned it there (state assigned or later) and
until its desired state is `remove`; the networks in the set are those its tasks attach to.
The agent gets the complete set first, then only changes. A change that matters to the agent
is one of spec, desired state or networks: the agent's own status reports (accepted, running,
...) come back from the agent itself and are not echoed to it.
"""

from __future__ import annotations

from controlplane.manager.tasks import is_attachment
from controlplane.pb.dispatcher_pb2 import Assignment, AssignmentChange, AssignmentsMessage
from controlplane.pb.objects_pb2 import Network, Node, Task
from controlplane.store import Store
from controlplane.taskstate import TaskState

_ASSIGNED = TaskState.ASSIGNED.rank


def _rank(state: str) -> int:
    try:
        return TaskState(state).rank
    except ValueError:
        return -1


def node_tasks(store: Store, node_id: str) -> dict[str, Task]:
    return {
        task.id: task
        for task in store.list(Task)
        if task.node_id == node_id
        and not is_attachment(task)  # the node asked for it and holds it already
        and _rank(task.status.state) >= _ASSIGNED
        and task.desired_state != TaskState.REMOVE.value
    }


def task_networks(
    store: Store, tasks: dict[str, Task], node: Node | None = None
) -> dict[str, Network]:
    """The networks of `tasks`' attachments and of `node`'s own."""
    attachments = [a for task in tasks.values() for a in task.networks]
    if node is not None:
        attachments += node.attachments
    networks: dict[str, Network] = {}
    for attachment in attachments:
        network = store.get(Network, attachment.network_id)
        if network is not None:
            networks[network.id] = network
    return networks


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
    """The set as last sent to one node, to turn the current set into a message of changes."""

    def __init__(self) -> None:
        self._tasks: dict[str, bytes] = {}
        self._networks: dict[str, bytes] = {}

    def complete(self, store: Store, node_id: str) -> AssignmentsMessage:
        self._tasks, self._networks = {}, {}
        message = self.changes(store, node_id)
        message.type = AssignmentsMessage.TYPE_COMPLETE
        return message

    def changes(self, store: Store, node_id: str) -> AssignmentsMessage:
        """An incremental message with what changed since the last one (maybe nothing)."""
        tasks = node_tasks(store, node_id)
        networks = task_networks(store, tasks, store.get(Node, node_id))
        message = AssignmentsMessage(
            type=AssignmentsMessage.TYPE_INCREMENTAL, store_index=store.applied_index
        )
        update, remove = AssignmentChange.ACTION_UPDATE, AssignmentChange.ACTION_REMOVE
        # Networks first, so an agent never holds a task whose network it has not been given.
        for network_id, network in networks.items():
            key = _network_key(network)
            if self._networks.get(network_id) != key:
                self._networks[network_id] = key
                message.changes.append(
                    AssignmentChange(action=update, assignment=Assignment(network=network))
                )
        for task_id, task in tasks.items():
            key = _task_key(task)
            if self._tasks.get(task_id) != key:
                self._tasks[task_id] = key
                message.changes.append(
                    AssignmentChange(action=update, assignment=Assignment(task=task))
                )
        for task_id in [t for t in self._tasks if t not in tasks]:
            del self._tasks[task_id]
            message.changes.append(
                AssignmentChange(action=remove, assignment=Assignment(task=Task(id=task_id)))
            )
        for network_id in [n for n in self._networks if n not in networks]:
            del self._networks[network_id]
            message.changes.append(
                AssignmentChange(
                    action=remove, assignment=Assignment(network=Network(id=network_id))
                )
            )
        return message
