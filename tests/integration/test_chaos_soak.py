"""`swarmlab chaos run` on a lab of real node processes (3 managers + 1 worker on
127.77.222.x): a short seeded schedule under the workload, every fault healed, every check
passing, and a JSON report that says so."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from swarmlab_cli import swarmlab

from controlplane.lab import control
from controlplane.lab.chaos_schedule import FAULT_KINDS, plan_schedule
from controlplane.lab.control import LabNode, LabState
from controlplane.lab.swarm_lab import SwarmLab

pytestmark = pytest.mark.integration

LAB = 222
SEED = 11


def test_a_short_chaos_run_heals_and_passes_every_check(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=1, lab=LAB)
        try:
            await lab.up()
            LabState(LAB, "lab", [LabNode.of(n) for n in lab.nodes]).save(tmp_path)
            printed = await swarmlab(
                tmp_path, "chaos", "run", "--seed", str(SEED), "--duration", "30s", "--json"
            )
            report = json.loads(printed)
        finally:
            lab.stop()
            control.down(tmp_path)  # the nodes the run restarted, by the PIDs in lab.json
        managers = ["manager-1", "manager-2", "manager-3"]
        planned = plan_schedule(SEED, 30, FAULT_KINDS, managers, ["worker-1"])
        assert report["ok"] is True, report["checks"]
        assert report["seed"] == SEED and report["lab"] == "3+1"
        assert report["schedule"] == [p.to_json() for p in planned]  # the seed's schedule
        injected = [e["phase"] for e in report["events"] if e["what"] == "inject"]
        healed = [e["phase"] for e in report["events"] if e["what"] == "heal"]
        assert injected == [p.number for p in planned] and healed[: len(injected)] == injected
        assert {c["check"] for c in report["checks"]} >= {
            "acknowledged writes",
            "unique allocations",
            "one leader",
            "raft applied",
            "nodes ready",
            "replicas running",
            "gossip agrees",
            "service networks",
        }
        summary = report["workload"]["summary"]
        assert summary["network create"]["ok"] > 0 and summary["service create"]["ok"] > 0
        assert len(report["workload"]["calls"]) == sum(
            sum(counts.values()) for counts in summary.values()
        )

    asyncio.run(scenario())
