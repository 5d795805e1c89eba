"""`docker node update / rm / promote / demote` from the real docker CLI against real node
processes (labs 127.77.210.x and 127.77.211.x): drain moves tasks away, labels show in inspect,
a killed worker is removed once Down, and swarmkit's refusals reach the CLI."""

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

TIMEOUT = 90.0


def docker(node: NodeProcess, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", "-H", f"tcp://{node.api}", *args], capture_output=True, text=True, timeout=60
    )
    if ok:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def refused(node: NodeProcess, *args: str) -> str:
    """The CLI's error output for a command that must fail."""
    result = docker(node, *args, ok=False)
    assert result.returncode != 0, (args, result.stdout)
    return result.stderr.strip()


def nodes(via: NodeProcess) -> dict[str, dict[str, Any]]:
    """`docker node ls` rows by hostname."""
    out = docker(via, "node", "ls", "--format", "{{json .}}").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    return {r["Hostname"]: r for r in rows}


def inspect(via: NodeProcess, name: str) -> dict[str, Any]:
    [node] = json.loads(docker(via, "node", "inspect", name).stdout)
    return dict(node)


async def all_ready(lab: SwarmLab, via: NodeProcess) -> None:
    """Every node Ready, and every manager a reachable Raft voter (a manager listed before its
    Raft id is recorded has no manager status yet)."""

    async def ready() -> bool | None:
        rows = nodes(via)
        for node in lab.nodes:
            row = rows.get(node.name, {})
            wanted = ("Leader", "Reachable") if node in lab.managers else ("",)
            if row.get("Status") != "Ready" or row.get("ManagerStatus") not in wanted:
                return None
        return True

    await until(ready, TIMEOUT, "every node Ready, every manager reachable")


def test_drain_labels_rm_and_refusals(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=210)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            await all_ready(lab, manager)
            docker(manager, "service", "create", "-d", "--name", "web", "--replicas", "3", "nginx")

            async def running_on() -> list[str] | None:
                out = docker(manager, "service", "ps", "--format", "{{json .}}", "web").stdout
                rows = [json.loads(line) for line in out.splitlines()]
                live = [r for r in rows if r["DesiredState"] == "Running"]
                if len(live) == 3 and all(r["CurrentState"].startswith("Running") for r in live):
                    return sorted(r["Node"] for r in live)
                return None

            assert "worker-1" in await until(running_on, TIMEOUT, "3 running tasks")

            # Drain: the worker's tasks are replaced on the other nodes.
            assert docker(manager, "node", "update", "--availability", "drain", "worker-1").stdout
            assert nodes(manager)["worker-1"]["Availability"] == "Drain"

            async def drained() -> list[str] | None:
                placed = await running_on()
                return placed if placed is not None and "worker-1" not in placed else None

            assert set(await until(drained, TIMEOUT, "tasks moved off worker-1")) <= {
                "manager-1",
                "worker-2",
            }

            # Labels.
            docker(
                manager, "node", "update", "--label-add", "zone=a", "--label-add", "ssd", "worker-2"
            )
            assert inspect(manager, "worker-2")["Spec"]["Labels"] == {"zone": "a", "ssd": ""}
            docker(manager, "node", "update", "--label-rm", "ssd", "worker-2")
            assert inspect(manager, "worker-2")["Spec"]["Labels"] == {"zone": "a"}

            # Refusals, in Docker's words.
            worker_2 = inspect(manager, "worker-2")["ID"]
            manager_1 = inspect(manager, "manager-1")["ID"]
            assert refused(manager, "node", "rm", "worker-2") == (
                "Error response from daemon: rpc error: code = FailedPrecondition desc = "
                f"node {worker_2} is not down and can't be removed"
            )
            assert refused(manager, "node", "rm", "--force", "manager-1") == (
                "Error response from daemon: rpc error: code = FailedPrecondition desc = "
                f"node {manager_1} is a cluster manager and is a member of the raft cluster. "
                "It must be demoted to worker before removal"
            )
            assert refused(manager, "node", "demote", "manager-1") == (
                "Error response from daemon: rpc error: code = FailedPrecondition desc = "
                "attempting to demote the last manager of the swarm"
            )
            bad = refused(manager, "node", "update", "--availability", "asleep", "worker-2")
            assert "availability" in bad.lower()

            # A killed worker: removable once Down, and gone from the list.
            lab.node("worker-2").kill()

            async def down() -> bool | None:
                return True if nodes(manager)["worker-2"]["Status"] == "Down" else None

            await until(down, TIMEOUT, "worker-2 Down")
            assert docker(manager, "node", "rm", "worker-2").stdout.strip() == "worker-2"
            assert "worker-2" not in nodes(manager)
            await until(running_on, TIMEOUT, "3 running tasks again, on manager-1 alone")
        finally:
            lab.stop()

    asyncio.run(scenario())


def test_a_demotion_that_would_lose_quorum_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=0, lab=211)
        try:
            await lab.up()
            leader = lab.node("manager-1")
            await all_ready(lab, leader)
            lab.node("manager-3").kill()

            async def unreachable() -> bool | None:
                row = nodes(leader)["manager-3"]
                return True if row["ManagerStatus"] == "Unreachable" else None

            await until(unreachable, TIMEOUT, "manager-3 unreachable")
            # Asked of a follower too: the decision is the leader's view of the members.
            for via in (leader, lab.node("manager-2")):
                assert refused(via, "node", "demote", "manager-2") == (
                    "Error response from daemon: rpc error: code = FailedPrecondition desc = "
                    "can't remove member from the raft: this would result in a loss of quorum"
                )
            assert inspect(leader, "manager-2")["Spec"]["Role"] == "manager"
        finally:
            lab.stop()

    asyncio.run(scenario())


def test_promote_and_demote_end_to_end(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=1, lab=212)
        try:
            await lab.up()
            leader = lab.node("manager-1")
            await all_ready(lab, leader)

            # What the CLI prints is what it prints against a real engine (docker/cli's
            # node promote/demote commands, from the same API answers).
            demoted_out = docker(leader, "node", "demote", "manager-3").stdout
            assert demoted_out == "Manager manager-3 demoted in the swarm.\n"

            async def demoted() -> bool | None:
                row = nodes(leader)["manager-3"]
                node = inspect(leader, "manager-3")
                done = row["ManagerStatus"] == "" and "ManagerStatus" not in node
                return True if done and node["Spec"]["Role"] == "worker" else None

            await until(demoted, TIMEOUT, "manager-3 a worker")

            async def stepped_down() -> bool | None:
                result = docker(lab.node("manager-3"), "node", "ls", ok=False)
                return True if "not a swarm manager" in result.stderr else None

            await until(stepped_down, TIMEOUT, "manager-3 to stop serving as a manager")

            promoted_out = docker(leader, "node", "promote", "worker-1").stdout
            assert promoted_out == "Node worker-1 promoted to a manager in the swarm.\n"

            async def promoted() -> bool | None:
                row = nodes(leader)["worker-1"]
                return True if row["ManagerStatus"] == "Reachable" else None

            await until(promoted, TIMEOUT, "worker-1 a reachable manager")
            assert set(nodes(lab.node("worker-1"))) == {n.name for n in lab.nodes}

            new_roles = {"worker-1": "manager", "manager-3": "worker"}

            async def gossip_roles() -> bool | None:
                async with lab.engine("manager-1") as api:
                    view = await api.request("GET", "/swarmlab/gossip", versioned=False)
                roles = {m["name"]: m["role"] for m in view["members"]}
                wanted = {inspect(leader, name)["ID"]: role for name, role in new_roles.items()}
                return True if wanted.items() <= roles.items() else None

            await until(gossip_roles, TIMEOUT, "the gossip view to show the new roles")
        finally:
            lab.stop()

    asyncio.run(scenario())
