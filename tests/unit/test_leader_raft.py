"""LeaderLoops over a real Raft driver (WAL, snapshots, gRPC listener on 127.77.160.2):
the manager loses its loops half-way, restarts from disk, and a new run of the loops finishes
the job without allocating anything twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

from raft_testing import one_manager

from controlplane.manager.leader import LeaderLoops
from controlplane.pb.objects_pb2 import Service, Task
from controlplane.raft.driver import RaftDriver
from controlplane.store import Store, StoreError, Transaction
from tests.unit.cluster_builders import overlay, replicated
from tests.unit.swarm_fixture import ingress_network, ready_node, wait_for

ADDRESS = "127.77.160.2:2377"


async def manager(directory: Path) -> tuple[RaftDriver, Store]:
    m = await one_manager(
        directory, ADDRESS, node_id=5, cluster_id=11, snapshot_interval=4, keep_entries=2
    )
    return m.driver, m.store


def test_loops_resume_after_the_manager_restarts_half_way(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver, store = await manager(tmp_path)

        async def propose(data: bytes) -> bytes:
            _, result = await driver.propose(data, timeout=10)
            return result

        setup = Transaction().create(ingress_network())
        setup.create(overlay("net1", "my-net", "10.0.1.0/24", 4097))
        for i in (1, 2, 3):
            setup.create(ready_node(f"node{i}", f"host-{i}"))
        setup.create(replicated("web", 6, networks=("net1",), ports=((8080, 80),)))
        assert StoreError.from_result(await propose(setup.encode())) is None

        forwarded = 0
        stuck = asyncio.Event()

        async def dies_after_two(data: bytes) -> bytes:
            nonlocal forwarded
            if forwarded == 2:  # the third write never comes back: leadership is gone
                stuck.set()
                await asyncio.Event().wait()
            forwarded += 1
            return await propose(data)

        job = asyncio.create_task(LeaderLoops(store, dies_after_two).run())
        await asyncio.wait_for(stuck.wait(), 20)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        assert {t.status.state for t in store.list(Task)} == {"new"}  # endpoint, tasks: no more
        await driver.stop()

        driver, store = await manager(tmp_path)  # a new term, state from the WAL and snapshots
        try:
            await driver.linearizable_read(timeout=10)
            loops = LeaderLoops(store, propose)
            job = asyncio.create_task(loops.run())
            await wait_for(lambda: sum(t.status.state == "assigned" for t in store.list(Task)) == 6)
            await wait_for(lambda: loops.idle)
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            tasks = store.list(Task)
            assert sorted(t.slot for t in tasks) == [1, 2, 3, 4, 5, 6]
            svc = store.get_by_name(Service, "web")
            assert svc is not None
            held = list(svc.endpoint.virtual_ips.values())
            held += [a for t in tasks for att in t.networks for a in att.addresses]
            assert len(held) == len(set(held)) == 14  # 2 VIPs + 6 tasks on 2 networks
        finally:
            await driver.stop()

    asyncio.run(scenario())
