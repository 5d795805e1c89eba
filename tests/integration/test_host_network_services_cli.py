"""`docker service create --network host|bridge` with the real docker CLI on a userspace lab of
one manager and one worker (127.77.177.x), each outcome as dockerd 20.10 gave it side by side:
a host-mode task serves on its node's address and shows as dockerd shows one (`docker ps`,
`inspect`, `network inspect host` on its node, the service's VIP entry, the task's
attachment), swarmkit's predefined `host` network is hidden from `network ls` and inspected
by its id, a `-p` ingress port with it is rejected in dockerd's words, a task on `bridge` is
on its node's docker0, and a container there reaches another node of the lab."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from docker_cli import docker, needs_docker_cli, ok
from tcp_probes import http_answer

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

LAB = 177
DEADLINE = 90.0
WORKER = f"127.77.{LAB}.101"
HOST_MODE_REFUSAL = (
    "container cannot be disconnected from host network or connected to host network"
)


def test_services_on_the_nodes_host_and_bridge_networks(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=1, lab=LAB)
        try:
            await lab.up()
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            await until(lab.all_ready, DEADLINE, "the lab ready")
            on_worker = ("--constraint", "node.role==worker")
            ok(
                manager,
                "service",
                "create",
                "-d",
                "--name",
                "hweb",
                "--network",
                "host",
                *on_worker,
                "busybox",
                "httpd",
                "-f",
                "-p",
                "8080",
            )
            ok(
                manager,
                "service",
                "create",
                "-d",
                "--name",
                "hp",
                "--network",
                "host",
                "-p",
                "8081:80",
                "busybox",
                "httpd",
                "-f",
                "-p",
                "80",
            )
            ok(
                manager,
                "service",
                "create",
                "-d",
                "--name",
                "bweb",
                "--network",
                "bridge",
                *on_worker,
                "busybox",
                "httpd",
                "-f",
                "-p",
                "80",
            )

            async def answered() -> bool | None:  # `until` waits for anything but None
                return (await http_answer(WORKER, 8080) or "").startswith("HTTP/1.") or None

            await until(answered, DEADLINE, "hweb's httpd on the worker's address")

            # swarmkit's predefined `host`: hidden from `network ls`, inspected by its id
            listed = ok(manager, "network", "ls", "--format", "{{.Name}} {{.Scope}}").split("\n")
            assert sorted(filter(None, listed)) == [
                "bridge local",
                "docker_gwbridge local",
                "host local",
                "ingress swarm",
                "none local",
            ]
            [target] = json.loads(
                ok(
                    manager,
                    "service",
                    "inspect",
                    "-f",
                    "{{json .Spec.TaskTemplate.Networks}}",
                    "hweb",
                )
            )
            swarm_host = json.loads(ok(manager, "network", "inspect", target["Target"]))[0]
            assert (swarm_host["Name"], swarm_host["Scope"], swarm_host["Driver"]) == (
                "host",
                "swarm",
                "host",
            )
            assert swarm_host["Labels"] == {"com.docker.swarm.predefined": "true"}
            endpoint = ok(manager, "service", "inspect", "-f", "{{json .Endpoint}}", "hweb")
            assert json.loads(endpoint) == {
                "Spec": {"Mode": "vip"},
                "VirtualIPs": [{"NetworkID": target["Target"]}],
            }
            refused = docker(manager, "network", "rm", target["Target"])
            assert f"network {target['Target']} not found" in refused.stderr

            # the task's container, as dockerd shows a host-mode one on its node
            shown = ok(worker, "ps", "--filter", "name=hweb", "--format", "{{.Networks}}")
            assert shown.split() == ["host"]
            name = ok(worker, "ps", "--filter", "name=hweb", "--format", "{{.Names}}").strip()
            mode = ok(worker, "inspect", "-f", "{{.HostConfig.NetworkMode}}", name).strip()
            assert mode == "host"
            assert ok(worker, "exec", name, "hostname", "-i").strip() == WORKER
            members = ok(worker, "network", "inspect", "-f", "{{json .Containers}}", "host")
            assert f'"Name":"{name}"' in members

            # `-p 8081:80` (ingress) with host: rejected as dockerd's, preparing
            async def rejected() -> bool | None:
                errors = docker(
                    manager,
                    "service",
                    "ps",
                    "hp",
                    "--no-trunc",
                    "--format",
                    "{{.CurrentState}}|{{.Error}}",
                ).stdout
                return (
                    any(
                        line.startswith("Rejected") and HOST_MODE_REFUSAL in line
                        for line in errors.splitlines()
                    )
                    or None
                )

            await until(rejected, DEADLINE, "hp's task rejected")

            # `--network bridge`: on the worker's docker0
            async def on_docker0() -> bool | None:
                out = docker(
                    worker, "ps", "--filter", "name=bweb", "--format", "{{.Networks}}"
                ).stdout
                return out.split() == ["bridge"] or None

            await until(on_docker0, DEADLINE, "bweb's task on the worker's bridge")
            name = ok(worker, "ps", "--filter", "name=bweb", "--format", "{{.Names}}").strip()
            settings = "{{.HostConfig.NetworkMode}} {{.NetworkSettings.IPAddress}}"
            assert ok(worker, "inspect", "-f", settings, name).split() == ["bridge", "172.17.0.2"]
            fetched = docker(
                worker, "run", "--rm", "busybox", "wget", "-qO-", "-T", "5", "http://172.17.0.2/"
            )
            assert "404 Not Found" in fetched.stderr  # its httpd answered: no index there

            # out of docker0 to another node of the lab, from the worker's address (as
            # dockerd masquerades): the manager's Engine API answers
            manager_api = f"http://{manager.address}:2375/_ping"
            assert ok(worker, "run", "--rm", "busybox", "wget", "-qO-", manager_api) == "OK"
        finally:
            lab.stop()

    asyncio.run(scenario())
