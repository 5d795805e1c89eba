"""Shared test helpers for the data path's node side: NetworkDB as one node sees it, and
the network and task objects its agent is assigned."""

from __future__ import annotations

from controlplane.datapath.attachments import ENDPOINT_TABLE
from controlplane.gossip.networkdb_types import EntryView
from controlplane.gossip.types import NodeMeta
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.objects_pb2 import IPAMConfig, Network, NetworkAttachment, Task


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

    def update_entry(self, network_id: str, table: str, key: str, value: bytes) -> None:
        assert key in self.tables[network_id], key
        self.create_entry(network_id, table, key, value)

    def delete_entry(self, network_id: str, table: str, key: str) -> None:
        del self.tables[network_id][key]

    def table_entries(self, network_id: str, table: str) -> dict[str, EntryView]:
        assert table == ENDPOINT_TABLE
        return dict(self.tables.get(network_id, {}))

    def live_members(self) -> list[NodeMeta]:
        return self.members

    def network_ready(self, network_id: str) -> bool:
        return network_id in self.joined


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
