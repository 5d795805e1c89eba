"""StoreAllocation: the leader's allocator, kept equal to the store by its change events, must
hold at every step exactly what a restore from the whole store would hold."""

from __future__ import annotations

from controlplane.manager.allocator import Allocator
from controlplane.manager.store_allocation import StoreAllocation
from controlplane.pb.objects_pb2 import Cluster, Network, Node, Service, Task
from controlplane.store import Store, Transaction
from tests.unit.cluster_builders import SyncCluster, overlay, replicated
from tests.unit.swarm_fixture import next_write


def restored_state(store: Store) -> dict[str, object]:
    allocator, _problems = StoreAllocation(store).current()
    return allocator.state()


def converge_live(c: SyncCluster, live: StoreAllocation) -> None:
    """The leader's loop on a synchronous store, checking the kept allocator after each write."""
    for _ in range(100):
        view = c.view()
        allocator, _problems = live.current()
        assert allocator.state() == restored_state(c.store)
        txn = next_write(c.store, view, c.now, allocator, c.memory)
        if txn is None:
            return
        c.apply(txn)
    raise AssertionError("the passes did not converge")


def test_kept_allocator_matches_a_restore_through_a_service_lifecycle() -> None:
    c = SyncCluster(nodes=3)
    live = StoreAllocation(c.store)
    c.apply(Transaction().create(overlay("net-a", "a", "10.0.1.0/24", 4097)))
    c.apply(Transaction().create(replicated("web", 3, networks=("net-a",), ports=((8080, 80),))))
    converge_live(c, live)
    web = c.service("web")
    web.spec.replicas = 5
    web.spec.ports[0].published_port = 8081
    c.update_service(web)
    converge_live(c, live)
    failed = c.live("web")[0]
    c.set_task(failed.id, "failed", exit_code=1)
    converge_live(c, live)
    c.apply(Transaction().create(replicated("db", 2, networks=("net-a",))))
    converge_live(c, live)
    c.apply(Transaction().delete(Service, "web"))
    converge_live(c, live)
    node = c.store.get(Node, "node3")
    assert node is not None
    c.apply(Transaction().delete(Node, "node3"))
    converge_live(c, live)
    for task in c.tasks():
        c.apply(Transaction().delete(Task, task.id))
    c.apply(Transaction().delete(Service, "db"))
    c.apply(Transaction().delete(Network, "net-a"))
    converge_live(c, live)
    assert live.restores == 1  # every change above was followed, none needed a restore


def test_a_forgotten_or_replaced_store_is_restored() -> None:
    c = SyncCluster(nodes=2)
    live = StoreAllocation(c.store)
    live.current()
    live.forget()
    live.current()
    assert live.restores == 2
    other = SyncCluster(nodes=1)
    other.apply(Transaction().create(overlay("net-b", "b", "10.0.9.0/24", 4200)))
    c.store.restore(other.store.snapshot(), c.index + 1)
    allocator, _problems = live.current()
    assert live.restores == 3
    assert allocator.state() == restored_state(c.store)


def test_new_default_address_pools_restore_the_allocator() -> None:
    c = SyncCluster(nodes=1)
    cluster = Cluster(id="cluster")
    cluster.spec.annotations.name = "default"
    c.apply(Transaction().create(cluster))
    live = StoreAllocation(c.store)
    live.current()
    same = c.store.get(Cluster, "cluster")
    assert same is not None
    same.spec.annotations.labels["touched"] = "yes"  # the API's write guard does this
    c.apply(Transaction().update(same))
    live.current()
    assert live.restores == 1
    moved = c.store.get(Cluster, "cluster")
    assert moved is not None
    moved.default_address_pool.append("172.20.0.0/16")
    moved.subnet_size = 26
    c.apply(Transaction().update(moved))
    allocator, _problems = live.current()
    assert live.restores == 2
    assert allocator.default_pools == ["172.20.0.0/16"]


def test_an_address_held_twice_is_reported_until_the_task_lets_go() -> None:
    c = SyncCluster(nodes=2)
    c.apply(Transaction().create(overlay("net-a", "a", "10.0.1.0/24", 4097)))
    c.apply(Transaction().create(replicated("web", 2, networks=("net-a",))))
    c.converge()
    live = StoreAllocation(c.store)
    assert live.current()[1] == []
    first, second = sorted(
        (t for t in c.tasks("web") if t.desired_state == "running"), key=lambda t: t.id
    )
    taken = next(a for a in first.networks if a.network_id == "net-a").addresses[0]
    clash = next(a for a in second.networks if a.network_id == "net-a")
    clash.addresses[0] = taken
    c.apply(Transaction().update(second))
    _allocator, problems = live.current()
    assert len(problems) == 1
    assert second.id in problems[0] and "is held by task" in problems[0]
    c.set_task(second.id, "failed", exit_code=1)  # terminal: its addresses are free again
    assert live.current()[1] == []
    assert live.restores == 1


def test_claiming_a_network_twice_keeps_it_and_a_shared_vni_is_reported() -> None:
    allocator = Allocator()
    net = overlay("net-a", "a", "10.0.1.0/24", 4097)
    assert allocator.claim_network(net) == []
    address = allocator.allocate_task_address("task-1", "net-a")
    assert allocator.claim_network(net) == []  # the same allocation: its addresses stay
    assert allocator.task_addresses("task-1") == {"net-a": address}
    twin = overlay("net-b", "b", "10.0.2.0/24", 4097)
    assert allocator.claim_network(twin) == [
        "network net-b: VNI 4097 is also used by another network"
    ]
