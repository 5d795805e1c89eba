"""A manager that was down or cut off while writes were acknowledged answers reads with
those writes as soon as it answers again (found by `swarmlab chaos run --seed 3`: a manager
just restarted answered `GET /services/ID` of an acknowledged service with 404, so the
workload's `docker service scale` failed with "not found"). Its reads catch up with the leader
first, and so do the checks of a network remove (seed 6 of `--allow-quorum-loss --faults
kill,partition,restart`: `network rm` of an acknowledged network through a manager just
restarted answered "not found"); without a leader reads still answer, from its own store.
3 managers on 127.77.225.x."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.faults import FaultPlan
from controlplane.lab.engine import EngineClient, EngineError
from controlplane.lab.swarm_lab import SwarmLab, until
from controlplane.raft.errors import NO_LEADER_MESSAGE

pytestmark = pytest.mark.integration

LAB = 225
ROUNDS = 3


def service_spec(name: str) -> dict[str, object]:
    return {
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "86400"]}},
        "Mode": {"Replicated": {"Replicas": 1}},
    }


def test_a_manager_back_from_a_restart_or_a_partition_reads_the_acknowledged_writes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=0, lab=LAB)
        try:
            await lab.up()
            leader = await until(lab.all_ready, 60, "a ready lab with a leader")
            follower = next(m for m in lab.managers if m is not leader)
            others = [m.address for m in lab.managers if m is not follower]
            async with lab.engine(leader) as through_leader:
                for round_ in range(ROUNDS):
                    # Down: SIGKILL, write, start again, read at once.
                    follower.kill()
                    service = f"while-down-{round_}"
                    created = await through_leader.request(
                        "POST", "/services/create", service_spec(service)
                    )
                    doomed = await through_leader.create_network(f"to-remove-{round_}")
                    follower.start()
                    await lab.wait_api(follower)
                    async with EngineClient(follower.api, timeout=30) as back:
                        # A remove is checked against the store too (not "not found").
                        await back.request("DELETE", f"/networks/{doomed}")
                        inspected = await back.request("GET", f"/services/{created['ID']}")
                        assert inspected["Spec"]["Name"] == service
                        listed = {s["Spec"]["Name"] for s in await back.request("GET", "/services")}
                        assert service in listed

                    # Cut off: partition, write, heal, read at once.
                    async with EngineClient(follower.api, timeout=30) as cut:
                        await cut.set_faults(FaultPlan().with_partition(others).to_json())
                        network = f"while-cut-{round_}"
                        await through_leader.create_network(network)
                        await cut.set_faults({})
                        names = {n["Name"] for n in await cut.networks()}
                        assert network in names
                    await until(lab.all_ready, 60, "the lab whole again")

            # Without a leader, reads still answer, from the manager's own store.
            for manager in lab.managers:
                if manager is not follower:
                    manager.kill()
            async with EngineClient(follower.api, timeout=30) as alone:
                names = {n["Name"] for n in await alone.networks()}
                assert {f"while-cut-{r}" for r in range(ROUNDS)} <= names
                with pytest.raises(EngineError) as refused:
                    await alone.create_network("no-quorum")
                assert str(refused.value) == NO_LEADER_MESSAGE
        finally:
            lab.stop()

    asyncio.run(scenario())
