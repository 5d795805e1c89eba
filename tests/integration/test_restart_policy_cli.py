"""The restart policy for tasks that leave their node and for given-up job slots, with the real
docker CLI on a one-manager lab (127.77.255.x), as dockerd 20.10 showed it in a one-node swarm:
under `--restart-condition none` a drained node's task is shut down and not replaced (the
service stays 0/1 once the node is active again); with `--restart-max-attempts 1` the drain's
successor is the one restart, so when it fails nothing follows; a replicated job's slot given
up under condition `none` gets one fresh task when another task of the job completes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from docker_cli import needs_docker_cli, ok

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

LAB = 255
DEADLINE = 90.0


def ps_rows(node: NodeProcess, service: str) -> list[tuple[str, str, str]]:
    """(name, desired state, first word of the current state) of each task, newest first."""
    out = ok(node, "service", "ps", "--format",
             "{{.Name}}|{{.DesiredState}}|{{.CurrentState}}", service)  # fmt: skip
    rows = [line.split("|") for line in out.splitlines()]
    return [(name, desired, current.split()[0]) for name, desired, current in rows]


def replicas(node: NodeProcess, service: str) -> str:
    return ok(node, "service", "ls", "--filter", f"name={service}", "--format",
              "{{.Replicas}}").strip()  # fmt: skip


def test_restart_policy_of_lost_tasks_and_given_up_job_slots(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=0, lab=LAB)
        seen: dict[str, list[tuple[str, str, str]]] = {}
        try:
            await lab.up()
            node = lab.node("manager-1")
            ok(node, "service", "create", "-d", "--name", "none", "--restart-condition",
               "none", "busybox", "sleep", "1d")  # fmt: skip
            ok(node, "service", "create", "-d", "--name", "max1", "--restart-max-attempts",
               "1", "--restart-delay", "1s", "busybox", "sleep", "1d")  # fmt: skip

            async def rows_are(service: str, wanted: list[tuple[str, str, str]]) -> bool | None:
                seen[service] = ps_rows(node, service)
                return seen[service] == wanted or None

            running = ("Running", "Running")
            await until(lambda: rows_are("none", [("none.1", *running)]), DEADLINE, "none runs")
            await until(lambda: rows_are("max1", [("max1.1", *running)]), DEADLINE, "max1 runs")

            ok(node, "node", "update", "--availability", "drain", "manager-1")
            await until(lambda: rows_are("none", [("none.1", "Shutdown", "Shutdown")]),
                        DEADLINE, "none's task shut down, no successor")  # fmt: skip
            # Its successor has no node to go to: Ready until the old task stopped, then
            # Running, and Pending all along (dockerd's "no suitable node").
            waiting = [("max1.1", "Running", "Pending"), ("max1.1", "Shutdown", "Shutdown")]
            await until(lambda: rows_are("max1", waiting), DEADLINE, "max1's successor")
            ok(node, "node", "update", "--availability", "active", "manager-1")
            moved = [("max1.1", *running), ("max1.1", "Shutdown", "Shutdown")]
            await until(lambda: rows_are("max1", moved), DEADLINE, "max1's successor running")
            assert ps_rows(node, "none") == [("none.1", "Shutdown", "Shutdown")]
            assert replicas(node, "none") == "0/1"

            [container] = ok(node, "ps", "-q", "--filter", "name=max1.1").split()
            ok(node, "kill", container)
            given_up = [("max1.1", "Shutdown", "Failed"), ("max1.1", "Shutdown", "Shutdown")]
            await until(lambda: rows_are("max1", given_up), DEADLINE, "max1's successor failed")
            await asyncio.sleep(3)  # a restart would be there (Ready) at once: none came
            assert ps_rows(node, "max1") == given_up and replicas(node, "max1") == "0/1"

            # Slot 1 fails at once and is given up; slot 0 completes later, which reconciles
            # the job: slot 1 gets a fresh task, which fails and is given up in turn.
            script = 'if [ "$SLOT" = 1 ]; then exit 1; fi; sleep 2'
            ok(node, "service", "create", "-d", "--name", "job", "--mode", "replicated-job",
               "--replicas", "2", "--max-concurrent", "2", "--restart-condition", "none",
               "--env", "SLOT={{.Task.Slot}}", "busybox", "sh", "-c", script)  # fmt: skip

            async def job_settled() -> list[tuple[str, str, str]] | None:
                rows = ps_rows(node, "job")
                states = sorted(current for _, _, current in rows)
                return rows if states == ["Complete", "Failed", "Failed"] else None

            rows = await until(job_settled, DEADLINE, "the job's fresh try failed")
            assert sorted(name for name, _, current in rows if current == "Failed") == [
                "job.1",
                "job.1",
            ]
            await asyncio.sleep(3)
            assert len(ps_rows(node, "job")) == 3  # nothing finished since: no other try
        except TimeoutError as err:
            raise AssertionError(f"{err}: service ps showed {seen}") from err
        finally:
            lab.stop()

    asyncio.run(scenario())
