"""`docker swarm update --snapshot-interval N` reaches the running managers: each one takes
a Raft snapshot every N applied entries from the moment the update is committed (with the
default, 10000, none is taken in a short lab), and `docker info` shows the interval.
A 3-manager lab on 127.77.218.x, driven with the real docker CLI."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from docker_cli import docker, ok

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]


def snapshots(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "raft" / "snap").glob("*.snap"))


def test_swarm_update_snapshot_interval_is_applied_live(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=0, lab=218)
        try:
            await lab.up()
            leader = lab.managers[0]
            for i in range(5):
                ok(leader, "secret", "create", f"before-{i}", "-", stdin="x")
            assert all(snapshots(m.data_dir) == [] for m in lab.managers)
            ok(leader, "swarm", "update", "--snapshot-interval", "5")
            # Real 20.10 `docker info`: "  Raft:\n   Snapshot Interval: 10000\n ..."
            info = ok(leader, "info")
            assert "  Raft:\n   Snapshot Interval: 5\n" in info
            for i in range(12):
                ok(leader, "secret", "create", f"after-{i}", "-", stdin="x")

            async def every_manager_snapshotted() -> bool | None:
                return all(snapshots(m.data_dir) for m in lab.managers) or None

            await until(every_manager_snapshotted, 60, "a snapshot on every manager")
            # Another manager says the same (it reads the same replicated Cluster).
            shown = docker(lab.managers[1], "info", "--format",
                           "{{.Swarm.Cluster.Spec.Raft.SnapshotInterval}}")  # fmt: skip
            assert shown.stdout.strip() == "5", shown.stderr
        finally:
            lab.stop()

    asyncio.run(scenario())
