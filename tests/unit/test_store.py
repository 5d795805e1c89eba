"""The cluster store: transactions, indexes, snapshots and watches."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.pb.objects_pb2 import (
    Cluster,
    Network,
    Node,
    Service,
    StoreAction,
    StoreActionKind,
    StoreSnapshot,
    StoreTransaction,
    StoreTransactionResult,
    Task,
)
from controlplane.store import (
    Action,
    ErrorKind,
    Event,
    Store,
    StoreError,
    Transaction,
    WatchError,
    WatchOverflow,
)


def service(sid: str, name: str, labels: dict[str, str] | None = None) -> Service:
    svc = Service(id=sid)
    svc.meta.created_at_ns = 1_000
    svc.meta.updated_at_ns = 2_000
    svc.spec.annotations.name = name
    svc.spec.annotations.labels.update(labels or {})
    svc.spec.replicas = 1
    return svc


def network(nid: str, name: str) -> Network:
    net = Network(id=nid)
    net.spec.annotations.name = name
    net.spec.driver = "overlay"
    return net


def node(nid: str, hostname: str) -> Node:
    n = Node(id=nid, role="worker")
    n.description.hostname = hostname
    return n


def apply(store: Store, index: int, txn: Transaction) -> StoreError | None:
    return StoreError.from_result(store.apply(index, txn.encode()))


def refused(store: Store, index: int, txn: Transaction) -> StoreError:
    err = apply(store, index, txn)
    assert err is not None, "the transaction should have been refused"
    return err


def apply_raw(store: Store, index: int, data: bytes) -> StoreError:
    err = StoreError.from_result(store.apply(index, data))
    assert err is not None
    return err


# ---- CRUD and versions --------------------------------------------------------------------


def test_create_sets_version_and_keeps_proposer_timestamps() -> None:
    store = Store()
    assert apply(store, 3, Transaction().create(service("s1", "web"))) is None
    got = store.get(Service, "s1")
    assert got is not None
    assert got.meta.version.index == 3
    assert (got.meta.created_at_ns, got.meta.updated_at_ns) == (1_000, 2_000)
    assert store.applied_index == 3


def test_reads_return_copies() -> None:
    store = Store()
    apply(store, 1, Transaction().create(service("s1", "web")))
    got = store.get(Service, "s1")
    assert got is not None
    got.spec.annotations.name = "mutated"
    store.list(Service)[0].spec.replicas = 9
    again = store.get(Service, "s1")
    assert again is not None
    assert again.spec.annotations.name == "web"
    assert again.spec.replicas == 1
    assert store.get_by_name(Service, "mutated") is None


def test_update_bumps_version_and_stale_update_is_refused() -> None:
    store = Store()
    apply(store, 1, Transaction().create(service("s1", "web")))
    current = store.get(Service, "s1")
    assert current is not None
    current.spec.replicas = 3
    assert apply(store, 5, Transaction().update(current)) is None
    updated = store.get(Service, "s1")
    assert updated is not None
    assert (updated.meta.version.index, updated.spec.replicas) == (5, 3)

    current.spec.replicas = 7  # still carries version 1
    err = refused(store, 6, Transaction().update(current))
    assert (err.kind, err.message) == (ErrorKind.CONFLICT, "update out of sequence")
    after = store.get(Service, "s1")
    assert after is not None
    assert (after.meta.version.index, after.spec.replicas) == (5, 3)


def test_a_batch_applies_each_transaction_on_its_own_at_one_index() -> None:
    store = Store()
    apply(store, 1, Transaction().create(service("s1", "web")))
    stale = store.get(Service, "s1")
    assert stale is not None
    first, second = Service(), Service()
    first.CopyFrom(stale)
    second.CopyFrom(stale)
    first.spec.replicas, second.spec.replicas = 2, 9
    results = store.apply_batch(
        4,
        [
            Transaction().create(network("n1", "front")).encode(),
            Transaction().update(first).encode(),
            Transaction().update(second).encode(),  # read before `first` applied: stale now
            Transaction().create(network("n2", "front")).encode(),  # the name is taken
            b"\xff not a transaction",
            Transaction().create(network("n3", "back")).encode(),
        ],
    )
    errors = [StoreError.from_result(result) for result in results]
    assert [e.kind if e else None for e in errors] == [
        None,
        None,
        ErrorKind.CONFLICT,
        ErrorKind.EXISTS,
        ErrorKind.INVALID,
        None,
    ]
    updated = store.get(Service, "s1")
    assert updated is not None and (updated.meta.version.index, updated.spec.replicas) == (4, 2)
    assert sorted(n.id for n in store.list(Network)) == ["n1", "n3"]
    assert all(n.meta.version.index == 4 for n in store.list(Network))
    assert store.applied_index == 4
    again = store.apply_batch(4, [Transaction().create(network("n4", "late")).encode()] * 2)
    kinds = [error.kind for error in map(StoreError.from_result, again) if error is not None]
    assert kinds == [ErrorKind.INVALID] * 2
    assert store.get(Network, "n4") is None


def test_update_and_delete_of_missing_object_are_not_found() -> None:
    store = Store()
    err = refused(store, 1, Transaction().update(service("nope", "web")))
    assert (err.kind, err.message) == (ErrorKind.NOT_FOUND, "service nope not found")
    err = refused(store, 2, Transaction().delete(Network, "gone"))
    assert (err.kind, err.message) == (ErrorKind.NOT_FOUND, "network gone not found")


def test_delete_removes_object_and_frees_its_name() -> None:
    store = Store()
    apply(store, 1, Transaction().create(network("n1", "labnet")))
    assert apply(store, 2, Transaction().delete(Network, "n1")) is None
    assert store.get(Network, "n1") is None
    assert store.get_by_name(Network, "labnet") is None
    assert apply(store, 3, Transaction().create(network("n2", "labnet"))) is None


def test_create_of_existing_id_is_refused() -> None:
    store = Store()
    apply(store, 1, Transaction().create(service("s1", "web")))
    err = refused(store, 2, Transaction().create(service("s1", "other")))
    assert (err.kind, err.message) == (ErrorKind.EXISTS, "service s1 already exists")


def test_every_kind_round_trips() -> None:
    store = Store()
    cluster = Cluster(id="c1")
    cluster.spec.annotations.name = "default"
    task = Task(id="t1", service_id="s1", slot=1, desired_state="running")
    task.spec.annotations.name = "web"
    txn = Transaction().create(node("n1", "host-1")).create(network("net1", "ingress"))
    txn.create(service("s1", "web")).create(task).create(cluster)
    assert apply(store, 1, txn) is None
    snap = StoreSnapshot.FromString(store.snapshot())
    assert [len(snap.nodes), len(snap.networks), len(snap.services)] == [1, 1, 1]
    assert [len(snap.tasks), len(snap.clusters)] == [1, 1]
    got = store.get(Task, "t1")
    assert got is not None
    assert got.desired_state == "running"
    assert store.list(Task, name_prefix="web.1.")[0].id == "t1"


# ---- atomicity ----------------------------------------------------------------------------


def test_failed_second_action_leaves_first_unapplied() -> None:
    store = Store()
    watch = store.watch()
    txn = Transaction().create(service("s1", "web")).update(service("missing", "api"))
    err = refused(store, 1, txn)
    assert err.kind is ErrorKind.NOT_FOUND
    assert store.get(Service, "s1") is None
    assert store.get_by_name(Service, "web") is None
    assert watch.poll() == []
    assert store.applied_index == 1  # the entry was consumed, even though refused


def test_rollback_restores_updated_and_deleted_objects_exactly() -> None:
    store = Store()
    apply(store, 1, Transaction().create(service("s1", "web")).create(service("s2", "api")))
    before = store.snapshot()
    s1 = store.get(Service, "s1")
    assert s1 is not None
    s1.spec.annotations.name = "renamed"
    txn = Transaction().update(s1).delete(Service, "s2").create(service("s3", "RENAMED"))
    assert refused(store, 2, txn).kind is ErrorKind.EXISTS
    assert store.snapshot() == before
    assert store.get_by_name(Service, "web") is not None
    assert store.get_by_name(Service, "renamed") is None
    assert store.get_by_name(Service, "api") is not None


def test_actions_see_earlier_actions_of_the_same_transaction() -> None:
    store = Store()
    apply(store, 1, Transaction().create(service("s1", "web")))
    s1 = store.get(Service, "s1")
    assert s1 is not None
    s1.spec.annotations.name = "web-old"
    # Free the name, then take it, in one entry.
    assert apply(store, 2, Transaction().update(s1).create(service("s2", "web"))) is None
    web = store.get_by_name(Service, "web")
    assert web is not None
    assert web.id == "s2"


def test_same_object_twice_in_one_transaction_is_invalid() -> None:
    store = Store()
    err = refused(store, 1, Transaction().create(service("s1", "web")).delete(Service, "s1"))
    assert err.kind is ErrorKind.INVALID
    assert "service s1 more than once" in err.message
    assert store.get(Service, "s1") is None


# ---- names --------------------------------------------------------------------------------


def test_duplicate_network_name_uses_docker_wording() -> None:
    store = Store()
    apply(store, 1, Transaction().create(network("n1", "labnet")))
    err = refused(store, 2, Transaction().create(network("n2", "labnet")))
    assert (err.kind, err.message) == (ErrorKind.EXISTS, "network with name labnet already exists")


def test_duplicate_service_name_uses_swarm_wording() -> None:
    store = Store()
    apply(store, 1, Transaction().create(service("s1", "web")))
    err = refused(store, 2, Transaction().create(service("s2", "web")))
    assert err.kind is ErrorKind.EXISTS
    assert err.message == "name conflicts with an existing object: service web already exists"


def test_names_are_unique_regardless_of_case() -> None:
    store = Store()
    apply(store, 1, Transaction().create(service("s1", "Web")))
    assert refused(store, 2, Transaction().create(service("s2", "web"))).kind is ErrorKind.EXISTS
    found = store.get_by_name(Service, "WEB")
    assert found is not None
    assert found.id == "s1"


def test_two_creates_in_one_transaction_with_the_same_name() -> None:
    store = Store()
    txn = Transaction().create(service("s1", "web")).create(service("s2", "web"))
    assert refused(store, 1, txn).kind is ErrorKind.EXISTS
    assert store.list(Service) == []


def test_racing_creates_through_two_managers_yield_one_service() -> None:
    # Two managers validate against their own (equal, stale) view and both propose; Raft
    # commits both entries in one order, and every replica refuses the second one the same way.
    via_manager_1 = Transaction().create(service("id-from-m1", "web")).encode()
    via_manager_2 = Transaction().create(service("id-from-m2", "web")).encode()
    replicas = [Store(), Store(), Store()]
    for replica in replicas:
        assert StoreError.from_result(replica.apply(7, via_manager_2)) is None
        err = StoreError.from_result(replica.apply(8, via_manager_1))
        assert err is not None
        assert err.kind is ErrorKind.EXISTS
        assert [s.id for s in replica.list(Service)] == ["id-from-m2"]
    assert len({replica.snapshot() for replica in replicas}) == 1


def test_rename_must_keep_names_unique() -> None:
    store = Store()
    apply(store, 1, Transaction().create(service("s1", "web")).create(service("s2", "api")))
    s2 = store.get(Service, "s2")
    assert s2 is not None
    s2.spec.annotations.name = "web"
    err = refused(store, 2, Transaction().update(s2))
    assert err.message == "name conflicts with an existing object: service web already exists"

    s2.spec.annotations.name = "api-v2"
    assert apply(store, 3, Transaction().update(s2)) is None
    assert store.get_by_name(Service, "api") is None
    renamed = store.get_by_name(Service, "api-v2")
    assert renamed is not None
    assert renamed.id == "s2"
    assert apply(store, 4, Transaction().create(service("s3", "api"))) is None


def test_update_keeping_its_own_name_is_not_a_conflict() -> None:
    store = Store()
    apply(store, 1, Transaction().create(service("s1", "web")))
    s1 = store.get(Service, "s1")
    assert s1 is not None
    s1.spec.annotations.name = "WEB"  # same name, other case: still its own
    assert apply(store, 2, Transaction().update(s1)) is None


def test_nodes_may_share_a_hostname_and_have_no_name_lookup() -> None:
    store = Store()
    txn = Transaction().create(node("n1", "host")).create(node("n2", "host"))
    assert apply(store, 1, txn) is None
    assert [n.id for n in store.list(Node, name="HOST")] == ["n1", "n2"]
    with pytest.raises(ValueError, match="not unique by name"):
        store.get_by_name(Node, "host")


def test_list_filters_by_name_prefix_and_labels() -> None:
    store = Store()
    txn = Transaction()
    txn.create(service("b", "web-front", {"tier": "front"}))
    txn.create(service("a", "web-back", {"tier": "back", "team": "x"}))
    txn.create(service("c", "db"))
    apply(store, 1, txn)
    assert [s.id for s in store.list(Service)] == ["a", "b", "c"]
    assert [s.id for s in store.list(Service, name_prefix="WEB-")] == ["a", "b"]
    assert [s.id for s in store.list(Service, labels={"tier": None})] == ["a", "b"]
    assert [s.id for s in store.list(Service, labels={"tier": "back", "team": None})] == ["a"]
    assert store.list(Service, name="web", labels={"tier": "front"}) == []


def test_unknown_kind_is_a_caller_error() -> None:
    with pytest.raises(TypeError, match="not a store object kind"):
        Store().get(StoreAction, "x")  # type: ignore[type-var]


# ---- malformed entries --------------------------------------------------------------------


def test_garbage_bytes_are_refused_as_invalid() -> None:
    store = Store()
    err = apply_raw(store, 1, b"\xff\xff\xff\xff")
    assert err.kind is ErrorKind.INVALID
    assert "not a valid StoreTransaction" in err.message
    assert store.applied_index == 1


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (StoreAction(kind=StoreActionKind.STORE_ACTION_CREATE), "no target object"),
        (StoreAction(service=Service(id="")), "service has an empty id"),
        (StoreAction(network=Network(id="n1")), "network n1 has no name"),
        (StoreAction(kind=7, node=Node(id="n1")), "unknown store action kind 7"),  # type: ignore[arg-type]
    ],
)
def test_malformed_actions_are_refused_as_invalid(action: StoreAction, message: str) -> None:
    store = Store()
    data = StoreTransaction(actions=[action]).SerializeToString()
    err = apply_raw(store, 1, data)
    assert err.kind is ErrorKind.INVALID
    assert message in err.message
    assert store.snapshot() == b""


def test_entry_at_or_below_applied_index_is_ignored() -> None:
    store = Store()
    apply(store, 5, Transaction().create(service("s1", "web")))
    err = refused(store, 5, Transaction().create(service("s2", "api")))
    assert err.kind is ErrorKind.INVALID
    assert store.get(Service, "s2") is None
    assert store.applied_index == 5


def test_empty_transaction_is_a_no_op() -> None:
    store = Store()
    assert apply(store, 1, Transaction()) is None
    assert store.applied_index == 1


def test_result_bytes_decode_for_proposers() -> None:
    ok = StoreTransactionResult.FromString(Store().apply(1, Transaction().encode()))
    assert ok.ok
    assert (
        StoreError.from_result(
            StoreTransactionResult(ok=False, error="x", error_kind="weird").SerializeToString()
        )
        is not None
    )


# ---- transaction builder ------------------------------------------------------------------


def test_transaction_copies_objects_and_has_random_proposal_ids() -> None:
    svc = service("s1", "web")
    txn = Transaction().create(svc).delete(Task, "t1")
    svc.spec.annotations.name = "changed-after"
    decoded = StoreTransaction.FromString(txn.encode())
    assert len(txn) == 2
    assert decoded.actions[0].service.spec.annotations.name == "web"
    assert decoded.actions[1].kind == StoreActionKind.STORE_ACTION_DELETE
    assert decoded.actions[1].task.id == "t1"
    assert len(txn.proposal_id) == 16
    assert decoded.proposal_id == txn.proposal_id
    assert Transaction().proposal_id != Transaction().proposal_id


def test_transaction_encoding_is_deterministic() -> None:
    txn = Transaction().create(service("s1", "web", {f"k{i}": str(i) for i in range(20)}))
    assert len({txn.encode() for _ in range(5)}) == 1


def test_transaction_refuses_non_store_objects() -> None:
    with pytest.raises(TypeError):
        Transaction().create(StoreAction())  # type: ignore[arg-type]


# ---- snapshots ----------------------------------------------------------------------------


def _history() -> list[bytes]:
    """A fixed sequence of entries, including a refused one."""
    s1 = service("s1", "web", {"env": "prod"})
    entries = [
        Transaction().create(network("n1", "ingress")).create(s1),
        Transaction().create(node("node-b", "host-b")).create(node("node-a", "host-a")),
        Transaction().create(service("s2", "web")),  # refused: name taken
        Transaction().create(service("s0", "api")),
    ]
    s1.meta.version.index = 1
    s1.spec.replicas = 4
    entries.append(Transaction().update(s1).delete(Network, "n1"))
    return [txn.encode() for txn in entries]


def _fed(entries: list[bytes]) -> Store:
    store = Store()
    for index, data in enumerate(entries, start=1):
        store.apply(index, data)
    return store


def test_replicas_fed_the_same_entries_have_identical_snapshots() -> None:
    entries = _history()
    assert _fed(entries).snapshot() == _fed(entries).snapshot()


def test_snapshot_is_ordered_by_id() -> None:
    snap = StoreSnapshot.FromString(_fed(_history()).snapshot())
    assert [s.id for s in snap.services] == ["s0", "s1"]
    assert [n.id for n in snap.nodes] == ["node-a", "node-b"]
    assert list(snap.networks) == []


def test_restore_round_trip() -> None:
    source = _fed(_history())
    data = source.snapshot()
    replica = Store()
    replica.restore(data, index=source.applied_index)
    assert replica.snapshot() == data
    assert replica.applied_index == 5
    assert replica.get(Service, "s1") == source.get(Service, "s1")
    web = replica.get_by_name(Service, "web")
    assert web is not None
    assert web.spec.replicas == 4
    # The restored replica keeps applying where the source would.
    nxt = Transaction().create(service("s9", "api"))
    assert refused(replica, 6, nxt).message == refused(source, 6, nxt).message


def test_restore_replaces_everything_and_tells_every_watch() -> None:
    store = _fed(_history())
    filtered = store.watch(kinds=[Task], predicate=lambda event: False)
    everything = store.watch()
    fresh = Store()
    fresh.apply(1, Transaction().create(service("other", "other")).encode())
    store.restore(fresh.snapshot(), index=40)
    assert [s.id for s in store.list(Service)] == ["other"]
    assert store.list(Node) == []
    assert store.get_by_name(Service, "web") is None
    for watch in (filtered, everything):
        assert watch.poll() == [Event(Action.RESTORED, 40)]


def test_corrupt_snapshot_is_refused_and_store_unchanged() -> None:
    store = _fed(_history())
    before = store.snapshot()
    dup = StoreSnapshot(services=[service("a", "web"), service("b", "WEB")]).SerializeToString()
    for data in (b"\xff\xff\xff", dup):
        with pytest.raises(StoreError):
            store.restore(data, index=99)
    assert store.snapshot() == before
    assert store.applied_index == 5


# ---- watches ------------------------------------------------------------------------------


def test_watch_sees_created_updated_deleted_in_order() -> None:
    store = Store()
    watch = store.watch()
    apply(store, 1, Transaction().create(service("s1", "web")).create(network("n1", "net")))
    s1 = store.get(Service, "s1")
    assert s1 is not None
    apply(store, 2, Transaction().update(s1))
    apply(store, 3, Transaction().delete(Service, "s1"))
    events = watch.poll()
    assert [(e.action, e.kind, e.index) for e in events] == [
        (Action.CREATED, Service, 1),
        (Action.CREATED, Network, 1),
        (Action.UPDATED, Service, 2),
        (Action.DELETED, Service, 3),
    ]
    deleted = events[-1].object
    assert isinstance(deleted, Service)
    assert deleted.meta.version.index == 2  # as it was when deleted
    assert watch.poll() == []


def test_watch_filters_by_kind_and_predicate() -> None:
    store = Store()
    tasks_only = store.watch(kinds=[Task])
    web_only = store.watch(
        kinds=[Service],
        predicate=lambda e: (
            isinstance(e.object, Service) and e.object.spec.annotations.name == "web"
        ),
    )
    txn = Transaction().create(service("s1", "web")).create(service("s2", "api"))
    apply(store, 1, txn.create(Task(id="t1", service_id="s1")))
    assert [e.object.id for e in tasks_only.poll() if e.object] == ["t1"]
    assert [e.object.id for e in web_only.poll() if e.object] == ["s1"]


def test_event_objects_are_private_copies() -> None:
    store = Store()
    first, second = store.watch(), store.watch()
    apply(store, 1, Transaction().create(service("s1", "web")))
    mine = first.poll()[0].object
    assert isinstance(mine, Service)
    mine.spec.annotations.name = "mutated"
    theirs = second.poll()[0].object
    assert isinstance(theirs, Service)
    assert theirs.spec.annotations.name == "web"
    stored = store.get(Service, "s1")
    assert stored is not None
    assert stored.spec.annotations.name == "web"


def test_a_predicate_reads_the_shared_event_and_kept_events_are_copied() -> None:
    store = Store()
    seen: list[object] = []

    def keep_web(event: Event) -> bool:
        seen.append(event.object)
        return isinstance(event.object, Service) and event.object.spec.annotations.name == "web"

    web_only = store.watch(predicate=keep_web)
    everything = store.watch()
    apply(store, 1, Transaction().create(service("s1", "web")).create(service("s2", "api")))
    kept = web_only.poll()
    assert [e.object.id for e in kept if e.object] == ["s1"]
    assert kept[0].object is not seen[0]  # the kept event is the watch's own copy
    others = [e.object for e in everything.poll()]
    assert all(obj is not shared for obj in others for shared in seen)


def test_slow_watch_overflows_without_blocking_apply() -> None:
    store = Store()
    slow = store.watch(maxsize=2)
    healthy = store.watch(maxsize=100)
    for i in range(1, 5):
        assert apply(store, i, Transaction().create(service(f"s{i}", f"svc{i}"))) is None
    with pytest.raises(WatchOverflow, match="more than 2 events behind"):
        slow.poll()
    with pytest.raises(WatchOverflow):  # stays failed: its reader must resync
        slow.poll()
    assert slow.closed
    assert len(healthy.poll()) == 4
    assert len(store.list(Service)) == 4


def test_faulty_predicate_closes_only_its_watch() -> None:
    store = Store()
    bad = store.watch(predicate=lambda e: 1 / 0 > 0)
    good = store.watch()
    assert apply(store, 1, Transaction().create(service("s1", "web"))) is None
    with pytest.raises(WatchError, match="predicate raised"):
        bad.poll()
    assert len(good.poll()) == 1


def test_closed_watch_gets_nothing() -> None:
    store = Store()
    with store.watch() as watch:
        apply(store, 1, Transaction().create(service("s1", "web")))
    assert watch.closed
    apply(store, 2, Transaction().create(service("s2", "api")))
    assert watch.poll() == []


def test_watch_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Store().watch(maxsize=0)
    with pytest.raises(TypeError):
        Store().watch(kinds=[StoreAction])  # type: ignore[list-item]


def test_async_iteration_wakes_on_apply_and_ends_on_close() -> None:
    async def scenario() -> list[tuple[Action, int]]:
        store = Store()
        watch = store.watch(kinds=[Service])
        seen: list[tuple[Action, int]] = []

        async def consume() -> None:
            async for event in watch:
                seen.append((event.action, event.index))
                if len(seen) == 2:
                    watch.close()

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)  # the consumer is now waiting
        apply(store, 1, Transaction().create(service("s1", "web")))
        await asyncio.sleep(0)
        apply(store, 2, Transaction().delete(Service, "s1"))
        await asyncio.wait_for(consumer, timeout=5)
        return seen

    assert asyncio.run(scenario()) == [(Action.CREATED, 1), (Action.DELETED, 2)]


def test_async_reader_gets_overflow() -> None:
    async def scenario() -> None:
        store = Store()
        watch = store.watch(maxsize=1)
        apply(store, 1, Transaction().create(service("s1", "web")))
        apply(store, 2, Transaction().create(service("s2", "api")))
        with pytest.raises(WatchOverflow):
            async for _ in watch:
                pass

    asyncio.run(scenario())


def test_snapshot_bytes_equal_protobufs_own_deterministic_encoding() -> None:
    """The store concatenates its serialized rows; that must be exactly StoreSnapshot's bytes."""
    from controlplane.pb.objects_pb2 import Network as NetworkPb
    from controlplane.pb.objects_pb2 import Node as NodePb
    from controlplane.pb.objects_pb2 import StoreSnapshot as SnapshotPb

    store = Store()
    txn = Transaction()
    for i in range(30):
        net = NetworkPb(id=f"net{i:03d}")
        net.spec.annotations.name = f"n{i}"
        net.spec.annotations.labels["k"] = "v" * i
        txn.create(net)
        txn.create(NodePb(id=f"node{i:03d}"))
    store.apply(1, txn.encode())
    expected = SnapshotPb(networks=store.list(NetworkPb), nodes=store.list(NodePb))
    assert store.snapshot() == expected.SerializeToString(deterministic=True)
    restored = Store()
    restored.restore(store.snapshot(), 1)
    assert restored.snapshot() == store.snapshot()
