"""A small client for a manager's 2377 services, used by the CLI, the demo, tests and benches."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import grpc

from controlplane.ids import new_object_id
from controlplane.pb import control_pb2, control_pb2_grpc, objects_pb2, raft_pb2, raft_pb2_grpc
from controlplane.raft.errors import (
    error_from_kind,
    rpc_error,
)
from controlplane.raft.transport import GRPC_OPTIONS
from controlplane.stream_calls import StreamCalls


def network_object(name: str, labels: Mapping[str, str] | None = None) -> objects_pb2.Network:
    now = time.time_ns()
    return objects_pb2.Network(
        id=new_object_id(),
        meta=objects_pb2.Meta(created_at_ns=now, updated_at_ns=now),
        spec=objects_pb2.NetworkSpec(
            annotations=objects_pb2.Annotations(name=name, labels=dict(labels or {})),
            driver="overlay",
        ),
    )


class ManagerClient:
    """One channel to one manager. Errors come back as the manager's own error types."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(address, GRPC_OPTIONS)
        self._control = control_pb2_grpc.ControlStub(self._channel)
        self._raft = raft_pb2_grpc.RaftStub(self._channel)

    async def __aenter__(self) -> ManagerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def _call(self, method: Any, request: Any, timeout: float) -> Any:
        try:
            return await method(request, timeout=timeout + 1.0)
        except grpc.aio.AioRpcError as err:
            raise rpc_error(err) from err

    async def write(
        self, transaction: objects_pb2.StoreTransaction, timeout: float = 10.0
    ) -> control_pb2.WriteResponse:
        request = control_pb2.WriteRequest(transaction=transaction, timeout_seconds=timeout)
        response: control_pb2.WriteResponse = await self._call(
            self._control.Write, request, timeout
        )
        return response

    def write_stream(self) -> WriteStream:
        """A `Control/WriteStream` call: many writes, several in flight at once if wanted."""
        # No request iterator: grpc.aio then lets the stream write() and read() directly.
        return WriteStream(self._control.WriteStream())  # type: ignore[call-arg]

    async def create_network(
        self, name: str, labels: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> control_pb2.WriteResponse:
        action = objects_pb2.StoreAction(
            kind=objects_pb2.STORE_ACTION_CREATE, network=network_object(name, labels)
        )
        txn = objects_pb2.StoreTransaction(actions=[action], proposal_id=secrets.token_bytes(16))
        return await self.write(txn, timeout)

    async def list(
        self, kind: str = "", *, linearizable: bool = False, timeout: float = 10.0
    ) -> control_pb2.ListResponse:
        request = control_pb2.ListRequest(
            kind=kind, linearizable=linearizable, timeout_seconds=timeout
        )
        response: control_pb2.ListResponse = await self._call(self._control.List, request, timeout)
        return response

    async def status(self, timeout: float = 5.0) -> raft_pb2.StatusResponse:
        response: raft_pb2.StatusResponse = await self._call(
            self._raft.Status, raft_pb2.StatusRequest(), timeout
        )
        return response

    async def remove_manager(self, node_id: int, timeout: float = 30.0) -> None:
        await self._call(self._raft.Leave, raft_pb2.LeaveRequest(node_id=node_id), timeout)


class WriteStream:
    """Writes on one `Control/WriteStream` call. `write` may be awaited by several callers at
    once: each answer names its write by proposal id. Errors come back as the manager's own
    error types; when the stream breaks, the writes in flight fail with ProposalTimeoutError
    (each may or may not have been committed) and the stream is done: open a new one."""

    def __init__(self, call: Any) -> None:
        self._calls: StreamCalls[control_pb2.WriteRequest, control_pb2.WriteResponse] = StreamCalls(
            call, _proposal_id_of, "write stream"
        )

    async def write(
        self, transaction: objects_pb2.StoreTransaction, timeout: float = 10.0
    ) -> control_pb2.WriteResponse:
        """Commit `transaction` (given a random proposal id if it has none); returns once
        the manager has applied it."""
        if not transaction.proposal_id:
            transaction.proposal_id = secrets.token_bytes(16)
        request = control_pb2.WriteRequest(transaction=transaction, timeout_seconds=timeout)
        response = await self._calls.request(request, transaction.proposal_id, timeout + 1.0)
        if response.HasField("error"):
            raise error_from_kind(response.error.kind, response.error.message)
        return response

    async def close(self) -> None:
        """End the stream; writes still in flight fail."""
        await self._calls.close()

    async def __aenter__(self) -> WriteStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _proposal_id_of(response: control_pb2.WriteResponse) -> bytes:
    return response.proposal_id
