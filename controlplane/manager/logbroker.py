"""The log broker on 2377 (modelled on swarmkit's): it joins the managers' API, which asks for a
service's or a task's lines, to the agents, which hold them.

- A manager's API calls `Logs.SubscribeLogs` on the leader. The broker finds the nodes that run
  (or ran) the selected tasks in the store, and tells each one through its
  `LogBroker.ListenSubscriptions` stream, which every agent keeps open during its session.
- Each told agent sends the lines over `LogBroker.PublishLogs`; the broker passes them on to the
  subscriber as they come. Without `follow`, the subscription ends once every told node said it
  is done; a node that is not connected (or drops out before it is done) cannot send its lines,
  so the stream then ends with UNAVAILABLE naming it: the subscriber knows the lines are
  incomplete. With `follow`, the broker keeps watching the store and tells the nodes that start
  matching tasks later, until the subscriber goes away; then the agents are told to stop.

Only the Raft leader's broker serves: other managers refuse with FAILED_PRECONDITION and the
`swarmlab-leader` trailer (as the dispatcher); when this manager stops leading, every stream
ends the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from controlplane.manager.dispatcher import RaftView, abort, not_leader
from controlplane.pb import logbroker_pb2_grpc
from controlplane.pb.logbroker_pb2 import (
    ListenSubscriptionsRequest,
    LogMessage,
    LogSelector,
    PublishLogsMessage,
    PublishLogsResponse,
    SubscribeLogsMessage,
    SubscribeLogsRequest,
    SubscriptionMessage,
)
from controlplane.pb.objects_pb2 import Task
from controlplane.store import Store, WatchError

log = logging.getLogger("controlplane.manager.logbroker")

GrpcContext = grpc.aio.ServicerContext[Any, Any]
Status = tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]
PENDING_BATCHES = 64  # published batches a slow subscriber may leave unread (then agents wait)


def selects(selector: LogSelector, task: Task) -> bool:
    return task.service_id in selector.service_ids or task.id in selector.task_ids


@dataclass
class _Listener:
    """One agent's ListenSubscriptions stream."""

    node_id: str
    outbox: asyncio.Queue[SubscriptionMessage | None] = field(default_factory=asyncio.Queue)
    closed: Status | None = None

    def close(self, status: Status) -> None:
        if self.closed is None:
            self.closed = status
            self.outbox.put_nowait(None)


@dataclass
class _Subscription:
    id: str
    request: SubscribeLogsRequest
    told: set[str] = field(default_factory=set)  # nodes asked to publish
    done: set[str] = field(default_factory=set)  # nodes that sent everything
    missing: set[str] = field(default_factory=set)  # nodes that could not send (no follow)
    inbox: asyncio.Queue[list[LogMessage]] = field(
        default_factory=lambda: asyncio.Queue(PENDING_BATCHES)
    )
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: Status | None = None

    @property
    def follow(self) -> bool:
        return self.request.options.follow

    def complete(self) -> bool:
        return not self.follow and self.told <= self.done | self.missing

    def lost(self, node_id: str) -> None:
        """`node_id` will not send (more of) its lines."""
        if self.follow:
            self.told.discard(node_id)  # tell it again when it is back
        elif node_id not in self.done:
            self.missing.add(node_id)
        self.changed.set()

    def end(self, status: Status) -> None:
        if self.ended is None:
            self.ended = status
            self.changed.set()

    def drain(self) -> None:
        """Unblock publishers waiting for room: nobody reads this inbox any more."""
        while not self.inbox.empty():
            self.inbox.get_nowait()

    async def next_batch(self) -> list[LogMessage] | None:
        """The next published batch, or None when the subscription's state changed first."""
        if not self.inbox.empty():
            return self.inbox.get_nowait()
        self.changed.clear()
        getter = asyncio.ensure_future(self.inbox.get())
        waker = asyncio.ensure_future(self.changed.wait())
        try:
            await asyncio.wait({getter, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None


class LogBroker(logbroker_pb2_grpc.LogsServicer, logbroker_pb2_grpc.LogBrokerServicer):
    """The broker of one manager (serving while it leads).

    store: this manager's replicated Store (read only). raft_view: as the dispatcher's
    (`driver_raft_view(driver)`), polled every `poll_interval` seconds and at every call.
    node_identity: `(grpc context) -> node id or None` from the mTLS certificate; when it names
    a node, an agent cannot listen or publish for another node.
    """

    def __init__(
        self,
        store: Store,
        raft_view: Callable[[], RaftView],
        *,
        node_identity: Callable[[GrpcContext], str | None] | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        self._store = store
        self._raft_view = raft_view
        self._node_identity = node_identity
        self._poll_interval = poll_interval
        self._listeners: dict[str, _Listener] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._leading = False
        self._watcher: asyncio.Task[None] | None = None

    @property
    def listening(self) -> frozenset[str]:
        """The nodes whose agents listen for subscriptions now."""
        return frozenset(self._listeners)

    @property
    def subscriptions(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)

    def register(self, server: grpc.aio.Server) -> None:
        logbroker_pb2_grpc.add_LogsServicer_to_server(self, server)
        logbroker_pb2_grpc.add_LogBrokerServicer_to_server(self, server)

    async def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch_raft(), name="logbroker-raft-watch")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        self._end_all((grpc.StatusCode.UNAVAILABLE, "the manager is shutting down", ()))

    # ---- leadership ------------------------------------------------------------------------

    async def _watch_raft(self) -> None:
        while True:
            self._observe()
            await asyncio.sleep(self._poll_interval)

    def _observe(self) -> RaftView:
        view = self._raft_view()
        if self._leading and not view.is_leader:
            log.info("event=logbroker_following leader=%s", view.leader_address)
            self._end_all(not_leader(view))
        self._leading = view.is_leader
        return view

    def _end_all(self, status: Status) -> None:
        for listener in self._listeners.values():
            listener.close(status)
        self._listeners.clear()
        for subscription in self._subscriptions.values():
            subscription.end(status)

    async def _check_leader(self, context: GrpcContext) -> None:
        view = self._observe()
        if not view.is_leader:
            await abort(context, *not_leader(view))

    async def _check_node(self, node_id: str, context: GrpcContext) -> None:
        if not node_id:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "node_id is required")
        caller = self._node_identity(context) if self._node_identity is not None else None
        if caller is not None and caller != node_id:
            await abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"node {caller} cannot act for node {node_id}",
            )

    # ---- telling the agents ----------------------------------------------------------------

    def _tell_nodes(self, subscription: _Subscription) -> None:
        """Ask every node that runs (or ran) a selected task, and was not asked yet, to
        publish; without follow, a node that is not listening is missing for good."""
        selector = subscription.request.selector
        nodes = {t.node_id for t in self._store.list(Task) if t.node_id and selects(selector, t)}
        for node_id in sorted(nodes - subscription.told - subscription.missing):
            listener = self._listeners.get(node_id)
            if listener is None:
                if not subscription.follow:
                    subscription.missing.add(node_id)
                continue
            subscription.told.add(node_id)
            listener.outbox.put_nowait(
                SubscriptionMessage(
                    id=subscription.id, selector=selector, options=subscription.request.options
                )
            )

    async def _track_tasks(self, subscription: _Subscription) -> None:
        """While following: tell the nodes of tasks scheduled from now on."""
        while True:
            try:
                with self._store.watch(kinds=(Task,)) as watch:
                    self._tell_nodes(subscription)
                    async for _event in watch:
                        watch.poll()
                        self._tell_nodes(subscription)
            except WatchError:
                continue  # fell behind: look at the whole store again

    # ---- the services ----------------------------------------------------------------------

    async def SubscribeLogs(
        self, request: SubscribeLogsRequest, context: GrpcContext
    ) -> AsyncIterator[SubscribeLogsMessage]:
        await self._check_leader(context)
        if not request.selector.service_ids and not request.selector.task_ids:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "the log selector names no service and no task: give at least one",
            )
        subscription = _Subscription(secrets.token_hex(8), request)
        self._subscriptions[subscription.id] = subscription
        tracker: asyncio.Task[None] | None = None
        log.info(
            "event=logs_subscribed subscription=%s services=%s tasks=%s follow=%s",
            subscription.id,
            ",".join(request.selector.service_ids),
            ",".join(request.selector.task_ids),
            subscription.follow,
        )
        try:
            self._tell_nodes(subscription)
            yield SubscribeLogsMessage()  # accepted: the subscriber may start its answer
            if subscription.follow:
                tracker = asyncio.create_task(self._track_tasks(subscription))
            while True:
                if subscription.ended is not None:
                    await abort(context, *subscription.ended)
                if subscription.complete() and subscription.inbox.empty():
                    break
                batch = await subscription.next_batch()
                if batch:
                    yield SubscribeLogsMessage(messages=batch)
            if subscription.missing:
                await abort(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    "incomplete log stream: the lines of the tasks on node(s) "
                    f"{', '.join(sorted(subscription.missing))} are missing, as these nodes are "
                    "not connected to the swarm's leader",
                )
        finally:
            if tracker is not None:
                tracker.cancel()
            del self._subscriptions[subscription.id]
            subscription.drain()
            for node_id in subscription.told - subscription.done:
                listener = self._listeners.get(node_id)
                if listener is not None:
                    listener.outbox.put_nowait(SubscriptionMessage(id=subscription.id, close=True))
            log.info("event=logs_subscription_ended subscription=%s", subscription.id)

    async def ListenSubscriptions(
        self, request: ListenSubscriptionsRequest, context: GrpcContext
    ) -> AsyncIterator[SubscriptionMessage]:
        await self._check_leader(context)
        await self._check_node(request.node_id, context)
        node_id = request.node_id
        previous = self._listeners.get(node_id)
        if previous is not None:
            previous.close((grpc.StatusCode.ABORTED, "replaced by a newer listener", ()))
        listener = _Listener(node_id)
        self._listeners[node_id] = listener
        log.debug("event=log_listener_joined node=%s", node_id)
        try:
            for subscription in list(self._subscriptions.values()):
                if subscription.follow:
                    self._tell_nodes(subscription)
            while True:
                message = await listener.outbox.get()
                if message is None:
                    assert listener.closed is not None
                    await abort(context, *listener.closed)
                yield message
        finally:
            if self._listeners.get(node_id) is listener:
                del self._listeners[node_id]
                for subscription in self._subscriptions.values():
                    if node_id in subscription.told:
                        subscription.lost(node_id)

    async def PublishLogs(
        self, request_iterator: AsyncIterator[PublishLogsMessage], context: GrpcContext
    ) -> PublishLogsResponse:
        await self._check_leader(context)
        subscription: _Subscription | None = None
        node_id = ""
        try:
            async for message in request_iterator:
                if subscription is None:
                    node_id = message.node_id
                    await self._check_node(node_id, context)
                    subscription = self._subscriptions.get(message.subscription_id)
                    if subscription is None:
                        break  # it ended: nothing more is wanted
                    if node_id not in subscription.told:
                        await abort(
                            context,
                            grpc.StatusCode.PERMISSION_DENIED,
                            f"node {node_id} was not asked to publish for subscription "
                            f"{message.subscription_id}",
                        )
                if message.subscription_id != subscription.id or message.node_id != node_id:
                    await abort(
                        context,
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "one PublishLogs stream carries one node's lines for one subscription",
                    )
                await self._check_context(message, node_id, context)
                if subscription.id not in self._subscriptions:
                    break
                if message.messages:
                    await subscription.inbox.put(list(message.messages))
                if message.close:
                    subscription.done.add(node_id)
                    subscription.changed.set()
                    break
        finally:
            if subscription is not None and node_id not in subscription.done:
                subscription.lost(node_id)
        return PublishLogsResponse()

    async def _check_context(
        self, message: PublishLogsMessage, node_id: str, context: GrpcContext
    ) -> None:
        for line in message.messages:
            if line.context.node_id != node_id:
                await abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"node {node_id} cannot publish lines of node {line.context.node_id}",
                )
