"""LeaderLoops over a LocalBackend store: convergence, restart on a half-done store (a new
leader), timers for delayed steps, retries on refused proposals, and no polling when idle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from controlplane.api.local import LocalBackend
from controlplane.manager.allocation import allocate
from controlplane.manager.leader import LeaderLoops
from controlplane.manager.leader_memory import LeaderMemory
from controlplane.manager.orchestrator import reconcile
from controlplane.manager.view import ClusterView
from controlplane.pb.objects_pb2 import Service, StoreTransaction, Task
from controlplane.raft.errors import NoLeaderError
from controlplane.store import StoreError, Transaction
from tests.unit.cluster_builders import SyncCluster, overlay, replicated
from tests.unit.swarm_fixture import fake_agent, seed, wait_for


def run(test: Callable[[LocalBackend], Awaitable[None]]) -> None:
    async def main() -> None:
        backend = LocalBackend()
        await seed(backend, nodes=3)
        await test(backend)

    asyncio.run(main())


async def propose_ok(backend: LocalBackend, txn: Transaction) -> None:
    assert StoreError.from_result(await backend.propose(txn.encode())) is None


def tasks(backend: LocalBackend, state: str | None = None) -> list[Task]:
    return [t for t in backend.store.list(Task) if state in (None, t.status.state)]


def test_loops_take_a_service_to_assigned_tasks_and_then_sleep() -> None:
    async def t(backend: LocalBackend) -> None:
        loops = LeaderLoops(backend.store, backend.propose)
        job = asyncio.create_task(loops.run())
        await propose_ok(backend, Transaction().create(replicated("web", 3)))
        await wait_for(lambda: len(tasks(backend, "assigned")) == 3)
        await wait_for(lambda: loops.idle)
        settled = loops.passes
        await asyncio.sleep(0.3)
        assert loops.passes == settled and loops.idle  # no pass without a change or a timer
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)

    run(t)


def test_a_new_leader_finishes_what_the_old_one_left_half_done() -> None:
    async def t(backend: LocalBackend) -> None:
        await propose_ok(backend, Transaction().create(overlay("net1", "n", "10.0.1.0/24", 4097)))
        await propose_ok(
            backend,
            Transaction().create(replicated("web", 4, networks=("net1",), ports=((80, 80),))),
        )
        # The old leader got as far as the endpoint and the tasks, then died.
        now = time.time_ns()
        view = ClusterView.read(backend.store)
        await propose_ok(backend, allocate(view, now).transaction)  # type: ignore[arg-type]
        view = ClusterView.read(backend.store)
        plan = reconcile(view, now, LeaderMemory(now))
        await propose_ok(backend, plan.transaction)  # type: ignore[arg-type]
        # ... and allocated half the tasks' addresses.
        half = [t for t in tasks(backend) if t.slot <= 2]
        view = ClusterView.of(
            nodes=list(view.nodes.values()),
            networks=list(view.networks.values()),
            services=list(ClusterView.read(backend.store).services.values()),
            tasks=half,
            cluster=view.cluster,
        )
        await propose_ok(backend, allocate(view, now).transaction)  # type: ignore[arg-type]
        assert sorted(t.status.state for t in tasks(backend)) == [
            "new",
            "new",
            "pending",
            "pending",
        ]

        loops = LeaderLoops(backend.store, backend.propose)
        job = asyncio.create_task(loops.run())
        await wait_for(lambda: len(tasks(backend, "assigned")) == 4)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        assert sorted(t.slot for t in tasks(backend)) == [1, 2, 3, 4]
        addresses = [a for t in tasks(backend) for att in t.networks for a in att.addresses]
        svc = backend.store.get_by_name(Service, "web")
        assert svc is not None
        addresses += list(svc.endpoint.virtual_ips.values())
        assert len(addresses) == len(set(addresses)) == 10  # 4 tasks x 2 networks + 2 VIPs

    run(t)


async def failed_under_a_restart_delay(
    backend: LocalBackend, delay_ns: int
) -> tuple[LeaderLoops, asyncio.Task[None], Task]:
    """Running leader loops, and the one task of service `web` (restart delay `delay_ns`)
    reported failed once it ran: its replacement, made at once, waits in desired "ready" for
    the delay. Cancel the loops' job."""
    svc = replicated("web", 1)
    svc.spec.restart_policy.delay_ns = delay_ns
    loops = LeaderLoops(backend.store, backend.propose)
    job = asyncio.create_task(loops.run())
    agent = asyncio.create_task(fake_agent(backend))
    await propose_ok(backend, Transaction().create(svc))
    await wait_for(lambda: len(tasks(backend, "running")) == 1)
    agent.cancel()
    await asyncio.gather(agent, return_exceptions=True)
    [task] = tasks(backend)
    task.status.state = "failed"
    task.status.timestamp_ns = time.time_ns()
    await propose_ok(backend, Transaction().update(task))
    return loops, job, task


def started(backend: LocalBackend, failed: Task) -> bool:
    """Whether `failed`'s replacement is desired running (its restart delay ran out)."""
    return any(t.id != failed.id and t.desired_state == "running" for t in tasks(backend))


def test_restart_delay_wakes_the_loop_without_any_store_change() -> None:
    async def t(backend: LocalBackend) -> None:
        _loops, job, task = await failed_under_a_restart_delay(backend, 200_000_000)
        await wait_for(lambda: started(backend, task))  # only the timer can do it
        [replacement] = [t for t in tasks(backend) if t.id != task.id]
        assert replacement.slot == 1
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)

    run(t)


def test_refused_and_failed_proposals_are_retried() -> None:
    async def t(backend: LocalBackend) -> None:
        calls = {"n": 0}

        async def flaky(data: bytes) -> bytes:
            calls["n"] += 1
            if calls["n"] == 1:
                raise NoLeaderError()
            if calls["n"] == 2:
                # someone else changes the service first: this proposal is out of sequence
                svc = backend.store.get_by_name(Service, "web")
                assert svc is not None
                svc.spec.annotations.labels["touched"] = "yes"
                await propose_ok(backend, Transaction().update(svc))
            return await backend.propose(data)

        await propose_ok(backend, Transaction().create(replicated("web", 2, ports=((0, 80),))))
        loops = LeaderLoops(backend.store, flaky, retry_delay=0.01)
        job = asyncio.create_task(loops.run())
        await wait_for(lambda: len(tasks(backend, "assigned")) == 2)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        svc = backend.store.get_by_name(Service, "web")
        assert svc is not None and svc.endpoint.ports[0].published_port == 30000
        assert svc.spec.annotations.labels["touched"] == "yes"

    run(t)


def test_watch_overflow_does_not_stop_the_loops() -> None:
    async def t(backend: LocalBackend) -> None:
        loops = LeaderLoops(backend.store, backend.propose)
        job = asyncio.create_task(loops.run())
        await asyncio.sleep(0)
        txn = Transaction()
        for i in range(1500):  # more events at once than a watch buffers
            txn.create(Task(id=f"orphan{i:05d}", service_id="gone"))
        await propose_ok(backend, txn)
        await propose_ok(backend, Transaction().create(replicated("web", 1)))
        await wait_for(lambda: len(tasks(backend, "assigned")) == 1)
        await wait_for(lambda: not [t for t in tasks(backend) if t.service_id == "gone"])
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)

    run(t)


def test_a_failing_pass_is_logged_and_retried() -> None:
    async def t(backend: LocalBackend) -> None:
        calls = {"n": 0}

        async def broken_once(data: bytes) -> bytes:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("a bug somewhere below")
            return await backend.propose(data)

        await propose_ok(backend, Transaction().create(replicated("web", 1)))
        job = asyncio.create_task(LeaderLoops(backend.store, broken_once, retry_delay=0.01).run())
        await wait_for(lambda: len(tasks(backend, "assigned")) == 1)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)

    run(t)


def test_an_allocated_network_wakes_no_pass_and_an_unallocated_one_does() -> None:
    async def t(backend: LocalBackend) -> None:
        loops = LeaderLoops(backend.store, backend.propose)
        job = asyncio.create_task(loops.run())
        await wait_for(lambda: loops.idle)
        settled = loops.passes
        await propose_ok(backend, Transaction().create(overlay("net1", "n", "10.0.1.0/24", 4097)))
        await asyncio.sleep(0.2)
        assert loops.passes == settled and loops.idle  # the creator allocated it: nothing to do
        bare = overlay("net2", "m", "10.0.2.0/24", 0)
        del bare.ipam[:]
        await propose_ok(backend, Transaction().create(bare))
        await wait_for(lambda: loops.passes > settled)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)

    run(t)


def test_a_pending_restart_delay_survives_passes_about_other_services() -> None:
    async def t(backend: LocalBackend) -> None:
        loops, job, failed = await failed_under_a_restart_delay(backend, 400_000_000)
        await wait_for(lambda: loops.idle)
        # A pass about another service only (its own plan has no timer) must keep web's.
        await propose_ok(backend, Transaction().create(replicated("db", 0)))
        await wait_for(lambda: started(backend, failed))
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)

    run(t)


def test_focused_passes_leave_unchanged_services_alone() -> None:
    c = SyncCluster(nodes=2)
    c.apply(Transaction().create(replicated("a", 2)))
    c.apply(Transaction().create(replicated("b", 1)))
    view = ClusterView.read(c.store)
    plan = reconcile(view, c.now, c.memory, focus={"a"})
    assert plan.transaction is not None
    made = [a.task for a in StoreTransaction.FromString(plan.transaction.encode()).actions]
    assert sorted(t.service_id for t in made) == ["a", "a"]
    c.converge()
    b = c.store.get(Service, "b")
    assert b is not None
    b.spec.ports.add(target_port=80, published_port=8080, protocol="tcp")
    c.update_service(b)
    assert allocate(ClusterView.read(c.store), c.now, focus={"a"}).transaction is None
    assert allocate(ClusterView.read(c.store), c.now, focus={"b"}).transaction is not None


def test_only_a_full_pass_gives_nodes_their_ingress_address() -> None:
    """The leader focuses a pass only when no node and not the ingress network changed since
    its last full pass, which gave every node its address: a focused pass leaves nodes alone."""
    c = SyncCluster(nodes=2)
    c.apply(Transaction().create(replicated("a", 0)))
    view = ClusterView.read(c.store)
    assert allocate(view, c.now, focus={"a"}).transaction is None
    txn = allocate(view, c.now).transaction
    assert txn is not None
    actions = StoreTransaction.FromString(txn.encode()).actions
    assert sorted(a.node.id for a in actions if a.WhichOneof("target") == "node") == [
        "node1",
        "node2",
    ]


def test_the_first_pass_waits_until_the_store_is_settled() -> None:
    async def t(backend: LocalBackend) -> None:
        calls: list[float] = []
        settled = asyncio.Event()

        async def settle(timeout: float) -> None:
            calls.append(timeout)
            if len(calls) == 1:
                raise NoLeaderError()  # no quorum yet: tried again after retry_delay
            await settled.wait()

        await propose_ok(backend, Transaction().create(replicated("web", 1)))
        loops = LeaderLoops(backend.store, backend.propose, retry_delay=0.01, settle=settle)
        job = asyncio.create_task(loops.run())
        await wait_for(lambda: len(calls) == 2)
        assert loops.passes == 0 and not tasks(backend)
        settled.set()
        await wait_for(lambda: len(tasks(backend, "assigned")) == 1)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)

    run(t)


def test_tasks_that_find_their_subnet_full_cost_no_restore_from_the_store() -> None:
    """A full subnet: the tasks without an address are reported on every pass, but such a
    failure claims nothing, so the allocator and the view are not read again from the store;
    the tasks that fit are allocated once each, as a new leader restoring the store would."""

    async def t(backend: LocalBackend) -> None:
        # A /29: 6 hosts, the gateway and the service's VIP leave 4 for tasks.
        await propose_ok(
            backend, Transaction().create(overlay("tiny", "tiny", "10.0.9.0/29", 4099))
        )
        loops = LeaderLoops(backend.store, backend.propose)
        job = asyncio.create_task(loops.run())
        await propose_ok(backend, Transaction().create(replicated("web", 6, networks=("tiny",))))
        await wait_for(lambda: len(tasks(backend, "assigned")) == 4 and loops.idle)
        assert len(tasks(backend, "new")) == 2
        restores = loops._allocation.restores
        for name in ("other1", "other2", "other3"):  # each wakes passes that meet the full subnet
            await propose_ok(backend, Transaction().create(replicated(name, 1)))
        await wait_for(lambda: len(tasks(backend, "assigned")) == 7 and loops.idle)
        assert loops._allocation.restores == restores
        addresses = [a.addresses[0] for task in tasks(backend) for a in task.networks]
        assert len(addresses) == len(set(addresses)) == 4
        # What the leader kept equals what a new leader would restore from the store.
        fresh = allocate(ClusterView.read(backend.store), time.time_ns())
        assert fresh.transaction is None and len(fresh.problems) == 2
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)

    run(t)
