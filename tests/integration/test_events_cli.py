"""`docker events` with the real docker CLI on a lab of 1 manager and 1 worker (127.77.163.x):
what a learner sees while creating a network and a service, draining a node and running a
container, read back with `--since ... --until ...` from the manager (the swarm-scope events
and its own containers) and from the worker (its task's container), with filters; and a bad
filter refused with the daemon's words."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from docker_cli import docker, needs_docker_cli, ok

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

LAB = 163
DEADLINE = 60.0
FORMAT = "{{.Scope}} {{.Type}} {{.Action}} {{.Actor.Attributes.name}}"


def events(node: NodeProcess, since: float, till: float, *filters: str) -> list[str]:
    """The CLI's lines of `docker events --since --until` (it exits at `until`)."""
    args = ["events", "--since", f"{since:.9f}", "--until", f"{till:.9f}", "--format", FORMAT]
    for kept in filters:
        args += ["--filter", kept]
    return ok(node, *args).splitlines()


def test_docker_events_shows_the_swarm_and_the_nodes_changes(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=1, lab=LAB)
        try:
            await lab.up()
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            await until(lab.all_ready, DEADLINE, "both nodes ready")
            since = time.time()
            ok(manager, "network", "create", "-d", "overlay", "--attachable", "my-net")
            ok(manager, "service", "create", "-d", "--name", "web", "--network", "my-net",
               "--constraint", "node.role==worker", "busybox", "sleep", "1000")  # fmt: skip

            async def task_running() -> bool | None:
                states = ok(manager, "service", "ps", "web", "--format", "{{.CurrentState}}")
                return True if states.startswith("Running") else None

            await until(task_running, DEADLINE, "web's task running on worker-1")
            ok(manager, "node", "update", "--availability", "pause", "worker-1")
            ok(manager, "node", "update", "--availability", "active", "worker-1")
            ok(manager, "run", "--rm", "--name", "probe", "--network", "my-net", "busybox", "true")
            ok(manager, "service", "rm", "web")

            async def network_removed() -> bool | None:  # once web's task has let it go
                return True if docker(manager, "network", "rm", "my-net").returncode == 0 else None

            await until(network_removed, DEADLINE, "my-net removed")

            # Swarm events come from the store's watch, published after the API answered (as
            # dockerd's cluster events do): the window ends once the last one is in it.
            async def last_event_in() -> float | None:
                till = time.time()
                seen = events(manager, since, till, "type=network", "event=remove")
                return till if "swarm network remove my-net" in seen else None

            till = await until(last_event_in, DEADLINE, "my-net's remove event")
            await asyncio.to_thread(check_events, manager, worker, since, till)
        finally:
            lab.stop()

    asyncio.run(scenario())


def check_events(manager: NodeProcess, worker: NodeProcess, since: float, till: float) -> None:
    # (Updates too, as dockerd: the allocator's, whose number is the allocator's business.)
    kinds = ("type=service", "type=network", "scope=swarm", "event=create", "event=remove")
    assert events(manager, since, till, *kinds) == [
        "swarm network create my-net",
        "swarm service create web",
        "swarm service remove web",
        "swarm network remove my-net",
    ]
    nodes = events(manager, since, till, "type=node")
    assert [line for line in nodes if "worker-1" in line][:2] == [
        "swarm node update worker-1",
        "swarm node update worker-1",
    ], nodes
    drained = json.loads(
        ok(manager, "events", "--since", f"{since:.9f}", "--until", f"{till:.9f}",
           "--filter", "type=node", "--format", "{{json .Actor.Attributes}}").splitlines()[0]
    )  # fmt: skip
    assert drained == {
        "availability.new": "pause",
        "availability.old": "active",
        "name": "worker-1",
    }

    # The manager's own container, with its network, in dockerd's order.
    assert events(manager, since, till, "container=probe", "scope=local") == [
        "local container create probe",
        "local container attach probe",
        "local container start probe",
        "local container die probe",
        "local container destroy probe",
    ]
    assert events(manager, since, till, "type=network", "scope=local") == [
        "local network create my-net",
        "local network connect my-net",
        "local network disconnect my-net",
        "local network destroy my-net",
    ]
    # The worker has no swarm-scope events: its task's container is its own.
    local = events(worker, since, till, "type=container", "event=create", "event=start")
    assert len(local) == 2 and all(line.split()[3].startswith("web.1.") for line in local), local
    assert events(worker, since, till, "scope=swarm") == []

    refused = docker(manager, "events", "--until", "0s", "--filter", "colour=red")
    assert (refused.returncode, refused.stderr.strip()) == (
        1,
        "Error response from daemon: Invalid filter 'colour'",
    )
