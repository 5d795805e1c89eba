"""Services end to end on real node processes (1 manager + 2 workers on 127.77.161.x), driven
by the real docker CLI: the leader's loops place the tasks, the dispatcher hands them to the
agents, the agents' reports come back; scale, update and remove go the whole way round."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from docker_cli import needs_docker_cli, ok

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]


def test_service_lifecycle_through_agents(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=161)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            ok(manager, "network", "create", "-d", "overlay", "my-net")
            ok(
                manager, "service", "create", "-d", "--name", "web", "--replicas", "3",
                "--network", "my-net", "-p", "8080:80", "nginx",
            )  # fmt: skip

            async def tasks(want: int, image: str) -> list[dict[str, Any]] | None:
                out = ok(manager, "service", "ps", "--format", "{{json .}}", "web")
                rows = [json.loads(line) for line in out.splitlines()]
                live = [r for r in rows if r["DesiredState"] == "Running"]
                done = len(live) == want and all(
                    r["CurrentState"].startswith("Running") and r["Image"] == image for r in live
                )
                return rows if done else None

            rows = await until(lambda: tasks(3, "nginx:latest"), 60, "3 running tasks")
            assert len({r["Node"] for r in rows}) == 3  # spread over the three nodes
            [inspected] = json.loads(ok(manager, "service", "inspect", "web"))
            assert len(inspected["Endpoint"]["VirtualIPs"]) == 2  # ingress and my-net

            ok(manager, "service", "scale", "-d", "web=1")
            await until(lambda: tasks(1, "nginx:latest"), 60, "scaled down to 1")

            async def removed_gone() -> bool | None:
                out = ok(manager, "service", "ps", "-q", "web")
                return True if len(out.split()) == 1 else None

            await until(removed_gone, 60, "the scaled-down tasks deleted once stopped")

            ok(manager, "service", "update", "-d", "--image", "nginx:1.25", "web")
            await until(lambda: tasks(1, "nginx:1.25"), 60, "the update rolled out")

            ok(manager, "service", "rm", "web")

            async def no_tasks() -> bool | None:
                out = ok(manager, "node", "ps", "-q", *[n.name for n in lab.nodes])
                return True if not out.split() else None

            await until(no_tasks, 60, "every task of the removed service gone")
            ok(manager, "network", "rm", "my-net")
        finally:
            lab.stop()

    asyncio.run(scenario())
