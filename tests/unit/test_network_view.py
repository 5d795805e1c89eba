"""datapath/network_view.py: a node's view of an overlay for `docker network inspect`, as
dockerd 20.10 shows it on a node running a task of the network (Containers, Peers and, with
-v, Services)."""

from __future__ import annotations

from controlplane.datapath.network_view import (
    AttachedContainer,
    LoadBalancerIndexes,
    Peer,
    ServiceOnNetwork,
    ServiceTask,
    local_network_view,
)
from controlplane.datapath.program import Endpoint, NetworkView, NodeView, compute
from controlplane.pb.datapath_pb2 import EndpointRecord, IngressPort

W1 = NodeView("w1node000000000", "192.168.250.21")
W2 = NodeView("w2node000000000", "192.168.250.22")
NET = NetworkView("net000000", "my-net", 4097, "10.0.1.0/24", "10.0.1.1")
HOSTS = {W1.node_id: W1.vtep, W2.node_id: W2.vtep}


def record(name: str, ip: str, node: NodeView, **fields: object) -> EndpointRecord:
    return EndpointRecord(name=name, ip=ip, node_id=node.node_id, **fields)  # type: ignore[arg-type]


def test_containers_here_peers_and_services_with_their_tasks() -> None:
    records = [
        record("web.1.t1", "10.0.1.3", W1, service_name="web", vip="10.0.1.2", task_id="t1"),
        record("web.2.t2", "10.0.1.4", W2, service_name="web", vip="10.0.1.2", task_id="t2"),
        record("lonely", "10.0.1.5", W1),
    ]
    endpoints = [Endpoint(NET.network_id, r.name, r.name, r.ip, r.node_id) for r in records]
    program = compute(W1, [W1, W2], [NET], endpoints)
    view = local_network_view(
        program, NET.network_id, ((NET.network_id, "", r) for r in records), HOSTS
    )
    assert view is not None
    assert view.containers == (
        AttachedContainer("lonely", "10.0.1.5", "02:42:0a:00:01:05"),
        AttachedContainer("web.1.t1", "10.0.1.3", "02:42:0a:00:01:03"),
    )
    assert view.peers == (Peer(W1.node_id, W1.vtep), Peer(W2.node_id, W2.vtep))
    assert view.services == {
        # The endpoints of no service, under "" as libnetwork lists them (seen side by side
        # with a real swarm: standalone containers and ingress sandboxes).
        "": ServiceOnNetwork("", (), (ServiceTask("lonely", "10.0.1.5", W1.vtep),)),
        "web": ServiceOnNetwork(
            "10.0.1.2",
            (),
            (
                ServiceTask("web.1.t1", "10.0.1.3", W1.vtep),
                ServiceTask("web.2.t2", "10.0.1.4", W2.vtep),
            ),
        ),
    }
    # A node with nothing on the network has no local view of it (dockerd shows none).
    elsewhere = compute(W2, [W1, W2], [NET], endpoints[:1])
    assert local_network_view(elsewhere, NET.network_id, [], HOSTS) is None


def test_ingress_ports_are_listed_per_service() -> None:
    port = IngressPort(protocol="tcp", target_port=80, published_port=8080)
    records = [
        record(
            "web.1.t1", "10.0.0.3", W1, service_name="web", vip="10.0.0.2", ingress_ports=[port]
        ),
        record(
            "web.2.t2", "10.0.0.4", W1, service_name="web", vip="10.0.0.2", ingress_ports=[port]
        ),
    ]
    endpoints = [Endpoint(NET.network_id, r.name, r.name, r.ip, r.node_id) for r in records]
    program = compute(W1, [W1], [NET], endpoints)
    view = local_network_view(
        program, NET.network_id, ((NET.network_id, "", r) for r in records), HOSTS
    )
    assert view is not None
    assert view.services["web"].ports == ("Target: 80, Publish: 8080",)


def test_load_balancer_indexes_as_libnetwork_gives_them() -> None:
    """From 256, in the order the services' endpoints were first seen (dockerd 20.10: s1, s2,
    s3 created, their tasks seen s1, s3, s2: 256, 258, 257); a load balancer whose last
    endpoint left gets a new mark when it comes back, never one given before."""
    indexes = LoadBalancerIndexes()
    indexes.follow([("s1", "net"), ("s1", "net")])
    indexes.follow([("s1", "net"), ("s3", "net"), ("s2", "net"), ("s1", "ingress")])
    assert [indexes.index(s, "net") for s in ("s1", "s2", "s3")] == [256, 258, 257]
    assert indexes.index("s1", "ingress") == 259
    assert indexes.index("nothing", "net") == 0
    indexes.follow([("s1", "net"), ("s2", "net")])  # s3's tasks left this node
    assert indexes.index("s3", "net") == 0
    indexes.follow([("s1", "net"), ("s2", "net"), ("s3", "net")])
    assert indexes.index("s3", "net") == 260


def test_the_view_gives_each_service_its_index() -> None:
    records = [
        record("web.1.t1", "10.0.1.3", W1, service_name="web", service_id="svc1", vip="10.0.1.2"),
        record("lonely", "10.0.1.5", W1),
    ]
    endpoints = [Endpoint(NET.network_id, r.name, r.name, r.ip, r.node_id) for r in records]
    program = compute(W1, [W1, W2], [NET], endpoints)
    indexes = LoadBalancerIndexes()
    indexes.follow([("svc1", NET.network_id)])
    view = local_network_view(
        program, NET.network_id, ((NET.network_id, "", r) for r in records), HOSTS, indexes.index
    )
    assert view is not None
    assert (view.services["web"].lb_index, view.services[""].lb_index) == (256, 0)
