"""A task rejected while it waits out its restart delay is not replaced before the delay is
over (swarmkit's restart supervisor: no tight restart loop when, say, the image does not
exist), with the real docker CLI on a one-manager lab (127.77.121.x). dockerd 20.10's
`service ps` then reads `Ready / Rejected` for the newest task."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from docker_cli import needs_docker_cli, ok

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

LAB = 121
DEADLINE = 60.0
QUIET_SECONDS = 3.0  # how long the slot is watched for a task too many (no speed assumed)


def test_a_rejected_waiting_task_gets_no_successor_before_its_restart_delay(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=0, lab=LAB)
        try:
            await lab.up()
            node = await until(lab.all_ready, DEADLINE, "a ready lab with a leader")
            ok(node, "service", "create", "-d", "--name", "bad", "--restart-delay", "1h",
               "nosuchimage:1")  # fmt: skip

            def rows() -> list[str]:
                out = ok(node, "service", "ps", "--format",
                         "{{.DesiredState}} {{.CurrentState}}", "bad")  # fmt: skip
                return [" ".join(line.split()[:2]) for line in out.splitlines()]

            async def waiting() -> list[str] | None:
                now = rows()
                return now if now and now[0] == "Ready Rejected" else None

            # The first task is rejected and replaced at once; its successor, waiting out
            # the hour's delay, is rejected too and stays the newest.
            first = await until(waiting, DEADLINE, "the newest task Ready / Rejected")
            assert first == ["Ready Rejected", "Shutdown Rejected"]
            await asyncio.sleep(QUIET_SECONDS)
            assert rows() == first
        finally:
            lab.stop()

    asyncio.run(scenario())
