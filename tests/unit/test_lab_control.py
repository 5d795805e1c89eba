"""`lab/control.py` without a swarm: real stand-in processes (a sleeping Python whose command
line names the node's data directory, as a node's does) and, where a command asks a node,
a small stand-in of its Engine and lab API on the node's address. Covers the states a lab
is found in after a crash: processes gone, half of them gone, a PID recycled for another
program, a node that ignores SIGTERM, a node whose API does not answer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from controlplane.faults import FaultPlan
from controlplane.lab import control
from controlplane.lab.control import LAB_FILE, LabError, LabNode, LabState

# 127.77.248.20-59: this file's addresses (one block of four per test; the Engine API
# stand-ins bind port 2375 on them).
SUBNET = "127.77.248"

SLEEPER = """
import signal, sys, time
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(600)
"""


class Sleepers:
    """Processes that stand for nodes: `alive()` finds their data dir in their command line."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, data_dir: Path, *, ignore_term: bool = False) -> int:
        process = subprocess.Popen(
            [sys.executable, "-c", SLEEPER, str(data_dir), "ignore-term" if ignore_term else "-"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started.append(process)
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        return process.pid

    def gone(self, data_dir: Path) -> int:
        """The PID of a node process that has exited (and was reaped)."""
        pid = self.start(data_dir)
        self.started[-1].kill()
        self.started[-1].wait()
        return pid

    def wait_all(self, timeout: float = 60.0) -> list[int]:
        return [p.wait(timeout) for p in self.started]

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def sleepers() -> Iterator[Sleepers]:
    started = Sleepers()
    yield started
    started.stop()


def lab_node(
    tmp_path: Path, name: str, host: int, pid: int, arguments: list[str] | None = None
) -> LabNode:
    return LabNode(name, f"{SUBNET}.{host}", str(tmp_path / name), pid, arguments or [])


class FakeEngine:
    """One node's Engine API and lab API, as much as `control` asks of them."""

    def __init__(self, nodes: list[dict[str, Any]], raft: dict[str, Any] | None) -> None:
        self.nodes = nodes
        self.raft = raft
        self.plan: dict[str, Any] = FaultPlan().to_json()
        self.networks: list[str] = []

    def app(self) -> web.Application:
        async def nodes(_request: web.Request) -> web.Response:
            return web.json_response(self.nodes)

        async def raft(_request: web.Request) -> web.Response:
            if self.raft is None:
                return web.json_response({"message": "not a manager"}, status=503)
            return web.json_response(self.raft)

        async def gossip(_request: web.Request) -> web.Response:
            members = [{"name": n["ID"], "state": "alive"} for n in self.nodes]
            return web.json_response({"members": members, "awaiting_keys": False})

        async def faults(request: web.Request) -> web.Response:
            if request.method == "PUT":
                self.plan = FaultPlan.from_json(await request.json()).to_json()
            return web.json_response(self.plan)

        app = web.Application()
        app.router.add_get("/v1.41/nodes", nodes)
        app.router.add_get("/swarmlab/raft", raft)
        app.router.add_get("/swarmlab/gossip", gossip)
        app.router.add_route("*", "/swarmlab/faults", faults)
        return app


async def serving(engines: dict[str, FakeEngine], scenario: Callable[[], Awaitable[None]]) -> None:
    """Serve each fake on `address`:2375 while `scenario` runs."""
    runners = []
    try:
        for address, engine in engines.items():
            runner = web.AppRunner(engine.app())
            await runner.setup()
            await web.TCPSite(runner, address, 2375).start()
            runners.append(runner)
        await scenario()
    finally:
        for runner in runners:
            await runner.cleanup()


def swarm_node(name: str, role: str, leader: bool = False) -> dict[str, Any]:
    """A `docker node ls` entry as a manager answers it."""
    entry: dict[str, Any] = {
        "ID": f"id-{name}",
        "Description": {"Hostname": name, "Platform": {"OS": "linux"}},
        "Spec": {"Role": role},
        "Status": {"State": "ready"},
    }
    if role == "manager":
        entry["ManagerStatus"] = {"Leader": leader, "Reachability": "reachable"}
    return entry


# ---- the state file --------------------------------------------------------------------------


def test_the_state_file_round_trips_and_an_older_one_still_loads(tmp_path: Path) -> None:
    state = LabState(
        248, "lab", [lab_node(tmp_path, "manager-1", 20, 1, ["node", "run"])], "kernel"
    )
    state.save(tmp_path)
    assert LabState.load(tmp_path) == state
    # A file of an older swarmlab: no `arguments` and no `datapath`.
    older = {
        "lab": 7,
        "profile": "swarm",
        "nodes": [{"name": "w", "address": "a", "data_dir": "d", "pid": 5}],
    }
    (tmp_path / LAB_FILE).write_text(json.dumps(older))
    loaded = LabState.load(tmp_path)
    assert (loaded.datapath, loaded.nodes[0].arguments, loaded.underlay()) == (
        "userspace",
        [],
        None,
    )


def test_env_names_the_node_and_refuses_a_unix_socket_it_lacks(tmp_path: Path) -> None:
    with_socket = lab_node(tmp_path, "manager-1", 20, 1, ["node", "run", "--api-socket", "/s.sock"])
    without = lab_node(tmp_path, "worker-1", 21, 1, ["node", "run"])
    state = LabState(248, "lab", [with_socket, without])
    assert control.env(state, "manager-1").startswith(
        f"export DOCKER_HOST=tcp://{SUBNET}.20:2375\n"
    )
    assert "eval $(swarmlab env --unix manager-1)" in control.env(state, "manager-1", unix=True)
    assert "export DOCKER_HOST=unix:///s.sock" in control.env(state, "manager-1", unix=True)
    with pytest.raises(LabError, match="worker-1 serves no unix socket; start the lab again"):
        control.env(state, "worker-1", unix=True)


def test_restart_of_a_node_recorded_by_an_older_swarmlab_says_what_to_do(tmp_path: Path) -> None:
    state = LabState(248, "lab", [lab_node(tmp_path, "manager-1", 20, 1)])
    with pytest.raises(LabError, match="did not record how manager-1 was started; `swarmlab down`"):
        asyncio.run(control.restart(tmp_path, state, "manager-1"))


# ---- processes found gone, recycled, or stubborn ------------------------------------------------


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    """Our own PID stands for one the system gave another program: its command line does not
    name the node's data directory."""
    node = lab_node(tmp_path, "manager-1", 20, os.getpid())
    assert not node.alive()
    assert not node.signal(signal.SIGKILL)  # this test is still running


def test_a_lab_whose_processes_are_gone(tmp_path: Path, sleepers: Sleepers) -> None:
    """`swarmlab down`, `status`, `heal`, `partition`, `kill`, `failover` of a lab whose nodes
    all died: each finishes at once, saying so, instead of waiting or signalling anything."""
    nodes = [
        lab_node(tmp_path, name, host, sleepers.gone(tmp_path / name))
        for name, host in (("manager-1", 24), ("manager-2", 25), ("worker-1", 26))
    ]
    state = LabState(248, "lab", nodes)
    state.save(tmp_path)
    assert control.down(tmp_path, timeout=600) == []

    rows = asyncio.run(control.status_rows(state))
    assert [(r["name"], r["process"], r["state"], r["role"]) for r in rows] == [
        (n.name, "stopped", "unknown", "") for n in nodes
    ]
    table = control.format_status(rows).splitlines()
    assert table[0].split()[:3] == ["NODE", "ADDRESS", "PROCESS"]
    assert [line.split()[:3] for line in table[1:]] == [
        [n.name, n.address, "stopped"] for n in nodes
    ]
    assert asyncio.run(control.heal(state)) == []
    assert asyncio.run(control.partition(state, [["manager-1"], ["manager-2"]])) == [
        n.name for n in nodes
    ]
    with pytest.raises(LabError, match="manager-1 is not running"):
        control.kill(state, "manager-1")
    with pytest.raises(LabError, match="`swarmlab restart manager-2` starts it again"):
        asyncio.run(control.shape(state, "manager-2", loss=0.1))
    with pytest.raises(LabError, match="the lab has no leader right now"):
        asyncio.run(control.failover(state))
    with pytest.raises(LabError, match=r"no manager of the lab answers \(are they all killed\?\)"):
        asyncio.run(control.leader_name(state))


def test_down_terminates_then_kills_what_ignores_sigterm(
    tmp_path: Path, sleepers: Sleepers
) -> None:
    polite = lab_node(tmp_path, "manager-1", 28, sleepers.start(tmp_path / "manager-1"))
    stubborn = lab_node(
        tmp_path, "worker-1", 29, sleepers.start(tmp_path / "worker-1", ignore_term=True)
    )
    LabState(248, "lab", [polite, stubborn]).save(tmp_path)
    assert control.down(tmp_path, timeout=0.2) == ["manager-1", "worker-1"]
    assert sleepers.wait_all() == [-signal.SIGTERM, -signal.SIGKILL]
    assert not polite.alive() and not stubborn.alive()


def test_up_refuses_while_a_lab_runs_and_forgets_a_stopped_one(
    tmp_path: Path, sleepers: Sleepers
) -> None:
    running = lab_node(tmp_path, "manager-1", 32, sleepers.start(tmp_path / "manager-1"))
    LabState(248, "lab", [running]).save(tmp_path)
    with pytest.raises(LabError, match=f"a lab is already running in {tmp_path}; `swarmlab down`"):
        asyncio.run(control.up(tmp_path, 1, 0, "lab", 248, print))
    assert LabState.load(tmp_path).nodes == [running]  # untouched

    # Stopped: its node directories inside the lab go (a new swarm cannot reuse them), a
    # directory outside the lab is never removed.
    inside, outside = tmp_path / "lab" / "manager-1", tmp_path / "elsewhere"
    for directory in (inside, outside):
        (directory / "raft").mkdir(parents=True)
    stopped = LabState(
        248,
        "lab",
        [
            LabNode("manager-1", f"{SUBNET}.32", str(inside), sleepers.gone(inside), []),
            LabNode("worker-1", f"{SUBNET}.33", str(outside), sleepers.gone(outside), []),
        ],
    )
    stopped.save(tmp_path / "lab")
    said: list[str] = []
    control._forget(tmp_path / "lab", stopped, said.append)
    assert not inside.exists() and (outside / "raft").is_dir()
    assert not (tmp_path / "lab" / LAB_FILE).exists()
    assert said == [f"removed the stopped lab in {tmp_path / 'lab'}"]


# ---- half a lab: some nodes answer, some are gone --------------------------------------------


def test_a_half_started_lab(tmp_path: Path, sleepers: Sleepers) -> None:
    """manager-1 runs and answers; manager-2 and worker-1 never came up (or died)."""
    manager = lab_node(tmp_path, "manager-1", 36, sleepers.start(tmp_path / "manager-1"))
    others = [
        lab_node(tmp_path, "manager-2", 37, sleepers.gone(tmp_path / "manager-2")),
        lab_node(tmp_path, "worker-1", 38, sleepers.gone(tmp_path / "worker-1")),
    ]
    state = LabState(248, "lab", [manager, *others])
    raft = {"role": "leader", "term": 3, "commit": 17, "members": [{"learner": False}] * 3}
    engine = FakeEngine([swarm_node("manager-1", "manager", leader=True)], raft)

    async def scenario() -> None:
        rows = {r["name"]: r for r in await control.status_rows(state)}
        assert {
            k: rows["manager-1"][k] for k in ("process", "role", "state", "manager", "term")
        } == {
            "process": "running",
            "role": "manager",
            "state": "ready",
            "manager": "leader",
            "term": 3,
        }
        assert rows["manager-1"]["gossip"] == "1 alive"
        assert rows["manager-1"]["gossip_members"] == [{"name": "manager-1", "state": "alive"}]
        assert (rows["worker-1"]["process"], rows["worker-1"]["state"]) == ("stopped", "unknown")
        assert await control.leader_name(state) == "manager-1"

        # Only the running node gets the partition; the others are named as not running.
        not_running = await control.partition(state, [["manager-1"], ["manager-2", "worker-1"]])
        assert not_running == ["manager-2", "worker-1"]
        assert engine.plan["partitioned"] == [f"{SUBNET}.37", f"{SUBNET}.38"]
        rows = {r["name"]: r for r in await control.status_rows(state)}
        assert rows["manager-1"]["faults"] == "cut from manager-2,worker-1"
        plan = await control.shape(state, "manager-1", delay=(0.2, 0.05), toward="worker-1")
        assert control.describe_plan(plan, {n.address: n.name for n in state.nodes}) == (
            "cut from manager-2,worker-1; delay to worker-1 200ms±50ms"
        )
        with pytest.raises(LabError, match="toward itself"):
            await control.shape(state, "manager-1", loss=0.5, toward="manager-1")
        assert await control.heal(state) == ["manager-1"]
        assert FaultPlan.from_json(engine.plan).clean

        # Killing the leader would leave 0 of its 3 voters: refused before anything is done.
        with pytest.raises(
            LabError, match="killing manager-1 would leave 0 of 3 managers: no quorum"
        ):
            await control.failover(state)
        assert manager.alive()

    asyncio.run(serving({manager.address: engine}, scenario))


def test_a_running_node_whose_api_does_not_answer(tmp_path: Path, sleepers: Sleepers) -> None:
    """The process runs but nothing serves its address (hung, or still starting): chaos
    commands name it instead of hanging; status shows the process without the swarm's view."""
    node = lab_node(tmp_path, "manager-1", 40, sleepers.start(tmp_path / "manager-1"))
    state = LabState(248, "lab", [node])
    with pytest.raises(LabError, match=r"could not change the faults of manager-1 \("):
        asyncio.run(control.heal(state))
    [row] = asyncio.run(control.status_rows(state))
    assert (row["process"], row["state"], row["raft"], row["faults"]) == (
        "running",
        "unknown",
        None,
        "",
    )
    with pytest.raises(LabError, match="no manager of the lab answers"):
        asyncio.run(control.node_list(state))
