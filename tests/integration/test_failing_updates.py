"""A rolling update whose new tasks fail at once, driven by the real docker CLI on a lab of one
manager and one worker (127.77.178.x), under each failure action, as dockerd 20.10 shows it:
the CLI's verdict, UpdateStatus, the tasks each slot went through, and the refused rollback of
an automatic rollback."""

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

FAILING = "sh -c 'exit 1'"
TIMEOUT = 90.0


def inspect(manager: NodeProcess) -> dict[str, Any]:
    [service] = json.loads(ok(manager, "service", "inspect", "web"))
    return service  # type: ignore[no-any-return]


def tasks(manager: NodeProcess) -> list[dict[str, Any]]:
    ids = ok(manager, "service", "ps", "-q", "--no-trunc", "web").split()
    return json.loads(ok(manager, "inspect", *ids))  # type: ignore[no-any-return]


def failing(task: dict[str, Any]) -> bool:
    return task["Spec"]["ContainerSpec"].get("Args") == ["sh", "-c", "exit 1"]


def test_failing_update_pauses_rolls_back_and_refuses_a_second_rollback(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=1, lab=178)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            ok(manager, "service", "create", "-d", "--name", "web", "--replicas", "3",
               "busybox", "sleep", "100000")  # fmt: skip

            async def all_running() -> bool | None:
                rows = ok(manager, "service", "ls", "--format", "{{.Replicas}}", "-f", "name=web")
                return True if rows.strip() == "3/3" else None

            await until(all_running, TIMEOUT, "web 3/3")

            # pause (the default): the CLI reports it, the slot after the failed one was taken
            # (the freed worker moved on), the third slot kept its old task.
            paused = docker(manager, "service", "update", "--args", FAILING, "web", timeout=120)
            status = inspect(manager)["UpdateStatus"]
            assert paused.returncode != 0
            assert status["State"] == "paused"
            prefix = "update paused due to failure or early termination of task "
            assert status["Message"].startswith(prefix)
            assert f"service update paused: {status['Message']}" in paused.stderr
            failed_id = status["Message"][len(prefix) :]

            async def two_slots_taken() -> dict[int, list[dict[str, Any]]] | None:
                by_slot: dict[int, list[dict[str, Any]]] = {}
                for task in tasks(manager):
                    by_slot.setdefault(task["Slot"], []).append(task)
                updated = [s for s, ts in by_slot.items() if any(map(failing, ts))]
                return by_slot if len(updated) == 2 else None

            by_slot = await until(two_slots_taken, TIMEOUT, "the slot after the failed one")
            [untouched] = [ts for ts in by_slot.values() if not any(map(failing, ts))]
            assert [(t["DesiredState"], t["Status"]["State"]) for t in untouched] == [
                ("running", "running")
            ]
            assert inspect(manager)["UpdateStatus"] == status  # stays paused
            failed = next(t for t in tasks(manager) if t["ID"] == failed_id)
            assert failed["Status"]["Err"] == "task: non-zero exit (1)"

            # a manual rollback of the paused update
            back = ok(manager, "service", "rollback", "web", timeout=120)
            assert "rollback: manually requested rollback" in back
            assert "Service web converged" in back or "Service converged" in back
            status = inspect(manager)["UpdateStatus"]
            assert (status["State"], status["Message"]) == (
                "rollback_completed",
                "rollback completed",
            )

            # rollback on failure: the previous spec comes back, with nothing left to roll
            # back to
            rolled = docker(
                manager, "service", "update", "--update-failure-action", "rollback",
                "--args", FAILING, "web", timeout=120,
            )  # fmt: skip
            assert rolled.returncode == 0  # as dockerd's: the rollback converged
            assert "rollback: update rolled back due to failure or early termination of task" in (
                rolled.stdout
            )
            service = inspect(manager)
            assert service["UpdateStatus"]["State"] == "rollback_completed"
            assert service["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"] == ["sleep", "100000"]
            assert "PreviousSpec" not in service

            async def old_ones_run() -> bool | None:
                live = [t for t in tasks(manager) if t["DesiredState"] == "running"]
                fine = len(live) == 3 and not any(map(failing, live))
                return (
                    True if fine and all(t["Status"]["State"] == "running" for t in live) else None
                )

            await until(old_ones_run, TIMEOUT, "the three slots back on the old spec")
            again = docker(manager, "service", "rollback", "web")
            assert again.returncode != 0
            assert f"service {service['ID']} does not have a previous spec" in again.stderr
        finally:
            lab.stop()

    asyncio.run(scenario())


def test_a_new_leader_resumes_a_failing_update_with_its_failures_counted(tmp_path: Path) -> None:
    """--update-max-failure-ratio 0.3 over 4 slots: the first failure (1/4) lets the update go
    on; the leader is SIGKILLed during the delay after it; the new leader takes the next slot
    and its failure (2/4, the first one counted by the old leader) pauses the update."""

    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=2, lab=179)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            ok(manager, "service", "create", "-d", "--name", "web", "--replicas", "4",
               "--constraint", "node.role==worker", "--update-delay", "10s",
               "--update-max-failure-ratio", "0.3", "busybox", "sleep", "100000")  # fmt: skip

            async def all_running() -> bool | None:
                rows = ok(manager, "service", "ls", "--format", "{{.Replicas}}", "-f", "name=web")
                return True if rows.strip() == "4/4" else None

            await until(all_running, TIMEOUT, "web 4/4")
            ok(manager, "service", "update", "-d", "--args", FAILING, "web")

            async def first_failed() -> dict[str, Any] | None:
                # Any failed one: its restart is made at once, so the slot's newest task is
                # one that waits for the restart delay, all but a moment after each failure.
                failed = [t for t in tasks(manager) if failing(t)]
                return next((t for t in failed if t["Status"]["State"] == "failed"), None)

            first = await until(first_failed, TIMEOUT, "the first slot's new task failed")
            assert inspect(manager)["UpdateStatus"]["State"] == "updating"  # 1/4 <= 0.3
            view = await lab.leader_view()
            assert view is not None
            view[0].kill()
            survivor = next(m for m in lab.managers if m.alive())

            async def paused() -> dict[str, Any] | None:
                try:
                    status = inspect(survivor).get("UpdateStatus", {})
                except AssertionError:
                    return None  # no leader yet
                return status if status.get("State") == "paused" else None

            status = await until(paused, 120, "the update paused by the new leader")
            failed_id = status["Message"].rsplit(" ", 1)[-1]
            [second] = [t for t in tasks(survivor) if t["ID"] == failed_id]
            assert second["Slot"] != first["Slot"]
            taken = {t["Slot"] for t in tasks(survivor) if failing(t)}
            assert len(taken) == 2  # two slots taken, two never touched
        finally:
            lab.stop()

    asyncio.run(scenario())
