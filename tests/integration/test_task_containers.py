"""A service's task containers on the node that runs them, with the real docker CLI on a lab of
1 manager and 1 worker (127.77.132.x): `docker ps -f name=web` and its labels, `exec`,
`logs`, `kill` (the orchestrator replaces the task, `service ps` says
`task: non-zero exit (137)`), `restart` (the task ends and is replaced, the container runs
on); then a worker killed with SIGKILL and started again releases the
attachments of the standalone containers it lost, so their addresses are handed out again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from docker_cli import docker, needs_docker_cli, ok

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]

LAB = 132


def address(node: NodeProcess, name: str) -> str:
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    return ok(node, "inspect", "-f", template, name).strip()


def test_task_containers_and_a_restarted_nodes_attachments(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=1, lab=LAB)
        try:
            await lab.up()
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            ok(manager, "service", "create", "-d", "--name", "web", "--replicas", "2",
               "--constraint", "node.role==worker", "nginx")  # fmt: skip

            async def two_tasks() -> list[str] | None:
                names = ok(worker, "ps", "-f", "name=web", "--format", "{{.Names}}").split()
                return names if len(names) == 2 else None

            names = await until(two_tasks, 90, "both web tasks running on worker-1")
            assert all(n.startswith("web.") and len(n.split(".")[2]) == 25 for n in names)
            assert ok(manager, "ps", "-q", "-f", "name=web") == ""  # not on this node
            [first] = [n for n in names if n.startswith("web.1.")]
            labels = json.loads(ok(worker, "inspect", "-f", "{{json .Config.Labels}}", first))
            assert labels["com.docker.swarm.service.name"] == "web"
            assert labels["com.docker.swarm.task.id"] == first.split(".")[2]
            labelled = ok(worker, "ps", "-q", "-f", "label=com.docker.swarm.service.name=web")
            assert len(labelled.split()) == 2

            assert (
                ok(worker, "exec", first, "cat", "/etc/hostname").strip()
                == ok(worker, "inspect", "-f", "{{.Config.Hostname}}", first).strip()
            )
            failing = docker(worker, "exec", first, "sh", "-c", "exit 5")
            assert failing.returncode == 5
            assert "Configuration complete" in docker(worker, "logs", first).stderr + ok(
                worker, "logs", first
            )

            ok(worker, "kill", first)

            async def replaced() -> str | None:
                listed = ok(manager, "service", "ps", "--no-trunc", "web",
                            "--format", "{{.Name}} {{.CurrentState}} {{.Error}}")  # fmt: skip
                failed = [line for line in listed.splitlines() if "(137)" in line]
                running = [line for line in listed.splitlines() if " Running " in line]
                return listed if failed and len(running) == 2 else None

            listed = await until(replaced, 90, "the killed task failed and replaced")
            assert "task: non-zero exit (137)" in listed
            exited = ok(worker, "ps", "-a", "-f", "status=exited", "--format", "{{.Status}}")
            assert exited.startswith("Exited (137)")

            # `docker restart` of a task's container: as dockerd 20.10 (measured), it prints
            # the name, the task ends with the stop (nginx exits 0: Complete) and a new one
            # replaces it, while the container runs on outside its service.
            [second] = [n for n in names if n.startswith("web.2.")]
            assert ok(worker, "restart", second) == f"{second}\n"

            async def restarted_replaced() -> str | None:
                listed = ok(manager, "service", "ps", "--no-trunc", "web",
                            "--format", "{{.Name}} {{.ID}} {{.CurrentState}}")  # fmt: skip
                ended = [line for line in listed.splitlines() if second.split(".")[2] in line]
                running = [line for line in listed.splitlines() if " Running " in line]
                return listed if ended and "Complete" in ended[0] and len(running) == 2 else None

            await until(restarted_replaced, 90, "the restarted task ended and replaced")
            state = ok(worker, "inspect", "-f", "{{.State.Status}}", second).strip()
            assert state == "running"

            # The restarted node releases the attachments of the containers it lost.
            ok(manager, "network", "create", "-d", "overlay", "--attachable", "net1")
            ok(worker, "run", "-d", "--name", "before1", "--network", "net1", "busybox",
               "sleep", "600")  # fmt: skip
            held = address(worker, "before1")
            worker.kill()
            worker.start()
            await lab.wait_api(worker, 60)

            async def address_free_again() -> bool | None:
                # Asked for by `--ip`: handed out serially, it would come back only once the
                # subnet's other 250 addresses had been (Docker's IPAM does the same).
                run = docker(worker, "run", "-d", "--network", "net1", "--ip", held, "busybox",
                             "sleep", "600")  # fmt: skip
                if run.returncode != 0:
                    assert "in use" in run.stderr, run.stderr  # still held: not another error
                    return None
                assert address(worker, run.stdout.strip()) == held
                ok(worker, "rm", "-f", run.stdout.strip())
                return True

            await until(address_free_again, 90, f"{held} free again after the restart")
            assert json.loads((worker.data_dir / "attachments.json").read_text()) == []
        finally:
            lab.stop()

    asyncio.run(scenario())
