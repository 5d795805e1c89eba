"""Dispatcher and agents over real gRPC sockets, in one process: a real one-manager Raft
cluster, then stand-in managers (a stub Raft view over one store) for redirects and failover.
Addresses: 127.77.170.0/24 (this suite's loopback range)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from controlplane.agent.agent import Agent
from controlplane.manager.dispatcher import DispatcherService, ManagerAddress, RaftView
from controlplane.manager.dispatcher import driver_raft_view
from controlplane.pb.objects_pb2 import Node, NodeDescription, Task
from controlplane.raft.driver import PROFILES, RaftDriver, bootstrap
from controlplane.raft.storage import RaftStorage
from controlplane.store import Store, StoreError, Transaction

pytestmark = pytest.mark.integration

PERIOD = 0.3  # heartbeat period: nodes are down after 0.9 s of silence
DEADLINE = 30.0


async def eventually(what: str, check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


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


def agent_for(node_id: str, managers: list[str]) -> Agent:
    return Agent(
        node_id=node_id,
        description=NodeDescription(hostname=node_id, os="linux", architecture="x86_64"),
        managers=managers,
        channel_factory=insecure,
        addr="127.77.170.99",
        stop_grace=0.2,
        max_backoff=0.5,
    )


def state_of(store: Store, kind: type[Node] | type[Task], object_id: str) -> str:
    obj = store.get(kind, object_id)
    return obj.status.state if obj is not None else "(missing)"


async def one_manager(directory: Path, address: str) -> tuple[RaftDriver, Store, DispatcherService]:
    storage = RaftStorage.create(directory, cluster_id=1, node_id=1)
    bootstrap(storage, 1, address)
    storage.close()
    storage, recovered = RaftStorage.open(directory)
    store = Store()
    driver = RaftDriver(
        storage=storage,
        recovered=recovered,
        state_machine=store,
        listen=address,
        profile=PROFILES["lab"],
    )
    dispatcher = DispatcherService(store, driver.propose, driver_raft_view(driver), PERIOD)
    await driver.start([dispatcher.register])
    await dispatcher.start()
    await eventually("the manager leads", lambda: driver.core.leader == 1)
    return driver, store, dispatcher


async def write(driver: RaftDriver, txn: Transaction) -> None:
    _, result = await driver.propose(txn.encode(), 10.0)
    assert StoreError.from_result(result) is None


def test_agents_run_their_tasks_and_a_silent_node_goes_down(tmp_path: Path) -> None:
    async def scenario() -> None:
        address = "127.77.170.1:2377"
        driver, store, dispatcher = await one_manager(tmp_path, address)
        await write(driver, Transaction().create(worker_node("node-a")).create(worker_node("node-b")))
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
            await eventually("t-sleep shuts down", lambda: state_of(store, Task, "t-sleep") == "shutdown")
            assert container.exit_code == 137  # sleep as PID 1 ignores SIGTERM

            await agents["node-b"].session.stop()  # no goodbye: heartbeats just stop
            await eventually("node-b down", lambda: state_of(store, Node, "node-b") == "down")
            down = store.get(Node, "node-b")
            assert down is not None and down.status.message == "heartbeat failure"
            assert state_of(store, Node, "node-a") == "ready"
        finally:
            for agent in agents.values():
                await agent.stop()
            await dispatcher.stop()
            await driver.stop()

    asyncio.run(scenario())
