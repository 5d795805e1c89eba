"""TaskIndex: the leader's tasks by service, by state and by node load, kept by changes, must
always equal an index built afresh from the same tasks; a new leader builds it from its store.
"""

from __future__ import annotations

import random

from controlplane.manager.live_view import LiveView
from controlplane.manager.store_allocation import StoreAllocation
from controlplane.manager.task_index import INDEXED_STATES, TaskIndex
from controlplane.manager.tasks import STATES
from controlplane.pb.objects_pb2 import NetworkAttachment, PortConfig, Task
from controlplane.store import Transaction
from tests.unit.cluster_builders import SyncCluster, overlay, replicated
from tests.unit.swarm_fixture import next_write


def picture(index: TaskIndex) -> dict[str, object]:
    """Everything the passes read from an index, comparable by value."""
    load = index.load
    return {
        "all": [t.SerializeToString(deterministic=True) for t in index.all()],
        "services": {s: [t.id for t in index.of_service(s)] for s in index.service_ids()},
        "attachments": [t.id for t in index.attachments()],
        "states": {s: [t.id for t in index.in_state(s)] for s in INDEXED_STATES},
        "load": (
            dict(load.total),
            dict(load.by_service),
            dict(load.by_network),
            dict(load.host_ports),
            dict(load.reserved_cpus),
            dict(load.reserved_memory),
        ),
    }


def random_task(rng: random.Random, task_id: str) -> Task:
    task = Task(id=task_id, service_id=rng.choice(["svc-a", "svc-b", "svc-c"]))
    if rng.random() < 0.1:
        task.attachment.container_id = "c-" + task_id
        task.service_id = ""
    task.status.state = rng.choice(STATES)
    task.desired_state = rng.choice(["running", "shutdown", "remove"])
    task.node_id = rng.choice(["", "node1", "node2"])
    for network_id in rng.sample(["net-a", "net-b"], rng.randint(0, 2)):
        task.networks.append(NetworkAttachment(network_id=network_id))
    if rng.random() < 0.3:
        task.spec.resources.reservations.nano_cpus = rng.choice([0, 500_000_000])
        task.spec.resources.reservations.memory_bytes = rng.choice([0, 1 << 20])
    if rng.random() < 0.3:
        port = PortConfig(target_port=80, published_port=rng.choice([0, 8080, 8081]))
        port.publish_mode = rng.choice(["host", "ingress"])
        task.endpoint.ports.append(port)
    return task


def test_index_kept_by_changes_equals_one_built_afresh() -> None:
    rng = random.Random(4)
    index = TaskIndex()
    tasks: dict[str, Task] = {}
    for step in range(2000):
        task_id = f"t{rng.randint(0, 60):02d}"
        if task_id in tasks and rng.random() < 0.3:
            del tasks[task_id]
            index.remove(task_id)
        else:
            tasks[task_id] = random_task(rng, task_id)
            index.put(tasks[task_id])
        if step % 50 == 0:
            assert picture(index) == picture(TaskIndex(tasks.values()))
    assert picture(index) == picture(TaskIndex(tasks.values()))
    for task_id in list(tasks):
        index.remove(task_id)
    assert picture(index) == picture(TaskIndex())
    assert not index.load.total and not index.load.by_network


def test_a_placement_is_taken_back_as_it_was_counted_even_after_an_edit_in_place() -> None:
    """The passes edit view tasks in place; removing one must not recount it from the edit."""
    task = Task(id="t1", service_id="web", node_id="node1", desired_state="running")
    task.status.state = "running"
    task.networks.append(NetworkAttachment(network_id="net-a"))
    index = TaskIndex([task])
    assert index.load.total == {"node1": 1}
    task.node_id = "node2"  # an edit of a pass whose proposal then failed
    task.status.state = "shutdown"
    index.remove("t1")
    assert picture(index) == picture(TaskIndex())


def test_unknown_ids_are_ignored_on_removal() -> None:
    index = TaskIndex()
    index.remove("nothing")
    assert len(index) == 0


class Leader:
    def __init__(self, c: SyncCluster) -> None:
        self.live = LiveView(c.store)
        self.allocation = StoreAllocation(c.store, on_change=self.live.follow)

    def step(self, c: SyncCluster) -> bool:
        self.allocation.current()
        view = self.live.current()
        assert picture(view.index) == picture(TaskIndex(c.store.list(Task)))
        allocator, _problems = self.allocation.current()
        txn = next_write(c.store, view, c.now, allocator, c.memory)
        if txn is None:
            return False
        c.apply(txn)
        return True


def test_a_new_leader_builds_the_index_from_its_store_and_keeps_it() -> None:
    c = SyncCluster(nodes=3)
    first = Leader(c)
    c.apply(Transaction().create(overlay("net-a", "a", "10.0.1.0/24", 4097)))
    c.apply(Transaction().create(replicated("web", 12, networks=("net-a",))))
    for _ in range(5):  # part of the way: some tasks allocated, none scheduled yet
        first.step(c)
    second = Leader(c)  # leadership moved: the new leader starts from the store alone
    for _ in range(200):
        if not second.step(c):
            break
    view = second.live.current()
    assert len(view.index.of_service("web")) == 12
    assert sum(view.index.load.total.values()) == 12
    assert second.live.reads == 1
    web = c.service("web")
    web.spec.replicas = 2
    c.update_service(web)
    while second.step(c):
        pass
    assert sum(second.live.current().index.load.total.values()) == 2
