"""NetworkDB core behaviour on a lock-step network (the simulation tests add loss and delay)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from controlplane.gossip.networkdb import (
    EntryExistsError,
    EntryNotFoundError,
    NetworkDB,
    NetworkDBConfig,
    NetworkDBError,
    NodeStatus,
    NotJoinedError,
)
from controlplane.gossip.networkdb_queue import TableQueue
from controlplane.gossip.networkdb_types import (
    BulkSyncRequest,
    ClusterBroadcast,
    NetworkEvent,
    NetworkEventType,
    NetworkState,
    SendTo,
    TableEvent,
    TableEventType,
    TableGossip,
    TableSync,
    WatchEvent,
    WatchEventType,
)

CFG = NetworkDBConfig.lab()
NET = "net1"
TBL = "endpoints"


class Lab:
    """NetworkDB nodes that all see each other alive, wired together with instant delivery.

    `cut` holds links (both ways) on which datagrams are lost; `no_gossip` loses every table
    gossip datagram; `no_sync` fails every bulk sync. Cluster broadcasts reach every node.
    """

    def __init__(self, names: list[str], seed: int = 1, config: NetworkDBConfig = CFG) -> None:
        self.now = 0.0
        self.dbs = {n: NetworkDB(n, config, random.Random(seed + i)) for i, n in enumerate(names)}
        self.cut: set[frozenset[str]] = set()
        self.no_gossip = False
        self.no_sync = False
        self.log: list[tuple[str, Any]] = []
        for name, db in self.dbs.items():
            for other in names:
                if other != name:
                    db.node_alive(0.0, other)
            db.tick(0.0)

    def linked(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.cut

    def flush(self) -> None:
        busy = True
        while busy:
            busy = False
            for name, db in self.dbs.items():
                for out in db.take_outputs():
                    busy = True
                    self.log.append((name, out))
                    self.deliver(name, out)

    def deliver(self, src: str, out: Any) -> None:
        now = self.now
        match out:
            case SendTo(dst, message):
                if not self.no_gossip and self.linked(src, dst):
                    self.dbs[dst].receive(now, src, message)
            case ClusterBroadcast(message, _key):
                for dst, db in self.dbs.items():
                    if dst != src and self.linked(src, dst):
                        db.receive(now, src, message)
            case BulkSyncRequest(dst, request):
                response = None
                if not self.no_sync and self.linked(src, dst):
                    response = self.dbs[dst].bulk_sync_request(now, src, request)
                self.dbs[src].bulk_sync_result(now, dst, response)

    def run(self, duration: float) -> None:
        end = self.now + duration
        while True:
            due = min(db.next_deadline() for db in self.dbs.values())
            if due > end:
                break
            self.now = max(self.now, due)
            for db in self.dbs.values():
                if db.next_deadline() <= self.now:
                    db.tick(self.now)
            self.flush()
        self.now = end

    def join(self, network: str, *names: str) -> None:
        for name in names:
            self.dbs[name].join_network(self.now, network)
            self.flush()

    def value(self, name: str, key: str, network: str = NET) -> bytes | None:
        entry = self.dbs[name].get_entry(TBL, network, key)
        return entry.value if entry is not None else None


def single(name: str = "me", *peers: str, config: NetworkDBConfig = CFG) -> NetworkDB:
    """One node on NET, its peers alive and attached, fed by hand."""
    db = NetworkDB(name, config, random.Random(7))
    db.tick(0.0)
    db.join_network(0.0, NET)
    for peer in peers:
        db.node_alive(0.0, peer)
        db.receive(0.0, peer, NetworkEvent(NetworkEventType.JOIN, 1, peer, NET))
    db.take_outputs()
    return db


def ev(
    kind: TableEventType, ltime: int, owner: str, key: str = "k", value: bytes = b"v", **kw: Any
) -> TableGossip:
    return TableGossip((TableEvent(kind, ltime, owner, NET, TBL, key, value, **kw),))


CREATE, UPDATE, DELETE = TableEventType.CREATE, TableEventType.UPDATE, TableEventType.DELETE


# ---- dissemination ------------------------------------------------------------------------------


def test_entry_reaches_the_members_of_its_network_only() -> None:
    lab = Lab(["a", "b", "c", "d"])
    lab.join(NET, "a", "b", "c")
    lab.dbs["a"].create_entry(lab.now, TBL, NET, "ep1", b"10.0.0.2")
    lab.run(1.0)
    assert lab.value("b", "ep1") == b"10.0.0.2"
    assert lab.value("c", "ep1") == b"10.0.0.2"
    assert lab.dbs["d"].records(NET) == []
    gossip_targets = {out.name for _, out in lab.log if isinstance(out, SendTo)}
    assert gossip_targets <= {"a", "b", "c"}
    view = lab.dbs["c"].get_entry(TBL, NET, "ep1")
    assert view is not None and view.owner == "a"


def test_gossip_stops_after_the_retransmit_limit() -> None:
    lab = Lab(["a", "b", "c"])
    lab.join(NET, "a", "b", "c")
    lab.dbs["a"].create_entry(lab.now, TBL, NET, "ep1", b"x")
    lab.run(CFG.bulk_sync_interval / 2)
    sends = [out for src, out in lab.log if src == "a" and isinstance(out, SendTo)]
    # 4 * ceil(log10(3 + 1)) = 4 rounds, to both peers; nothing more is pending afterwards.
    assert len(sends) == 8
    db = lab.dbs["a"]
    assert db.next_deadline() > lab.now


def test_join_syncs_existing_entries_right_away() -> None:
    lab = Lab(["a", "b", "c"])
    lab.join(NET, "a", "b")
    lab.dbs["a"].create_entry(lab.now, TBL, NET, "ep-a", b"1")
    lab.dbs["b"].create_entry(lab.now, TBL, NET, "ep-b", b"2")
    lab.run(1.0)
    lab.join(NET, "c")  # no time passes: the bulk sync on join does it
    assert set(lab.dbs["c"].entries(NET, TBL)) == {"ep-a", "ep-b"}
    # The peer c synced with learned that c is on the network from the request itself.
    assert any("c" in lab.dbs[p].peers(NET) for p in ("a", "b"))


def test_periodic_bulk_sync_repairs_lost_gossip() -> None:
    lab = Lab(["a", "b"])
    lab.join(NET, "a", "b")
    lab.no_gossip = True
    lab.dbs["a"].create_entry(lab.now, TBL, NET, "ep1", b"x")
    lab.run(1.0)
    assert lab.value("b", "ep1") is None
    lab.run(CFG.bulk_sync_interval * 2)
    assert lab.value("b", "ep1") == b"x"
    assert lab.dbs["a"].stats.bulk_syncs_completed + lab.dbs["b"].stats.bulk_syncs_completed > 0


def test_failed_bulk_sync_tries_another_peer() -> None:
    lab = Lab(["a", "b", "c"])
    lab.join(NET, "b", "c")
    lab.dbs["b"].create_entry(lab.now, TBL, NET, "ep", b"x")
    lab.run(1.0)
    lab.cut = {frozenset(("a", "b"))}
    lab.join(NET, "a")
    lab.cut = {frozenset(("a", "c"))}
    lab.run(CFG.bulk_sync_interval * 2)
    assert lab.value("a", "ep") == b"x"


def test_bulk_sync_that_never_answers_times_out() -> None:
    config = NetworkDBConfig(bulk_sync_timeout=1.0, bulk_sync_interval=1000.0)
    db = single("me", "p", config=config)  # joined before p: syncs with p when it shows up
    assert db.stats.bulk_syncs_started == 1
    assert db.next_deadline() == 1.0
    db.tick(1.0)
    assert db.stats.bulk_syncs_timed_out == 1
    db.bulk_sync_result(1.0, "p", TableSync())  # too late: ignored
    assert db.stats.bulk_syncs_completed == 0 and db.stats.stale == 1


def test_push_pull_state_teaches_attachments_to_a_new_node() -> None:
    lab = Lab(["a", "b"])
    lab.join(NET, "a", "b")
    newcomer = NetworkDB("c", CFG, random.Random(3))
    for name in ("a", "b"):
        newcomer.node_alive(0.0, name)
    newcomer.merge_remote_state(lab.now, "a", lab.dbs["a"].local_state())
    assert sorted(newcomer.peers(NET)) == ["a", "b"]
    newcomer.join_network(lab.now, NET)
    assert any(isinstance(o, BulkSyncRequest) for o in newcomer.take_outputs())


# ---- ordering -----------------------------------------------------------------------------------


def test_newer_lamport_time_wins_and_ties_go_to_the_greater_owner() -> None:
    db = single("me", "x", "y")
    db.receive(1.0, "x", ev(CREATE, 5, "x", value=b"x5"))
    db.receive(1.0, "y", ev(UPDATE, 3, "y", value=b"y3"))
    assert (db.get_entry(TBL, NET, "k") or pytest.fail()).value == b"x5"
    assert db.stats.stale == 1
    db.receive(1.0, "y", ev(UPDATE, 7, "y", value=b"y7"))
    db.receive(1.0, "x", ev(UPDATE, 7, "x", value=b"x7"))  # same time, smaller owner: loses
    assert (db.get_entry(TBL, NET, "k") or pytest.fail()).value == b"y7"


def test_local_writes_come_after_everything_witnessed() -> None:
    db = single("me", "x")
    db.receive(1.0, "x", ev(CREATE, 100, "x"))
    db.update_entry(1.0, TBL, NET, "k", b"mine")
    entry = db.get_entry(TBL, NET, "k")
    assert entry is not None and entry.ltime > 100 and entry.owner == "me"


def test_reordered_update_before_create_is_one_create_for_watchers() -> None:
    db = single("me", "x")
    watch = db.watch(TBL, NET)
    db.receive(1.0, "x", ev(UPDATE, 2, "x", value=b"new"))
    db.receive(1.0, "x", ev(CREATE, 1, "x", value=b"old"))
    assert [(e.type, e.value) for e in watch.poll()] == [(WatchEventType.CREATE, b"new")]


# ---- deletes and tombstones ---------------------------------------------------------------------


def test_tombstone_blocks_an_older_create_then_is_reaped() -> None:
    db = single("me", "x")
    db.receive(1.0, "x", ev(CREATE, 1, "x"))
    db.receive(1.0, "x", ev(DELETE, 3, "x", residual_reap=CFG.reap_entry_interval))
    db.receive(1.0, "x", ev(UPDATE, 2, "x"))  # older than the delete: stays deleted
    assert db.get_entry(TBL, NET, "k") is None
    [record] = db.records(NET)
    assert record.deleted
    for t in range(2, int(CFG.reap_entry_interval) + 3):
        db.tick(float(t))
    assert db.records(NET) == []


def test_residual_reap_time_travels_with_a_tombstone() -> None:
    db = single("me", "x")
    db.receive(1.0, "x", ev(DELETE, 3, "x", residual_reap=2.0))
    db.tick(2.0)
    assert db.records(NET)
    db.tick(3.0 + CFG.reap_period)
    db.tick(3.0 + 2 * CFG.reap_period)
    assert db.records(NET) == []


def test_delete_propagates_and_readers_see_it_gone() -> None:
    lab = Lab(["a", "b"])
    lab.join(NET, "a", "b")
    lab.dbs["a"].create_entry(lab.now, TBL, NET, "ep1", b"x")
    lab.run(1.0)
    lab.dbs["a"].delete_entry(lab.now, TBL, NET, "ep1")
    lab.run(1.0)
    assert lab.value("b", "ep1") is None
    assert [r.deleted for r in lab.dbs["b"].records(NET)] == [True]
    lab.run(CFG.reap_entry_interval + 2 * CFG.reap_period)
    assert lab.dbs["a"].records(NET) == lab.dbs["b"].records(NET) == []


# ---- failures and leaving -----------------------------------------------------------------------


def test_entries_of_a_failed_node_are_hidden_and_come_back() -> None:
    db = single("me", "x")
    db.receive(1.0, "x", ev(CREATE, 1, "x", key="k1"))
    db.receive(1.0, "x", ev(CREATE, 2, "x", key="k2"))
    watch = db.watch(network_id=NET)
    assert [e.type for e in watch.poll()] == [WatchEventType.CREATE] * 2
    db.node_failed(2.0, "x")
    assert db.entries(NET, TBL) == {}
    assert db.peers(NET) == []
    assert [(e.type, e.key, e.owner) for e in watch.poll()] == [
        (WatchEventType.DELETE, "k1", "x"),
        (WatchEventType.DELETE, "k2", "x"),
    ]
    assert all(r.hidden for r in db.records(NET))
    db.receive(3.0, "y", ev(UPDATE, 3, "x", key="k1"))  # unknown sender: ignored
    assert db.stats.unknown_sender == 1
    db.node_alive(4.0, "x")
    assert set(db.entries(NET, TBL)) == {"k1", "k2"}
    assert db.peers(NET) == ["x"]
    assert [e.type for e in watch.poll()] == [WatchEventType.CREATE] * 2


def test_entries_of_a_node_that_stays_failed_are_reaped() -> None:
    db = single("me", "x")
    db.receive(1.0, "x", ev(CREATE, 1, "x"))
    db.node_failed(2.0, "x")
    watch = db.watch()
    t = 2.0
    while t < 3.0 + CFG.reap_entry_interval + CFG.reap_period:
        t += CFG.reap_period
        db.tick(t)
    assert db.records(NET) == []
    db.node_alive(t, "x")
    assert db.entries(NET, TBL) == {} and watch.poll() == []


def test_a_failed_node_is_forgotten_after_the_node_reap_interval() -> None:
    db = single("me", "x")
    db.node_failed(1.0, "x")
    db.tick(1.0)
    db.tick(2.0 + CFG.reap_node_interval + CFG.reap_period)
    assert db.node_status("x") is None
    assert db.local_state().attachments == (NetworkEvent(NetworkEventType.JOIN, 1, "me", NET),)


def test_entries_of_a_node_that_left_the_cluster_are_removed() -> None:
    db = single("me", "x")
    db.receive(1.0, "x", ev(CREATE, 1, "x"))
    watch = db.watch()
    watch.poll()
    db.node_left(2.0, "x")
    assert db.records(NET) == []
    assert [e.type for e in watch.poll()] == [WatchEventType.DELETE]
    assert db.node_status("x") is NodeStatus.LEFT
    db.receive(3.0, "x", ev(CREATE, 5, "x"))  # a straggler from the node that left
    assert db.records(NET) == [] and db.stats.unknown_sender == 1


def test_a_failed_node_that_then_leaves_is_not_reported_deleted_twice() -> None:
    db = single("me", "x")
    db.receive(1.0, "x", ev(CREATE, 1, "x"))
    watch = db.watch()
    db.node_failed(2.0, "x")
    db.node_left(3.0, "x")
    assert [e.type for e in watch.poll()] == [WatchEventType.CREATE, WatchEventType.DELETE]


def test_leaving_a_network_removes_the_entries_everywhere() -> None:
    lab = Lab(["a", "b", "c"])
    lab.join(NET, "a", "b", "c")
    lab.dbs["a"].create_entry(lab.now, TBL, NET, "ep-a", b"1")
    lab.dbs["b"].create_entry(lab.now, TBL, NET, "ep-b", b"2")
    lab.run(1.0)
    watch = lab.dbs["a"].watch()
    watch.poll()
    lab.dbs["b"].leave_network(lab.now, NET)
    lab.flush()
    assert set(lab.dbs["a"].entries(NET, TBL)) == set(lab.dbs["c"].entries(NET, TBL)) == {"ep-a"}
    assert [(e.type, e.key) for e in watch.poll()] == [(WatchEventType.DELETE, "ep-b")]
    b = lab.dbs["b"]
    assert b.networks() == [] and b.entries(NET, TBL) == {}
    assert [(r.key, r.deleted) for r in b.records(NET)] == [("ep-b", True)]  # own tombstone
    # A late gossip of b's entry is refused: b is no longer on the network.
    lab.dbs["a"].receive(lab.now, "c", ev(UPDATE, 999, "b", key="ep-b"))
    assert lab.dbs["a"].stats.not_attached == 1
    with pytest.raises(NotJoinedError):
        b.create_entry(lab.now, TBL, NET, "x", b"")
    # Rejoining brings the others' entries back, and b's old one stays deleted.
    lab.join(NET, "b")
    lab.run(CFG.bulk_sync_interval * 2)
    assert set(b.entries(NET, TBL)) == {"ep-a"}
    assert lab.value("a", "ep-b") is None


def test_left_network_state_is_reaped() -> None:
    lab = Lab(["a", "b"])
    lab.join(NET, "a", "b")
    lab.dbs["a"].create_entry(lab.now, TBL, NET, "ep", b"1")
    lab.run(1.0)
    lab.dbs["a"].leave_network(lab.now, NET)
    lab.flush()
    lab.run(CFG.reap_network_interval + 2 * CFG.reap_period)
    assert lab.dbs["a"].records(NET) == []
    assert [e.node for e in lab.dbs["a"].local_state().attachments] == ["b"]
    assert [e.node for e in lab.dbs["b"].local_state().attachments] == ["b"]


def test_a_restart_under_the_same_name_overrides_what_the_previous_run_left() -> None:
    lab = Lab(["a", "b"])
    lab.join(NET, "a", "b")
    for key in ("k1", "k2"):
        lab.dbs["b"].create_entry(lab.now, TBL, NET, key, b"old")
    lab.run(1.0)
    lab.dbs["b"] = fresh = NetworkDB("b", CFG, random.Random(99))  # same name, empty state
    fresh.node_alive(lab.now, "a")
    fresh.tick(lab.now)
    fresh.join_network(lab.now, NET)
    fresh.create_entry(lab.now, TBL, NET, "k1", b"new")
    lab.flush()
    lab.run(CFG.bulk_sync_interval * 2)
    assert lab.value("a", "k1") == b"new"
    assert lab.value("a", "k2") is None
    assert lab.value("b", "k1") == b"new" and lab.value("b", "k2") is None
    assert fresh.stats.reasserted >= 2


def test_a_stale_network_join_about_this_node_is_overridden() -> None:
    db = NetworkDB("me", CFG, random.Random(1))
    db.node_alive(0.0, "x")
    db.receive(0.0, "x", NetworkEvent(NetworkEventType.JOIN, 40, "me", "old-net"))
    [out] = db.take_outputs()
    assert isinstance(out, ClusterBroadcast)
    assert out.message.type is NetworkEventType.LEAVE and out.message.ltime > 40
    assert db.networks() == []


# ---- watches ------------------------------------------------------------------------------------


def test_watch_reports_creates_updates_and_deletes_with_filters() -> None:
    lab = Lab(["a", "b"])
    lab.join(NET, "a", "b")
    lab.join("net2", "a", "b")
    a, b = lab.dbs["a"], lab.dbs["b"]
    a.create_entry(lab.now, TBL, NET, "before", b"0")
    lab.run(1.0)
    everything = b.watch()
    only_net = b.watch(network_id=NET)
    only_other_table = b.watch(table="other")
    seen: list[WatchEvent] = []
    callback = b.watch(TBL, NET, on_event=seen.append)
    assert [e.key for e in everything.poll()] == ["before"]
    a.create_entry(lab.now, TBL, NET, "ep", b"1")
    a.create_entry(lab.now, TBL, "net2", "ep", b"x")
    lab.run(1.0)
    a.update_entry(lab.now, TBL, NET, "ep", b"2")
    lab.run(1.0)
    a.delete_entry(lab.now, TBL, NET, "ep")
    lab.run(1.0)
    events = [(e.type, e.network, e.key, e.value, e.owner) for e in only_net.poll()]
    assert events == [
        (WatchEventType.CREATE, NET, "before", b"0", "a"),
        (WatchEventType.CREATE, NET, "ep", b"1", "a"),
        (WatchEventType.UPDATE, NET, "ep", b"2", "a"),
        (WatchEventType.DELETE, NET, "ep", b"2", "a"),
    ]
    assert [(e.type, e.key) for e in seen] == [(t, k) for t, _, k, _, _ in events]
    assert callback.poll() == []  # the callback got them instead
    assert {e.network for e in everything.poll()} == {NET, "net2"}
    assert only_other_table.poll() == []
    # Local writes are reported too, with the local owner.
    mine = a.watch(TBL, NET)
    assert [e.key for e in mine.poll()] == ["before"]
    a.create_entry(lab.now, TBL, NET, "local", b"l")
    assert [(e.type, e.owner) for e in mine.poll()] == [(WatchEventType.CREATE, "a")]
    mine.close()
    a.delete_entry(lab.now, TBL, NET, "local")
    assert mine.poll() == []


def test_a_watch_that_falls_behind_overflows_and_closes() -> None:
    config = NetworkDBConfig(watch_queue_limit=3)  # beyond the initial state
    db = NetworkDB("me", config, random.Random(1))
    db.join_network(0.0, NET)
    watch = db.watch()
    for i in range(5):
        db.create_entry(0.0, TBL, NET, f"k{i}", b"")
    assert watch.overflowed and watch.closed and watch.poll() == []
    assert db.stats.watch_overflows == 1
    fresh = db.watch()  # starts over from the full state
    assert len(fresh.poll()) == 5


# ---- the user API -------------------------------------------------------------------------------


def test_user_api_refuses_what_makes_no_sense() -> None:
    db = NetworkDB("me", CFG, random.Random(1))
    with pytest.raises(NotJoinedError, match="join_network"):
        db.create_entry(0.0, TBL, NET, "k", b"v")
    with pytest.raises(NotJoinedError):
        db.leave_network(0.0, NET)
    db.join_network(0.0, NET)
    with pytest.raises(NetworkDBError, match="already joined"):
        db.join_network(0.0, NET)
    with pytest.raises(NetworkDBError):
        db.join_network(0.0, "")
    with pytest.raises(EntryNotFoundError):
        db.update_entry(0.0, TBL, NET, "k", b"v")
    with pytest.raises(EntryNotFoundError):
        db.delete_entry(0.0, TBL, NET, "k")
    db.create_entry(0.0, TBL, NET, "k", b"v")
    with pytest.raises(EntryExistsError):
        db.create_entry(0.0, TBL, NET, "k", b"v")
    db.delete_entry(0.0, TBL, NET, "k")
    db.create_entry(0.0, TBL, NET, "k", b"again")  # over a tombstone: fine
    with pytest.raises(ValueError):
        NetworkDBConfig(gossip_fanout=0)
    with pytest.raises(ValueError):
        NetworkDB("", CFG, random.Random(1))


# ---- bad input ----------------------------------------------------------------------------------


def test_bad_input_is_ignored_and_counted() -> None:
    db = single("me", "x")
    before = db.records(NET)
    db.receive(1.0, "x", "garbage")  # type: ignore[arg-type]
    db.receive(1.0, "x", TableGossip(("not an event",)))  # type: ignore[arg-type]
    db.receive(1.0, "x", TableGossip([]))  # type: ignore[arg-type]
    db.receive(1.0, "x", ev(CREATE, -1, "x"))
    db.receive(1.0, "x", ev(CREATE, 1 << 64, "x"))
    db.receive(1.0, "x", ev(CREATE, 1, "x", value="str"))  # type: ignore[arg-type]
    db.receive(1.0, "x", ev(CREATE, 1, "x", residual_reap=float("nan")))
    db.receive(1.0, "x", TableGossip((TableEvent(9, 1, "x", NET, TBL, "k"),)))  # type: ignore[arg-type]
    db.receive(1.0, "x", NetworkEvent(NetworkEventType.JOIN, 1, "", NET))
    assert db.stats.malformed == 9
    db.receive(1.0, "stranger", ev(CREATE, 1, "x"))
    assert db.stats.unknown_sender == 1
    db.receive(1.0, "x", TableGossip((TableEvent(CREATE, 1, "x", "other-net", TBL, "k"),)))
    assert db.stats.unknown_network == 1
    db.receive(1.0, "x", ev(CREATE, 1, "ghost"))
    assert db.stats.not_attached == 1
    db.receive(1.0, "x", NetworkEvent(NetworkEventType.JOIN, 5, "ghost", NET))
    assert db.stats.unknown_node == 1
    db.node_failed(1.0, "ghost")
    db.node_left(1.0, "ghost")
    db.node_alive(1.0, "")
    assert db.stats.unknown_node == 3
    assert db.bulk_sync_request(1.0, "x", "garbage") == TableSync()  # type: ignore[arg-type]
    assert db.bulk_sync_request(1.0, "stranger", TableSync((NET,))) == TableSync()
    db.bulk_sync_result(1.0, "x", TableSync())  # never asked
    db.merge_remote_state(1.0, "x", NetworkState(("junk",)))  # type: ignore[arg-type]
    db.merge_remote_state(1.0, "x", b"junk")  # type: ignore[arg-type]
    db.bulk_sync_request(1.0, "x", TableSync((NET,), (), (ev(CREATE, 1, "ghost").events[0], 3)))  # type: ignore[arg-type]
    assert db.records(NET) == before


# ---- determinism --------------------------------------------------------------------------------


def test_same_seed_same_outputs() -> None:
    def run() -> list[tuple[str, Any]]:
        lab = Lab([f"n{i}" for i in range(6)], seed=5)
        lab.join(NET, *lab.dbs)
        for i, db in enumerate(lab.dbs.values()):
            db.create_entry(lab.now, TBL, NET, f"ep{i}", b"x")
        lab.run(CFG.bulk_sync_interval * 2)
        return lab.log

    assert run() == run()


# ---- queues and timers --------------------------------------------------------------------------


def test_relay_queue_is_bounded() -> None:
    db = NetworkDB("me", NetworkDBConfig(max_relay_queue=2), random.Random(1))
    db.join_network(0.0, NET)
    for peer in ("x", "y"):
        db.node_alive(0.0, peer)
        db.receive(0.0, peer, NetworkEvent(NetworkEventType.JOIN, 1, peer, NET))
    db.receive(
        0.0, "x", TableGossip(tuple(ev(CREATE, i, "x", key=f"k{i}").events[0] for i in range(1, 6)))
    )
    assert len(db.entries(NET, TBL)) == 5
    assert db.stats.relay_dropped == 3


def test_an_event_bigger_than_a_datagram_still_goes_alone() -> None:
    queue = TableQueue()
    big = TableEvent(CREATE, 1, "x", NET, TBL, "big", b"x" * 5000)
    small = TableEvent(CREATE, 2, "x", NET, TBL, "small", b"")
    queue.push(big)
    queue.push(small)
    taken, room = queue.take(1000, 2, may_overflow=True)
    assert taken == [small]  # newest first, and then the big one no longer fits
    taken, room = queue.take(1000, 2, may_overflow=True)
    assert taken == [big] and room < 0
    taken, _ = queue.take(1000, 2, may_overflow=False)
    assert taken == [small]  # sent twice: gone; the big one waits for an empty datagram
    assert len(queue) == 1


def test_gossip_keeps_the_phase_of_its_ticker_while_idle() -> None:
    db = single("me", "x")

    def first_send_after_writing_at(t: float, key: str) -> float:
        db.create_entry(t, TBL, NET, key, b"v")
        while True:
            now = db.next_deadline()
            db.tick(now)
            if any(isinstance(o, SendTo) for o in db.take_outputs()):
                return now

    t1 = first_send_after_writing_at(10.003, "k1")
    t2 = first_send_after_writing_at(20.011, "k2")
    assert 10.003 < t1 <= 10.003 + CFG.gossip_interval
    assert 20.011 < t2 <= 20.011 + CFG.gossip_interval
    periods = (t2 - t1) / CFG.gossip_interval
    assert periods == pytest.approx(round(periods), abs=1e-6)


def test_a_node_back_from_failure_is_bulk_synced() -> None:
    db = single("me", "x")
    db.bulk_sync_result(0.5, "x", TableSync((NET,)))  # the sync of the join
    db.node_failed(1.0, "x")
    db.node_alive(2.0, "x")  # with one other node, rejoin_sync_fanout / 1 >= 1: always
    [sync] = [o for o in db.take_outputs() if isinstance(o, BulkSyncRequest)]
    assert sync.name == "x" and sync.request.networks == (NET,)


def test_an_answer_for_no_network_is_a_failed_sync_and_another_peer_is_tried() -> None:
    db = single("me", "x", "y")  # joined before its peers: syncs with the first one it saw
    db.bulk_sync_result(1.0, "x", TableSync())  # x does not know us yet
    assert db.stats.bulk_syncs_failed == 1
    [retry] = [o for o in db.take_outputs() if isinstance(o, BulkSyncRequest)]
    assert retry.name == "y"
