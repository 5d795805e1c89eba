"""The Control gRPC service on 2377: clients write store transactions and list objects
through any manager (a follower forwards writes to the leader); the leader alone creates
networks (`CreateNetwork`: a follower answers "not the leader", and its caller, `LeaderCalls`,
goes to the leader)."""

from __future__ import annotations

from typing import Any

import grpc

from controlplane.manager.network_create import NetworkCreator
from controlplane.manager.refusals import REFUSALS, abort_refused
from controlplane.pb import control_pb2, control_pb2_grpc, objects_pb2
from controlplane.pb.objects_pb2 import Network
from controlplane.raft.driver import RaftDriver
from controlplane.raft.transport import answer_rpc
from controlplane.store import KINDS, Store
from controlplane.store.kinds import kind_label, snapshot_field

MAX_TIMEOUT = 120.0


def _timeout(requested: float, default: float = 10.0) -> float:
    return min(requested, MAX_TIMEOUT) if requested > 0 else default


class ControlService(control_pb2_grpc.ControlServicer):
    def __init__(self, driver: RaftDriver, store: Store, networks: NetworkCreator) -> None:
        self._driver = driver
        self._store = store
        self._networks = networks

    def register(self, server: grpc.aio.Server) -> None:
        control_pb2_grpc.add_ControlServicer_to_server(self, server)

    async def Write(
        self, request: control_pb2.WriteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> control_pb2.WriteResponse:
        if not request.transaction.actions:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty transaction")
        data = request.transaction.SerializeToString(deterministic=True)
        index, result = await answer_rpc(
            context, self._driver.propose(data, _timeout(request.timeout_seconds))
        )
        return control_pb2.WriteResponse(
            index=index, result=objects_pb2.StoreTransactionResult.FromString(result)
        )

    async def List(
        self, request: control_pb2.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> control_pb2.ListResponse:
        labels = {kind_label(k): k for k in KINDS}
        if request.kind and request.kind not in labels:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown kind {request.kind!r}; expected one of {', '.join(labels)}",
            )
        if request.linearizable:
            await answer_rpc(
                context, self._driver.linearizable_read(_timeout(request.timeout_seconds))
            )
        objects = objects_pb2.StoreSnapshot.FromString(self._store.snapshot())
        if request.kind:
            for kind in KINDS:
                if kind_label(kind) != request.kind:
                    objects.ClearField(snapshot_field(kind))  # type: ignore[arg-type]
        for secret in objects.secrets:  # a secret's data never leaves the managers (swarmkit)
            secret.spec.ClearField("data")
        return control_pb2.ListResponse(objects=objects, applied_index=self._store.applied_index)

    async def CreateNetwork(
        self,
        request: control_pb2.CreateNetworkRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> control_pb2.CreateNetworkResponse:
        if not request.spec.annotations.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the network spec has no name")

        async def create() -> tuple[int, Network]:
            try:
                return await self._networks.create(request.spec, _timeout(request.timeout_seconds))
            except REFUSALS as refusal:
                await abort_refused(context, refusal)

        index, network = await answer_rpc(context, create())
        return control_pb2.CreateNetworkResponse(network=network, index=index)
