"""Healthchecks in kernel mode, with the real docker CLI on a kernel-mode lab of one manager
(127.77.183.x, underlay 10.201.183.0/24, namespaces `swh...`): the check is a real busybox
exec in the container's namespaces (its output kept), and one past its timeout is killed and
counted as a failure."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from docker_cli import needs_docker_cli, ok
from kernel_testing import kernel_lab, skip_unless_kernel, unique_tag

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import until

pytestmark = [pytest.mark.timeout(240), needs_docker_cli]
LAB = 183
DEADLINE = 90.0


def health(node: NodeProcess, name: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(ok(node, "inspect", "-f", "{{json .State.Health}}", name))
    return shown


def test_healthchecks_run_in_the_containers_namespaces(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    prefix = unique_tag("swh")

    async def scenario() -> None:
        async with kernel_lab(tmp_path, LAB, prefix, workers=0) as lab:
            node = lab.node("manager-1")
            ok(node, "network", "create", "-d", "overlay", "--attachable", "kh")
            ok(node, "run", "-d", "--name", "fine", "--network", "kh", "--hostname", "fine-host",
               "--health-cmd", "cat /etc/hostname", "--health-interval", "1s",
               "busybox", "sleep", "1d")  # fmt: skip
            ok(node, "run", "-d", "--name", "slow", "--network", "kh", "--health-cmd", "sleep 60",
               "--health-interval", "1s", "--health-timeout", "300ms", "--health-retries", "1",
               "busybox", "sleep", "1d")  # fmt: skip

            async def statuses() -> bool | None:
                shown = {name: health(node, name)["Status"] for name in ("fine", "slow")}
                return True if shown == {"fine": "healthy", "slow": "unhealthy"} else None

            await until(statuses, DEADLINE, "fine healthy and slow unhealthy")
            fine, slow = health(node, "fine"), health(node, "slow")
            assert fine["Log"][0]["Output"] == "fine-host\n"
            assert slow["Log"][0]["ExitCode"] == -1
            assert slow["Log"][0]["Output"] == "Health check exceeded timeout (300ms)"
            ps = ok(node, "ps", "--format", "{{.Names}} {{.Status}}").splitlines()
            assert any(line.startswith("slow Up") and line.endswith("(unhealthy)") for line in ps)

    asyncio.run(scenario())
