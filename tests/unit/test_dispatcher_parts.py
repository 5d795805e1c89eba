"""The dispatcher's pure parts: task state order, heartbeat deadlines, assignment diffs."""

from __future__ import annotations

import pytest

from controlplane.manager.assignments import AssignmentSet
from controlplane.manager.dispatcher import DispatcherService, RaftView
from controlplane.manager.heartbeats import (
    HEARTBEAT_FAILURE,
    UNKNOWN_HEARTBEAT_FAILURE,
    Liveness,
)
from controlplane.pb.dispatcher_pb2 import AssignmentChange, AssignmentsMessage
from controlplane.pb.objects_pb2 import Cluster, Network, Task
from controlplane.store import Store, Transaction
from controlplane.taskstate import TaskState, advances, parse_state


def test_task_states_only_move_forward() -> None:
    assert advances("assigned", "accepted") and advances("running", "complete")
    assert advances("", "running")  # nothing yet counts as new
    assert not advances("running", "starting") and not advances("running", "running")
    assert not advances("failed", "running")
    assert TaskState.SHUTDOWN.terminal and not TaskState.RUNNING.terminal
    with pytest.raises(ValueError, match="unknown task state 'sprinting'; expected one of new"):
        parse_state("sprinting")
    with pytest.raises(ValueError, match="unknown task state"):
        advances("running", "Running")


def test_liveness_deadlines() -> None:
    liveness = Liveness()
    liveness.beat("a", now=0.0, period=1.0)
    assert liveness.expect("b", now=0.0, period=2.0)
    assert not liveness.expect("a", now=0.0, period=1.0)  # heard from already
    assert liveness.registered("a") and not liveness.registered("b")
    assert liveness.expired(2.9) == []
    assert liveness.expired(3.0) == [("a", HEARTBEAT_FAILURE)]  # period * 3
    liveness.beat("b", now=4.0, period=2.0)  # b came back: a session deadline now
    assert liveness.expired(6.0) == []
    assert liveness.expired(10.0) == [("b", HEARTBEAT_FAILURE)]
    assert not liveness.known("a") and not liveness.known("b")
    liveness.expect("c", now=0.0, period=1.0)
    assert liveness.expired(3.0) == [("c", UNKNOWN_HEARTBEAT_FAILURE)]


class Writer:
    def __init__(self) -> None:
        self.store = Store()

    def apply(self, txn: Transaction) -> None:
        self.store.apply(self.store.applied_index + 1, txn.encode())


def make_task(task_id: str, node: str, state: str, networks: tuple[str, ...] = ()) -> Task:
    task = Task(id=task_id, node_id=node, desired_state="running")
    task.status.state = state
    for network_id in networks:
        task.networks.add(network_id=network_id, addresses=["10.0.0.2/24"])
    return task


def summary(message: AssignmentsMessage) -> list[tuple[str, str, str]]:
    out = []
    for change in message.changes:
        item = change.assignment.WhichOneof("item")
        obj = change.assignment.task if item == "task" else change.assignment.network
        action = "update" if change.action == AssignmentChange.ACTION_UPDATE else "remove"
        out.append((action, str(item), obj.id))
    return out


def test_assignments_send_the_set_then_what_matters_to_the_agent() -> None:
    writer = Writer()
    network = Network(id="net1")
    network.spec.annotations.name = "front"
    writer.apply(
        Transaction()
        .create(network)
        .create(make_task("t1", "n1", "assigned", ("net1",)))
        .create(make_task("t2", "n1", "pending"))  # not assigned yet
        .create(make_task("t3", "n2", "assigned"))  # another node's
    )
    sent = AssignmentSet()
    first = sent.complete(writer.store, "n1")
    assert first.type == AssignmentsMessage.TYPE_COMPLETE
    assert summary(first) == [("update", "network", "net1"), ("update", "task", "t1")]
    assert first.store_index == writer.store.applied_index

    # The agent's own report is not echoed back; the scheduler's assignment is news.
    t1 = writer.store.get(Task, "t1")
    t2 = writer.store.get(Task, "t2")
    assert t1 is not None and t2 is not None
    t1.status.state = "running"
    t2.status.state = "assigned"
    writer.apply(Transaction().update(t1).update(t2))
    assert summary(sent.changes(writer.store, "n1")) == [("update", "task", "t2")]
    assert sent.changes(writer.store, "n1").changes == []

    t1 = writer.store.get(Task, "t1")
    assert t1 is not None
    t1.desired_state = "shutdown"
    writer.apply(Transaction().update(t1))
    assert summary(sent.changes(writer.store, "n1")) == [("update", "task", "t1")]

    t1.desired_state = "remove"
    t1.meta.version.index = writer.store.applied_index
    writer.apply(Transaction().update(t1))
    # t1 leaves the set, and with it the only task on net1.
    assert summary(sent.changes(writer.store, "n1")) == [
        ("remove", "task", "t1"),
        ("remove", "network", "net1"),
    ]


async def no_raft(data: bytes, timeout: float) -> tuple[int, bytes]:
    raise AssertionError("not used")


def test_the_heartbeat_period_comes_from_the_cluster_when_set() -> None:
    writer = Writer()
    view = RaftView(is_leader=False, leader_address=None, managers=())
    dispatcher = DispatcherService(writer.store, no_raft, lambda: view, heartbeat_period=1.0)
    assert dispatcher.heartbeat_period() == 1.0
    cluster = Cluster(id="c1")
    cluster.spec.annotations.name = "default"
    cluster.spec.dispatcher_heartbeat_period_ns = 2_500_000_000
    writer.apply(Transaction().create(cluster))
    assert dispatcher.heartbeat_period() == 2.5
    with pytest.raises(ValueError, match="heartbeat_period must be positive"):
        DispatcherService(writer.store, no_raft, lambda: view, heartbeat_period=0)
