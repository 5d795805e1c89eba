"""`swarmlab up / down / status / env / kill / restart`: a lab that outlives the command that
started it. The lab directory keeps `lab.json` (nodes, addresses, PIDs) next to each node's
state directory, so a later command finds the processes again (by PID, checked against the
process's command line so a recycled PID is never signalled).
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from controlplane.durable import write_atomic
from controlplane.lab.engine import EngineClient
from controlplane.lab.swarm_lab import SwarmLab, until

LAB_FILE = "lab.json"


class LabError(Exception):
    """A lab command cannot do what was asked; the message says why."""


def default_lab_dir() -> Path:
    return Path(os.environ.get("SWARMLAB_HOME", Path.home() / ".swarmlab")) / "lab"


@dataclass
class LabNode:
    name: str
    address: str
    data_dir: str
    pid: int

    @property
    def api(self) -> str:
        return f"{self.address}:2375"

    def alive(self) -> bool:
        """Running, and really our node (the PID was not recycled for another program)."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return self.data_dir.encode() in cmdline

    def signal(self, sig: signal.Signals) -> bool:
        if not self.alive():
            return False
        os.kill(self.pid, sig)
        return True


@dataclass
class LabState:
    lab: int
    profile: str
    nodes: list[LabNode]

    @staticmethod
    def load(lab_dir: Path) -> LabState:
        path = lab_dir / LAB_FILE
        try:
            raw = json.loads(path.read_text())
            return LabState(
                lab=raw["lab"],
                profile=raw["profile"],
                nodes=[LabNode(**n) for n in raw["nodes"]],
            )
        except FileNotFoundError:
            raise LabError(f"no lab in {lab_dir}; start one with `swarmlab up`") from None
        except (ValueError, KeyError, TypeError) as err:
            raise LabError(f"{path} is damaged ({err}); remove {lab_dir} and start again") from err

    def save(self, lab_dir: Path) -> None:
        write_atomic(lab_dir / LAB_FILE, json.dumps(asdict(self), indent=2).encode())

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if node.name == name:
                return node
        names = ", ".join(n.name for n in self.nodes)
        raise LabError(f"no node named {name!r} in this lab; its nodes are {names}")


async def up(
    lab_dir: Path, managers: int, workers: int, profile: str, lab: int, progress: Any
) -> LabState:
    if (lab_dir / LAB_FILE).exists() and any(n.alive() for n in LabState.load(lab_dir).nodes):
        raise LabError(f"a lab is already running in {lab_dir}; `swarmlab down` stops it")
    swarm = SwarmLab(lab_dir, managers=managers, workers=workers, lab=lab, profile=profile)
    started = time.monotonic()
    try:
        await swarm.up(progress)
        state = LabState(
            lab=lab,
            profile=profile,
            nodes=[LabNode(n.name, n.address, str(n.data_dir), n.pid) for n in swarm.nodes],
        )
        state.save(lab_dir)
        await until(lambda: _all_ready(state), 60, "every node to be Ready")
    except BaseException:
        swarm.stop()
        raise
    progress(f"all {len(swarm.nodes)} nodes ready in {time.monotonic() - started:.1f} s")
    return state


async def _all_ready(state: LabState) -> bool | None:
    nodes = await node_list(state)
    ready = [n for n in nodes if n["Status"]["State"] == "ready"]
    return True if len(ready) == len(state.nodes) else None


async def node_list(state: LabState) -> list[dict[str, Any]]:
    """`docker node ls` data, from the first manager that answers."""
    for node in state.nodes:
        if node.name.startswith("manager-") and node.alive():
            try:
                async with EngineClient(node.api, timeout=5) as engine:
                    return await engine.nodes()
            except Exception:
                continue
    raise LabError("no manager of the lab answers (are they all killed?)")


def down(lab_dir: Path, timeout: float = 10.0) -> list[str]:
    """SIGTERM every node, SIGKILL those still running after `timeout`."""
    state = LabState.load(lab_dir)
    stopped = [n.name for n in state.nodes if n.signal(signal.SIGTERM)]
    deadline = time.monotonic() + timeout
    while any(n.alive() for n in state.nodes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for node in state.nodes:
        node.signal(signal.SIGKILL)
    return stopped


async def status_rows(state: LabState) -> list[dict[str, Any]]:
    """One row per node: the process, and the swarm's view of it (from a manager)."""
    try:
        swarm = {n["Description"]["Hostname"]: n for n in await node_list(state)}
    except LabError:
        swarm = {}
    rows = []
    for node in state.nodes:
        seen = swarm.get(node.name, {})
        manager = seen.get("ManagerStatus", {})
        rows.append(
            {
                "name": node.name,
                "address": node.address,
                "pid": node.pid,
                "process": "running" if node.alive() else "stopped",
                "role": seen.get("Spec", {}).get("Role", ""),
                "state": seen.get("Status", {}).get("State", "unknown"),
                "manager": "leader" if manager.get("Leader") else manager.get("Reachability", ""),
                "docker_host": f"tcp://{node.api}",
            }
        )
    return rows


_COLUMNS = (
    ("NODE", "name", 11),
    ("ADDRESS", "address", 15),
    ("PROCESS", "process", 8),
    ("ROLE", "role", 8),
    ("STATE", "state", 8),
    ("MANAGER", "manager", 12),
    ("DOCKER_HOST", "docker_host", 0),
)


def format_status(rows: list[dict[str, Any]]) -> str:
    def line(values: list[str]) -> str:
        return " ".join(v.ljust(w) for v, (_t, _k, w) in zip(values, _COLUMNS, strict=True))

    out = [line([title for title, _k, _w in _COLUMNS])]
    out += [line([str(r[key]) for _t, key, _w in _COLUMNS]) for r in rows]
    return "\n".join(text.rstrip() for text in out)


def env(state: LabState, name: str) -> str:
    """Like `docker-machine env`: the shell lines that point the docker CLI at a node."""
    node = state.node(name)
    return (
        f"export DOCKER_HOST=tcp://{node.api}\n"
        f"# Run this command to configure your shell:\n# eval $(swarmlab env {name})"
    )


async def leader_name(state: LabState) -> str:
    for row in await node_list(state):
        if row.get("ManagerStatus", {}).get("Leader"):
            return str(row["Description"]["Hostname"])
    raise LabError("the lab has no leader right now")


def kill(state: LabState, name: str) -> LabNode:
    """SIGKILL: the node gets no chance to flush or say goodbye."""
    node = state.node(name)
    if not node.signal(signal.SIGKILL):
        raise LabError(f"{name} is not running")
    return node


async def restart(lab_dir: Path, state: LabState, name: str) -> LabNode:
    """Start a stopped or killed node again (SIGKILL first if it still runs); it resumes
    from its state directory."""
    from controlplane.lab.processes import NodeProcess

    node = state.node(name)
    node.signal(signal.SIGKILL)
    process = NodeProcess(node.name, node.address, Path(node.data_dir), state.profile)
    process.start()
    node.pid = process.pid
    state.save(lab_dir)
    async with EngineClient(node.api, timeout=5) as engine:
        await until(lambda: _answers(engine), 30, f"{name}'s Engine API")
    return node


async def _answers(engine: EngineClient) -> bool | None:
    return True if await engine.ping() else None
