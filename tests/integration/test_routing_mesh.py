"""The ingress routing mesh end to end with the real docker CLI, in a lab of 1 manager and 2
workers (127.77.235.x): `-p 8080:80 traefik/whoami` with 2 replicas answers HTTP on every
node's address, from both tasks, also on the node that runs none; scaled to 0, the port is
refused."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from docker_cli import needs_docker_cli, ok
from tcp_probes import http_answer, refused

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]

LAB = 235
PORT = 8080


def test_published_port_answers_on_every_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=LAB)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            ok(manager, "service", "create", "-d", "--name", "web", "--replicas", "2",
                   "--constraint", "node.role==worker", "-p", f"{PORT}:80",
                   "traefik/whoami")  # fmt: skip
            addresses = {node.name: node.address for node in lab.nodes}
            seen: dict[str, set[str]] = {name: set() for name in addresses}

            async def both_tasks_everywhere() -> bool | None:
                for name, host in addresses.items():
                    text = await http_answer(host, PORT)
                    if text is None or not text.startswith("HTTP/1.1 200 OK"):
                        return None
                    seen[name].update(re.findall(r"^Hostname: (\S+)$", text, re.M))
                return all(len(hosts) == 2 for hosts in seen.values()) or None

            await until(both_tasks_everywhere, 120, "answers from both tasks on every node")
            ps = ok(manager, "service", "ps", "--format", "{{.Node}}", "web").split()
            assert "manager-1" not in ps  # it runs no task, and still answered

            ok(manager, "service", "scale", "-d", "web=0")

            async def refused_everywhere() -> bool | None:
                for host in addresses.values():
                    if not await refused(host, PORT):
                        return None
                return True

            await until(
                refused_everywhere, 90, f"port {PORT} refused everywhere after scaling to 0"
            )
        finally:
            lab.stop()

    asyncio.run(scenario())
