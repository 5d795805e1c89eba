"""The emulated sh in a service, as Swarm tutorials run it (1 manager + 1 worker on
127.77.173.x, the real docker CLI): a `while true` loop's lines reach `docker service logs`,
a pipeline's too, and `docker service rm` stops the looping tasks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from docker_cli import needs_docker_cli, ok

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]

LAB = 173
LOOP = "while true; do echo hello; sleep 0.2; done"
PIPELINE = "seq 3 | while read n; do echo line $n | tr a-z A-Z; done; while :; do sleep 1; done"


def test_a_looping_service_logs_and_is_removed(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=1, lab=LAB)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            ok(manager, "service", "create", "-d", "--name", "loop", "--replicas", "2",
               "busybox", "sh", "-c", LOOP)  # fmt: skip
            ok(manager, "service", "create", "-d", "--name", "pipe", "busybox", "sh", "-c",
               PIPELINE)  # fmt: skip

            async def hellos() -> int | None:
                lines = ok(manager, "service", "logs", "--raw", "loop").splitlines()
                count = lines.count("hello")
                return count if count >= 6 and set(lines) == {"hello"} else None

            await until(hellos, 90, "the loops' lines in docker service logs")

            async def piped() -> bool | None:
                lines = ok(manager, "service", "logs", "--raw", "pipe").splitlines()
                return True if lines == ["LINE 1", "LINE 2", "LINE 3"] else None

            await until(piped, 90, "the pipeline's lines")
            ok(manager, "service", "rm", "loop", "pipe")

            async def stopped() -> bool | None:
                running = [ok(node, "ps", "-q") for node in lab.nodes]
                return True if not any(out.split() for out in running) else None

            await until(stopped, 60, "every looping task stopped and removed")
        finally:
            lab.stop()

    asyncio.run(scenario())
