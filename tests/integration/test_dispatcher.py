"""Dispatcher and agents over real gRPC sockets, in one process: a real one-manager Raft
cluster, then stand-in managers (a stub Raft view over one store) for redirects and failover.
Addresses: 127.77.170.0/24 (this suite's loopback range)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from polling import eventually
from raft_testing import one_manager

from controlplane.agent.agent import Agent
from controlplane.manager.dispatcher import (
    DispatcherService,
    ManagerAddress,
    RaftView,
    driver_raft_view,
)
from controlplane.pb import dispatcher_pb2, dispatcher_pb2_grpc
from controlplane.pb.objects_pb2 import Node, NodeDescription, Task, TaskStatus
from controlplane.raft.driver import RaftDriver
from controlplane.store import Store, StoreError, Transaction

pytestmark = pytest.mark.integration

PERIOD = 0.3  # heartbeat period: nodes are down after 0.9 s of silence


def insecure(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address)


def worker_node(node_id: str) -> Node:
    node = Node(id=node_id, role="worker")
    node.spec.desired_role = "worker"
    node.spec.availability = "active"
    node.description.hostname = node_id
    return node


def assigned_task(task_id: str, node_id: str, image: str, *args: str) -> Task:
    task = Task(id=task_id, node_id=node_id, service_id="svc", slot=1, desired_state="running")
    task.spec.annotations.name = "svc"
    task.spec.container.image = image
    task.spec.container.args.extend(args)
    task.status.state = "assigned"
    task.status.message = "scheduler assigned task to node"
    return task


def agent_for(
    node_id: str,
    managers: list[str],
    channel_factory: Callable[[str], grpc.aio.Channel] = insecure,
) -> Agent:
    return Agent(
        node_id=node_id,
        description=NodeDescription(hostname=node_id, os="linux", architecture="x86_64"),
        managers=managers,
        channel_factory=channel_factory,
        addr="127.77.170.99",
        stop_grace=0.2,
        max_backoff=0.5,
    )


def state_of(store: Store, kind: type[Node] | type[Task], object_id: str) -> str:
    obj = store.get(kind, object_id)
    return obj.status.state if obj is not None else "(missing)"


async def dispatching_manager(
    directory: Path, address: str
) -> tuple[RaftDriver, Store, DispatcherService]:
    store = Store()
    views: list[RaftDriver] = []
    dispatcher = DispatcherService(
        store,
        lambda data, timeout: views[0].propose(data, timeout),
        lambda: driver_raft_view(views[0])(),
        PERIOD,
    )
    m = await one_manager(directory, address, services=[dispatcher.register], store=store)
    views.append(m.driver)
    await dispatcher.start()
    return m.driver, m.store, dispatcher


async def write(driver: RaftDriver, txn: Transaction) -> None:
    _, result = await driver.propose(txn.encode(), 10.0)
    assert StoreError.from_result(result) is None


def test_agents_run_their_tasks_and_a_silent_node_goes_down(tmp_path: Path) -> None:
    async def scenario() -> None:
        address = "127.77.170.1:2377"
        driver, store, dispatcher = await dispatching_manager(tmp_path, address)
        await write(
            driver, Transaction().create(worker_node("node-a")).create(worker_node("node-b"))
        )
        agents = {n: agent_for(n, [address]) for n in ("node-a", "node-b")}
        try:
            for agent in agents.values():
                await agent.start()
            await eventually(
                "both nodes ready",
                lambda: all(state_of(store, Node, n) == "ready" for n in agents),
            )
            node = store.get(Node, "node-a")
            assert node is not None and node.status.addr == "127.77.170.99"
            assert node.description.os == "linux"

            await write(
                driver,
                Transaction()
                .create(assigned_task("t-sleep", "node-a", "busybox", "sleep", "1000"))
                .create(assigned_task("t-echo", "node-b", "alpine", "sh", "-c", "echo hi; exit 0"))
                .create(assigned_task("t-fail", "node-b", "busybox", "sh", "-c", "exit 3"))
                .create(assigned_task("t-noimage", "node-a", "nosuchimage:1.0"))
                .create(assigned_task("t-nocmd", "node-a", "busybox", "foo")),
            )
            expected = {
                "t-sleep": "running",
                "t-echo": "complete",
                "t-fail": "failed",
                "t-noimage": "rejected",
                "t-nocmd": "failed",
            }
            await eventually(
                f"tasks reach {expected}",
                lambda: all(state_of(store, Task, t) == s for t, s in expected.items()),
            )
            errors = {t: store.get(Task, t).status.err for t in expected}  # type: ignore[union-attr]
            assert errors["t-fail"] == "task: non-zero exit (3)"
            assert errors["t-noimage"] == "No such image: nosuchimage:1.0"
            assert 'exec: "foo": executable file not found in $PATH' in errors["t-nocmd"]
            running = store.get(Task, "t-sleep")
            assert running is not None and running.status.message == "started"
            container = agents["node-a"].runtime.get(running.status.container_id)
            assert container.argv == ["sleep", "1000"]

            task = store.get(Task, "t-sleep")
            assert task is not None
            task.desired_state = "shutdown"
            await write(driver, Transaction().update(task))
            await eventually(
                "t-sleep shuts down", lambda: state_of(store, Task, "t-sleep") == "shutdown"
            )
            assert container.exit_code == 137  # sleep as PID 1 ignores SIGTERM

            await agents["node-b"].session.stop()  # no goodbye: heartbeats just stop
            await eventually("node-b down", lambda: state_of(store, Node, "node-b") == "down")
            down = store.get(Node, "node-b")
            assert down is not None and down.status.message == "heartbeat failure"
            assert state_of(store, Node, "node-a") == "ready"

            await agents["node-b"].stop()
            agents["node-b"] = agent_for("node-b", [address])  # the node comes back
            await agents["node-b"].start()
            await eventually(
                "node-b ready again", lambda: state_of(store, Node, "node-b") == "ready"
            )
            back = store.get(Node, "node-b")
            assert back is not None and back.status.message == ""
        finally:
            for agent in agents.values():
                await agent.stop()
            await dispatcher.stop()
            await driver.stop()

    asyncio.run(scenario())


class StandInRaft:
    """Raft reduced to what the dispatcher sees: one store that every stand-in manager shares,
    writes applied in order, and a leader chosen by the test."""

    def __init__(self, addresses: list[str]) -> None:
        self.store = Store()
        self.addresses = addresses
        self.leader: str | None = None

    async def propose(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        index = self.store.applied_index + 1
        return index, self.store.apply(index, data)

    def view_of(self, address: str) -> Callable[[], RaftView]:
        managers = tuple(ManagerAddress(i + 1, a) for i, a in enumerate(self.addresses))
        return lambda: RaftView(self.leader == address, self.leader, managers)


async def stand_in_manager(
    raft: StandInRaft, address: str
) -> tuple[grpc.aio.Server, DispatcherService]:
    dispatcher = DispatcherService(raft.store, raft.propose, raft.view_of(address), PERIOD)
    server = grpc.aio.server()
    dispatcher.register(server)
    assert server.add_insecure_port(address) != 0, f"cannot listen on {address}"
    await server.start()
    await dispatcher.start()
    return server, dispatcher


def test_followers_redirect_and_agents_fail_over() -> None:
    async def scenario() -> None:
        first, second = "127.77.170.11:2377", "127.77.170.12:2377"
        raft = StandInRaft([first, second])
        await raft.propose(
            Transaction().create(worker_node("node-a")).create(worker_node("node-silent")).encode(),
            1.0,
        )
        raft.leader = second
        servers = dict([(first, await stand_in_manager(raft, first))])
        servers[second] = await stand_in_manager(raft, second)
        agent = agent_for("node-a", [first])  # knows only the follower
        try:
            await agent.start()
            await eventually(
                "node-a ready", lambda: state_of(raft.store, Node, "node-a") == "ready"
            )
            # Node-a is Ready once its session registered, a moment before the agent records
            # the manager it registered with.
            await eventually(
                "node-a's session with the leader", lambda: agent.session.manager == second
            )
            assert agent.session.managers == [first, second]
            # The new leader gave node-silent its grace as "unknown", then marked it down.
            await eventually(
                "node-silent down", lambda: state_of(raft.store, Node, "node-silent") == "down"
            )
            silent = raft.store.get(Node, "node-silent")
            assert silent is not None
            assert silent.status.message == 'heartbeat failure for node in "unknown" state'

            await raft.propose(
                Transaction().create(assigned_task("t-web", "node-a", "nginx:1.25")).encode(), 1.0
            )
            await eventually("t-web runs", lambda: state_of(raft.store, Task, "t-web") == "running")
            task = raft.store.get(Task, "t-web")
            assert task is not None
            container_id = task.status.container_id

            # The leader goes away; the other manager takes over.
            server, dispatcher = servers.pop(second)
            await dispatcher.stop()
            await server.stop(0)
            raft.leader = first
            await eventually("the agent fails over", lambda: agent.session.manager == first)
            await eventually(
                "node-a ready", lambda: state_of(raft.store, Node, "node-a") == "ready"
            )
            await raft.propose(
                Transaction().create(assigned_task("t-two", "node-a", "traefik/whoami")).encode(),
                1.0,
            )
            await eventually("t-two runs", lambda: state_of(raft.store, Task, "t-two") == "running")
            task = raft.store.get(Task, "t-web")
            assert task is not None and task.status.state == "running"
            assert task.status.container_id == container_id  # kept running across the failover
        finally:
            await agent.stop()
            for server, dispatcher in servers.values():
                await dispatcher.stop()
                await server.stop(0)

    asyncio.run(scenario())


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    try:
        if hasattr(call, "read"):
            await call.read()  # type: ignore[attr-defined]
        else:
            await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError("the call was expected to fail")


def test_refusals_name_what_is_wrong() -> None:
    async def scenario() -> None:
        leader, follower = "127.77.170.21:2377", "127.77.170.22:2377"
        raft = StandInRaft([leader, follower])
        await raft.propose(
            Transaction()
            .create(worker_node("node-a"))
            .create(worker_node("node-b"))
            .create(assigned_task("t-b", "node-b", "busybox"))
            .encode(),
            1.0,
        )
        servers = [await stand_in_manager(raft, a) for a in (leader, follower)]
        channels = {a: grpc.aio.insecure_channel(a) for a in (leader, follower)}
        stubs = {a: dispatcher_pb2_grpc.DispatcherStub(c) for a, c in channels.items()}
        try:
            hello = dispatcher_pb2.SessionRequest(node_id="node-a")
            err = await rpc_error(stubs[follower].Session(hello))
            assert err.code() is grpc.StatusCode.UNAVAILABLE  # no leader yet
            raft.leader = leader
            err = await rpc_error(stubs[follower].Session(hello))
            assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert leader in (err.details() or "")
            assert ("swarmlab-leader", leader) in [tuple(m) for m in err.trailing_metadata()]

            stub = stubs[leader]
            err = await rpc_error(stub.Session(dispatcher_pb2.SessionRequest(node_id="ghost")))
            assert err.code() is grpc.StatusCode.NOT_FOUND
            assert "node ghost not found" in (err.details() or "")
            err = await rpc_error(stub.Session(dispatcher_pb2.SessionRequest()))
            assert err.code() is grpc.StatusCode.INVALID_ARGUMENT

            session = stub.Session(hello)
            first = await session.read()
            assert isinstance(first, dispatcher_pb2.SessionMessage) and first.session_id
            assert [m.addr for m in first.managers] == [leader, follower]
            beat = dispatcher_pb2.HeartbeatRequest(node_id="node-a", session_id="stale")
            err = await rpc_error(stub.Heartbeat(beat))
            assert err.code() is grpc.StatusCode.NOT_FOUND and "session invalid" in (
                err.details() or ""
            )
            beat.session_id = first.session_id
            response = await stub.Heartbeat(beat)
            assert response.period_ns == int(PERIOD * 1e9)

            def report(task_id: str, state: str) -> dispatcher_pb2.UpdateTaskStatusRequest:
                return dispatcher_pb2.UpdateTaskStatusRequest(
                    node_id="node-a",
                    session_id=first.session_id,
                    updates=[
                        dispatcher_pb2.TaskStatusUpdate(
                            task_id=task_id, status=TaskStatus(state=state)
                        )
                    ],
                )

            err = await rpc_error(stub.UpdateTaskStatus(report("t-b", "running")))
            assert err.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "not assigned to node node-a" in (err.details() or "")
            await raft.propose(
                Transaction().create(assigned_task("t-a", "node-a", "busybox")).encode(), 1.0
            )
            err = await rpc_error(stub.UpdateTaskStatus(report("t-a", "sprinting")))
            assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "unknown task state 'sprinting'" in (err.details() or "")
            await stub.UpdateTaskStatus(report("t-a", "running"))
            await eventually("t-a running", lambda: state_of(raft.store, Task, "t-a") == "running")
            await stub.UpdateTaskStatus(report("t-a", "starting"))  # backwards: ignored
            await stub.UpdateTaskStatus(report("t-gone", "running"))  # unknown task: ignored
            await raft.propose(
                Transaction().create(assigned_task("t-mark", "node-a", "busybox")).encode(), 1.0
            )
            await stub.UpdateTaskStatus(report("t-mark", "running"))  # written after the above
            await eventually("t-mark", lambda: state_of(raft.store, Task, "t-mark") == "running")
            assert state_of(raft.store, Task, "t-a") == "running"
            await stub.UpdateTaskStatus(report("t-a", "complete"))
            await eventually(
                "t-a complete", lambda: state_of(raft.store, Task, "t-a") == "complete"
            )
            session.cancel()
        finally:
            for channel in channels.values():
                await channel.close()
            for server, dispatcher in servers:
                await dispatcher.stop()
                await server.stop(0)

    asyncio.run(scenario())


def test_an_agent_outlives_a_failing_channel_factory() -> None:
    async def scenario() -> None:
        address = "127.77.170.31:2377"
        raft = StandInRaft([address])
        await raft.propose(Transaction().create(worker_node("node-a")).encode(), 1.0)
        raft.leader = address
        server, dispatcher = await stand_in_manager(raft, address)
        failures = [ValueError("no certificate yet"), RuntimeError("broken credentials")]

        def flaky(target: str) -> grpc.aio.Channel:
            if failures:
                raise failures.pop(0)
            return insecure(target)

        agent = agent_for("node-a", [address], flaky)
        try:
            await agent.start()
            await eventually(
                "node-a ready", lambda: state_of(raft.store, Node, "node-a") == "ready"
            )
            assert failures == []
        finally:
            await agent.stop()
            await dispatcher.stop()
            await server.stop(0)

    asyncio.run(scenario())
