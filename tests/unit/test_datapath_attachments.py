"""datapath/attachments.py: what a node publishes for its tasks, and the program it derives."""

from __future__ import annotations

from datapath_testing import FakeGossip, network, task

from controlplane.datapath.attachments import ENDPOINT_TABLE, DataPathState
from controlplane.datapath.program import NodeView
from controlplane.gossip.networkdb_types import EntryView
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.objects_pb2 import TaskStatus

LOCAL = NodeView("n1", "127.0.0.1")


def test_a_running_task_is_published_and_withdrawn() -> None:
    gossip = FakeGossip()
    state = DataPathState(LOCAL, gossip)
    state.assignments({"t1": task("t1", "10.0.1.2")}, {"net1": network()})
    assert gossip.joined == []  # assigned is not running: nothing published yet
    state.task_status("t1", TaskStatus(state="running"))
    assert gossip.joined == ["net1"]
    [(key, entry)] = gossip.tables["net1"].items()
    record = EndpointRecord.FromString(entry.value)
    assert (key, record.name, record.ip, record.service_name) == (
        "t1.net1",
        "web.1.t1",
        "10.0.1.2",
        "web",
    )
    assert [ep.name for ep in state.program.segments["net1"].local] == ["web.1.t1"]
    state.task_status("t1", TaskStatus(state="shutdown"))
    assert gossip.joined == [] and not state.program.segments


def test_the_other_nodes_entries_become_fdb_entries_and_garbage_is_skipped() -> None:
    gossip = FakeGossip()
    changes: list[int] = []
    state = DataPathState(LOCAL, gossip, lambda _p, c: changes.append(len(c)))
    state.assignments({"t1": task("t1", "10.0.1.2")}, {"net1": network()})
    state.task_status("t1", TaskStatus(state="running"))
    remote = EndpointRecord(name="web.2.t2", ip="10.0.1.3", node_id="n2")
    gossip.create_entry("net1", ENDPOINT_TABLE, "t2.net1", remote.SerializeToString())
    gossip.tables["net1"]["bad"] = EntryView("net1", ENDPOINT_TABLE, "bad", b"\xff\xff", "n2", 1)
    state.endpoints_changed()
    fdb = state.program.segments["net1"].fdb
    assert [(e.mac, e.vtep) for e in fdb] == [("02:42:0a:00:01:03", "127.0.0.2")]
    assert changes and changes[-1] == 2  # one fdb and one neighbour entry added
    # A task that vanishes from the assignments is withdrawn too.
    state.assignments({}, {"net1": network()})
    assert "t1.net1" not in gossip.tables.get("net1", {})
