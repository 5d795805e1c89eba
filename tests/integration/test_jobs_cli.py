"""Job services with the real docker CLI on a lab of one manager and two workers
(127.77.157.x): a replicated job completes its completions at most MaxConcurrent at a time and
`docker service ls` shows it as dockerd does; a global job runs once per eligible node,
a node that becomes eligible later included; what dockerd refuses is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from docker_cli import docker, needs_docker_cli, ok

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

LAB = 157
DEADLINE = 90.0


def ls_line(node: NodeProcess, name: str) -> list[str]:
    out = ok(node, "service", "ls", "--filter", f"name={name}", "--format",
             "{{.Name}}|{{.Mode}}|{{.Replicas}}")  # fmt: skip
    return out.strip().split("|")


def test_jobs_with_the_docker_cli(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=LAB)
        try:
            await lab.up()
            node = lab.node("manager-1")
            await until(lab.all_ready, DEADLINE, "the nodes ready")
            ok(node, "service", "create", "-d", "--name", "batch", "--mode", "replicated-job",
               "--replicas", "3", "--max-concurrent", "2",
               "busybox", "sh", "-c", "sleep 0.2")  # fmt: skip
            seen_running: set[int] = set()

            async def batch_done() -> bool | None:
                states = ok(node, "service", "ps", "batch", "--format", "{{.CurrentState}}")
                seen_running.add(sum(s.startswith("Running") for s in states.splitlines()))
                return (
                    ls_line(node, "batch") == ["batch", "replicated job", "0/2 (3/3 completed)"]
                    or None
                )

            await until(batch_done, DEADLINE, "batch's 3 completions")
            assert max(seen_running) <= 2
            desired = ok(
                node, "service", "ps", "batch", "--format", "{{.DesiredState}}|{{.CurrentState}}"
            )
            rows = desired.splitlines()
            assert len(rows) == 3 and all(r.startswith("Complete|Complete") for r in rows), rows
            iteration = ok(
                node, "service", "inspect", "-f", "{{json .JobStatus.JobIteration}}", "batch"
            )
            assert iteration.strip() == "{}"

            # A global job: once on every eligible node; a drained node gets its task once active.
            ok(node, "node", "update", "--availability", "drain", "worker-2")
            ok(node, "service", "create", "-d", "--name", "setup", "--mode", "global-job",
               "busybox", "true")  # fmt: skip

            async def ran_on(count: int) -> bool | None:
                return ls_line(node, "setup")[2] == f"0/0 ({count}/{count} completed)" or None

            await until(lambda: ran_on(2), DEADLINE, "setup completed on the 2 active nodes")
            ok(node, "node", "update", "--availability", "active", "worker-2")
            await until(lambda: ran_on(3), DEADLINE, "setup completed on worker-2 too")
            nodes = ok(node, "service", "ps", "setup", "--format", "{{.Node}}").split()
            assert sorted(nodes) == ["manager-1", "worker-1", "worker-2"]

            # An update runs the job again: a new iteration.
            ok(node, "service", "update", "-d", "--force", "batch")
            assert ok(node, "service", "inspect", "-f", "{{.JobStatus.JobIteration.Index}}",
                      "batch").strip() == "1"  # fmt: skip
            await until(batch_done, DEADLINE, "batch's second iteration")
            assert len(ok(node, "service", "ps", "-q", "batch").split()) == 6

            # What dockerd refuses (the CLI's words, and the daemon's).
            bad = docker(node, "service", "update", "-d", "--update-parallelism", "2", "batch")
            assert bad.returncode == 1
            assert "Jobs may not have an update config" in bad.stderr
            bad = docker(node, "service", "scale", "setup=2")
            assert bad.returncode == 1
            assert "scale can only be used with replicated or replicated-job mode" in bad.stderr
        finally:
            lab.stop()

    asyncio.run(scenario())
