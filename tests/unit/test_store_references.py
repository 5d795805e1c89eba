"""`store/references.py`: a service or a container's network attachment names only networks
that exist, a network goes only once no service names it and no live attachment holds it;
refused at apply time, the same on every replica, whatever the API checked before it
proposed."""

from __future__ import annotations

from controlplane.pb.objects_pb2 import AttachmentRuntime, Network, Service, StoreSnapshot, Task
from controlplane.store import ErrorKind, Store, StoreError, Transaction


def network(nid: str, name: str) -> Network:
    net = Network(id=nid)
    net.spec.annotations.name = name
    return net


def service(sid: str, name: str, *targets: str) -> Service:
    svc = Service(id=sid)
    svc.spec.annotations.name = name
    for target in targets:
        svc.spec.networks.add(target=target)
    return svc


class Applied:
    """A store fed one transaction an index."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()

    def __call__(self, txn: Transaction) -> StoreError | None:
        return StoreError.from_result(self.store.apply(self.store.applied_index + 1, txn.encode()))


def test_a_service_naming_a_network_that_does_not_exist_is_refused() -> None:
    apply = Applied()
    assert apply(Transaction().create(network("n1", "front"))) is None
    err = apply(Transaction().create(service("s1", "web", "n1", "gone")))
    assert err is not None and (err.kind, err.message) == (
        ErrorKind.NOT_FOUND,
        "network gone not found",
    )
    assert apply.store.get(Service, "s1") is None
    # By id or by name (a spec may name it), in any case as Swarm compares names.
    assert apply(Transaction().create(service("s1", "web", "n1", "FRONT"))) is None
    # An update that adds a missing network is refused too, and changes nothing.
    current = apply.store.get(Service, "s1")
    assert current is not None
    current.spec.networks.add(target="gone")
    err = apply(Transaction().update(current))
    assert err is not None and err.kind is ErrorKind.NOT_FOUND
    assert [a.target for a in apply.store.get(Service, "s1").spec.networks] == ["n1", "FRONT"]  # type: ignore[union-attr]


def test_a_network_a_service_names_cannot_be_removed_until_the_service_goes() -> None:
    apply = Applied()
    apply(Transaction().create(network("n1", "front")).create(network("n2", "back")))
    apply(Transaction().create(service("s1", "web", "n1")).create(service("s2", "db", "back")))
    for nid, sid in (("n1", "s1"), ("n2", "s2")):  # named by id, and by name
        err = apply(Transaction().delete(Network, nid))
        assert err is not None and err.kind is ErrorKind.IN_USE
        assert err.message == (
            f"rpc error: code = FailedPrecondition desc = network {nid} is in use by service {sid}"
        )
    # The service and its network may go in one transaction, the service first.
    assert apply(Transaction().delete(Service, "s1").delete(Network, "n1")) is None
    assert apply.store.get(Network, "n1") is None and apply.store.get(Network, "n2") is not None


def test_a_service_from_before_the_rule_keeps_its_lost_network_through_updates() -> None:
    """A store restored from a snapshot in which a service names a network that is gone
    (possible before this rule): the service can still be updated and removed."""
    store = Store()
    store.restore(StoreSnapshot(services=[service("s1", "web", "lost")]).SerializeToString(), 5)
    apply = Applied(store)
    current = store.get(Service, "s1")
    assert current is not None
    current.spec.annotations.labels["touched"] = "yes"
    assert apply(Transaction().update(current)) is None
    assert apply(Transaction().delete(Service, "s1")) is None


def attachment(tid: str, network_id: str) -> Task:
    task = Task(id=tid, desired_state="running", attachment=AttachmentRuntime(container_id="c1"))
    task.status.state = "running"
    task.spec.networks.add(target=network_id)
    return task


def test_an_attachment_to_a_network_that_is_gone_is_refused() -> None:
    """`docker run --network N` racing `docker network rm N`: the attach loses."""
    apply = Applied()
    err = apply(Transaction().create(attachment("t1", "n1")))
    assert err is not None and (err.kind, err.message) == (
        ErrorKind.NOT_FOUND,
        "network n1 not found",
    )
    assert apply.store.get(Task, "t1") is None


def test_a_network_a_live_attachment_holds_cannot_be_removed() -> None:
    apply = Applied()
    apply(Transaction().create(network("n1", "front")))
    apply(Transaction().create(attachment("t1", "n1")))
    err = apply(Transaction().delete(Network, "n1"))
    assert err is not None and err.kind is ErrorKind.IN_USE
    assert err.message.endswith("network n1 is in use by task t1")
    # A finished attachment holds nothing, as the API counts it; nor does a service's task.
    done = apply.store.get(Task, "t1")
    assert done is not None
    done.status.state = "shutdown"
    assert apply(Transaction().update(done)) is None
    task = Task(id="t2", service_id="s1", desired_state="running")
    task.spec.networks.add(target="n1")
    assert apply(Transaction().create(task)) is None
    assert apply(Transaction().delete(Network, "n1")) is None
