"""datapath/attachments.py: what a node publishes for its tasks, and the program it derives."""

from __future__ import annotations

import random

from datapath_testing import FakeGossip, network, task

from controlplane.datapath.attachments import ENDPOINT_TABLE, DataPathState
from controlplane.datapath.program import NodeView
from controlplane.gossip.networkdb_types import EntryView
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.objects_pb2 import Task, TaskStatus

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


def _published(gossip: FakeGossip) -> dict[str, dict[str, bytes]]:
    return {nid: {k: e.value for k, e in t.items()} for nid, t in gossip.tables.items() if t}


def test_publishing_one_task_at_a_time_ends_where_a_full_rebuild_does() -> None:
    """Statuses publish and withdraw only their task's records; after every step the table,
    the joined networks and the program equal those of a state built from scratch with the
    same assignments, statuses and containers."""
    rng = random.Random(7)
    net2 = network()
    net2.id, net2.vni = "net2", 4098
    net2.ipam[0].subnet, net2.ipam[0].gateway = "10.0.2.0/24", "10.0.2.1"
    tasks: dict[str, Task] = {}
    for i in range(12):
        t = task(f"t{i}", f"10.0.1.{10 + i}")
        if i % 3 == 0:  # some tasks are on two networks
            t.networks.add(network_id="net2", addresses=[f"10.0.2.{10 + i}/24"])
        tasks[t.id] = t
    networks = {"net1": network(), "net2": net2}
    states = ["new", "starting", "running", "running", "failed", "shutdown", "complete"]
    container = EndpointRecord(name="box", ip="10.0.2.200", node_id="n1")

    gossip = FakeGossip()
    state = DataPathState(LOCAL, gossip)
    state.assignments(tasks, networks)
    statuses: dict[str, str] = {}
    assigned = dict(tasks)
    attached = False
    for step in range(200):
        roll = rng.random()
        if roll < 0.05:  # the assignments change: a task goes or comes back
            victim = rng.choice(sorted(tasks))
            assigned = {k: v for k, v in tasks.items() if k != victim}
            state.assignments(assigned, networks)
        elif roll < 0.1:
            attached = not attached
            if attached:
                state.container_attached("box.net2", net2, container)
            else:
                state.container_detached("box.net2")
        else:
            task_id, status = rng.choice(sorted(tasks)), rng.choice(states)
            statuses[task_id] = status
            state.task_status(task_id, TaskStatus(state=status))

        reference_gossip = FakeGossip()
        reference = DataPathState(LOCAL, reference_gossip)
        if attached:
            reference.container_attached("box.net2", net2, container)
        for task_id, status in statuses.items():  # before the assignments: nothing published
            reference.task_status(task_id, TaskStatus(state=status))
        reference.assignments(assigned, networks)  # publishes everything at once
        assert _published(gossip) == _published(reference_gossip), f"step {step}"
        assert sorted(gossip.joined) == sorted(reference_gossip.joined), f"step {step}"
        assert state.program == reference.program, f"step {step}"
    assert any(_published(gossip).values())  # the walk did publish something


def test_a_status_asks_for_the_program_instead_of_recomputing_it() -> None:
    """With `request_refresh` (a node coalesces the requests per event-loop turn), a status
    publishes at once and leaves the program to the next refresh."""
    gossip = FakeGossip()
    requests: list[None] = []
    state = DataPathState(LOCAL, gossip, request_refresh=lambda: requests.append(None))
    state.assignments({"t1": task("t1", "10.0.1.2")}, {"net1": network()})
    state.task_status("t1", TaskStatus(state="running"))
    assert "t1.net1" in gossip.tables["net1"] and len(requests) == 2
    assert not state.program.segments  # not recomputed yet
    state.refresh()
    assert [ep.name for ep in state.program.segments["net1"].local] == ["web.1.t1"]
