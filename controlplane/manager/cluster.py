"""The swarm-wide objects `swarm init` and `swarm join` write: the Cluster (root CA, join
tokens, address pools, timings) and each node's Node object."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from controlplane.ids import new_object_id
from controlplane.manager import tokens
from controlplane.manager.allocator import Allocator
from controlplane.manager.roles import MANAGER_ROLE, WORKER_ROLE
from controlplane.pb.objects_pb2 import Cluster, IPAMConfig, Network, Node
from controlplane.store import Store

if TYPE_CHECKING:
    from controlplane.manager.ca import RootCA

DEFAULT_ADDR_POOL = "10.0.0.0/8"
DEFAULT_SUBNET_SIZE = 24
DEFAULT_DATA_PATH_PORT = 4789
SWARM_HEARTBEAT_PERIOD_NS = 5_000_000_000  # Swarm's dispatcher default


@dataclass(frozen=True)
class ClusterSettings:
    """What `swarm init` lets the user choose (Docker's flags)."""

    default_addr_pool: tuple[str, ...] = ()  # none: DEFAULT_ADDR_POOL, unshown as in Swarm
    subnet_size: int = DEFAULT_SUBNET_SIZE
    data_path_port: int = DEFAULT_DATA_PATH_PORT
    snapshot_interval: int = 10_000
    election_tick: int = 10
    heartbeat_tick: int = 1
    heartbeat_period_ns: int = SWARM_HEARTBEAT_PERIOD_NS
    labels: dict[str, str] = field(default_factory=dict)
    task_history_limit: int | None = None  # None: HISTORY_LIMIT
    node_cert_expiry_ns: int = 0  # 0: NODE_CERT_VALIDITY


def new_cluster(cluster_id: str, settings: ClusterSettings, root: RootCA | None) -> Cluster:
    """The Cluster `swarm init` writes. Without `root` (the Raft-only managers of
    `raft_lab.py`, which no node can join) it has no CA and no join tokens."""
    now = time.time_ns()
    cluster = Cluster(id=cluster_id, subnet_size=settings.subnet_size)
    cluster.meta.created_at_ns = cluster.meta.updated_at_ns = now
    cluster.spec.annotations.name = "default"
    cluster.spec.annotations.labels.update(settings.labels)
    cluster.spec.raft.snapshot_interval = settings.snapshot_interval
    cluster.spec.raft.log_entries_for_slow_followers = 500
    cluster.spec.raft.election_tick = settings.election_tick
    cluster.spec.raft.heartbeat_tick = settings.heartbeat_tick
    cluster.spec.dispatcher_heartbeat_period_ns = settings.heartbeat_period_ns
    if settings.task_history_limit is not None:
        cluster.spec.task_history_retention_limit = settings.task_history_limit
    cluster.spec.node_cert_expiry_ns = settings.node_cert_expiry_ns
    cluster.default_address_pool.extend(settings.default_addr_pool)
    cluster.data_path_port = settings.data_path_port
    if root is None:
        return cluster
    cluster.root_ca.ca_cert_pem = root.cert_pem
    cluster.root_ca.ca_key_pem = root.key_pem()
    cluster.root_ca.ca_cert_digest = tokens.root_ca_digest(root.cert_pem)
    join_tokens = tokens.JoinTokens.create(root.cert_pem)
    cluster.root_join_tokens.worker = join_tokens.worker
    cluster.root_join_tokens.manager = join_tokens.manager
    return cluster


def ingress_network(cluster: Cluster) -> Network:
    """The `ingress` overlay `swarm init` creates for the routing mesh: the first block of the
    default pool (10.0.0.0/24) and the first VNI (4096), as Swarm gives it."""
    network_id = new_object_id()
    allocation = Allocator.for_cluster(cluster).allocate_network(network_id, "ingress")
    now = time.time_ns()
    net = Network(id=network_id, vni=allocation.vni)
    net.meta.created_at_ns = net.meta.updated_at_ns = now
    net.spec.annotations.name = "ingress"
    net.spec.driver = "overlay"
    net.spec.ingress = True
    for pool in allocation.pools:
        net.ipam.append(IPAMConfig(subnet=pool.subnet, range=pool.ip_range, gateway=pool.gateway))
    return net


def the_cluster(store: Store) -> Cluster | None:
    clusters = store.list(Cluster)
    return clusters[0] if clusters else None


NODE_CERT_VALIDITY = timedelta(hours=2160)  # Swarm's default: 90 days
MIN_NODE_CERT_EXPIRY_NS = 3600 * 1_000_000_000  # swarmkit's minimum: one hour


def node_cert_validity(cluster: Cluster) -> timedelta:
    """How long the node certificates issued now are valid (`swarm update --cert-expiry`)."""
    if cluster.spec.node_cert_expiry_ns:
        return timedelta(microseconds=cluster.spec.node_cert_expiry_ns // 1000)
    return NODE_CERT_VALIDITY


def node_cert_validity_ns(cluster: Cluster) -> int:
    return cluster.spec.node_cert_expiry_ns or int(NODE_CERT_VALIDITY.total_seconds()) * 10**9


def signing_ca(cluster: Cluster) -> RootCA:
    from controlplane.manager.ca import RootCA

    return RootCA.from_pem(cluster.root_ca.ca_cert_pem, cluster.root_ca.ca_key_pem)


def join_tokens(cluster: Cluster) -> tokens.JoinTokens:
    return tokens.JoinTokens(
        worker=cluster.root_join_tokens.worker, manager=cluster.root_join_tokens.manager
    )


def with_join_tokens(cluster: Cluster, new: tokens.JoinTokens) -> Cluster:
    updated = Cluster()
    updated.CopyFrom(cluster)
    updated.root_join_tokens.worker = new.worker
    updated.root_join_tokens.manager = new.manager
    updated.meta.updated_at_ns = time.time_ns()
    return updated


def docker_role(ca_role: str) -> str:
    """swarm-manager -> manager, swarm-worker -> worker."""
    return {MANAGER_ROLE: "manager", WORKER_ROLE: "worker"}[ca_role]


@dataclass(frozen=True)
class NodeDescription:
    hostname: str
    advertise_addr: str  # host:2377
    data_path_addr: str = ""  # default: the advertise host
    availability: str = "active"
    os: str = "linux"
    architecture: str = "x86_64"
    engine_version: str = "20.10.24-swarmlab"


def node_object(node_id: str, role: str, desc: NodeDescription, data_path_port: int) -> Node:
    """A node as the swarm first records it: state unknown until its agent's session with
    the dispatcher makes it ready."""
    now = time.time_ns()
    host = desc.advertise_addr.rpartition(":")[0]
    node = Node(id=node_id, role=role)
    node.meta.created_at_ns = node.meta.updated_at_ns = now
    node.spec.desired_role = role
    node.spec.availability = desc.availability or "active"
    node.description.hostname = desc.hostname
    node.description.os = desc.os
    node.description.architecture = desc.architecture
    node.description.engine_version = desc.engine_version
    node.description.data_path_addr = desc.data_path_addr or host
    node.description.data_path_port = data_path_port
    node.status.state = "unknown"
    node.status.addr = host
    if role == "manager":
        node.manager_status.addr = desc.advertise_addr
    return node
