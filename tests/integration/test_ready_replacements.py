"""Replacements made at once, desired `Ready`, as dockerd 20.10 shows them, driven by the real
docker CLI on a lab of three managers and one worker (127.77.199.x): a stop-first update's new
task waits beside the old one being stopped, a restart's waits out `--restart-delay`, and a
new leader starts it once the old leader was SIGKILLed during the delay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from docker_cli import docker, needs_docker_cli, ok

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

TIMEOUT = 90.0


def service_ps(manager: NodeProcess, service: str) -> list[dict[str, str]] | None:
    """`docker service ps` rows, newest first per slot; None while no manager answers."""
    result = docker(manager, "service", "ps", "--no-trunc", "--format", "{{json .}}", service)
    if result.returncode != 0:
        return None
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_replacements_wait_in_ready_and_a_new_leader_starts_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=1, lab=199)
        try:
            await lab.up()
            manager = lab.node("manager-1")

            # stop-first: the old task takes its 30 s grace period to stop (sleep, PID 1,
            # ignores SIGTERM); meanwhile the new one is there, prepared and waiting.
            ok(manager, "service", "create", "-d", "--name", "upd", "--stop-grace-period",
               "30s", "--constraint", "node.role==worker", "busybox", "sleep", "1d")  # fmt: skip

            async def one_running() -> bool | None:
                rows = service_ps(manager, "upd") or []
                return True if [r["CurrentState"][:7] for r in rows] == ["Running"] else None

            await until(one_running, TIMEOUT, "upd running")
            ok(manager, "service", "update", "-d", "--env-add", "A=1", "upd")

            async def waiting_beside_the_old() -> list[dict[str, Any]] | None:
                rows = service_ps(manager, "upd") or []
                states = [(r["DesiredState"], r["CurrentState"].split()[0]) for r in rows]
                return rows if states == [("Ready", "Ready"), ("Shutdown", "Running")] else None

            rows = await until(waiting_beside_the_old, TIMEOUT, "the new task Ready")
            assert [r["Name"] for r in rows] == ["upd.1", "upd.1"]
            ok(manager, "service", "rm", "upd")

            # A restart: the replacement is there at once, Ready for the 20 s delay.
            ok(manager, "service", "create", "-d", "--name", "flaky", "--restart-delay", "20s",
               "--constraint", "node.role==worker",
               "busybox", "sh", "-c", "sleep 1; exit 3")  # fmt: skip

            async def restart_waiting() -> list[dict[str, Any]] | None:
                rows = service_ps(manager, "flaky") or []
                if len(rows) != 2:
                    return None
                states = [(r["DesiredState"], r["CurrentState"].split()[0]) for r in rows]
                return rows if states == [("Ready", "Ready"), ("Shutdown", "Failed")] else None

            waiting, failed = await until(restart_waiting, TIMEOUT, "the restart Ready")
            assert failed["Error"] == '"task: non-zero exit (3)"'
            assert waiting["Error"] == ""

            view = await lab.leader_view()
            assert view is not None
            view[0].kill()
            survivor = next(m for m in lab.managers if m.alive())

            async def started_by_the_new_leader() -> bool | None:
                rows = service_ps(survivor, "flaky") or []
                mine = [r["CurrentState"].split()[0] for r in rows if r["ID"] == waiting["ID"]]
                return True if mine and mine[0] in ("Starting", "Running", "Failed") else None

            await until(started_by_the_new_leader, 120, "the waiting task started")
        finally:
            lab.stop()

    asyncio.run(scenario())
