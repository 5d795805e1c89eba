"""Healthchecks with the real docker CLI on a one-manager lab (127.77.181.x): a container's
check shows in `docker ps` and `docker inspect`; a service whose check fails has its task
failed as swarmkit fails it (`dockerexec: unhealthy container`) and replaced."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from docker_cli import needs_docker_cli, ok

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

LAB = 181
DEADLINE = 90.0
UNHEALTHY = "task: non-zero exit (137): dockerexec: unhealthy container"


def test_healthchecks_with_the_docker_cli(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=0, lab=LAB)
        try:
            await lab.up()
            node = lab.node("manager-1")
            await until(lab.all_ready, DEADLINE, "the manager ready")
            ok(node, "run", "-d", "--name", "doc", "--health-cmd", "echo fine",
               "--health-interval", "1s", "busybox", "sleep", "1d")  # fmt: skip
            ok(node, "service", "create", "-d", "--name", "sick", "--health-cmd", "false",
               "--health-interval", "1s", "--health-retries", "2", "--stop-grace-period", "1s",
               "busybox", "sleep", "1d")  # fmt: skip

            async def healthy() -> bool | None:
                status = ok(node, "ps", "--filter", "name=doc", "--format", "{{.Status}}")
                return True if status.strip().endswith("(healthy)") else None

            await until(healthy, DEADLINE, "doc healthy in docker ps")
            health = json.loads(ok(node, "inspect", "-f", "{{json .State.Health}}", "doc"))
            assert health["Status"] == "healthy"
            assert health["FailingStreak"] == 0
            assert {"ExitCode": 0, "Output": "fine\n"}.items() <= health["Log"][0].items()

            async def failed_and_replaced() -> list[str] | None:
                listed = ok(node, "service", "ps", "sick", "--no-trunc", "--format", "{{.Error}}")
                errors = [line.strip('"') for line in listed.splitlines()]  # quoted untruncated
                return errors if UNHEALTHY in errors and len(errors) > 1 else None

            await until(failed_and_replaced, DEADLINE, "sick's task failed and replaced")
        finally:
            lab.stop()

    asyncio.run(scenario())
