"""The dispatcher's pure parts: task state order, heartbeat deadlines, assignment diffs."""

from __future__ import annotations

import random

import pytest

from controlplane.manager.assignments import REFERENCED_KINDS, AssignmentSet
from controlplane.manager.dispatcher import DispatcherService, RaftView
from controlplane.manager.heartbeats import (
    HEARTBEAT_FAILURE,
    UNKNOWN_HEARTBEAT_FAILURE,
    Liveness,
)
from controlplane.pb.dispatcher_pb2 import AssignmentChange, AssignmentsMessage
from controlplane.pb.objects_pb2 import Cluster, Config, Network, Node, Secret, Task
from controlplane.store import Action, Event, Store, Transaction
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
        item = str(change.assignment.WhichOneof("item"))
        obj = getattr(change.assignment, item)
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
    watch = writer.store.watch(kinds=(Task, Node, *REFERENCED_KINDS))
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
    assert summary(sent.follow(writer.store, "n1", watch.poll())) == [("update", "task", "t2")]
    assert sent.follow(writer.store, "n1", watch.poll()).changes == []

    t1 = writer.store.get(Task, "t1")
    assert t1 is not None
    t1.desired_state = "shutdown"
    writer.apply(Transaction().update(t1))
    assert summary(sent.follow(writer.store, "n1", watch.poll())) == [("update", "task", "t1")]

    t1.desired_state = "remove"
    t1.meta.version.index = writer.store.applied_index
    writer.apply(Transaction().update(t1))
    # t1 leaves the set, and with it the only task on net1.
    assert summary(sent.follow(writer.store, "n1", watch.poll())) == [
        ("remove", "task", "t1"),
        ("remove", "network", "net1"),
    ]


class AgentCopy:
    """The set as an agent holds it, built from the messages alone."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], bytes] = {}

    def take(self, message: AssignmentsMessage) -> None:
        if message.type == AssignmentsMessage.TYPE_COMPLETE:
            self.held = {}
        for change in message.changes:
            item = str(change.assignment.WhichOneof("item"))
            obj = getattr(change.assignment, item)
            if change.action == AssignmentChange.ACTION_REMOVE:
                del self.held[(str(item), obj.id)]
            else:
                if item == "task":  # the agent reports its status itself
                    obj.ClearField("status")
                obj.ClearField("meta")
                self.held[(str(item), obj.id)] = obj.SerializeToString(deterministic=True)


def test_followed_changes_give_the_agent_what_a_complete_set_would() -> None:
    writer = Writer()
    for network_id in ("net1", "net2", "ingress"):
        writer.apply(Transaction().create(Network(id=network_id)))
    writer.apply(Transaction().create(Node(id="n1")).create(Node(id="n2")))
    agent = AgentCopy()
    sent = AssignmentSet()
    watch = writer.store.watch(kinds=(Task, Node, *REFERENCED_KINDS))
    agent.take(sent.complete(writer.store, "n1"))

    def check() -> None:
        agent.take(sent.follow(writer.store, "n1", watch.poll()))
        fresh = AgentCopy()
        fresh.take(AssignmentSet().complete(writer.store, "n1"))
        assert agent.held == fresh.held

    writer.apply(Transaction().create(make_task("t1", "n1", "assigned", ("net1",))))
    check()
    writer.apply(Transaction().create(make_task("t2", "n1", "running", ("net1", "net2"))))
    writer.apply(Transaction().create(make_task("t3", "n2", "assigned", ("net2",))))
    check()
    relabelled = Network(id="net2")
    relabelled.spec.annotations.labels["tier"] = "back"
    writer.apply(Transaction().update(relabelled))
    check()
    node = Node(id="n1")
    node.attachments.add(network_id="ingress", addresses=["10.255.0.2/16"])
    writer.apply(Transaction().update(node))
    check()
    writer.apply(Transaction().create(make_task("t4", "n1", "assigned", ("net-later",))))
    check()  # its network is not in the store yet: it comes when it is created
    writer.apply(Transaction().create(Network(id="net-later")))
    check()
    writer.apply(Transaction().delete(Task, "t2").delete(Task, "t1"))
    writer.apply(Transaction().update(Node(id="n1")))
    check()
    writer.apply(Transaction().delete(Network, "net-later"))
    check()
    assert len(agent.held) == 1  # t4 alone: its network is gone
    secret = Secret(id="s1")
    secret.spec.annotations.name = "s1"
    writer.apply(Transaction().create(secret))
    writer.apply(
        Transaction().create(with_files(make_task("t6", "n1", "assigned"), ("s1",), ("c9",)))
    )
    check()  # its config is not in the store yet
    config = Config(id="c9")
    config.spec.annotations.name = "c9"
    writer.apply(Transaction().create(config))
    check()
    assert ("config", "c9") in agent.held and ("secret", "s1") in agent.held
    writer.apply(Transaction().delete(Task, "t6"))
    check()

    # A restored store (a snapshot) may have changed anything: the set is worked out again.
    writer.apply(Transaction().create(make_task("t5", "n1", "assigned", ("net1",))))
    watch.poll()
    agent.take(sent.follow(writer.store, "n1", [Event(Action.RESTORED, 0)]))
    fresh = AgentCopy()
    fresh.take(AssignmentSet().complete(writer.store, "n1"))
    assert agent.held == fresh.held and ("task", "t5") in agent.held


def with_files(task: Task, secrets: tuple[str, ...] = (), configs: tuple[str, ...] = ()) -> Task:
    for secret_id in secrets:
        task.spec.container.secrets.add(secret_id=secret_id, secret_name=secret_id)
    for config_id in configs:
        task.spec.container.configs.add(config_id=config_id, config_name=config_id)
    return task


def test_a_node_gets_the_secrets_and_configs_of_its_tasks_only() -> None:
    writer = Writer()
    txn = Transaction()
    for secret_id in ("s1", "s2"):
        secret = Secret(id=secret_id)
        secret.spec.annotations.name = secret_id
        secret.spec.data = b"data of " + secret_id.encode()
        txn.create(secret)
    config = Config(id="c1")
    config.spec.annotations.name = "c1"
    writer.apply(txn.create(config))
    writer.apply(
        Transaction()
        .create(with_files(make_task("t1", "n1", "assigned"), ("s1",), ("c1",)))
        .create(with_files(make_task("t2", "n2", "assigned"), ("s2",)))  # n2's secret
    )
    sent = AssignmentSet()
    watch = writer.store.watch(kinds=(Task, Node, *REFERENCED_KINDS))
    first = sent.complete(writer.store, "n1")
    # before the task that needs them, with their data (the agent writes the files)
    assert summary(first) == [
        ("update", "secret", "s1"),
        ("update", "config", "c1"),
        ("update", "task", "t1"),
    ]
    assert first.changes[0].assignment.secret.spec.data == b"data of s1"

    s1 = writer.store.get(Secret, "s1")
    assert s1 is not None
    s1.spec.annotations.labels["rotated"] = "no"
    writer.apply(Transaction().update(s1))
    s2 = writer.store.get(Secret, "s2")
    assert s2 is not None
    s2.spec.annotations.labels["x"] = "y"
    writer.apply(Transaction().update(s2))  # not n1's: nothing to say
    assert summary(sent.follow(writer.store, "n1", watch.poll())) == [("update", "secret", "s1")]

    writer.apply(Transaction().delete(Task, "t1"))
    assert summary(sent.follow(writer.store, "n1", watch.poll())) == [
        ("remove", "task", "t1"),
        ("remove", "secret", "s1"),
        ("remove", "config", "c1"),
    ]


@pytest.mark.parametrize("end", ["complete", "failed", "shutdown", "rejected", "orphaned"])
def test_a_task_that_stopped_for_good_releases_its_secrets_and_configs(end: str) -> None:
    """The stopped task stays in the node's set (until its desired state is remove) but its
    secrets and configs leave the node, as swarmkit's dispatcher releases them."""
    writer = Writer()
    secret = Secret(id="s1")
    secret.spec.annotations.name = "s1"
    config = Config(id="c1")
    config.spec.annotations.name = "c1"
    task = with_files(make_task("t1", "n1", "running"), ("s1",), ("c1",))
    writer.apply(Transaction().create(secret).create(config).create(task))
    sent = AssignmentSet()
    watch = writer.store.watch(kinds=(Task, Node, *REFERENCED_KINDS))
    assert ("update", "secret", "s1") in summary(sent.complete(writer.store, "n1"))

    stopped = writer.store.get(Task, "t1")
    assert stopped is not None
    stopped.status.state = end
    writer.apply(Transaction().update(stopped))
    assert summary(sent.follow(writer.store, "n1", watch.poll())) == [
        ("remove", "secret", "s1"),
        ("remove", "config", "c1"),
    ]
    assert summary(AssignmentSet().complete(writer.store, "n1")) == [("update", "task", "t1")]


CHURN_KINDS: tuple[type[Network] | type[Secret] | type[Config], ...] = (Network, Secret, Config)
CHURN_IDS = {kind: [f"{kind.__name__[0].lower()}{i}" for i in range(4)] for kind in CHURN_KINDS}


def random_write(rng: random.Random, writer: Writer, step: int) -> None:
    """One random write of the churn: a task of n1 or n2 appears, changes or goes; a
    network, secret or config appears, changes or goes; or n1's attachments move."""
    ids = CHURN_IDS
    txn = Transaction()
    roll = rng.random()
    if roll < 0.45:  # a task of n1 (or of n2) appears or changes
        task = make_task(
            f"t{rng.randrange(6)}",
            rng.choice(["n1", "n1", "n2"]),
            rng.choice(["pending", "assigned", "running", "complete", "failed"]),
            tuple(rng.sample(ids[Network], rng.randrange(3))),
        )
        task.desired_state = rng.choice(["running", "running", "shutdown", "remove"])
        with_files(task, tuple(rng.sample(ids[Secret], rng.randrange(3))))
        with_files(task, (), tuple(rng.sample(ids[Config], rng.randrange(2))))
        current = writer.store.get(Task, task.id)
        if current is None:
            txn.create(task)
        else:
            task.meta.version.index = current.meta.version.index
            txn.update(task)
    elif roll < 0.55:
        txn.delete(Task, f"t{rng.randrange(6)}")
    elif roll < 0.9:  # a referenced object appears, changes or goes
        kind = rng.choice(CHURN_KINDS)
        object_id = rng.choice(ids[kind])
        current_obj = writer.store.get(kind, object_id)
        if current_obj is None:
            obj = kind(id=object_id)
            obj.spec.annotations.name = object_id
            txn.create(obj)
        elif rng.random() < 0.5:
            current_obj.spec.annotations.labels["step"] = str(step)
            txn.update(current_obj)
        else:
            txn.delete(kind, object_id)
    else:  # the node's own attachments move
        node = writer.store.get(Node, "n1")
        assert node is not None
        del node.attachments[:]
        for network_id in rng.sample(ids[Network], rng.randrange(2)):
            node.attachments.add(network_id=network_id)
        txn.update(node)
    writer.store.apply(writer.store.applied_index + 1, txn.encode())  # refusals are fine


@pytest.mark.parametrize("seed", range(20))
def test_random_churn_followed_equals_a_complete_set(seed: int) -> None:
    """Tasks come, change their references and go; networks, secrets and configs are created,
    relabelled and deleted; the node's attachments move: after every write, the agent's copy
    built from the followed messages is what a fresh complete set gives."""
    rng = random.Random(seed)
    writer = Writer()
    writer.apply(Transaction().create(Node(id="n1")))
    agent = AgentCopy()
    sent = AssignmentSet()
    watch = writer.store.watch(kinds=(Task, Node, *REFERENCED_KINDS))
    agent.take(sent.complete(writer.store, "n1"))
    for step in range(60):
        random_write(rng, writer, step)
        agent.take(sent.follow(writer.store, "n1", watch.poll()))
        fresh = AgentCopy()
        fresh.take(AssignmentSet().complete(writer.store, "n1"))
        assert agent.held == fresh.held, f"seed {seed}, step {step}"


@pytest.mark.parametrize("seed", range(20))
def test_a_watch_keeping_only_what_concerns_the_node_misses_nothing(seed: int) -> None:
    """The dispatcher's session watch drops the events `concerns` says nothing about (judged
    when they are written, against the set as last followed): with the same churn, followed
    after 1 to 5 writes at a time, the agent's copy is still what a fresh complete set gives,
    and the writes of other nodes' tasks or of unused objects reach the session less often."""
    rng = random.Random(seed)
    writer = Writer()
    writer.apply(Transaction().create(Node(id="n1")))
    agent = AgentCopy()
    sent = AssignmentSet()
    kinds = (Task, Node, *REFERENCED_KINDS)
    watch = writer.store.watch(kinds=kinds, predicate=lambda event: sent.concerns("n1", event))
    everything = writer.store.watch(kinds=kinds)
    agent.take(sent.complete(writer.store, "n1"))
    kept = dropped = 0
    for step in range(0, 120, 5):
        for write in range(rng.randint(1, 5)):
            random_write(rng, writer, step + write)
        events = watch.poll()
        kept += len(events)
        dropped += len(everything.poll()) - len(events)
        agent.take(sent.follow(writer.store, "n1", events))
        fresh = AgentCopy()
        fresh.take(AssignmentSet().complete(writer.store, "n1"))
        assert agent.held == fresh.held, f"seed {seed}, step {step}"
    assert kept and dropped, (kept, dropped)


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
