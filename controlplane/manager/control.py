"""The Control gRPC service on 2377: clients write store transactions and list objects
through any manager (a follower forwards writes to the leader); the leader alone creates
networks (`CreateNetwork`: a follower answers "not the leader", and its caller, `LeaderCalls`,
goes to the leader).

Writes come one per unary call (`Write`) or many on one stream (`WriteStream`): both go through
`ControlService.write`. A stream costs the server about a third of a unary call's gRPC work per
write (two completions instead of four, see bench/README.md), and lets a client keep several
writes in flight, each answered, with its proposal id, once committed and applied.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from controlplane.manager.network_create import NetworkCreator
from controlplane.manager.refusals import REFUSALS, abort_refused
from controlplane.pb import control_pb2, control_pb2_grpc, objects_pb2
from controlplane.pb.objects_pb2 import Network
from controlplane.raft.driver import RaftDriver
from controlplane.raft.errors import InvalidRequestError
from controlplane.raft.transport import answer_rpc
from controlplane.store import KINDS, Store
from controlplane.store.kinds import kind_label, snapshot_field
from controlplane.stream_calls import StreamAnswers, answered_error

MAX_TIMEOUT = 120.0
# Writes one stream may have in flight; past it the stream's next message is read only once
# one of them is answered (flow control reaches the client), so a client cannot pile up
# proposals without bound.
MAX_STREAM_IN_FLIGHT = 1024


def _timeout(requested: float, default: float = 10.0) -> float:
    return min(requested, MAX_TIMEOUT) if requested > 0 else default


class ControlService(control_pb2_grpc.ControlServicer):
    def __init__(self, driver: RaftDriver, store: Store, networks: NetworkCreator) -> None:
        self._driver = driver
        self._store = store
        self._networks = networks

    def register(self, server: grpc.aio.Server) -> None:
        control_pb2_grpc.add_ControlServicer_to_server(self, server)

    async def write(self, request: control_pb2.WriteRequest) -> control_pb2.WriteResponse:
        """One write, for both RPCs: propose the transaction through the leader and return
        once this manager has applied it (acknowledged = durable on a majority). Raises our
        errors (raft/errors.py); the store's own refusal (a name taken, a stale version) is
        a result, not an error."""
        if not request.transaction.actions:
            raise InvalidRequestError("empty transaction: a write needs at least one action")
        data = request.transaction.SerializeToString(deterministic=True)
        index, result = await self._driver.propose(data, _timeout(request.timeout_seconds))
        return control_pb2.WriteResponse(
            index=index, result=objects_pb2.StoreTransactionResult.FromString(result)
        )

    async def Write(
        self, request: control_pb2.WriteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> control_pb2.WriteResponse:
        return await answer_rpc(context, self.write(request))

    async def WriteStream(  # type: ignore[override]  # grpc.aio: answers by context.write
        self,
        requests: AsyncIterator[control_pb2.WriteRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Each request is a write of its own, answered when done (so possibly out of
        order) with its proposal id; a write that fails gets an error answer and the stream
        goes on. When the client closes its side, the writes in flight are still answered;
        when it cancels, they are left to the driver: each is applied exactly once or never,
        as a unary write whose caller went away. A message that is no WriteRequest ends the
        stream with INVALID_ARGUMENT; one over gRPC's size limit with RESOURCE_EXHAUSTED."""
        answers = StreamAnswers(context, self._answer_streamed, MAX_STREAM_IN_FLIGHT)
        await answers.serve(requests, "WriteRequest")

    async def _answer_streamed(
        self, request: control_pb2.WriteRequest
    ) -> control_pb2.WriteResponse:
        proposal_id = request.transaction.proposal_id
        try:
            if not proposal_id:
                raise InvalidRequestError(
                    "a streamed write needs transaction.proposal_id (its answer carries it)"
                )
            response = await self.write(request)
        except Exception as err:
            kind, message = answered_error(err)
            response = control_pb2.WriteResponse(
                error=control_pb2.WriteError(kind=kind, message=message)
            )
        response.proposal_id = proposal_id
        return response

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
