"""datapath/attachments.py: what a node publishes for its tasks, and the program it derives."""

from __future__ import annotations

from controlplane.datapath.attachments import ENDPOINT_TABLE, DataPathState
from controlplane.datapath.program import NodeView
from controlplane.gossip.networkdb_types import EntryView
from controlplane.gossip.types import NodeMeta
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.objects_pb2 import IPAMConfig, Network, NetworkAttachment, Task, TaskStatus

LOCAL = NodeView("n1", "127.0.0.1")


class FakeGossip:
    """NetworkDB as one node sees it, with another node's entries put in by the test."""

    def __init__(self) -> None:
        self.joined: list[str] = []
        self.tables: dict[str, dict[str, EntryView]] = {}
        self.members = [
            NodeMeta("n1", "worker", "127.0.0.1", "127.0.0.1"),
            NodeMeta("n2", "worker", "127.0.0.2", "127.0.0.2"),
        ]

    def join_network(self, network_id: str) -> None:
        self.joined.append(network_id)

    def leave_network(self, network_id: str) -> None:
        self.joined.remove(network_id)
        self.tables.pop(network_id, None)

    def create_entry(self, network_id: str, table: str, key: str, value: bytes) -> None:
        owner = EndpointRecord.FromString(value).node_id
        view = EntryView(network_id, table, key, value, owner, 1)
        self.tables.setdefault(network_id, {})[key] = view

    def delete_entry(self, network_id: str, table: str, key: str) -> None:
        del self.tables[network_id][key]

    def table_entries(self, network_id: str, table: str) -> dict[str, EntryView]:
        assert table == ENDPOINT_TABLE
        return dict(self.tables.get(network_id, {}))

    def live_members(self) -> list[NodeMeta]:
        return self.members


def network() -> Network:
    net = Network(id="net1", vni=4097)
    net.spec.annotations.name = "blue"
    net.ipam.append(IPAMConfig(subnet="10.0.1.0/24", gateway="10.0.1.1"))
    return net


def task(task_id: str, ip: str, node: str = "n1") -> Task:
    t = Task(id=task_id, node_id=node, service_id="s1", slot=1)
    t.spec.annotations.name = "web"
    t.networks.append(NetworkAttachment(network_id="net1", addresses=[f"{ip}/24"]))
    return t


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
