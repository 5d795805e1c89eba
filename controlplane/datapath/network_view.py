"""What one node knows of an overlay network it takes part in, as `docker network inspect`
shows it on that node (libnetwork's local view): the containers attached here, the peers
(every node with an endpoint on the network, this one included) and, verbose, the services
with their VIP and tasks on the network; the endpoints of no service (standalone containers,
the nodes' ingress sandboxes) are grouped under the service named "", as libnetwork does.
Pure: the node's program, the endpoint records and the nodes' data path addresses in, the
view out. Each service's `LocalLBIndex` is its load balancer's firewall mark on this node
(`LoadBalancerIndexes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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
    lb_index: int = 0  # LocalLBIndex (0: the endpoints of no service)


FIRST_LB_INDEX = 256  # libnetwork's first firewall mark


class LoadBalancerIndexes:
    """libnetwork's LocalLBIndex: the firewall mark of each load balancer (a service on a
    network) on this node, from 256 on in the order the node first sees the service's
    endpoints there (a dnsrr service's too); the counter only grows while the node runs, so a
    load balancer whose last endpoint left is forgotten and gets a new mark if it comes back
    (measured on dockerd 20.10: services created s1, s2, s3 whose tasks arrived s1, s3, s2
    showed 256, 258, 257)."""

    def __init__(self) -> None:
        self._next = FIRST_LB_INDEX
        self._marks: dict[tuple[str, str], int] = {}

    def follow(self, present: Iterable[tuple[str, str]]) -> None:
        """The (service id, network id) of every endpoint on this node's networks now."""
        seen = dict.fromkeys(present)
        for key in seen:
            if key not in self._marks:
                self._marks[key] = self._next
                self._next += 1
        for key in [k for k in self._marks if k not in seen]:
            del self._marks[key]

    def index(self, service_id: str, network_id: str) -> int:
        return self._marks.get((service_id, network_id), 0)


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
    lb_index: Callable[[str, str], int] = lambda _service, _network: 0,
) -> LocalNetworkView | None:
    """The view of `network_id` (None when this node is not on it); `records` are the
    endpoint records of the networks this node is on, `hosts` the nodes' data path addresses
    by node id, `lb_index` a service's LocalLBIndex on a network."""
    segment = program.segments.get(network_id)
    if segment is None:
        return None
    on_network = [r for nid, _key, r in records if nid == network_id]
    peer_ids = sorted({r.node_id for r in on_network} | {program.node.node_id})
    services: dict[str, tuple[str, list[str], list[ServiceTask], int]] = {}
    for record in sorted(on_network, key=lambda r: r.name):
        index = lb_index(record.service_id, network_id) if record.service_id else 0
        _vip, ports, tasks, _index = services.setdefault(
            record.service_name, (record.vip, [], [], index)
        )
        for port in record.ingress_ports:
            text = f"Target: {port.target_port}, Publish: {port.published_port}"
            if text not in ports:
                ports.append(text)
        tasks.append(ServiceTask(record.name, record.ip, hosts.get(record.node_id, "")))
    return LocalNetworkView(
        containers=tuple(AttachedContainer(e.name, e.ip, e.mac) for e in segment.local),
        peers=tuple(Peer(node_id, hosts.get(node_id, "")) for node_id in peer_ids),
        services={
            name: ServiceOnNetwork(vip, tuple(ports), tuple(tasks), index)
            for name, (vip, ports, tasks, index) in sorted(services.items())
        },
    )
