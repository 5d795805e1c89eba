"""Services end to end on real node processes (1 manager + 2 workers on 127.77.161.x), driven
by the real docker CLI: the leader's loops place the tasks, the dispatcher hands them to the
agents, the agents' reports come back; scale, update and remove go the whole way round."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]


def docker(node: NodeProcess, *args: str) -> str:
    result = subprocess.run(
        ["docker", "-H", f"tcp://{node.api}", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def test_service_lifecycle_through_agents(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=161)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            docker(manager, "network", "create", "-d", "overlay", "my-net")
            docker(
                manager, "service", "create", "-d", "--name", "web", "--replicas", "3",
                "--network", "my-net", "-p", "8080:80", "nginx",
            )  # fmt: skip

            async def tasks(want: int, image: str) -> list[dict[str, Any]] | None:
                out = docker(manager, "service", "ps", "--format", "{{json .}}", "web")
                rows = [json.loads(line) for line in out.splitlines()]
                live = [r for r in rows if r["DesiredState"] == "Running"]
                ok = len(live) == want and all(
                    r["CurrentState"].startswith("Running") and r["Image"] == image for r in live
                )
                return rows if ok else None

            rows = await until(lambda: tasks(3, "nginx:latest"), 60, "3 running tasks")
            assert len({r["Node"] for r in rows}) == 3  # spread over the three nodes
            [inspected] = json.loads(docker(manager, "service", "inspect", "web"))
            assert len(inspected["Endpoint"]["VirtualIPs"]) == 2  # ingress and my-net

            docker(manager, "service", "scale", "-d", "web=1")
            await until(lambda: tasks(1, "nginx:latest"), 60, "scaled down to 1")

            async def removed_gone() -> bool | None:
                out = docker(manager, "service", "ps", "-q", "web")
                return True if len(out.split()) == 1 else None

            await until(removed_gone, 60, "the scaled-down tasks deleted once stopped")

            docker(manager, "service", "update", "-d", "--image", "nginx:1.25", "web")
            await until(lambda: tasks(1, "nginx:1.25"), 60, "the update rolled out")

            docker(manager, "service", "rm", "web")

            async def no_tasks() -> bool | None:
                out = docker(manager, "node", "ps", "-q", *[n.name for n in lab.nodes])
                return True if not out.split() else None

            await until(no_tasks, 60, "every task of the removed service gone")
            docker(manager, "network", "rm", "my-net")
        finally:
            lab.stop()

    asyncio.run(scenario())
