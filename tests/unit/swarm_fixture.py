"""An in-process swarm for API tests: the LocalBackend store with ready nodes, the `ingress`
network as `swarm init` makes it, LeaderLoops running over it, and a stand-in agent that
moves tasks the scheduler assigned to running (those desired "ready" to ready, and stopped
ones to shutdown), as the real agent reports them through the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from controlplane.api.local import LocalBackend
from controlplane.manager.allocation import allocate
from controlplane.manager.allocator import Allocator
from controlplane.manager.leader import LeaderLoops
from controlplane.manager.leader_memory import LeaderMemory
from controlplane.manager.orchestrator import reconcile
from controlplane.manager.scheduler import schedule
from controlplane.manager.tasks import note_started, rank
from controlplane.manager.view import ClusterView
from controlplane.node_local_networks import predefined_networks
from controlplane.pb.objects_pb2 import IPAMConfig, Network, Node, Task
from controlplane.store import Store, StoreError, Transaction

INGRESS_ID = "ingressnet000000000000000"


def ready_node(node_id: str, hostname: str, role: str = "worker") -> Node:
    node = Node(id=node_id, role=role)
    node.meta.created_at_ns = node.meta.updated_at_ns = time.time_ns()
    node.spec.desired_role = role
    node.spec.availability = "active"
    node.description.hostname = hostname
    node.description.os = "linux"
    node.description.architecture = "x86_64"
    node.status.state = "ready"
    node.status.addr = "127.0.0.1"
    return node


def ingress_network() -> Network:
    net = Network(id=INGRESS_ID, vni=4096)
    net.meta.created_at_ns = net.meta.updated_at_ns = time.time_ns()
    net.spec.annotations.name = "ingress"
    net.spec.driver = "overlay"
    net.spec.ingress = True
    net.ipam.append(IPAMConfig(subnet="10.0.0.0/24", gateway="10.0.0.1"))
    return net


async def seed(
    backend: LocalBackend, nodes: int = 3, *, ingress: bool = True, predefined: bool = False
) -> list[Node]:
    """`predefined`: also swarmkit's predefined `bridge` and `host`, as `swarm init` writes."""
    made = [ready_node(f"node{i}00000000000000000000", f"host-{i}") for i in range(1, nodes + 1)]
    txn = Transaction()
    for node in made:
        txn.create(node)
    if ingress:
        txn.create(ingress_network())
    for network in predefined_networks(time.time_ns()) if predefined else ():
        txn.create(network)
    assert StoreError.from_result(await backend.propose(txn.encode())) is None
    return made


def agent_step(store: Store, now_ns: int) -> Transaction:
    """What an agent would report next for every task on a node."""
    txn = Transaction()
    for task in store.list(Task):
        if not task.node_id or rank(task.status.state) < rank("assigned"):
            continue
        desired = task.desired_state
        stopping = desired not in ("running", "complete", "ready")  # complete: a job's
        if stopping and rank(task.status.state) <= rank("running"):
            task.status.state, task.status.message = "shutdown", "shutdown"
        elif desired == "ready" and rank(task.status.state) < rank("ready"):
            task.status.state, task.status.message = "ready", "prepared"  # not started yet
        elif desired in ("running", "complete") and rank(task.status.state) < rank("running"):
            task.status.state, task.status.message = "running", "started"
            task.status.container_id = (task.id * 3)[:64]
            task.status.pid = 4242
        else:
            continue
        task.status.timestamp_ns = task.meta.updated_at_ns = now_ns
        note_started(task)
        txn.update(task)
    return txn


def next_write(
    store: Store, view: ClusterView, now_ns: int, allocator: Allocator, memory: LeaderMemory
) -> Transaction | None:
    """The leader's next write (allocate, then reconcile, then schedule), else the agents'
    next report; None once nothing is left to do. The caller applies it: `memory` learns
    what the orchestrator did."""
    txn = allocate(view, now_ns, allocator).transaction
    if txn is None:
        plan = reconcile(view, now_ns, memory)
        memory.learn(plan.learned)
        txn = plan.transaction or schedule(view, now_ns)
    if txn is None:
        step = agent_step(store, now_ns)
        txn = step if len(step) else None
    return txn


async def fake_agent(backend: LocalBackend) -> None:
    with backend.store.watch() as watch:
        while True:
            txn = agent_step(backend.store, time.time_ns())
            if len(txn):
                await backend.propose(txn.encode())
            await watch.__anext__()


@contextlib.asynccontextmanager
async def running_swarm(backend: LocalBackend, *, agent: bool = True) -> AsyncIterator[None]:
    jobs = [asyncio.create_task(LeaderLoops(backend.store, backend.propose).run())]
    if agent:
        jobs.append(asyncio.create_task(fake_agent(backend)))
    try:
        yield
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


async def wait_for(predicate: object, timeout: float = 20.0) -> None:
    """Poll until predicate() is true (a deadline, never a fixed sleep)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def seeded_swarm(nodes: int) -> Callable[[LocalBackend], AbstractAsyncContextManager[None]]:
    """What a served API runs beside it (`served`'s `around`): a store seeded with `nodes`
    Ready nodes, the leader's loops and the stand-in agent."""

    @contextlib.asynccontextmanager
    async def around(backend: LocalBackend) -> AsyncIterator[None]:
        await seed(backend, nodes=nodes)
        async with running_swarm(backend):
            yield

    return around
