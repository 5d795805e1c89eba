"""Host-mode published ports end to end with the real docker CLI, in a lab of 1 manager and 2
workers (127.77.192.x): a global service publishing `mode=host,published=8081,target=80` is
answered on every node by that node's own task; a replicated one is answered only where its
task runs, shows `PublishMode: host` in `docker service inspect` and the task's
`Status.PortStatus`, and a replica more than the nodes stays pending with swarmkit's
explanation; a port taken outside the swarm fails the task's start with Docker's error."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from docker_cli import needs_docker_cli, ok
from tcp_probes import http_answer, refused

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]

LAB = 192


async def hostname_at(host: str, port: int) -> str | None:
    """The `Hostname:` whoami answers on (host, port); None when nothing answers."""
    found = re.search(r"^Hostname: (\S+)$", await http_answer(host, port) or "", re.M)
    return found[1] if found else None


def test_host_ports_listen_where_tasks_run(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=LAB)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            address = {node.name: node.address for node in lab.nodes}
            ok(manager, "service", "create", "-d", "--name", "everywhere", "--mode",
                   "global", "--publish", "mode=host,published=8081,target=80",
                   "traefik/whoami")  # fmt: skip

            async def own_task_everywhere() -> dict[str, str] | None:
                tasks = await _running(lab, "everywhere")
                if len(tasks) != 3:
                    return None
                expected = {node_name: task_hostname for node_name, task_hostname, _ in tasks}
                seen = {name: await hostname_at(address[name], 8081) for name in address}
                return expected if seen == expected else None

            await until(own_task_everywhere, 120, "each node answering 8081 with its own task")

            ok(manager, "service", "create", "-d", "--name", "one", "--publish",
                   "mode=host,published=8082,target=80", "traefik/whoami")  # fmt: skip
            [(node_name, task_hostname, task)] = await until(
                lambda: _running(lab, "one", 1), 120, "one's task running"
            )
            assert await until(
                lambda: _answers(address[node_name], 8082, task_hostname), 60, "8082 answering"
            )
            for other, host in address.items():
                if other != node_name:
                    assert await refused(host, 8082), other
            assert task["Status"]["PortStatus"] == {
                "Ports": [
                    {
                        "Protocol": "tcp",
                        "TargetPort": 80,
                        "PublishedPort": 8082,
                        "PublishMode": "host",
                    }
                ]
            }
            ports = json.loads(
                ok(manager, "service", "inspect", "--format", "{{json .Endpoint.Ports}}", "one")
            )
            assert ports == [
                {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8082, "PublishMode": "host"}
            ]
            ps = ok(manager, "service", "ps", "--format", "{{.Ports}}", "one")
            assert ps.strip() == "*:8082->80/tcp", ps

            ok(manager, "service", "scale", "-d", "one=4")

            async def one_pending() -> str | None:
                out = ok(manager, "service", "ps", "--format", "{{.CurrentState}} {{.Error}}",
                             "--no-trunc", "one")  # fmt: skip
                running = out.count("Running")
                pending = [line for line in out.splitlines() if line.startswith("Pending")]
                return pending[0] if running == 3 and len(pending) == 1 else None

            pending = await until(one_pending, 120, "3 running, 1 pending")
            assert "no suitable node (host-mode port already in use on 3 nodes)" in pending

            # A port taken outside the swarm fails the task's start with Docker's error.
            blocker = await asyncio.start_server(lambda r, w: None, address["worker-2"], 8083)
            try:
                ok(manager, "service", "create", "-d", "--name", "blocked", "--constraint",
                       "node.hostname==worker-2", "--publish",
                       "mode=host,published=8083,target=80", "traefik/whoami")  # fmt: skip

                async def failed() -> str | None:
                    out = ok(manager, "service", "ps", "--no-trunc", "--format",
                                 "{{.CurrentState}} {{.Error}}", "blocked")  # fmt: skip
                    return out if "Failed" in out else None

                error = await until(failed, 120, "blocked's task failing")
                bind = (
                    "Error starting userland proxy: listen tcp4 0.0.0.0:8083: bind: "
                    "address already in use"
                )
                assert "driver failed programming external connectivity" in error, error
                assert bind in error, error
            finally:
                blocker.close()
        finally:
            lab.stop()

    asyncio.run(scenario())


async def _answers(host: str, port: int, hostname: str) -> bool | None:
    return (await hostname_at(host, port)) == hostname or None


async def _running(
    lab: SwarmLab, service: str, count: int | None = None
) -> list[tuple[str, str, dict[str, Any]]] | None:
    """(node name, container hostname, task) of the service's running tasks."""
    async with lab.engine("manager-1") as engine:
        tasks: list[dict[str, Any]] = await engine.request(
            "GET", "/tasks", params={"filters": f'{{"service":["{service}"]}}'}
        )
        nodes = {n["ID"]: n["Description"]["Hostname"] for n in await lab.node_list()}
    running = [t for t in tasks if t["Status"]["State"] == "running"]
    if count is not None and len(running) != count:
        return None
    return [
        (nodes[t["NodeID"]], t["Status"]["ContainerStatus"]["ContainerID"][:12], t) for t in running
    ]
