"""swarmkit's predefined swarm-scope networks, `bridge` and `host`: store objects that stand
for each node's own network of that name, so that a service can name them
(`docker service create --network host`).

`swarm init` writes them beside `ingress`, labelled `com.docker.swarm.predefined=true`, with
the driver of their name and nothing allocated (no subnet, no VNI: they are node-local). A
task on one gets an attachment without an address and its service a VIP entry without one;
its node runs it on its own network of that name (`agent/network_modes.py`). dockerd hides
them from `network ls` (the node's local `bridge` and `host` are listed instead), answers
`network inspect` of their ids with their swarm form, and `network rm` of them with `not
found`.
"""

from __future__ import annotations

from controlplane.ids import new_object_id
from controlplane.pb.objects_pb2 import Network

PREDEFINED_LABEL = "com.docker.swarm.predefined"
NODE_LOCAL_DRIVERS = ("bridge", "host")  # swarmkit's PredefinedNetworks, in its order


def predefined_networks(now_ns: int) -> list[Network]:
    """The predefined networks `swarm init` writes, created at `now_ns`."""
    out = []
    for driver in NODE_LOCAL_DRIVERS:
        net = Network(id=new_object_id())
        net.meta.created_at_ns = net.meta.updated_at_ns = now_ns
        net.spec.annotations.name = driver
        net.spec.annotations.labels[PREDEFINED_LABEL] = "true"
        net.spec.driver = driver
        out.append(net)
    return out


def is_predefined(network: Network) -> bool:
    return network.spec.annotations.labels.get(PREDEFINED_LABEL) == "true"


def is_node_local(network: Network | None) -> bool:
    """A network each node has its own of (nothing to allocate, no overlay to program)."""
    return network is not None and network.spec.driver in NODE_LOCAL_DRIVERS
