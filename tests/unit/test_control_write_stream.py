"""`Control/WriteStream`: many writes on one stream, each answered with its proposal id once
applied, in the order they finish; bad writes get error answers and the stream goes on; a
message that is no WriteRequest, or one over the size limit, ends the stream with a clear
status; a client that cancels mid-write neither loses nor duplicates a committed write; only
managers may call it.

Served over real gRPC sockets on 127.77.236.x (this file's range)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from controlplane.client import ManagerClient, WriteStream, network_object
from controlplane.manager import control
from controlplane.manager.authz import RoleInterceptor
from controlplane.manager.ca import (
    MANAGER_ROLE,
    WORKER_ROLE,
    NodeIdentity,
    RootCA,
    channel_credentials,
    channel_options,
    server_credentials,
)
from controlplane.manager.control import ControlService
from controlplane.manager.network_create import NetworkCreator
from controlplane.pb import control_pb2, objects_pb2
from controlplane.raft.core import NotLeaderError
from controlplane.raft.driver import RaftDriver
from controlplane.raft.errors import (
    InvalidRequestError,
    ProposalTimeoutError,
    RemoteNotLeaderError,
)
from controlplane.raft.transport import MAX_GRPC_MESSAGE, SERVER_OPTIONS
from controlplane.store import Store
from tests.polling import eventually
from tests.raft_testing import one_manager

HOST = "127.77.236"
CLUSTER = "cluster-ws"


def transaction(name: str, proposal_id: bytes | None = None) -> objects_pb2.StoreTransaction:
    action = objects_pb2.StoreAction(
        kind=objects_pb2.STORE_ACTION_CREATE, network=network_object(name)
    )
    return objects_pb2.StoreTransaction(
        actions=[action], proposal_id=proposal_id if proposal_id is not None else name.encode()
    )


def request_bytes(name: str, proposal_id: bytes | None = None) -> bytes:
    request = control_pb2.WriteRequest(transaction=transaction(name, proposal_id))
    return request.SerializeToString()


class HeldDriver:
    """A driver whose proposals wait until the test settles them, one by one, by proposal
    id: what lets a test choose the order writes finish in, or fail them."""

    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[tuple[int, bytes]]] = {}

    async def propose(self, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        proposal_id = objects_pb2.StoreTransaction.FromString(data).proposal_id
        future = asyncio.get_running_loop().create_future()
        self.waiting[proposal_id] = future
        return await future

    def commit(self, proposal_id: bytes, index: int) -> None:
        ok = objects_pb2.StoreTransactionResult(ok=True).SerializeToString()
        self.waiting.pop(proposal_id).set_result((index, ok))

    def fail(self, proposal_id: bytes, error: Exception) -> None:
        self.waiting.pop(proposal_id).set_exception(error)


@contextlib.asynccontextmanager
async def served(
    driver: Any,
    address: str,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[str]:
    """A Control service on `address` (a free port) in front of `driver`."""
    service = ControlService(cast(RaftDriver, driver), Store(), cast(NetworkCreator, None))
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=list(interceptors) or None)
    service.register(server)
    if credentials is not None:
        port = server.add_secure_port(f"{address}:0", credentials)
    else:
        port = server.add_insecure_port(f"{address}:0")
    await server.start()
    try:
        yield f"{address}:{port}"
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def served_channel(driver: Any) -> AsyncIterator[grpc.aio.Channel]:
    """A plain channel to a Control service (`served`) in front of `driver`."""
    async with (
        served(driver, f"{HOST}.1") as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield channel


def raw_stream(channel: grpc.aio.Channel) -> Any:
    """A WriteStream call on bytes, to see each answer as sent and to send anything."""
    return channel.stream_stream("/controlplane.v1.Control/WriteStream", None, None)()


def answer(raw: Any) -> control_pb2.WriteResponse:
    assert isinstance(raw, bytes), f"expected an answer, got {raw!r}"
    return control_pb2.WriteResponse.FromString(raw)


def test_writes_on_one_stream_are_answered_as_they_finish_with_their_proposal_ids() -> None:
    async def scenario() -> None:
        driver = HeldDriver()
        async with served_channel(driver) as channel:
            call = raw_stream(channel)
            for name in ("w1", "w2", "w3"):
                await call.write(request_bytes(name))
            await eventually("three proposals", lambda: len(driver.waiting) == 3)
            # They finish in another order than sent: each answer names its write.
            for proposal_id, index in ((b"w3", 7), (b"w1", 5), (b"w2", 6)):
                driver.commit(proposal_id, index)
                got = answer(await call.read())
                assert (got.proposal_id, got.index, got.result.ok) == (proposal_id, index, True)
                assert not got.HasField("error")
            # Closing our side ends the stream cleanly once everything is answered.
            await call.write(request_bytes("w4"))
            await call.done_writing()
            await eventually("the last proposal", lambda: b"w4" in driver.waiting)
            driver.commit(b"w4", 8)
            assert answer(await call.read()).proposal_id == b"w4"
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK

    asyncio.run(scenario())


def test_the_client_pipelines_writes_and_matches_answers_out_of_order() -> None:
    async def scenario() -> None:
        driver = HeldDriver()
        async with served(driver, f"{HOST}.1") as address, ManagerClient(address) as client:
            stream = client.write_stream()
            writes = [asyncio.create_task(stream.write(transaction(f"p{n}"))) for n in range(1, 6)]
            await eventually("five proposals", lambda: len(driver.waiting) == 5)
            for n in (4, 2, 5, 1, 3):
                driver.commit(f"p{n}".encode(), 100 + n)
            responses = await asyncio.gather(*writes)
            assert [r.index for r in responses] == [101, 102, 103, 104, 105]
            assert [r.proposal_id for r in responses] == [f"p{n}".encode() for n in range(1, 6)]
            await stream.close()

    asyncio.run(scenario())


def test_a_stream_holds_at_most_its_limit_of_writes_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(control, "MAX_STREAM_IN_FLIGHT", 2)

    async def scenario() -> None:
        driver = HeldDriver()
        async with served_channel(driver) as channel:
            call = raw_stream(channel)
            for name in ("m1", "m2", "m3"):
                await call.write(request_bytes(name))
            await eventually("two proposals", lambda: len(driver.waiting) == 2)
            # Time for an uncapped server to read the third (it cannot make this test flaky:
            # a slow machine only lets a broken cap pass unnoticed).
            await asyncio.sleep(0.2)
            assert set(driver.waiting) == {b"m1", b"m2"}
            driver.commit(b"m1", 1)
            assert answer(await call.read()).proposal_id == b"m1"
            await eventually("the third proposal", lambda: b"m3" in driver.waiting)
            call.cancel()

    asyncio.run(scenario())


def test_bad_writes_get_error_answers_and_the_stream_goes_on() -> None:
    async def scenario() -> None:
        driver = HeldDriver()
        async with served_channel(driver) as channel:
            call = raw_stream(channel)
            # No actions: refused before Raft sees it.
            empty = control_pb2.WriteRequest(
                transaction=objects_pb2.StoreTransaction(proposal_id=b"e1")
            )
            await call.write(empty.SerializeToString())
            got = answer(await call.read())
            assert (got.proposal_id, got.error.kind) == (b"e1", "invalid")
            assert "empty transaction" in got.error.message
            # No proposal id: its answer could not be told apart from another's.
            await call.write(request_bytes("anonymous", proposal_id=b""))
            got = answer(await call.read())
            assert (got.proposal_id, got.error.kind) == (b"", "invalid")
            assert "proposal_id" in got.error.message
            # The same stream still writes.
            await call.write(request_bytes("fine"))
            await eventually("the good write", lambda: b"fine" in driver.waiting)
            driver.commit(b"fine", 3)
            got = answer(await call.read())
            assert (got.proposal_id, got.index, got.HasField("error")) == (b"fine", 3, False)
            call.cancel()

    asyncio.run(scenario())


def test_the_client_raises_the_managers_errors_per_write() -> None:
    async def scenario() -> None:
        driver = HeldDriver()
        async with (
            served(driver, f"{HOST}.1") as address,
            ManagerClient(address) as client,
            client.write_stream() as stream,
        ):
            with pytest.raises(InvalidRequestError, match="empty transaction"):
                await stream.write(objects_pb2.StoreTransaction(proposal_id=b"x"))
            # A transaction without an id is given one.
            unnamed = transaction("unnamed", proposal_id=b"")
            write = asyncio.create_task(stream.write(unnamed))
            await eventually("the proposal", lambda: len(driver.waiting) == 1)
            assert unnamed.proposal_id and unnamed.proposal_id in driver.waiting
            driver.commit(unnamed.proposal_id, 9)
            assert (await write).index == 9

    asyncio.run(scenario())


def test_a_broken_stream_fails_the_writes_in_flight_and_every_later_one() -> None:
    async def scenario() -> None:
        driver = HeldDriver()
        server = grpc.aio.server(options=SERVER_OPTIONS)
        ControlService(cast(RaftDriver, driver), Store(), cast(NetworkCreator, None)).register(
            server
        )
        port = server.add_insecure_port(f"{HOST}.4:0")
        await server.start()
        async with ManagerClient(f"{HOST}.4:{port}") as client, client.write_stream() as stream:
            pending = asyncio.create_task(stream.write(transaction("cut")))
            await eventually("the proposal", lambda: b"cut" in driver.waiting)
            await server.stop(None)  # the manager goes away mid-write
            with pytest.raises(ProposalTimeoutError, match="write stream broke"):
                await pending
            with pytest.raises(ProposalTimeoutError, match="write stream broke"):
                await stream.write(transaction("later"))

    asyncio.run(scenario())


async def a_new_stream_is_served(
    channel: grpc.aio.Channel, driver: HeldDriver, name: str, index: int
) -> None:
    """The server goes on serving new streams after one it ended."""
    again = raw_stream(channel)
    await again.write(request_bytes(name))
    await eventually("a write on a new stream", lambda: name.encode() in driver.waiting)
    driver.commit(name.encode(), index)
    assert answer(await again.read()).proposal_id == name.encode()
    again.cancel()


def test_an_undecodable_message_ends_the_stream_after_answering_the_writes_before_it() -> None:
    async def scenario() -> None:
        driver = HeldDriver()
        async with served_channel(driver) as channel:
            call = raw_stream(channel)
            await call.write(request_bytes("before"))
            await eventually("the first write", lambda: b"before" in driver.waiting)
            await call.write(b"\xff\xff\xff\xff")  # not a protobuf message
            await asyncio.sleep(0)
            driver.commit(b"before", 4)
            assert answer(await call.read()).proposal_id == b"before"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a WriteRequest" in (err.value.details() or "")
            await a_new_stream_is_served(channel, driver, "after", 5)

    asyncio.run(scenario())


def test_an_oversized_message_ends_the_stream_with_resource_exhausted() -> None:
    async def scenario() -> None:
        driver = HeldDriver()
        async with (
            served(driver, f"{HOST}.1") as address,
            grpc.aio.insecure_channel(
                address, [("grpc.max_send_message_length", 2 * MAX_GRPC_MESSAGE)]
            ) as channel,
        ):
            call = raw_stream(channel)
            huge = transaction("huge")
            huge.actions[0].network.spec.annotations.labels["v"] = "x" * (MAX_GRPC_MESSAGE + 1)
            await call.write(control_pb2.WriteRequest(transaction=huge).SerializeToString())
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert driver.waiting == {}  # never proposed
            await a_new_stream_is_served(channel, driver, "small", 2)

    asyncio.run(scenario())


def test_a_leader_change_mid_stream_answers_each_pending_write_with_not_leader() -> None:
    async def scenario() -> None:
        driver = HeldDriver()
        async with (
            served(driver, f"{HOST}.1") as address,
            ManagerClient(address) as client,
            client.write_stream() as stream,
        ):
            pending = [asyncio.create_task(stream.write(transaction(f"l{n}"))) for n in range(3)]
            await eventually("three proposals", lambda: len(driver.waiting) == 3)
            for proposal_id in list(driver.waiting):
                driver.fail(proposal_id, NotLeaderError(0x2B))
            for write in pending:
                with pytest.raises(RemoteNotLeaderError, match="is not the leader"):
                    await write
            # The stream survives: the next write goes through.
            after = asyncio.create_task(stream.write(transaction("after")))
            await eventually("the next proposal", lambda: b"after" in driver.waiting)
            driver.commit(b"after", 11)
            assert (await after).index == 11

    asyncio.run(scenario())


class LateDriver:
    """Stands for the driver in the Control service, which the driver itself starts."""

    driver: RaftDriver | None = None

    async def propose(self, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        assert self.driver is not None
        return await self.driver.propose(data, timeout)


class RecordingStore(Store):
    """A store that counts how many times each proposal id was applied."""

    def __init__(self) -> None:
        super().__init__()
        self.applied_ids: collections.Counter[bytes] = collections.Counter()

    def apply_batch(self, index: int, transactions: Sequence[bytes]) -> list[bytes]:
        for data in transactions:
            self.applied_ids[objects_pb2.StoreTransaction.FromString(data).proposal_id] += 1
        return super().apply_batch(index, transactions)


def test_a_client_cancelling_mid_write_neither_loses_nor_duplicates_a_write(
    tmp_path: Path,
) -> None:
    """A real one-manager Raft: 200 writes pipelined on one stream, the stream cancelled
    at the first answer. Every answered write is applied once, every other at most once,
    and a new stream writes afterwards."""

    async def scenario() -> None:
        store = RecordingStore()
        address = f"{HOST}.2:2377"
        driver = LateDriver()

        def register(server: grpc.aio.Server) -> None:
            ControlService(cast(RaftDriver, driver), store, cast(NetworkCreator, None)).register(
                server
            )

        manager = None
        try:
            manager = await one_manager(tmp_path, address, store=store, services=[register])
            driver.driver = manager.driver
            async with ManagerClient(address) as client:
                stream = client.write_stream()
                ids = [f"c{n:03d}".encode() for n in range(200)]
                writes = [
                    asyncio.create_task(stream.write(transaction(i.decode(), i))) for i in ids
                ]
                # Cancelled at its first answer: the rest are queued, proposed or committed.
                await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                await stream.close()
                outcomes = await asyncio.gather(*writes, return_exceptions=True)
                answered = {
                    i
                    for i, o in zip(ids, outcomes, strict=True)
                    if isinstance(o, control_pb2.WriteResponse)
                }
                assert answered
                # Let the manager settle what was in flight, then count.
                raft = manager.driver
                await eventually(
                    "the manager to apply everything committed",
                    lambda: raft.applied >= raft.core.log.last_index(),
                )
                assert all(store.applied_ids[i] == 1 for i in answered)
                assert all(store.applied_ids[i] <= 1 for i in ids)
                async with client.write_stream() as again:
                    response = await again.write(transaction("after-cancel"))
                    assert response.result.ok
                assert store.applied_ids[b"after-cancel"] == 1
        finally:
            if manager is not None:
                await manager.driver.stop()

    asyncio.run(scenario())


def issued(root: RootCA, node_id: str, role: str) -> NodeIdentity:
    identity = NodeIdentity.create(node_id)
    cert = root.issue(identity.csr_pem, node_id, role, CLUSTER)
    return NodeIdentity(identity.node_id, identity.key, identity.csr_pem, cert)


def test_only_managers_may_write_on_a_stream() -> None:
    root = RootCA.create()
    server_identity = issued(root, "manager-1", MANAGER_ROLE)

    async def first_answer(identity: NodeIdentity, address: str) -> control_pb2.WriteResponse:
        credentials = channel_credentials(identity, root)
        async with grpc.aio.secure_channel(address, credentials, channel_options()) as channel:
            stream = WriteStream(raw_typed_stream(channel))
            try:
                return await stream.write(transaction("authz"), timeout=5)
            finally:
                await stream.close()

    async def scenario() -> None:
        driver = HeldDriver()
        async with served(
            driver,
            f"{HOST}.3",
            interceptors=[RoleInterceptor(root, CLUSTER)],
            credentials=server_credentials(server_identity, root),
        ) as address:
            worker = issued(root, "worker-1", WORKER_ROLE)
            with pytest.raises(ProposalTimeoutError, match="PERMISSION_DENIED"):
                await first_answer(worker, address)
            assert driver.waiting == {}
            manager = asyncio.create_task(
                first_answer(issued(root, "manager-2", MANAGER_ROLE), address)
            )
            await eventually("the manager's write", lambda: b"authz" in driver.waiting)
            driver.commit(b"authz", 1)
            assert (await manager).index == 1

    asyncio.run(scenario())


def raw_typed_stream(channel: grpc.aio.Channel) -> Any:
    return channel.stream_stream(
        "/controlplane.v1.Control/WriteStream",
        request_serializer=control_pb2.WriteRequest.SerializeToString,
        response_deserializer=control_pb2.WriteResponse.FromString,
    )()
