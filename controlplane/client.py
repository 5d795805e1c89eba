"""A small client for a manager's 2377 services, used by the CLI, the demo, tests and benches."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Mapping
from typing import Any

import grpc

from controlplane.ids import new_object_id
from controlplane.pb import control_pb2, control_pb2_grpc, objects_pb2, raft_pb2, raft_pb2_grpc
from controlplane.raft.errors import ProposalTimeoutError, error_from_kind
from controlplane.raft.transport import GRPC_OPTIONS, TransportError, rpc_error


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
        self._call = call
        self._waiting: dict[bytes, asyncio.Future[control_pb2.WriteResponse]] = {}
        self._sending = asyncio.Lock()
        self._broken = ""  # why the stream broke; each failed write gets its own error
        self._reader = asyncio.create_task(self._read_answers())

    async def write(
        self, transaction: objects_pb2.StoreTransaction, timeout: float = 10.0
    ) -> control_pb2.WriteResponse:
        """Commit `transaction` (given a random proposal id if it has none); returns once
        the manager has applied it."""
        if self._broken:
            raise self._failure()
        if not transaction.proposal_id:
            transaction.proposal_id = secrets.token_bytes(16)
        proposal_id = transaction.proposal_id
        if proposal_id in self._waiting:
            raise ValueError(f"a write with proposal id {proposal_id.hex()} is already in flight")
        answer: asyncio.Future[control_pb2.WriteResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[proposal_id] = answer
        try:
            async with self._sending:
                await self._call.write(
                    control_pb2.WriteRequest(transaction=transaction, timeout_seconds=timeout)
                )
            async with asyncio.timeout(timeout + 1.0):
                response = await answer
        except TimeoutError:
            raise ProposalTimeoutError() from None
        except grpc.aio.AioRpcError as err:  # the write itself could not be sent
            raise self._break(rpc_error(err)) from err
        except asyncio.InvalidStateError as err:  # the call ended before the reader saw it
            raise self._break(TransportError(f"the write stream has ended: {err}")) from err
        finally:
            self._waiting.pop(proposal_id, None)
        if response.HasField("error"):
            raise error_from_kind(response.error.kind, response.error.message)
        return response

    async def _read_answers(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if not isinstance(response, control_pb2.WriteResponse):  # grpc.aio.EOF
                    raise TransportError("the manager ended the write stream")
                answer = self._waiting.get(response.proposal_id)
                if answer is not None and not answer.done():
                    answer.set_result(response)
        except grpc.aio.AioRpcError as err:
            self._break(rpc_error(err))
        except Exception as err:
            self._break(err)

    def _break(self, cause: Exception) -> Exception:
        """Fail every write in flight: the stream is gone, their outcomes unknown."""
        self._broken = self._broken or f"the write stream broke: {cause}"
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(self._failure())
        return self._failure()

    def _failure(self) -> ProposalTimeoutError:
        return ProposalTimeoutError(self._broken)

    async def close(self) -> None:
        """End the stream; writes still in flight fail."""
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._break(TransportError("the write stream was closed"))

    async def __aenter__(self) -> WriteStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
