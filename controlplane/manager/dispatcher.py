"""The Dispatcher gRPC service on 2377: agents' sessions, heartbeats, assignments, and the
task status they report (modelled on swarmkit's dispatcher).

Only the Raft leader's dispatcher serves agents; any other manager refuses every call with
FAILED_PRECONDITION and the trailer `swarmlab-leader: <host:2377>` naming where to go
(UNAVAILABLE when no leader is known). When this manager stops leading it ends every stream
the same way, so the agents follow the leadership.

Node liveness, decided by the leader alone: a session marks the node `ready`; a node whose
heartbeats stop for `period * 3` is marked `down` ("heartbeat failure"). A manager that
becomes leader first moves every node it does not hear from to `unknown` and gives it the same
grace to reconnect. Every such write is conditional (Raft version check, then a re-check that
the node has not registered meanwhile), so marking a node down never overwrites a node that
came back.

Task status reports are queued and written in batches (one Raft transaction per batch
interval), keeping only forward moves: a report that is stale or goes backwards is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from controlplane.manager.assignments import REFERENCED_KINDS, AssignmentSet
from controlplane.manager.heartbeats import Liveness
from controlplane.manager.network_attachments import AttachRefused, NetworkAttachments
from controlplane.manager.tasks import note_started
from controlplane.pb import dispatcher_pb2, dispatcher_pb2_grpc
from controlplane.pb.objects_pb2 import Cluster, Node, NodeDescription, Task, TaskStatus
from controlplane.raft.driver import RaftDriver
from controlplane.store import ErrorKind, Store, StoreError, Transaction, Watch, WatchError
from controlplane.taskstate import advances, parse_state

log = logging.getLogger("controlplane.manager.dispatcher")

LEADER_TRAILER = "swarmlab-leader"
# Seconds between heartbeats per timing profile (the Raft profiles' names): Swarm's default,
# and 1 s for the lab. The Cluster's spec.dispatcher_heartbeat_period_ns overrides either.
HEARTBEAT_PERIODS = {"swarm": 5.0, "lab": 1.0}
BATCH_INTERVAL = 0.1  # swarmkit's maxBatchInterval: status writes are grouped this long
MAX_BATCH = 500  # task updates per Raft transaction
WRITE_TIMEOUT = 10.0
CONFLICT_RETRIES = 5
UNKNOWN_MESSAGE = 'Node moved to "unknown" state due to leadership change in cluster'

GrpcContext = grpc.aio.ServicerContext[Any, Any]
Propose = Callable[[bytes, float], Awaitable[tuple[int, bytes]]]


@dataclass(frozen=True)
class ManagerAddress:
    raft_id: int
    addr: str  # host:2377


@dataclass(frozen=True)
class RaftView:
    """What the dispatcher needs to know of Raft, at the moment it asks.

    is_leader: this manager leads now. leader_address: the leader's 2377 address (None when
    no leader is known). managers: every manager, for the agents to fail over to.
    """

    is_leader: bool
    leader_address: str | None
    managers: tuple[ManagerAddress, ...]


def driver_raft_view(driver: RaftDriver) -> Callable[[], RaftView]:
    """The `raft_view` of a manager's RaftDriver."""

    def view() -> RaftView:
        leader = driver.core.leader
        return RaftView(
            is_leader=leader == driver.node_id,
            leader_address=driver.members.get(leader) if leader else None,
            managers=tuple(ManagerAddress(n, a) for n, a in sorted(driver.members.items()) if a),
        )

    return view


@dataclass
class _Session:
    node_id: str
    session_id: str
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # managers or role changed
    role: str = ""  # the node's role as last sent: a promotion or demotion is news for it
    attachments: bytes = b""  # the node's own network attachments as last sent (ingress)
    closed: tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None = None

    def close(
        self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        if self.closed is None:
            self.closed = (code, message, trailers)
            self.changed.set()


class DispatcherService(dispatcher_pb2_grpc.DispatcherServicer):
    """The dispatcher of one manager.

    store: this manager's replicated Store (read locally, written through `propose`).
    propose: `(data, timeout) -> (index, result)`, e.g. RaftDriver.propose.
    raft_view: `() -> RaftView`, e.g. `driver_raft_view(driver)`; polled every `poll_interval`
        seconds and on every call, so leadership changes are seen promptly.
    heartbeat_period: seconds, unless the Cluster object sets one.
    node_identity: optional `(grpc context) -> node id or None` (from the mTLS certificate);
        when it names a node, requests on behalf of another node are refused.
    """

    def __init__(
        self,
        store: Store,
        propose: Propose,
        raft_view: Callable[[], RaftView],
        heartbeat_period: float = HEARTBEAT_PERIODS["swarm"],
        *,
        node_identity: Callable[[GrpcContext], str | None] | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        if heartbeat_period <= 0:
            raise ValueError(f"heartbeat_period must be positive, got {heartbeat_period}")
        self._store = store
        self._propose = propose
        self._raft_view = raft_view
        self._default_period = heartbeat_period
        self._node_identity = node_identity
        self._poll_interval = poll_interval
        self._sessions: dict[str, _Session] = {}
        self._liveness = Liveness()
        self._pending: dict[str, TaskStatus] = {}
        self._managers: tuple[ManagerAddress, ...] = ()
        self._keys_clock = 0  # the Cluster's key clock last sent: a rotation is news for all
        self._term: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._attachments = NetworkAttachments(store, propose)

    # ---- wiring ----------------------------------------------------------------------------

    def register(self, server: grpc.aio.Server) -> None:
        dispatcher_pb2_grpc.add_DispatcherServicer_to_server(self, server)

    async def start(self) -> None:
        """Follow Raft leadership from now on (call after the Raft driver started)."""
        self._watcher = asyncio.create_task(self._watch_raft(), name="dispatcher-raft-watch")

    async def stop(self) -> None:
        for task in (self._watcher, self._term):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher = self._term = None
        self._end_sessions(grpc.StatusCode.UNAVAILABLE, "the manager is shutting down")

    def heartbeat_period(self) -> float:
        """Seconds between heartbeats: the Cluster's setting, else this dispatcher's default."""
        for cluster in self._store.list(Cluster):
            if cluster.spec.dispatcher_heartbeat_period_ns > 0:
                return cluster.spec.dispatcher_heartbeat_period_ns / 1e9
        return self._default_period

    # ---- leadership ------------------------------------------------------------------------

    async def _watch_raft(self) -> None:
        while True:
            self._observe()
            await asyncio.sleep(self._poll_interval)

    def _observe(self) -> RaftView:
        """Start or end the leader's work on a leadership change; tell sessions of a new
        manager list."""
        view = self._raft_view()
        if view.is_leader and self._term is None:
            log.info("event=dispatcher_leading")
            self._term = asyncio.create_task(self._lead(), name="dispatcher-leader")
        elif not view.is_leader and self._term is not None:
            log.info("event=dispatcher_following leader=%s", view.leader_address)
            self._term.cancel()
            self._term = None
            self._liveness.clear()
            self._pending.clear()  # agents report their statuses again to the new leader
            code, message, trailers = not_leader(view)
            self._end_sessions(code, message, trailers)
        managers_changed = view.managers != self._managers
        self._managers = view.managers
        clusters = self._store.list(Cluster)
        keys_clock = clusters[0].encryption_key_lamport_clock if clusters else 0
        keys_changed = keys_clock != self._keys_clock
        self._keys_clock = keys_clock
        for session in self._sessions.values():
            node = self._store.get(Node, session.node_id)
            role_changed = node is not None and node.role != session.role
            attachments_changed = node is not None and _attachments(node) != session.attachments
            if managers_changed or keys_changed or role_changed or attachments_changed:
                session.changed.set()
        return view

    def _end_sessions(
        self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        for session in self._sessions.values():
            session.close(code, message, trailers)
        self._sessions.clear()

    async def _lead(self) -> None:
        """The leader's loop: grace for every node, then batched writes and expiries."""
        await self._mark_unknown()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(BATCH_INTERVAL)
            try:
                await self._flush_task_statuses()
            except Exception as err:  # no quorum, say: keep the reports for the next round
                log.warning("event=task_status_write_failed error=%r", err)
            for node_id, message in self._liveness.expired(loop.time()):
                session = self._sessions.pop(node_id, None)
                if session is not None:
                    session.close(grpc.StatusCode.UNAVAILABLE, f"node {node_id}: {message}")
                log.info("event=node_down node=%s reason=%r", node_id, message)
                down = functools.partial(_set_status, state="down", message=message)
                await self._write_node(node_id, down, self._not_back)

    def _not_back(self, node_id: str) -> bool:
        """A down mark still applies: the node has not registered again since it expired."""
        return not self._liveness.known(node_id)

    async def _mark_unknown(self) -> None:
        now, period = asyncio.get_running_loop().time(), self.heartbeat_period()
        for node in self._store.list(Node):
            if node.status.state == "down" or not self._liveness.expect(node.id, now, period):
                continue  # do not resurrect down nodes; a node already here needs no grace
            await self._write_node(
                node.id,
                lambda n: _set_status(n, "unknown", UNKNOWN_MESSAGE),
                lambda node_id: not self._liveness.registered(node_id),
            )

    async def _write_node(
        self,
        node_id: str,
        change: Callable[[Node], None],
        still_wanted: Callable[[str], bool] = lambda _node_id: True,
    ) -> bool:
        """Update a node through Raft, re-reading it after a version conflict; False if the
        node is gone or the change stopped being wanted meanwhile."""
        for _ in range(CONFLICT_RETRIES):
            node = self._store.get(Node, node_id)
            if node is None or not still_wanted(node_id):
                return False
            change(node)
            node.meta.updated_at_ns = time.time_ns()
            try:
                _, result = await self._propose(Transaction().update(node).encode(), WRITE_TIMEOUT)
            except Exception as err:
                log.warning("event=node_write_failed node=%s error=%r", node_id, err)
                return False
            error = StoreError.from_result(result)
            if error is None:
                return True
            if error.kind is not ErrorKind.CONFLICT:
                log.warning("event=node_write_refused node=%s error=%r", node_id, error.message)
                return False
        return False

    async def _flush_task_statuses(self) -> None:
        while self._pending:
            batch = dict(list(self._pending.items())[:MAX_BATCH])
            for task_id in batch:
                del self._pending[task_id]
            try:
                await self._write_task_statuses(batch)
            except Exception:
                for task_id, status in batch.items():
                    self._queue_status(task_id, status)
                raise

    async def _write_task_statuses(self, statuses: dict[str, TaskStatus]) -> None:
        for _ in range(CONFLICT_RETRIES):
            txn = Transaction()
            for task_id, status in statuses.items():
                task = self._store.get(Task, task_id)
                if task is None or not advances(task.status.state, status.state):
                    continue  # gone, or a stale or backwards report
                task.status.CopyFrom(status)
                note_started(task)
                txn.update(task)
            if not len(txn):
                return
            _, result = await self._propose(txn.encode(), WRITE_TIMEOUT)
            error = StoreError.from_result(result)
            if error is None:
                log.debug("event=task_statuses_written count=%d", len(txn))
                return
            if error.kind is not ErrorKind.CONFLICT:
                log.warning("event=task_status_refused error=%r", error.message)
                return
        log.warning("event=task_status_conflicts count=%d retry=next_batch", len(statuses))
        for task_id, status in statuses.items():
            self._queue_status(task_id, status)

    def _queue_status(self, task_id: str, status: TaskStatus) -> None:
        queued = self._pending.get(task_id)
        if queued is None or advances(queued.state, status.state):
            self._pending[task_id] = status

    # ---- checks shared by the calls ------------------------------------------------------

    async def _check_leader(self, context: GrpcContext) -> None:
        view = self._observe()
        if view.is_leader:
            return
        code, message, trailers = not_leader(view)
        await abort(context, code, message, trailers)

    async def _check_node(self, node_id: str, context: GrpcContext) -> None:
        if not node_id:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "node_id is required")
        if self._node_identity is not None:
            caller = self._node_identity(context)
            if caller is not None and caller != node_id:
                await abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"node {caller} cannot act for node {node_id}",
                )

    async def _session_of(self, node_id: str, session_id: str, context: GrpcContext) -> _Session:
        await self._check_leader(context)
        await self._check_node(node_id, context)
        session = self._sessions.get(node_id)
        if session is None or session.session_id != session_id:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"session invalid: node {node_id} has no session {session_id or '(empty)'} on "
                "the leader; open a new session",
            )
        assert session is not None
        return session

    # ---- the service -----------------------------------------------------------------------

    async def Session(
        self, request: dispatcher_pb2.SessionRequest, context: GrpcContext
    ) -> AsyncIterator[dispatcher_pb2.SessionMessage]:
        await self._check_leader(context)
        await self._check_node(request.node_id, context)
        node_id = request.node_id
        if self._store.get(Node, node_id) is None:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"node {node_id} not found: it is not a member of this swarm; join it with "
                "`docker swarm join` first",
            )
        previous = self._sessions.get(node_id)
        if previous is not None:
            previous.close(grpc.StatusCode.ABORTED, "session replaced by a newer one")
        session = _Session(node_id, secrets.token_hex(16))
        self._sessions[node_id] = session
        period = self.heartbeat_period()
        self._liveness.beat(node_id, asyncio.get_running_loop().time(), period)
        addr = request.addr or _peer_host(context.peer())
        registered = await self._write_node(
            node_id,
            lambda n: _register(n, request.description, addr),
            lambda _node_id: self._sessions.get(node_id) is session,
        )
        if not registered:
            self._drop(session)
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"could not register node {node_id}: the swarm did not commit its status; retry",
            )
        log.info(
            "event=session_started node=%s session=%s addr=%s", node_id, session.session_id, addr
        )
        try:
            while session.closed is None:
                session.changed.clear()
                yield self._session_message(session)
                await session.changed.wait()
            await abort(context, *session.closed)
        finally:
            self._drop(session)

    def _drop(self, session: _Session) -> None:
        """The stream ended; the node keeps its deadline (its grace to come back)."""
        if self._sessions.get(session.node_id) is session:
            del self._sessions[session.node_id]

    def _session_message(self, session: _Session) -> dispatcher_pb2.SessionMessage:
        message = dispatcher_pb2.SessionMessage(
            session_id=session.session_id,
            heartbeat_period_ns=int(self.heartbeat_period() * 1e9),
            managers=[
                dispatcher_pb2.ManagerPeer(raft_id=m.raft_id, addr=m.addr) for m in self._managers
            ],
        )
        node = self._store.get(Node, session.node_id)
        if node is not None:
            message.node.CopyFrom(node)
            session.role = node.role
            session.attachments = _attachments(node)
        for cluster in self._store.list(Cluster):
            message.network_bootstrap_keys.extend(cluster.network_bootstrap_keys)
        return message

    async def Heartbeat(
        self, request: dispatcher_pb2.HeartbeatRequest, context: GrpcContext
    ) -> dispatcher_pb2.HeartbeatResponse:
        await self._session_of(request.node_id, request.session_id, context)
        period = self.heartbeat_period()
        self._liveness.beat(request.node_id, asyncio.get_running_loop().time(), period)
        return dispatcher_pb2.HeartbeatResponse(period_ns=int(period * 1e9))

    async def Assignments(
        self, request: dispatcher_pb2.AssignmentsRequest, context: GrpcContext
    ) -> AsyncIterator[dispatcher_pb2.AssignmentsMessage]:
        session = await self._session_of(request.node_id, request.session_id, context)
        sent = AssignmentSet()
        while session.closed is None:
            try:
                with self._store.watch(
                    kinds=(Task, Node, *REFERENCED_KINDS),
                    predicate=functools.partial(sent.concerns, request.node_id),
                ) as watch:
                    yield sent.complete(self._store, request.node_id)
                    async for message in self._changes(session, watch, sent):
                        yield message
            except WatchError as err:  # fell behind: start over with a complete set
                log.info("event=assignments_resync node=%s reason=%r", request.node_id, str(err))
        await abort(context, *session.closed)

    async def _changes(
        self, session: _Session, watch: Watch, sent: AssignmentSet
    ) -> AsyncIterator[dispatcher_pb2.AssignmentsMessage]:
        """Changes to the node's set until its session ends; events are gathered for
        BATCH_INTERVAL, so a burst of writes makes one message, worked out from those events
        alone (the tasks and networks they name), not from a scan of the store."""
        closed = asyncio.create_task(_wait_closed(session))
        try:
            while session.closed is None:
                event = asyncio.create_task(anext(watch))
                await asyncio.wait([event, closed], return_when=asyncio.FIRST_COMPLETED)
                if not event.done():
                    event.cancel()
                    return
                first = event.result()
                await asyncio.sleep(BATCH_INTERVAL)
                message = sent.follow(self._store, session.node_id, [first, *watch.poll()])
                if message.changes:
                    yield message
        finally:
            closed.cancel()

    async def UpdateTaskStatus(
        self, request: dispatcher_pb2.UpdateTaskStatusRequest, context: GrpcContext
    ) -> dispatcher_pb2.UpdateTaskStatusResponse:
        await self._session_of(request.node_id, request.session_id, context)
        for update in request.updates:
            try:
                parse_state(update.status.state)
            except ValueError as err:
                await abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, f"task {update.task_id}: {err}"
                )
            task = self._store.get(Task, update.task_id)
            if task is not None and task.node_id != request.node_id:
                await abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"cannot update task {update.task_id}: it is not assigned to node "
                    f"{request.node_id}",
                )
        for update in request.updates:
            if self._store.get(Task, update.task_id) is None:
                log.info("event=task_status_for_unknown_task task=%s", update.task_id)
                continue
            self._queue_status(update.task_id, update.status)
        return dispatcher_pb2.UpdateTaskStatusResponse()

    async def AttachNetwork(
        self, request: dispatcher_pb2.AttachNetworkRequest, context: GrpcContext
    ) -> dispatcher_pb2.AttachNetworkResponse:
        await self._check_leader(context)
        await self._check_node(request.node_id, context)
        try:
            task, network = await self._attachments.attach(request)
        except AttachRefused as err:
            await abort(context, err.code, str(err))
        return dispatcher_pb2.AttachNetworkResponse(
            attachment_id=task.id, network=network, attachment=task.networks[0]
        )

    async def DetachNetwork(
        self, request: dispatcher_pb2.DetachNetworkRequest, context: GrpcContext
    ) -> dispatcher_pb2.DetachNetworkResponse:
        await self._check_leader(context)
        await self._check_node(request.node_id, context)
        try:
            await self._attachments.detach(request.node_id, request.attachment_id)
        except AttachRefused as err:
            await abort(context, err.code, str(err))
        return dispatcher_pb2.DetachNetworkResponse()


async def _wait_closed(session: _Session) -> None:
    while session.closed is None:
        await session.changed.wait()
        session.changed.clear()


def not_leader(view: RaftView) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    if view.leader_address:
        return (
            grpc.StatusCode.FAILED_PRECONDITION,
            f"this manager is not the leader; the leader is {view.leader_address}",
            ((LEADER_TRAILER, view.leader_address),),
        )
    return (
        grpc.StatusCode.UNAVAILABLE,
        "no manager leads the swarm right now; retry, or try another manager",
        (),
    )


async def abort(
    context: GrpcContext,
    code: grpc.StatusCode,
    message: str,
    trailers: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    await context.abort(code, message, trailers)
    raise AssertionError("unreachable")


def _set_status(node: Node, state: str, message: str) -> None:
    node.status.state = state
    node.status.message = message


def _register(node: Node, description: NodeDescription, addr: str) -> None:
    if description.ByteSize():
        node.description.CopyFrom(description)
    node.status.state = "ready"
    node.status.message = ""
    if addr:
        node.status.addr = addr


def _peer_host(peer: str) -> str:
    """The host of a gRPC peer string: `ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    host = rest.rpartition(":")[0]
    return host.strip("[]")


def _attachments(node: Node) -> bytes:
    return b"".join(a.SerializeToString(deterministic=True) for a in node.attachments)
