"""The scheduler's filters, spread and explanations; constraint parsing and matching."""

from __future__ import annotations

from collections import Counter

import pytest

from controlplane.manager import constraints
from controlplane.manager.scheduler import OVERLAY_TASKS_PER_HOST, schedule
from controlplane.manager.tasks import Slot, new_task
from controlplane.manager.view import ClusterView
from controlplane.pb.objects_pb2 import Network, NetworkAttachment, Node, Service, Task
from controlplane.store import Transaction
from tests.unit.cluster_builders import SyncCluster, overlay, replicated
from tests.unit.swarm_fixture import ready_node


def pending(service: Service, slot: int, *, networks: tuple[str, ...] = ()) -> Task:
    task = new_task(service, Slot(number=slot), 1)
    task.status.state = "pending"
    for nid in networks:
        task.networks.append(NetworkAttachment(network_id=nid, addresses=["10.9.0.2/16"]))
    return task


def run(nodes: list[Node], tasks: list[Task], networks: list[Network] | None = None) -> list[Task]:
    """Schedule once over a store holding these objects; the tasks afterwards."""
    c = SyncCluster(nodes=0, ingress=False)
    setup = Transaction()
    for obj in [*nodes, *(networks or []), *tasks]:
        setup.create(obj)
    c.apply(setup)
    txn = schedule(c.view(), 10)
    if txn is not None:
        c.apply(txn)
    return c.tasks()


def placement(tasks: list[Task]) -> dict[int, str]:
    return {t.slot: t.node_id for t in tasks if t.status.state == "assigned"}


def test_spread_over_nodes_by_service_then_total_load() -> None:
    web = replicated("web", 4)
    busy = new_task(replicated("other", 1), Slot(number=9), 1)
    busy.node_id, busy.status.state = "n1", "running"
    nodes = [ready_node(f"n{i}", f"h{i}") for i in (1, 2, 3)]
    after = run(nodes, [busy, *(pending(web, s) for s in (1, 2, 3, 4))])
    spread = sorted(t.node_id for t in after if t.service_id == "web")
    assert spread.count("n1") == 1  # the busy node gets the fewest
    assert spread.count("n2") + spread.count("n3") == 3
    assert max(spread.count(n) for n in ("n2", "n3")) == 2


def test_unready_paused_and_drained_nodes_get_nothing() -> None:
    down = ready_node("n1", "h1")
    down.status.state = "down"
    paused = ready_node("n2", "h2")
    paused.spec.availability = "pause"
    drained = ready_node("n3", "h3")
    drained.spec.availability = "drain"
    nodes = [down, paused, drained]
    [t] = run(nodes, [pending(replicated("web", 1), 1)])
    assert t.status.state == "pending"
    assert t.status.err == "no suitable node (3 nodes not available for new tasks)"
    # the same explanation is not rewritten: an unschedulable task costs nothing
    assert schedule(ClusterView.of(nodes=nodes, tasks=[t]), 20) is None


def test_constraints_and_explanations_ranked_by_failures() -> None:
    nodes = [ready_node("n1", "h1"), ready_node("n2", "h2"), ready_node("n3", "h3")]
    nodes[2].status.state = "down"
    task = pending(replicated("web", 1), 1)
    task.spec.placement.constraints.append("node.role==manager")
    [t] = run(nodes, [task])
    assert t.status.err == (
        "no suitable node (scheduling constraints not satisfied on 2 nodes; "
        "1 node not available for new tasks)"
    )
    manager = ready_node("m1", "mgr", role="manager")
    assert placement(run([*nodes, manager], [task])) == {1: "m1"}


def test_reservations_take_what_a_node_has_left() -> None:
    """`--reserve-memory`/`--reserve-cpu`: a node takes a task while its CPUs and memory less
    what the tasks it may still run reserved hold the task's reservations; real 20.10 leaves
    the task pending with "no suitable node (insufficient resources on 1 node)"."""
    gib = 1 << 30
    nodes = [ready_node("n1", "h1"), ready_node("n2", "h2")]
    for node in nodes:
        node.description.nano_cpus, node.description.memory_bytes = 2_000_000_000, 4 * gib
    big = replicated("big", 3)
    tasks = [pending(big, s) for s in (1, 2, 3)]
    for t in tasks:
        t.spec.resources.reservations.memory_bytes = 3 * gib
    after = run(nodes, tasks)
    assert sorted((t.status.state, t.status.err) for t in after) == [
        ("assigned", ""),
        ("assigned", ""),
        ("pending", "no suitable node (insufficient resources on 2 nodes)"),
    ]
    cpus = pending(replicated("cpus", 1), 1)
    cpus.spec.resources.reservations.nano_cpus = 3_000_000_000
    [t] = run(nodes[:1], [cpus])
    assert t.status.err == "no suitable node (insufficient resources on 1 node)"
    # A finished task holds nothing any more.
    done = new_task(big, Slot(number=9), 1)
    done.node_id, done.status.state = "n1", "failed"
    done.spec.resources.reservations.memory_bytes = 3 * gib
    fresh = pending(big, 1)
    fresh.spec.resources.reservations.memory_bytes = 3 * gib
    assert placement(run(nodes[:1], [done, fresh])) == {1: "n1"}


def test_spread_preference_balances_over_label_values_first() -> None:
    """`--placement-pref spread=node.labels.zone` with zone a on three nodes and zone b on
    one: real swarmkit puts half the replicas in each zone, so b's node takes two of four;
    nodes without the label form a group of their own."""
    nodes = [ready_node(f"n{i}", f"h{i}") for i in (1, 2, 3, 4, 5)]
    for node, zone in zip(nodes, ("a", "a", "a", "b", ""), strict=True):
        if zone:
            node.spec.annotations.labels["zone"] = zone
    web = replicated("web", 6)
    tasks = [pending(web, s) for s in range(1, 7)]
    for t in tasks:
        t.spec.placement.spread_descriptors.append("node.labels.zone")
    after = placement(run(nodes, tasks))
    per_node = Counter(after.values())
    assert per_node["n4"] == 2 and per_node["n5"] == 2  # zone b, and the unlabelled group
    assert per_node["n1"] + per_node["n2"] + per_node["n3"] == 2


def test_max_replicas_per_node() -> None:
    web = replicated("web", 3)
    tasks = [pending(web, s) for s in (1, 2, 3)]
    for t in tasks:
        t.spec.placement.max_replicas = 1
    after = run([ready_node("n1", "h1"), ready_node("n2", "h2")], tasks)
    assert sorted((t.status.state, t.status.err) for t in after) == [
        ("assigned", ""),
        ("assigned", ""),
        ("pending", "no suitable node (max replicas per node limit exceed)"),
    ]


def test_overlay_limit_of_1000_tasks_per_host() -> None:
    net = overlay("big", "big-net", "10.9.0.0/16", 4100)
    web = replicated("web", OVERLAY_TASKS_PER_HOST + 1)
    node = ready_node("n1", "h1")
    tasks = [pending(web, s, networks=("big",)) for s in range(1, OVERLAY_TASKS_PER_HOST + 2)]
    after = run([node], tasks, [net])
    assert sum(t.status.state == "assigned" for t in after) == OVERLAY_TASKS_PER_HOST
    [last] = [t for t in after if t.status.state == "pending"]
    assert last.status.err == (
        "no suitable node (1 node already running 1000 tasks on overlay network big-net, "
        "the most one host can attach)"
    )
    c = SyncCluster(nodes=0, ingress=False)
    setup = Transaction().create(node).create(ready_node("n2", "h2")).create(net)
    for t in after:
        setup.create(t)
    c.apply(setup)
    c.apply(schedule(c.view(), 20))  # type: ignore[arg-type]
    assert c.store.get(Task, last.id).node_id == "n2"  # type: ignore[union-attr]


def test_no_nodes_at_all() -> None:
    [t] = run([], [pending(replicated("web", 1), 1)])
    assert t.status.err == "no suitable node"


def test_global_task_only_goes_to_its_node() -> None:
    task = new_task(replicated("web", 1), Slot(node_id="n2"), 1)
    task.status.state = "pending"
    [t] = run([ready_node("n1", "h1"), ready_node("n2", "h2")], [task])
    assert (t.node_id, t.status.state) == ("n2", "assigned")


# ---- constraints ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("node.role", "constraint expected one operator from ==, !="),
        ("node.role=manager", "constraint expected one operator from ==, !="),
        ("==manager", "key '' is invalid"),
        ("no de==x", "key 'no de' is invalid"),
        ("node.role==", "value '' is invalid"),
        ("node.role==a<b", "value 'a<b' is invalid"),
    ],
)
def test_malformed_constraints(expr: str, message: str) -> None:
    with pytest.raises(constraints.ConstraintError) as err:
        constraints.parse([expr])
    assert str(err.value) == message


def test_constraint_keys() -> None:
    node = ready_node("abc", "web-1", role="manager")
    node.spec.annotations.labels["zone"] = "East"
    node.description.engine_labels["disk"] = "ssd"
    node.status.addr = "192.168.1.7"
    matching = [
        "node.id==abc",
        "node.hostname==WEB-1",
        "node.hostname!=web-2",
        "node.role==manager",
        "node.labels.zone==east",
        "node.labels.missing!=x",
        "engine.labels.disk==ssd",
        "node.ip==192.168.1.7",
        "node.ip==192.168.0.0/16",
        "node.platform.os==linux",
        "node.platform.arch==x86_64",
    ]
    for expr in matching:
        assert constraints.node_matches(constraints.parse([expr]), node), expr
    for expr in ["node.role==worker", "node.labels.Zone==east", "node.unknown==x", "node.ip==bad"]:
        assert not constraints.node_matches(constraints.parse([expr]), node), expr
