"""The NodeCA gRPC service on 2377: a joiner trades its join token and CSR for a node id and
a certificate, and the swarm records the new Node (through Raft, so any manager can serve it:
the root CA's key is in the replicated Cluster object, as in swarmkit)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from controlplane.ids import new_object_id
from controlplane.manager import cluster as clusters
from controlplane.manager.ca import (
    MANAGER_ROLE,
    WORKER_ROLE,
    CertificateError,
    peer_certificate,
    verify_node_cert,
)
from controlplane.manager.tokens import JoinTokenError
from controlplane.pb import ca_pb2, ca_pb2_grpc
from controlplane.pb.objects_pb2 import Node
from controlplane.raft.transport import answer_rpc
from controlplane.store import Store, StoreError, Transaction

Propose = Callable[[bytes], Awaitable[bytes]]


class NodeCAService(ca_pb2_grpc.NodeCAServicer):
    def __init__(self, store: Store, propose: Propose) -> None:
        self._store = store
        self._propose = propose

    def register(self, server: grpc.aio.Server) -> None:
        ca_pb2_grpc.add_NodeCAServicer_to_server(self, server)

    async def IssueNodeCertificate(
        self,
        request: ca_pb2.IssueNodeCertificateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ca_pb2.IssueNodeCertificateResponse:
        cluster = clusters.the_cluster(self._store)
        if cluster is None or not cluster.root_ca.ca_key_pem:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "this manager has not finished starting the swarm"
            )
            raise AssertionError  # abort raises
        try:
            ca_role = clusters.join_tokens(cluster).role_for(request.token)
        except JoinTokenError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            raise
        if not request.advertise_addr.rpartition(":")[0]:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the joining node must give its HOST:PORT"
            )
        node_id = new_object_id()
        try:
            cert = clusters.signing_ca(cluster).issue(
                request.csr_pem,
                node_id,
                ca_role,
                cluster.id,
                validity=clusters.node_cert_validity(cluster),
            )
        except (CertificateError, ValueError) as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            raise
        role = clusters.docker_role(ca_role)
        desc = clusters.NodeDescription(
            hostname=request.hostname or node_id,
            advertise_addr=request.advertise_addr,
            data_path_addr=request.data_path_addr,
            availability=request.availability or "active",
            os=request.os or "linux",
            architecture=request.architecture or "x86_64",
        )
        node = clusters.node_object(node_id, role, desc, cluster.data_path_port)
        result = await answer_rpc(context, self._propose(Transaction().create(node).encode()))
        error = StoreError.from_result(result)
        if error is not None:
            await context.abort(grpc.StatusCode.INTERNAL, f"could not record the node: {error}")
        return ca_pb2.IssueNodeCertificateResponse(
            node_id=node_id,
            role=role,
            certificate_pem=cert,
            root_ca_pem=cluster.root_ca.ca_cert_pem,
            cluster_id=cluster.id,
            data_path_port=cluster.data_path_port or clusters.DEFAULT_DATA_PATH_PORT,
        )

    async def RenewNodeCertificate(
        self,
        request: ca_pb2.RenewNodeCertificateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ca_pb2.IssueNodeCertificateResponse:
        """A member's new certificate for the role the swarm now records for it. NodeCA is a
        public service, so the caller's certificate is checked here, against the root."""
        cluster = clusters.the_cluster(self._store)
        if cluster is None or not cluster.root_ca.ca_key_pem:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "this manager has not finished starting the swarm"
            )
            raise AssertionError  # abort raises
        root = clusters.signing_ca(cluster)
        peer = peer_certificate(context)
        try:
            if peer is None:
                raise CertificateError("the caller presented no certificate")
            caller = verify_node_cert(peer, root)
        except CertificateError as err:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"Permission denied: {err}")
            raise
        node = self._store.get(Node, caller.node_id)
        if node is None or caller.cluster_id != cluster.id:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"node {caller.node_id} is not a member of this swarm (removed?); join it again",
            )
            raise AssertionError  # abort raises
        role = node.role or node.spec.desired_role or "worker"
        ca_role = MANAGER_ROLE if role == "manager" else WORKER_ROLE
        try:
            cert = root.issue(
                request.csr_pem,
                node.id,
                ca_role,
                cluster.id,
                validity=clusters.node_cert_validity(cluster),
            )
        except (CertificateError, ValueError) as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            raise
        return ca_pb2.IssueNodeCertificateResponse(
            node_id=node.id,
            role=role,
            certificate_pem=cert,
            root_ca_pem=cluster.root_ca.ca_cert_pem,
            cluster_id=cluster.id,
            data_path_port=cluster.data_path_port or clusters.DEFAULT_DATA_PATH_PORT,
        )
