"""Restart attempts and given-up job slots across a leader failover (SIGKILL, as the lab's
chaos commands kill), with the real docker CLI on a lab of three managers and a worker
(127.77.184.x). swarmkit keeps restart attempts in the leader's memory and a new leader
rebuilds them from the tasks in the store: a service whose attempts were used up gets no
task from the new leader. swarmkit's new leader reconciles every job: a job slot given up
before the failover gets one fresh task, whose failure finds the attempts still used up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from docker_cli import needs_docker_cli, ok

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

LAB = 184
DEADLINE = 90.0
# On the worker: a task the new leader makes must not land on the killed manager.
FAILING = ("--constraint", "node.role==worker", "--restart-max-attempts", "1",
           "--restart-delay", "0s")  # fmt: skip
EXITS_1 = ("busybox", "sh", "-c", "exit 1")


def states(node: NodeProcess, service: str) -> list[str]:
    """The first word of each task's current state."""
    out = ok(node, "service", "ps", "--format", "{{.CurrentState}}", service)
    return [line.split()[0] for line in out.splitlines()]


async def passes_done(node: NodeProcess, marker: str) -> None:
    """Wait until the leader's passes took in every change written so far: a new service
    `marker` has its task (made by a pass that also looked at every service with news)."""
    ok(node, "service", "create", "-d", "--name", marker, "busybox", "sleep", "1d")

    async def has_task() -> bool | None:
        return len(states(node, marker)) == 1 or None

    await until(has_task, DEADLINE, f"{marker}'s task")


def test_a_new_leader_keeps_used_up_attempts_and_reopens_given_up_job_slots(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=1, lab=LAB)
        seen: dict[str, list[str]] = {}
        try:
            await lab.up()
            leader = await until(lab.all_ready, DEADLINE, "a ready lab with a leader")
            node = next(m for m in lab.managers if m is not leader)
            ok(node, "service", "create", "-d", "--name", "svc", *FAILING, *EXITS_1)
            ok(node, "service", "create", "-d", "--name", "job", "--mode", "replicated-job",
               *FAILING, *EXITS_1)  # fmt: skip

            async def failed(service: str, count: int) -> bool | None:
                seen[service] = states(node, service)
                return seen[service] == ["Failed"] * count or None

            for service in ("svc", "job"):  # the first run and its one restart each
                await until(lambda s=service: failed(s, 2), DEADLINE, f"{service} given up")
            await passes_done(node, "mark1")

            leader.kill()
            await until(lambda: failed("job", 3), DEADLINE, "the job's fresh task, failed")
            assert states(node, "svc") == ["Failed", "Failed"]  # no attempt left
            await passes_done(node, "mark2")
            assert states(node, "job") == ["Failed"] * 3  # given up again
            assert states(node, "svc") == ["Failed", "Failed"]
        except BaseException:
            print("seen:", seen)
            raise
        finally:
            lab.stop()

    asyncio.run(scenario())
