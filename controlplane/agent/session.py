"""The agent's session with the swarm: registered with the leader's dispatcher, heartbeating,
receiving assignments and sending task status, kept up across manager failures.

Which manager: a follower answers with the leader's address (the `swarmlab-leader` trailer)
and the agent goes there at once; when a manager cannot be reached or the session breaks, the
agent tries the next manager of the last list the dispatcher gave it (the initial one until
then), waiting longer after each failure (capped exponential backoff with jitter). Tasks keep
running meanwhile; a new session starts with a complete assignment set, and every task's
latest status is reported again, since reports in flight may have been lost with the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from controlplane.agent.task_files import TaskFiles
from controlplane.pb import dispatcher_pb2, dispatcher_pb2_grpc
from controlplane.pb.dispatcher_pb2 import AssignmentChange, AssignmentsMessage
from controlplane.pb.objects_pb2 import (
    EncryptionKey,
    Network,
    Node,
    NodeDescription,
    Task,
    TaskStatus,
)

if TYPE_CHECKING:
    from controlplane.pb.dispatcher_pb2_grpc import DispatcherAsyncStub

log = logging.getLogger("controlplane.agent.session")

LEADER_TRAILER = "swarmlab-leader"  # as the dispatcher sends it
ChannelFactory = Callable[[str], grpc.aio.Channel]
AssignmentsHandler = Callable[[dict[str, Task], dict[str, Network]], None]
# Work that lives as long as each session, on its channel to the leader (the log publisher).
Companion = Callable[[grpc.aio.Channel], Coroutine[Any, Any, None]]
RPC_TIMEOUT = 10.0
STATUS_BATCH_WAIT = 0.02  # reports made within this long go in one request


class SessionError(Exception):
    """The session ended; the message says why (the agent then reconnects)."""


class _Redirect(SessionError):
    def __init__(self, leader: str, message: str) -> None:
        super().__init__(message)
        self.leader = leader


class Session:
    def __init__(
        self,
        *,
        node_id: str,
        description: NodeDescription,
        managers: Sequence[str],
        channel_factory: ChannelFactory,
        on_assignments: AssignmentsHandler,
        on_node: Callable[[Node], None] = lambda _node: None,
        on_keys: Callable[[list[EncryptionKey]], None] = lambda _keys: None,
        statuses: Callable[[], dict[str, TaskStatus]],
        companions: Sequence[Companion] = (),
        addr: str = "",
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not node_id:
            raise ValueError("node_id is required: the node's id in the swarm")
        if not managers:
            raise ValueError("at least one manager address (host:2377) is required")
        if not 0 < initial_backoff <= max_backoff:
            raise ValueError(
                f"backoff must satisfy 0 < initial ({initial_backoff}) <= max ({max_backoff})"
            )
        self.node_id = node_id
        self._description = description
        self._addr = addr
        self.managers: list[str] = list(dict.fromkeys(managers))
        self._channel_factory = channel_factory
        self._on_assignments = on_assignments
        self._on_node = on_node  # the managers' record of this node (its role, for one)
        self._on_keys = on_keys  # the data path and gossip keys the managers hand out
        self._statuses = statuses
        self._companions = tuple(companions)
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._connect_timeout = connect_timeout
        self.manager: str | None = None  # the manager of the current session
        self.session_id = ""
        self.heartbeat_period = 1.0
        self.connected = asyncio.Event()
        self._unsent: dict[str, TaskStatus] = {}
        self._unsent_ready = asyncio.Event()
        self._cursor = -1
        self._runner: asyncio.Task[None] | None = None
        self.files = TaskFiles()  # the secrets and configs of this node's tasks

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name=f"agent-session-{self.node_id}")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    def report(self, task_id: str, status: TaskStatus) -> None:
        """Queue a task's status for the dispatcher; only the latest per task is kept."""
        self._unsent[task_id] = status
        self._unsent_ready.set()

    # ---- the reconnect loop ----------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self._initial_backoff
        target: str | None = None
        redirects = 0
        while True:
            address = target or self._next_manager()
            target = None
            try:
                await self._serve(address)
            except _Redirect as redirect:
                log.info("event=session_redirect from=%s leader=%s", address, redirect.leader)
                redirects += 1
                if redirect.leader != address and redirects <= 3:
                    target = redirect.leader
                    continue  # straight to the leader, no wait
            except (SessionError, grpc.aio.AioRpcError, OSError, TimeoutError) as err:
                log.info("event=session_lost manager=%s reason=%r", address, _describe(err))
            except Exception:  # a bug must not leave the node without a session for good
                log.exception("event=session_failed manager=%s", address)
            if self.session_id:
                backoff, redirects = self._initial_backoff, 0  # it had worked: start afresh
                self.session_id = ""
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._max_backoff)

    def _next_manager(self) -> str:
        self._cursor = (self._cursor + 1) % len(self.managers)
        return self.managers[self._cursor]

    async def _serve(self, address: str) -> None:
        """One session with the manager at `address`, until it fails."""
        channel = self._channel_factory(address)
        try:
            stub = dispatcher_pb2_grpc.DispatcherStub(channel)
            request = dispatcher_pb2.SessionRequest(
                node_id=self.node_id, description=self._description, addr=self._addr
            )
            call = stub.Session(request)
            messages = aiter(call)
            async with asyncio.timeout(self._connect_timeout):
                first = await _read(messages)
            self.manager = address
            self._accept(first)
            log.info(
                "event=session_started manager=%s session=%s managers=%s",
                address,
                self.session_id,
                ",".join(self.managers),
            )
            for task_id, status in self._statuses().items():
                self._unsent.setdefault(task_id, status)
            self._unsent_ready.set()
            self.connected.set()
            parts = [
                self._follow_session(messages),
                self._heartbeat(stub),
                self._receive_assignments(stub),
                self._send_statuses(stub),
                *(companion(channel) for companion in self._companions),
            ]
            workers = [asyncio.create_task(part) for part in parts]
            try:
                done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
                raise SessionError("the session ended")
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                call.cancel()
        except grpc.aio.AioRpcError as err:
            raise _as_session_error(err) from None
        finally:
            self.connected.clear()
            self.manager = None
            await channel.close(None)

    def _accept(self, message: dispatcher_pb2.SessionMessage) -> None:
        self.session_id = message.session_id
        if message.HasField("node"):
            self._on_node(message.node)
        if message.network_bootstrap_keys:
            self._on_keys(list(message.network_bootstrap_keys))
        if message.heartbeat_period_ns > 0:
            self.heartbeat_period = message.heartbeat_period_ns / 1e9
        addresses = [m.addr for m in message.managers if m.addr]
        if addresses and addresses != self.managers:
            self.managers = addresses
            self._cursor = -1

    async def _follow_session(self, messages: AsyncIterator[dispatcher_pb2.SessionMessage]) -> None:
        while True:
            self._accept(await _read(messages))

    async def _heartbeat(self, stub: DispatcherAsyncStub) -> None:
        period = self.heartbeat_period
        while True:
            await asyncio.sleep(period)
            response = await stub.Heartbeat(
                dispatcher_pb2.HeartbeatRequest(node_id=self.node_id, session_id=self.session_id),
                timeout=max(period, 1.0) * 2,
            )
            period = response.period_ns / 1e9 if response.period_ns > 0 else period

    async def _receive_assignments(self, stub: DispatcherAsyncStub) -> None:
        tasks: dict[str, Task] = {}
        networks: dict[str, Network] = {}
        request = dispatcher_pb2.AssignmentsRequest(
            node_id=self.node_id, session_id=self.session_id
        )
        async for message in stub.Assignments(request):
            if message.type == AssignmentsMessage.TYPE_COMPLETE:
                tasks, networks = {}, {}
                self.files.clear()
            for change in message.changes:
                if not self.files.apply(change):
                    _apply_change(change, tasks, networks)
            self._on_assignments(dict(tasks), dict(networks))
        raise SessionError("the assignments stream ended")

    async def _send_statuses(self, stub: DispatcherAsyncStub) -> None:
        while True:
            await self._unsent_ready.wait()
            await asyncio.sleep(STATUS_BATCH_WAIT)
            self._unsent_ready.clear()
            batch = dict(self._unsent)
            if not batch:
                continue
            await stub.UpdateTaskStatus(
                dispatcher_pb2.UpdateTaskStatusRequest(
                    node_id=self.node_id,
                    session_id=self.session_id,
                    updates=[
                        dispatcher_pb2.TaskStatusUpdate(task_id=t, status=s)
                        for t, s in batch.items()
                    ],
                ),
                timeout=RPC_TIMEOUT,
            )
            for task_id, status in batch.items():
                if self._unsent.get(task_id) is status:
                    del self._unsent[task_id]


def _apply_change(
    change: AssignmentChange, tasks: dict[str, Task], networks: dict[str, Network]
) -> None:
    item = change.assignment.WhichOneof("item")
    if item == "task":
        task = change.assignment.task
        if change.action == AssignmentChange.ACTION_REMOVE:
            tasks.pop(task.id, None)
        else:
            tasks[task.id] = task
    elif item == "network":
        network = change.assignment.network
        if change.action == AssignmentChange.ACTION_REMOVE:
            networks.pop(network.id, None)
        else:
            networks[network.id] = network
    else:
        log.warning("event=assignment_ignored reason='nothing this agent knows in the change'")


async def _read(
    messages: AsyncIterator[dispatcher_pb2.SessionMessage],
) -> dispatcher_pb2.SessionMessage:
    try:
        return await anext(messages)
    except StopAsyncIteration:
        raise SessionError("the manager closed the session") from None


def _as_session_error(err: grpc.aio.AioRpcError) -> SessionError:
    for item in err.trailing_metadata() or ():
        key, value = item[0], item[1]  # type: ignore[index]
        if key == LEADER_TRAILER and isinstance(value, str) and value:
            return _Redirect(value, err.details() or "")
    return SessionError(f"{err.code().name}: {err.details()}")


def _describe(err: BaseException) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    return str(err) or type(err).__name__
