"""`swarmlab restart NODE` starts the node with every option it was first started with: a lab
made with `swarmlab up --key-rotation-interval 2 --windows-workers 1` (127.77.162.x) keeps
rotating its keys every 2 s after its manager is killed and restarted, its Windows worker
comes back a Windows node, and the manager's Engine API answers on its unix socket again; a
second `up` in the same place starts afresh. A lab.json from before the options were recorded
is refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from swarmlab_cli import swarmlab

from controlplane.lab import control
from controlplane.lab.control import LabError, LabState
from controlplane.lab.engine import EngineClient
from controlplane.lab.swarm_lab import until

pytestmark = pytest.mark.integration

LAB = 162
ROTATION = "2"  # seconds between key rotations; the lab profile's default is much longer


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


async def primary_keys_seen(api: str, wanted: int) -> set[str]:
    """Poll the node's gossip keyring until `wanted` different primary keys were seen."""
    seen: set[str] = set()

    async def enough() -> set[str] | None:
        async with EngineClient(api, timeout=5) as engine:
            keys = (await engine.gossip())["keys"]
        if keys:
            seen.add(keys[0])
        return seen if len(seen) >= wanted else None

    return await until(enough, 90, f"{wanted} primary keys on {api}", interval=0.3)


def test_restart_keeps_every_option_the_node_was_started_with(tmp_path: Path) -> None:
    async def scenario() -> None:
        up = ["up", "--managers", "1", "--workers", "0", "--windows-workers", "1"]
        await swarmlab(tmp_path, *up, "--lab", str(LAB), "--key-rotation-interval", ROTATION)
        try:
            state = LabState.load(tmp_path)
            manager, windows = state.node("manager-1"), state.node("windows-1")
            started_with = command_line(manager.pid)
            assert started_with[started_with.index("--key-rotation-interval") + 1] == "2.0"

            for name in ("manager-1", "windows-1"):
                await swarmlab(tmp_path, "kill", name)
                printed = await swarmlab(tmp_path, "restart", name)
                assert printed.startswith(f"restarted {name} (pid ")

            state = LabState.load(tmp_path)
            manager, windows = state.node("manager-1"), state.node("windows-1")
            assert command_line(manager.pid)[2:] == started_with[2:]  # after the interpreter
            assert "--platform" in command_line(windows.pid)
            # The restarted manager leads again and rotates every 2 s: three primaries show
            # up well before the lab profile's own interval would give a second one.
            await primary_keys_seen(manager.api, 3)

            async def windows_ready() -> bool | None:
                rows = await control.status_rows(state)
                row = next(r for r in rows if r["name"] == "windows-1")
                return True if (row["os"], row["state"]) == ("windows", "ready") else None

            await until(windows_ready, 90, "windows-1 back as a Ready Windows node")
            # The restarted manager serves its unix socket again (a stale one is replaced).
            printed = await swarmlab(tmp_path, "env", "--unix", "manager-1")
            socket = tmp_path / "manager-1" / "docker.sock"
            assert printed.startswith(f"export DOCKER_HOST=unix://{socket}\n")
            version = subprocess.run(
                ["docker", "-H", f"unix://{socket}", "version", "--format", "{{.Server.Os}}"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert (version.returncode, version.stdout) == (0, "linux\n"), version.stderr
        finally:
            await swarmlab(tmp_path, "down")
        # `up` again in the same place makes a new swarm: the stopped lab's node directories
        # go first (nodes resuming the old swarm would refuse to join the new one).
        printed = await swarmlab(
            tmp_path, "up", "--managers", "1", "--workers", "0", "--lab", str(LAB)
        )
        try:
            assert f"removed the stopped lab in {tmp_path}\n" in printed
            assert "all 1 nodes ready in" in printed
            assert not (tmp_path / "windows-1").exists()
        finally:
            await swarmlab(tmp_path, "down")

    asyncio.run(scenario())


def test_a_lab_file_without_the_nodes_arguments_can_be_stopped_not_restarted(
    tmp_path: Path,
) -> None:
    """A lab.json of an older swarmlab does not say how its nodes were started: `down` still
    stops them, `restart` says what to do instead of guessing the arguments."""
    node = {
        "name": "manager-1",
        "address": "127.77.162.11",
        "data_dir": str(tmp_path / "manager-1"),  # in no process's command line
        "pid": os.getpid(),  # alive, but not a node: its command line lacks data_dir
    }
    (tmp_path / "lab.json").write_text(
        json.dumps({"lab": LAB, "profile": "lab", "nodes": [node | {"platform": "linux"}]})
    )
    state = LabState.load(tmp_path)
    assert state.nodes[0].arguments == []
    with pytest.raises(LabError, match=r"older swarmlab .* `swarmlab down`, then `swarmlab up`"):
        asyncio.run(control.restart(tmp_path, state, "manager-1"))
    assert control.down(tmp_path, timeout=0.1) == []  # nothing of it runs any more


def test_env_over_a_unix_socket_needs_a_node_that_serves_one(tmp_path: Path) -> None:
    node = control.LabNode("manager-1", "127.77.162.11", str(tmp_path), 1, ["node", "run"])
    state = LabState(LAB, "lab", [node])
    assert control.env(state, "manager-1").startswith("export DOCKER_HOST=tcp://127.77.162.11:2375")
    with pytest.raises(LabError, match="manager-1 serves no unix socket"):
        control.env(state, "manager-1", unix=True)
