"""What one node knows of an overlay network it takes part in, as `docker network inspect`
shows it on that node (libnetwork's local view): the containers attached here, the peers
(every node with an endpoint on the network, this one included) and, verbose, the services
with their VIP and tasks on the network; the endpoints of no service (standalone containers,
the nodes' ingress sandboxes) are grouped under the service named "", as libnetwork does.
Pure: the node's program, the endpoint records and the nodes' data path addresses in, the
view out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.datapath.program import Program
from controlplane.pb.datapath_pb2 import EndpointRecord


@dataclass(frozen=True)
class AttachedContainer:
    name: str
    ip: str
    mac: str


@dataclass(frozen=True)
class Peer:
    node_id: str
    ip: str  # the node's data path address


@dataclass(frozen=True)
class ServiceTask:
    name: str
    ip: str
    host_ip: str  # the data path address of the task's node


@dataclass(frozen=True)
class ServiceOnNetwork:
    vip: str  # "" in dnsrr mode, and for the endpoints of no service
    ports: tuple[str, ...]  # published in ingress mode, on the ingress network only
    tasks: tuple[ServiceTask, ...]


@dataclass(frozen=True)
class LocalNetworkView:
    containers: tuple[AttachedContainer, ...]
    peers: tuple[Peer, ...]
    services: Mapping[str, ServiceOnNetwork]  # by service name


def local_network_view(
    program: Program,
    network_id: str,
    records: Iterable[tuple[str, str, EndpointRecord]],
    hosts: Mapping[str, str],
) -> LocalNetworkView | None:
    """The view of `network_id` (None when this node is not on it); `records` are the
    endpoint records of the networks this node is on, `hosts` the nodes' data path addresses
    by node id."""
    segment = program.segments.get(network_id)
    if segment is None:
        return None
    on_network = [r for nid, _key, r in records if nid == network_id]
    peer_ids = sorted({r.node_id for r in on_network} | {program.node.node_id})
    services: dict[str, tuple[str, list[str], list[ServiceTask]]] = {}
    for record in sorted(on_network, key=lambda r: r.name):
        _vip, ports, tasks = services.setdefault(record.service_name, (record.vip, [], []))
        for port in record.ingress_ports:
            text = f"Target: {port.target_port}, Publish: {port.published_port}"
            if text not in ports:
                ports.append(text)
        tasks.append(ServiceTask(record.name, record.ip, hosts.get(record.node_id, "")))
    return LocalNetworkView(
        containers=tuple(AttachedContainer(e.name, e.ip, e.mac) for e in segment.local),
        peers=tuple(Peer(node_id, hosts.get(node_id, "")) for node_id in peer_ids),
        services={
            name: ServiceOnNetwork(vip, tuple(ports), tuple(tasks))
            for name, (vip, ports, tasks) in sorted(services.items())
        },
    )
