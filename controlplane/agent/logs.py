"""The agent's side of the log broker: it listens, for as long as its session lasts, for the
subscriptions that concern this node, and publishes the lines of its matching tasks.

Each subscription gets its own `PublishLogs` stream. Without `follow`, the node sends what its
matching containers hold (per container: since, then tail) and closes the stream, which tells
the broker this node is done. With `follow`, it keeps sending new lines, and picks up the
matching tasks that start here later (a scale-up, a replacement), until the broker closes the
subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import AsyncIterator, Callable, Iterable

import grpc

from controlplane.agent.log_copier import LogLine
from controlplane.agent.runtime import NoSuchContainerError, Runtime
from controlplane.agent.worker import TaskContainer
from controlplane.pb import logbroker_pb2_grpc
from controlplane.pb.logbroker_pb2 import (
    ListenSubscriptionsRequest,
    LogContext,
    LogMessage,
    LogSelector,
    LogStream,
    PublishLogsMessage,
    SubscriptionMessage,
)

log = logging.getLogger("controlplane.agent.logs")

BATCH = 100  # lines per published message
RETRY_DELAY = 1.0  # seconds before listening again after the stream broke
RESCAN_INTERVAL = 0.25  # seconds between looks for new matching tasks while following
STREAMS = {"stdout": LogStream.LOG_STREAM_STDOUT, "stderr": LogStream.LOG_STREAM_STDERR}


def selects(selector: LogSelector, task: TaskContainer) -> bool:
    return task.service_id in selector.service_ids or task.task_id in selector.task_ids


def log_message(node_id: str, task: TaskContainer, line: LogLine) -> LogMessage:
    return LogMessage(
        context=LogContext(service_id=task.service_id, node_id=node_id, task_id=task.task_id),
        timestamp_ns=line.timestamp_ns,
        stream=STREAMS.get(line.stream, LogStream.LOG_STREAM_UNKNOWN),
        data=line.data,
    )


class LogPublisher:
    """node_id: this node. runtime: where the containers run. tasks: `() -> this node's task
    containers` (Worker.task_containers)."""

    def __init__(
        self, node_id: str, runtime: Runtime, tasks: Callable[[], Iterable[TaskContainer]]
    ) -> None:
        self._node_id = node_id
        self._runtime = runtime
        self._tasks = tasks
        self._publishing: dict[str, asyncio.Task[None]] = {}

    @property
    def publishing(self) -> frozenset[str]:
        """The subscriptions this node publishes for now."""
        return frozenset(self._publishing)

    async def listen(self, channel: grpc.aio.Channel) -> None:
        """Serve the broker's subscriptions over `channel` (the session's, to the leader)
        until cancelled; a broken stream is opened again after RETRY_DELAY."""
        stub = logbroker_pb2_grpc.LogBrokerStub(channel)
        try:
            while True:
                try:
                    request = ListenSubscriptionsRequest(node_id=self._node_id)
                    async for subscription in stub.ListenSubscriptions(request):
                        self._on_subscription(stub, subscription)
                except grpc.aio.AioRpcError as err:
                    log.info(
                        "event=log_listen_broken code=%s details=%r", err.code().name, err.details()
                    )
                await asyncio.sleep(RETRY_DELAY)
        finally:
            publishing = list(self._publishing.values())
            for task in publishing:
                task.cancel()
            await asyncio.gather(*publishing, return_exceptions=True)

    def _on_subscription(
        self, stub: logbroker_pb2_grpc.LogBrokerAsyncStub, subscription: SubscriptionMessage
    ) -> None:
        running = self._publishing.get(subscription.id)
        if subscription.close:
            if running is not None:
                running.cancel()
            return
        if running is not None:
            return  # told again (the broker saw a new matching task here): already on it
        task = asyncio.create_task(
            self._publish(stub, subscription), name=f"log-publish-{subscription.id}"
        )
        self._publishing[subscription.id] = task
        task.add_done_callback(lambda _t: self._publishing.pop(subscription.id, None))

    async def _publish(
        self, stub: logbroker_pb2_grpc.LogBrokerAsyncStub, subscription: SubscriptionMessage
    ) -> None:
        log.debug(
            "event=log_publish_started subscription=%s follow=%s",
            subscription.id,
            subscription.options.follow,
        )
        try:
            await stub.PublishLogs(self.messages(subscription))
        except grpc.aio.AioRpcError as err:
            log.info(
                "event=log_publish_failed subscription=%s code=%s details=%r",
                subscription.id,
                err.code().name,
                err.details(),
            )

    async def messages(
        self, subscription: SubscriptionMessage
    ) -> AsyncIterator[PublishLogsMessage]:
        """What this node publishes for `subscription`: its lines in batches, then (without
        follow) a closing message."""
        sid, node = subscription.id, self._node_id
        if subscription.options.follow:
            async for batch in self._follow(subscription):
                yield PublishLogsMessage(subscription_id=sid, node_id=node, messages=batch)
            return
        lines = [m async for m in self._backlog(subscription)]
        for start in range(0, len(lines), BATCH):
            batch = lines[start : start + BATCH]
            yield PublishLogsMessage(subscription_id=sid, node_id=node, messages=batch)
        yield PublishLogsMessage(subscription_id=sid, node_id=node, close=True)

    def _matching(self, subscription: SubscriptionMessage) -> list[TaskContainer]:
        return [t for t in self._tasks() if selects(subscription.selector, t)]

    def _wanted(self, subscription: SubscriptionMessage, line: LogLine) -> bool:
        streams = subscription.options.streams
        return not streams or STREAMS.get(line.stream) in streams

    async def _backlog(self, subscription: SubscriptionMessage) -> AsyncIterator[LogMessage]:
        """Every matching container's lines, merged in time order."""
        per_task: list[list[tuple[int, int, LogMessage]]] = []
        for rank, task in enumerate(self._matching(subscription)):
            lines = [
                (line.timestamp_ns, rank, log_message(self._node_id, task, line))
                async for line in self._read(subscription, task, follow=False)
            ]
            per_task.append(lines)
        for _, _, message in heapq.merge(*per_task, key=lambda item: item[:2]):
            yield message

    async def _read(
        self, subscription: SubscriptionMessage, task: TaskContainer, *, follow: bool
    ) -> AsyncIterator[LogLine]:
        options = subscription.options
        tail = options.tail if options.HasField("tail") else -1
        try:
            async for line in self._runtime.read_logs(
                task.container_id, since_ns=options.since_ns, tail=tail, follow=follow
            ):
                if self._wanted(subscription, line):
                    yield line
        except NoSuchContainerError:
            return  # removed meanwhile (its task left the node): nothing left to read

    async def _follow(self, subscription: SubscriptionMessage) -> AsyncIterator[list[LogMessage]]:
        """Batches of lines from every matching container, old and new, as they come."""
        queue: asyncio.Queue[LogMessage] = asyncio.Queue(maxsize=BATCH * 10)
        readers: dict[str, asyncio.Task[None]] = {}

        async def read(task: TaskContainer) -> None:
            async for line in self._read(subscription, task, follow=True):
                await queue.put(log_message(self._node_id, task, line))

        try:
            while True:
                for task in self._matching(subscription):
                    if task.task_id not in readers:
                        readers[task.task_id] = asyncio.create_task(read(task))
                batch: list[LogMessage] = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESCAN_INTERVAL):
                        batch.append(await queue.get())
                while not queue.empty() and len(batch) < BATCH:
                    batch.append(queue.get_nowait())
                if batch:
                    yield batch
        finally:
            for reader in readers.values():
                reader.cancel()
            await asyncio.gather(*readers.values(), return_exceptions=True)
