"""The chaos workload against the Engine API of one in-process manager, without faults: its
ledger must match the swarm, and its deliberate races (a service create and the remove of
its network, together) must each have one winner with Docker's refusal for the loser."""

from __future__ import annotations

from pathlib import Path

from controlplane.lab.chaos_checks import Snapshot, run_checks
from controlplane.lab.chaos_workload import RACE, Workload
from controlplane.lab.engine import EngineClient
from controlplane.lab.swarm_lab import until
from tests.unit.in_process_node import run_manager

ADDRESS = "127.77.249.32"  # this file's node
RACES = 3


def test_the_workload_and_its_races_keep_the_ledger_true(tmp_path: Path) -> None:
    run_manager(tmp_path, ADDRESS, scenario)


async def scenario(api: str) -> None:
    # Short pauses: without faults nothing needs the time between calls.
    workload = Workload(lambda: [("manager-1", api)], seed=11, clients=2, pause=(0.0, 0.05))
    workload.start()

    async def raced() -> bool | None:
        return True if len(workload.ledger.races()) >= RACES else None

    try:
        await until(raced, 300, f"{RACES} races of {RACE!r}", interval=0.5)
    finally:
        ledger = await workload.stop()

    for race, calls in ledger.races().items():
        by_op = {c.op: c for c in calls}
        create, remove = by_op["service create"], by_op["network rm"]
        assert [create.outcome, remove.outcome].count("ok") == 1, (race, create, remove)
        if create.outcome != "ok":
            network = ledger.objects[remove.target]
            # Named as the create named it, or by id when the store refused it at apply time.
            named = {f"network {n} not found" for n in (network.name, network.id)}
            assert create.status == 404 and create.detail in named, create
        else:
            assert remove.status == 400 and "is in use by" in remove.detail, remove

    async with EngineClient(api) as engine:
        snapshot = Snapshot(
            processes={},
            rafts={},
            gossip={},
            networks=await engine.request("GET", "/networks"),
            services=await engine.request("GET", "/services"),
            tasks=await engine.request("GET", "/tasks"),
            read_from="manager-1",
        )
    results = {r.name: r for r in run_checks(snapshot, ledger)}
    for name in ("acknowledged writes", "no stale reads", "service networks", "unique names"):
        assert results[name].ok, results[name].detail
    assert await workload.remove_leftovers() >= 0
