"""A node removed with `docker node rm` keeps a valid certificate; every manager refuses it by
id (swarmkit's words) until that certificate has expired, over real mutual-TLS gRPC too."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from controlplane.manager.authz import RoleInterceptor
from controlplane.manager.ca import (
    MANAGER_ROLE,
    NODE_CERT_VALIDITY,
    WORKER_ROLE,
    NodeIdentity,
    PermissionDeniedError,
    RootCA,
    channel_credentials,
    channel_options,
    server_credentials,
)
from controlplane.manager.removed_nodes import ORPHANED_MESSAGE, RemovedNodes, removal
from controlplane.pb.objects_pb2 import Cluster, Node, RemovedNode, Task
from controlplane.store import Store, StoreError, Transaction
from tests.unit.cluster_builders import T0
from tests.unit.swarm_fixture import ready_node

CLUSTER = "cluster-removed"
LAB_ADDR = "127.77.160.1"
VALIDITY_NS = int(NODE_CERT_VALIDITY.total_seconds()) * 1_000_000_000


class Swarm:
    def __init__(self) -> None:
        self.store = Store()
        self.index = 0
        cluster = Cluster(id=CLUSTER)
        cluster.spec.annotations.name = "default"
        txn = Transaction().create(cluster)
        for name in ("worker-1", "worker-2"):
            txn.create(ready_node(name, name))
        running = Task(id="task-1", node_id="worker-1", desired_state="running")
        running.status.state = "running"
        txn.create(running)
        self.apply(txn)

    def apply(self, txn: Transaction) -> None:
        self.index += 1
        err = StoreError.from_result(self.store.apply(self.index, txn.encode()))
        assert err is None, err.message

    def remove(self, node_id: str, now_ns: int = T0) -> int:
        node = self.store.get(Node, node_id)
        assert node is not None
        txn, orphaned = removal(self.store, node, now_ns)
        self.apply(txn)
        return orphaned

    def cluster(self) -> Cluster:
        cluster = self.store.get(Cluster, CLUSTER)
        assert cluster is not None
        return cluster


def test_removal_orphans_tasks_remembers_the_node_and_deletes_it() -> None:
    swarm = Swarm()
    assert swarm.remove("worker-1") == 1
    assert swarm.store.get(Node, "worker-1") is None
    task = swarm.store.get(Task, "task-1")
    assert task is not None
    assert (task.status.state, task.status.message) == ("orphaned", ORPHANED_MESSAGE)
    assert list(swarm.cluster().removed_nodes) == [
        RemovedNode(node_id="worker-1", expires_at_ns=T0 + VALIDITY_NS)
    ]


def test_a_removed_node_is_refused_until_its_certificates_have_expired() -> None:
    swarm = Swarm()
    removed = RemovedNodes(swarm.store)
    removed.check("worker-1", T0)  # still a member: no refusal
    swarm.remove("worker-1")
    with pytest.raises(PermissionDeniedError, match="node worker-1 was removed from swarm"):
        removed.check("worker-1", T0 + 1)
    removed.check("worker-2", T0 + 1)
    removed.check("worker-1", T0 + VALIDITY_NS)  # expired: TLS refuses the certificate itself
    # A later removal forgets the expired entries.
    swarm.remove("worker-2", T0 + VALIDITY_NS + 1)
    assert [r.node_id for r in swarm.cluster().removed_nodes] == ["worker-2"]


def test_a_concurrent_cluster_write_makes_the_removal_retry() -> None:
    swarm = Swarm()
    node = swarm.store.get(Node, "worker-1")
    assert node is not None
    stale, _orphaned = removal(swarm.store, node, T0)
    moved = swarm.cluster()
    moved.spec.annotations.labels["rotated"] = "yes"
    swarm.apply(Transaction().update(moved))
    swarm.index += 1
    err = StoreError.from_result(swarm.store.apply(swarm.index, stale.encode()))
    assert err is not None and err.message == "update out of sequence"
    assert swarm.store.get(Node, "worker-1") is not None  # nothing of it applied


def issued(root: RootCA, node_id: str, role: str) -> NodeIdentity:
    identity = NodeIdentity.create(node_id)
    cert = root.issue(identity.csr_pem, node_id, role, CLUSTER)
    return NodeIdentity(identity.node_id, identity.key, identity.csr_pem, cert)


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


def test_every_call_of_a_removed_node_is_refused_over_mutual_tls() -> None:
    root = RootCA.create()
    swarm = Swarm()
    manager = issued(root, "manager-1", MANAGER_ROLE)
    gone, member = issued(root, "worker-1", WORKER_ROLE), issued(root, "worker-2", WORKER_ROLE)
    service = "swarmlab.test.Probe"
    roles = {service: (MANAGER_ROLE, WORKER_ROLE)}

    async def call(port: int, identity: NodeIdentity) -> bytes:
        creds = channel_credentials(identity, root)
        async with grpc.aio.secure_channel(f"{LAB_ADDR}:{port}", creds, channel_options()) as ch:
            stub = ch.unary_unary(f"/{service}/Echo")
            answer = await stub(b"ping", timeout=10)
            assert isinstance(answer, bytes)
            return answer

    async def scenario() -> None:
        authz = RoleInterceptor(root, CLUSTER, roles, removed=RemovedNodes(swarm.store))
        server = grpc.aio.server(interceptors=[authz])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    service, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
                ),
            )
        )
        port = server.add_secure_port(f"{LAB_ADDR}:0", server_credentials(manager, root))
        await server.start()
        try:
            assert await call(port, gone) == b"ping"  # a member so far
            swarm.remove("worker-1", now_ns=time.time_ns())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(port, gone)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refused.value.details() == (
                "Permission denied: node worker-1 was removed from swarm"
            )
            assert await call(port, member) == b"ping"
        finally:
            await server.stop(None)

    asyncio.run(scenario())
