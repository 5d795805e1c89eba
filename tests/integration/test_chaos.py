"""Chaos in a lab of real node processes, driven by the `swarmlab` CLI: a partition that
isolates the leader with a worker, heal, delay and loss, failover."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from swarmlab_cli import swarmlab

from controlplane.lab import control
from controlplane.lab.control import LabNode, LabState
from controlplane.lab.engine import EngineClient, EngineError
from controlplane.lab.swarm_lab import SwarmLab, until
from controlplane.raft.errors import NO_LEADER_MESSAGE

pytestmark = pytest.mark.integration

LAB = 182


async def leader(state: LabState, among: list[str], newer_than: int = 0) -> tuple[str, int]:
    async def found() -> tuple[str, int] | None:
        rafts = await control.raft_states([state.node(n) for n in among])
        for name, raft in rafts.items():
            if raft["role"] == "leader" and raft["term"] > newer_than:
                return name, int(raft["term"])
        return None

    return await until(found, 60, f"a leader among {', '.join(among)}")


async def converged(state: LabState, managers: list[str]) -> dict[str, dict[str, Any]]:
    """Every manager answers, one leader, one term, the same commit index everywhere."""

    async def check() -> dict[str, dict[str, Any]] | None:
        rafts = await control.raft_states([state.node(n) for n in managers])
        if len(rafts) != len(managers):
            return None
        leaders = {r["leader"] for r in rafts.values()}
        roles = sorted(r["role"] for r in rafts.values())
        same = len({(r["term"], r["commit"]) for r in rafts.values()}) == 1
        one_leader = roles.count("leader") == 1 and len(leaders) == 1
        return rafts if same and one_leader else None

    return await until(check, 60, "the managers to converge")


async def create_network(node: LabNode, name: str) -> None:
    async def created() -> bool:
        async with EngineClient(node.api) as engine:
            await engine.create_network(name)
        return True

    await until(created, 90, f"network {name} created through {node.name}")


def test_partition_heal_delay_loss_and_failover(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=2, lab=LAB)
        try:
            await lab.up()
            state = LabState(LAB, "lab", [LabNode.of(n) for n in lab.nodes])
            state.save(tmp_path)
            managers = [n.name for n in lab.managers]
            await converged(state, managers)
            old, old_term = await leader(state, managers)
            majority = [m for m in managers if m != old]

            # The leader and worker-1 away from the two other managers (and worker-2).
            groups = f"{old},worker-1 / {','.join(majority)},worker-2"
            printed = await swarmlab(tmp_path, "partition", *groups.split())
            assert f"partitioned: {old},worker-1 / {','.join(majority)},worker-2" in printed
            new, _ = await leader(state, majority, newer_than=old_term)
            await create_network(state.node(majority[0]), "during-partition")

            async def stepped_down() -> bool | None:
                raft = (await control.raft_states([state.node(old)]))[old]
                return True if raft["role"] != "leader" else None

            await until(stepped_down, 60, f"{old} to step down without a quorum")
            async with EngineClient(state.node(old).api) as isolated:
                with pytest.raises(EngineError) as refused:
                    await isolated.create_network("on-the-minority-side")
                assert str(refused.value) == NO_LEADER_MESSAGE
                names = {n["Name"] for n in await isolated.networks()}  # reads still answer
                assert "ingress" in names and "during-partition" not in names

            async def gossip_split() -> dict[str, dict[str, Any]] | None:
                rows = json.loads(await swarmlab(tmp_path, "status", "--json"))
                by_name = {row["name"]: row for row in rows}
                alive = {m["name"] for m in by_name[old]["gossip_members"] if m["state"] == "alive"}
                return by_name if alive == {old, "worker-1"} else None

            # The status shows the Raft state, the gossip members each side still sees alive
            # (gossip runs in the nodes, cut like the rest) and the faults.
            rows = await until(gossip_split, 60, f"{old}'s gossip to lose the other side")
            assert rows[old]["faults"] == f"cut from {','.join(majority)},worker-2"
            assert rows[new]["term"] > old_term and rows[new]["commit"] > 0
            assert rows["worker-1"]["term"] == "" and rows["worker-1"]["raft"] is None

            # Heal: one leader, the same commit everywhere, the old leader has the write.
            printed = await swarmlab(tmp_path, "heal")
            assert "no partition, delay or loss left" in printed
            await converged(state, managers)
            async with EngineClient(state.node(old).api) as rejoined:
                names = {n["Name"] for n in await rejoined.networks()}
                assert "during-partition" in names

            async def gossip_whole() -> bool | None:
                rows = json.loads(await swarmlab(tmp_path, "status", "--json"))
                alive = [
                    {m["name"] for m in row["gossip_members"] if m["state"] == "alive"}
                    for row in rows
                ]
                return True if all(len(names) == len(rows) for names in alive) else None

            await until(gossip_whole, 60, "one gossip membership again after the heal")

            # Delay and loss slow writes down but do not break them.
            current, _ = await leader(state, managers)
            follower = next(m for m in managers if m != current)
            printed = await swarmlab(tmp_path, "delay", current, "200ms", "--jitter", "50ms")
            assert printed.strip() == f"{current}: delay 200ms±50ms"
            printed = await swarmlab(tmp_path, "loss", follower, "10%")
            assert printed.strip() == f"{follower}: loss 10%"
            await create_network(state.node(follower), "under-delay-and-loss")
            await swarmlab(tmp_path, "heal")
            await converged(state, managers)

            # Failover: the leader is killed, a new one elected, a write acknowledged.
            current, _ = await leader(state, managers)
            printed = await swarmlab(tmp_path, "failover")
            assert f"{current} led" in printed
            elected = re.search(r"new leader elected after\s+(\d+\.\d+) s", printed)
            written = re.search(r"first write succeeded after\s+(\d+\.\d+) s", printed)
            assert elected and written, printed
            assert float(elected[1]) <= float(written[1])
            survivors = [m for m in managers if m != current]
            assert not state.node(current).alive()
            await converged(state, survivors)
        finally:
            lab.stop()

    asyncio.run(scenario())
