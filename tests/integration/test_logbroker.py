"""The log broker, its agents and its subscribers over real gRPC sockets in one process: a
store with tasks on two nodes, each node an emulated runtime and a LogPublisher listening to
the broker, and the manager-side LogSubscriber. Raft is stood in for by a settable view.
Addresses: 127.77.231.0/24 (this suite's part of the logs range)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from polling import eventually

from controlplane.agent.logs import LogPublisher
from controlplane.agent.runtime import ContainerConfig, Runtime
from controlplane.agent.worker import TaskContainer
from controlplane.manager.dispatcher import LEADER_TRAILER, RaftView
from controlplane.manager.log_subscriber import LogStreamError, LogSubscriber
from controlplane.manager.logbroker import LogBroker
from controlplane.pb import logbroker_pb2_grpc
from controlplane.pb.logbroker_pb2 import (
    ListenSubscriptionsRequest,
    LogContext,
    LogMessage,
    LogSelector,
    LogStream,
    LogSubscriptionOptions,
    PublishLogsMessage,
    SubscribeLogsRequest,
)
from controlplane.pb.objects_pb2 import Task
from controlplane.store import Store, Transaction

pytestmark = pytest.mark.integration

DEADLINE = 30.0
LEADER = "127.77.231.1:2377"
FOLLOWER = "127.77.231.2:2377"


def insecure(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address)


@dataclass
class FakeNode:
    """One node's agent side: a runtime, its task containers, a publisher listening."""

    node_id: str
    runtime: Runtime = field(default_factory=Runtime)
    tasks: list[TaskContainer] = field(default_factory=list)
    publisher: LogPublisher | None = None
    listener: asyncio.Task[None] | None = None

    async def run_task(self, task_id: str, service_id: str, script: str) -> None:
        """Start the task's container; once it has written every line its script echoes."""
        container = self.runtime.create(
            ContainerConfig(image="busybox", command=["sh", "-c", script])
        )
        await self.runtime.start(container.id)
        self.tasks.append(TaskContainer(task_id, service_id, container.id))
        lines = script.count("echo ")
        await eventually(
            f"{task_id}'s lines", lambda: len(self.runtime.logs(container.id)) == lines
        )

    def listen(self, address: str) -> None:
        self.publisher = LogPublisher(self.node_id, self.runtime, lambda: list(self.tasks))
        self.listener = asyncio.create_task(self.publisher.listen(insecure(address)))

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.listener
        await self.runtime.close()


@dataclass
class Manager:
    address: str
    view: RaftView
    store: Store
    broker: LogBroker
    server: grpc.aio.Server

    def view_of(self) -> RaftView:
        return self.view


@contextlib.asynccontextmanager
async def manager(
    address: str,
    store: Store,
    *,
    leader: str | None = None,
    node_identity: Callable[[object], str | None] | None = None,
) -> AsyncIterator[Manager]:
    view = RaftView(is_leader=leader is None, leader_address=leader or address, managers=())
    holder: list[Manager] = []
    broker = LogBroker(
        store,
        lambda: holder[0].view,
        node_identity=node_identity,  # type: ignore[arg-type]
        poll_interval=0.02,
    )
    server = grpc.aio.server()
    broker.register(server)
    server.add_insecure_port(address)
    await server.start()
    holder.append(Manager(address, view, store, broker, server))
    await broker.start()
    try:
        yield holder[0]
    finally:
        await broker.stop()
        await server.stop(None)


class Cluster:
    """A store with service `web`: task w1 on node-a, w2 on node-b."""

    def __init__(self) -> None:
        self.store = Store()
        self._index = 0
        self.nodes = {n: FakeNode(n) for n in ("node-a", "node-b")}
        self.broker: LogBroker | None = None

    def add_task(self, task_id: str, node_id: str, service_id: str = "web") -> None:
        self._index += 1
        task = Task(id=task_id, node_id=node_id, service_id=service_id, slot=1)
        self.store.apply(self._index, Transaction().create(task).encode())

    async def start(
        self, address: str, *, listening: tuple[str, ...] = ("node-a", "node-b")
    ) -> None:
        for task_id, node_id in (("w1", "node-a"), ("w2", "node-b")):
            self.add_task(task_id, node_id)
            await self.nodes[node_id].run_task(
                task_id, "web", f"echo {task_id} one; echo {task_id} two; sleep 1000"
            )
        self.add_task("other", "node-a", service_id="db")
        await self.nodes["node-a"].run_task("other", "db", "echo not mine; sleep 1000")
        for node_id in listening:
            self.nodes[node_id].listen(address)
        broker = self.broker
        assert broker is not None
        await eventually("every agent is listening", lambda: broker.listening >= set(listening))

    async def stop(self) -> None:
        for node in self.nodes.values():
            await node.stop()


def scenario(test: Callable[[Cluster, Manager], Awaitable[None]]) -> None:
    async def main() -> None:
        cluster = Cluster()
        async with manager(LEADER, cluster.store) as leader:
            cluster.broker = leader.broker
            try:
                await test(cluster, leader)
            finally:
                await cluster.stop()

    asyncio.run(main())


def request(
    *,
    services: tuple[str, ...] = (),
    tasks: tuple[str, ...] = (),
    follow: bool = False,
    tail: int | None = None,
    streams: tuple[int, ...] = (),
) -> SubscribeLogsRequest:
    options = LogSubscriptionOptions(follow=follow, streams=streams)  # type: ignore[arg-type]
    if tail is not None:
        options.tail = tail
    return SubscribeLogsRequest(
        selector=LogSelector(service_ids=services, task_ids=tasks), options=options
    )


async def collect(stream: AsyncGenerator[list[LogMessage], None]) -> list[tuple[str, str]]:
    """(task id, text) of every line until the broker ends the subscription."""
    async with asyncio.timeout(DEADLINE):
        return [(m.context.task_id, m.data.decode()) async for batch in stream for m in batch]


def subscriber(address: str = LEADER) -> LogSubscriber:
    view = RaftView(is_leader=False, leader_address=address, managers=())
    return LogSubscriber(lambda: view, insecure)


def test_a_service_selector_gathers_every_nodes_lines_and_ends_when_all_are_done() -> None:
    async def test(cluster: Cluster, _leader: Manager) -> None:
        await cluster.start(LEADER)
        logs = subscriber()
        lines = await collect(await logs.subscribe_logs(request(services=("web",))))
        assert sorted(lines) == [
            ("w1", "w1 one\n"),
            ("w1", "w1 two\n"),
            ("w2", "w2 one\n"),
            ("w2", "w2 two\n"),
        ]
        lines = await collect(await logs.subscribe_logs(request(services=("web",), tail=1)))
        assert sorted(lines) == [("w1", "w1 two\n"), ("w2", "w2 two\n")]
        lines = await collect(await logs.subscribe_logs(request(tasks=("w2",))))
        assert lines == [("w2", "w2 one\n"), ("w2", "w2 two\n")]
        stderr_only = request(services=("web",), streams=(LogStream.LOG_STREAM_STDERR,))
        assert await collect(await logs.subscribe_logs(stderr_only)) == []
        # Every line names its node, service and task.
        async for batch in await logs.subscribe_logs(request(tasks=("w1",), tail=1)):
            assert [m.context for m in batch] == [
                LogContext(service_id="web", node_id="node-a", task_id="w1")
            ]

    scenario(test)


def test_lines_of_a_node_that_is_not_connected_are_reported_missing() -> None:
    async def test(cluster: Cluster, _leader: Manager) -> None:
        await cluster.start(LEADER, listening=("node-a",))
        stream = await subscriber().subscribe_logs(request(services=("web",)))
        got: list[str] = []
        with pytest.raises(LogStreamError) as caught:
            async with asyncio.timeout(DEADLINE):
                async for batch in stream:
                    got += [m.data.decode() for m in batch]
        assert got == ["w1 one\n", "w1 two\n"]
        assert str(caught.value).startswith("rpc error: code = Unavailable desc = incomplete")
        assert "node-b" in str(caught.value)

    scenario(test)


def test_follow_streams_new_lines_and_new_tasks_until_the_subscriber_leaves() -> None:
    async def test(cluster: Cluster, _leader: Manager) -> None:
        await cluster.start(LEADER)
        stream = await subscriber().subscribe_logs(request(services=("web",), follow=True))
        seen: list[str] = []

        async def read() -> None:
            async for batch in stream:
                seen.extend(m.data.decode() for m in batch)

        reader = asyncio.create_task(read())
        await eventually("the first lines", lambda: len(seen) == 4)
        # A task scheduled after the subscription started (a scale-up) is followed too.
        node_b = cluster.nodes["node-b"]
        await node_b.run_task("w3", "web", "echo w3 late; sleep 1000")
        cluster.add_task("w3", "node-b")
        await eventually("the new task's line", lambda: "w3 late\n" in seen)
        assert not reader.done()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await stream.aclose()
        # The broker tells the agents to stop publishing.
        for node in cluster.nodes.values():
            assert node.publisher is not None
            await eventually(
                f"{node.node_id} stopped publishing",
                lambda node=node: not node.publisher.publishing,  # type: ignore[union-attr]
            )
        assert cluster.broker is not None and cluster.broker.subscriptions == 0

    scenario(test)


def test_a_follower_redirects_to_the_leader_and_a_lost_leadership_ends_streams() -> None:
    async def test(cluster: Cluster, leader: Manager) -> None:
        await cluster.start(LEADER)
        async with manager(FOLLOWER, cluster.store, leader=LEADER):
            # Subscribing where the subscriber wrongly believes the leader is: redirected.
            stream = await subscriber(FOLLOWER).subscribe_logs(request(tasks=("w1",)))
            assert len(await collect(stream)) == 2
            # Agents cannot listen on a follower: they are sent to the leader too.
            stub = logbroker_pb2_grpc.LogBrokerStub(insecure(FOLLOWER))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.ListenSubscriptions(ListenSubscriptionsRequest(node_id="x")):
                    pass
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert (LEADER_TRAILER, LEADER) in list(caught.value.trailing_metadata() or ())
        stream = await subscriber().subscribe_logs(request(services=("web",), follow=True))
        async with asyncio.timeout(DEADLINE):
            await anext(stream)
        leader.view = RaftView(is_leader=False, leader_address=FOLLOWER, managers=())
        with pytest.raises(LogStreamError) as ended:
            async with asyncio.timeout(DEADLINE):
                async for _ in stream:
                    pass
        assert "FailedPrecondition" in str(ended.value) and FOLLOWER in str(ended.value)

    scenario(test)


def test_the_broker_refuses_nonsense_and_nodes_acting_for_others() -> None:
    async def main() -> None:
        store = Store()
        store.apply(
            1, Transaction().create(Task(id="t", node_id="node-b", service_id="s")).encode()
        )
        async with manager(LEADER, store, node_identity=lambda _ctx: "node-a"):
            with pytest.raises(LogStreamError) as empty:
                await subscriber().subscribe_logs(request())
            assert "InvalidArgument" in str(empty.value)
            stub = logbroker_pb2_grpc.LogBrokerStub(insecure(LEADER))
            with pytest.raises(grpc.aio.AioRpcError) as listen:
                async for _ in stub.ListenSubscriptions(
                    ListenSubscriptionsRequest(node_id="node-b")
                ):
                    pass
            assert listen.value.code() == grpc.StatusCode.PERMISSION_DENIED

            async def publish() -> AsyncIterator[PublishLogsMessage]:
                yield PublishLogsMessage(subscription_id="any", node_id="node-b", close=True)

            with pytest.raises(grpc.aio.AioRpcError) as published:
                await stub.PublishLogs(publish())
            assert published.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "node-a cannot act for node node-b" in (published.value.details() or "")

    asyncio.run(main())
