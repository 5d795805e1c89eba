"""LiveView: the leader's ClusterView, kept equal to the store by its change events while the
passes edit its objects in place, must equal a whole read of the store before every pass."""

from __future__ import annotations

from controlplane.manager.live_view import LiveView
from controlplane.manager.store_allocation import StoreAllocation
from controlplane.manager.view import ClusterView
from controlplane.pb.objects_pb2 import Cluster, Network, Node, Service, Task
from controlplane.store import Transaction
from tests.unit.cluster_builders import SyncCluster, overlay, replicated
from tests.unit.swarm_fixture import next_write


def contents(view: ClusterView) -> dict[str, object]:
    """Everything a pass can see, as bytes (protobuf messages compare by value this way)."""

    def table(objects: dict[str, Node] | dict[str, Network] | dict[str, Service]) -> object:
        return {k: v.SerializeToString(deterministic=True) for k, v in objects.items()}

    return {
        "nodes": table(view.nodes),
        "networks": table(view.networks),
        "services": table(view.services),
        "tasks": [t.SerializeToString(deterministic=True) for t in view.tasks],
        "cluster": view.cluster.SerializeToString() if view.cluster is not None else None,
    }


class Leader:
    """The leader's passes on a synchronous store, on a LiveView fed as LeaderLoops feeds it
    (the allocator's watch hands it every change)."""

    def __init__(self, c: SyncCluster) -> None:
        self.c = c
        self.live = LiveView(c.store)
        self.allocation = StoreAllocation(c.store, on_change=self.live.follow)

    def view(self) -> ClusterView:
        self.allocation.current()
        view = self.live.current()
        assert contents(view) == contents(ClusterView.read(self.c.store))
        return view

    def converge(self) -> None:
        c = self.c
        for _ in range(100):
            view = self.view()
            allocator, _problems = self.allocation.current()
            txn = next_write(c.store, view, c.now, allocator, c.memory)
            if txn is None:
                return
            c.apply(txn)
        raise AssertionError("the passes did not converge")


def test_kept_view_matches_a_whole_read_through_a_service_lifecycle() -> None:
    c = SyncCluster(nodes=3)
    leader = Leader(c)
    c.apply(Transaction().create(overlay("net-a", "a", "10.0.1.0/24", 4097)))
    c.apply(Transaction().create(replicated("web", 3, networks=("net-a",), ports=((8080, 80),))))
    leader.converge()
    web = c.service("web")
    web.spec.replicas = 5
    web.spec.ports[0].published_port = 8081
    c.update_service(web)
    leader.converge()
    c.set_task(c.live("web")[0].id, "failed", exit_code=1)
    leader.converge()
    c.apply(Transaction().create(replicated("db", 2, networks=("net-a",))))
    leader.converge()
    c.apply(Transaction().delete(Service, "web"))
    leader.converge()
    cluster = Cluster(id="cluster")
    cluster.spec.annotations.name = "default"
    c.apply(Transaction().create(cluster))
    c.apply(Transaction().delete(Node, "node3"))
    leader.converge()
    for task in c.tasks():
        c.apply(Transaction().delete(Task, task.id))
    c.apply(Transaction().delete(Service, "db"))
    c.apply(Transaction().delete(Network, "net-a"))
    leader.converge()
    assert leader.live.reads == 1  # every change above was followed, none needed a read


def test_a_forgotten_view_or_a_restored_store_is_read_whole_again() -> None:
    c = SyncCluster(nodes=2)
    leader = Leader(c)
    c.apply(Transaction().create(replicated("web", 2)))
    view = leader.view()
    view.services["web"].spec.replicas = 9  # a pass's edit whose proposal did not commit
    leader.live.forget()
    assert leader.view().services["web"].spec.replicas == 2
    assert leader.live.reads == 2
    other = SyncCluster(nodes=3)
    other.apply(Transaction().create(replicated("db", 1)))
    c.store.restore(other.store.snapshot(), other.index)
    assert set(leader.view().services) == {"db"}
    assert leader.live.reads == 3
