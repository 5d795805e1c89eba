"""`swarmlab up / down / status / env / kill / restart`, and the chaos commands (`partition /
heal / delay / loss / failover`): a lab that outlives the command that started it. The lab
directory keeps `lab.json` (nodes, addresses, PIDs) next to each node's state directory, so a
later command finds the processes again (by PID, checked against the process's command line
so a recycled PID is never signalled).

Chaos is applied inside the nodes (`controlplane/faults.py`), through each node's lab API
(`controlplane/api/lab.py`): no root needed. A node's faults live in its process, so a node
killed or restarted since comes back without them (`swarmlab partition` or `heal` again).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from controlplane.datapath.kernel import kernel_datapath_unavailable
from controlplane.durable import write_atomic
from controlplane.faults import FaultPlan
from controlplane.lab.chaos import partition_cuts
from controlplane.lab.engine import EngineClient, EngineError
from controlplane.lab.kernel_underlay import KernelUnderlay, default_prefix
from controlplane.lab.processes import LabProcess, NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

T = TypeVar("T")
LAB_API_TIMEOUT = 5.0

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
    arguments: list[str]  # the `swarmlab` command line it was started with, for a restart

    @staticmethod
    def of(process: NodeProcess) -> LabNode:
        return LabNode(
            process.name, process.address, str(process.data_dir), process.pid, process.arguments()
        )

    @property
    def api(self) -> str:
        return f"{self.address}:2375"

    @property
    def api_socket(self) -> str | None:
        """The unix socket its Engine API also answers on, if it was started with one."""
        if "--api-socket" not in self.arguments:
            return None
        return self.arguments[self.arguments.index("--api-socket") + 1]

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
    datapath: str = "userspace"

    def underlay(self) -> KernelUnderlay | None:
        """The kernel underlay of a `--datapath kernel` lab (None for userspace)."""
        return (
            KernelUnderlay(self.lab, default_prefix(self.lab))
            if self.datapath == "kernel"
            else None
        )

    @staticmethod
    def load(lab_dir: Path) -> LabState:
        path = lab_dir / LAB_FILE
        try:
            raw = json.loads(path.read_text())
            return LabState(
                lab=raw["lab"],
                profile=raw["profile"],
                # A file of an older swarmlab has no `arguments`: it can still be stopped.
                nodes=[
                    LabNode(
                        n["name"], n["address"], n["data_dir"], n["pid"], n.get("arguments", [])
                    )
                    for n in raw["nodes"]
                ],
                datapath=raw.get("datapath", "userspace"),
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
    lab_dir: Path,
    managers: int,
    workers: int,
    profile: str,
    lab: int,
    progress: Any,
    *,
    windows_workers: int = 0,
    datapath: str = "userspace",
    key_rotation_interval: float | None = None,
    udp_offloads: bool = True,
) -> LabState:
    if (lab_dir / LAB_FILE).exists():
        stopped = LabState.load(lab_dir)
        if any(n.alive() for n in stopped.nodes):
            raise LabError(f"a lab is already running in {lab_dir}; `swarmlab down` stops it")
        _forget(lab_dir, stopped, progress)
    if datapath == "kernel":
        missing = kernel_datapath_unavailable()
        if missing:
            raise LabError(f"--datapath kernel: {missing}; use --datapath userspace")
    swarm = SwarmLab(
        lab_dir,
        managers=managers,
        workers=workers,
        lab=lab,
        profile=profile,
        windows_workers=windows_workers,
        datapath=datapath,
        key_rotation_interval=key_rotation_interval,
        api_sockets=True,
        udp_offloads=udp_offloads,
    )
    started = time.monotonic()
    try:
        await swarm.up(progress)
        state = LabState(
            lab=lab,
            profile=profile,
            nodes=[LabNode.of(n) for n in swarm.nodes],
            datapath=datapath,
        )
        state.save(lab_dir)
        await until(lambda: _all_ready(state), 60, "every node to be Ready")
    except BaseException:
        swarm.stop()
        raise
    progress(f"all {len(swarm.nodes)} nodes ready in {time.monotonic() - started:.1f} s")
    return state


def _forget(lab_dir: Path, stopped: LabState, progress: Any) -> None:
    """Remove a stopped lab's node directories and state: `up` starts a new swarm, and nodes
    that resumed the old one would refuse to join it ("already part of a swarm")."""
    for node in stopped.nodes:
        data_dir = Path(node.data_dir)
        if data_dir.is_relative_to(lab_dir):
            shutil.rmtree(data_dir, ignore_errors=True)
    (lab_dir / LAB_FILE).unlink()
    progress(f"removed the stopped lab in {lab_dir}")


async def _all_ready(state: LabState) -> bool | None:
    nodes = await node_list(state)
    ready = [n for n in nodes if n["Status"]["State"] == "ready"]
    return True if len(ready) == len(state.nodes) else None


async def node_list(state: LabState, prefer: str | None = None) -> list[dict[str, Any]]:
    """`docker node ls` data, from manager `prefer` (the leader sees the others best) or
    else the first manager that answers."""
    ordered = sorted(state.nodes, key=lambda n: n.name != prefer)
    for node in ordered:
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
    underlay = state.underlay()
    if underlay is not None:
        underlay.remove()
    return stopped


async def status_rows(state: LabState) -> list[dict[str, Any]]:
    """One row per node: the process, the swarm's view of it (from a manager), its own Raft
    state if it is a manager (`raft`, with the term and commit index), the gossip members as
    it sees them, and the faults it runs with."""
    rafts, plans, views = await asyncio.gather(
        raft_states(state.nodes),
        fault_plans(state),
        gossip_views(state.nodes),
    )
    try:
        listed = await node_list(state, prefer=_leader_of(rafts))
        swarm = {n["Description"]["Hostname"]: n for n in listed}
    except LabError:
        swarm = {}
    hostnames = {n["ID"]: name for name, n in swarm.items()}  # gossip names members by id
    names = {n.address: n.name for n in state.nodes}
    rows = []
    for node in state.nodes:
        seen = swarm.get(node.name, {})
        manager = seen.get("ManagerStatus", {})
        raft = rafts.get(node.name)
        plan = plans.get(node.name)
        view = views.get(node.name, {})
        members = [
            {"name": hostnames.get(m["name"], m["name"]), "state": m["state"]}
            for m in view.get("members", [])
        ]
        rows.append(
            {
                "name": node.name,
                "address": node.address,
                "pid": node.pid,
                "process": "running" if node.alive() else "stopped",
                "role": seen.get("Spec", {}).get("Role", ""),
                "os": seen.get("Description", {}).get("Platform", {}).get("OS", ""),
                "state": seen.get("Status", {}).get("State", "unknown"),
                "manager": "leader" if manager.get("Leader") else manager.get("Reachability", ""),
                "term": raft["term"] if raft else "",
                "commit": raft["commit"] if raft else "",
                "raft": raft,
                "gossip": "no keys yet" if view.get("awaiting_keys") else _count_states(members),
                "gossip_members": members,
                "faults": describe_plan(plan, names) if plan is not None else "",
                "docker_host": f"tcp://{node.api}",
            }
        )
    return rows


_COLUMNS = (
    ("NODE", "name", 11),
    ("ADDRESS", "address", 15),
    ("PROCESS", "process", 8),
    ("ROLE", "role", 8),
    ("OS", "os", 8),
    ("STATE", "state", 8),
    ("MANAGER", "manager", 12),
    ("TERM", "term", 5),
    ("COMMIT", "commit", 7),
    ("GOSSIP", "gossip", 10),
    ("DOCKER_HOST", "docker_host", 27),
    ("FAULTS", "faults", 0),
)


def _count_states(members: list[dict[str, str]]) -> str:
    """'5 alive' or '4 alive, 1 suspect': the members one node's gossip sees, by state."""
    counts: dict[str, int] = {}
    for member in members:
        counts[member["state"]] = counts.get(member["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def format_status(rows: list[dict[str, Any]]) -> str:
    def line(values: list[str]) -> str:
        return " ".join(v.ljust(w) for v, (_t, _k, w) in zip(values, _COLUMNS, strict=True))

    out = [line([title for title, _k, _w in _COLUMNS])]
    out += [line([str(r[key]) for _t, key, _w in _COLUMNS]) for r in rows]
    return "\n".join(text.rstrip() for text in out)


def env(state: LabState, name: str, unix: bool = False) -> str:
    """Like `docker-machine env`: the shell lines that point the docker CLI at a node, over
    TCP or (`unix`) over its unix socket, where the CLI's detach keys work."""
    node = state.node(name)
    host = f"tcp://{node.api}"
    if unix:
        if node.api_socket is None:
            raise LabError(f"{name} serves no unix socket; start the lab again with `swarmlab up`")
        host = f"unix://{node.api_socket}"
    flag = " --unix" if unix else ""
    return (
        f"export DOCKER_HOST={host}\n"
        f"# Run this command to configure your shell:\n# eval $(swarmlab env{flag} {name})"
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
    """Start a stopped or killed node again (SIGKILL first if it still runs) with the very
    arguments it was first started with (platform, key rotation interval, kernel data path
    options, ...); it resumes from its state directory."""
    node = state.node(name)
    if not node.arguments:
        raise LabError(
            f"the lab was started by an older swarmlab that did not record how {name} was "
            "started; `swarmlab down`, then `swarmlab up` again"
        )
    node.signal(signal.SIGKILL)
    process = LabProcess(node.name, node.address, Path(node.data_dir))
    process.spawn(node.arguments)
    node.pid = process.pid
    state.save(lab_dir)
    async with EngineClient(node.api, timeout=5) as engine:
        await until(lambda: _answers(engine), 30, f"{name}'s Engine API")
    return node


async def _answers(engine: EngineClient) -> bool | None:
    return True if await engine.ping() else None


# ---- chaos ---------------------------------------------------------------------------------


async def _each_running(
    nodes: Sequence[LabNode], ask: Callable[[EngineClient], Awaitable[T]]
) -> dict[str, T]:
    """`ask` every running node's Engine API at once; those that fail are left out."""
    running = [n for n in nodes if n.alive()]

    async def one(node: LabNode) -> T:
        async with EngineClient(node.api, timeout=LAB_API_TIMEOUT) as engine:
            return await ask(engine)

    answers = await asyncio.gather(*(one(n) for n in running), return_exceptions=True)
    return {
        n.name: a for n, a in zip(running, answers, strict=True) if not isinstance(a, BaseException)
    }


async def raft_states(nodes: Sequence[LabNode]) -> dict[str, dict[str, Any]]:
    """The own Raft state of each running manager among `nodes` (`GET /swarmlab/raft`)."""
    managers = [n for n in nodes if n.name.startswith("manager-")]
    return await _each_running(managers, lambda engine: engine.raft())


async def gossip_views(nodes: Sequence[LabNode]) -> dict[str, dict[str, Any]]:
    """The gossip view of each running node among `nodes` (`GET /swarmlab/gossip`)."""
    return await _each_running(nodes, lambda engine: engine.gossip())


def _leader_of(rafts: dict[str, dict[str, Any]]) -> str | None:
    """The manager that says it leads in the newest term, if any."""
    leaders = sorted((r["term"], name) for name, r in rafts.items() if r["role"] == "leader")
    return leaders[-1][1] if leaders else None


async def fault_plans(state: LabState) -> dict[str, FaultPlan]:
    plans = await _each_running(state.nodes, lambda engine: engine.faults())
    return {name: FaultPlan.from_json(raw) for name, raw in plans.items()}


def describe_plan(plan: FaultPlan, names: dict[str, str]) -> str:
    """'cut from manager-2,manager-3; delay 200ms±50ms; loss 10%', with node names."""
    parts = []
    if plan.partitioned:
        parts.append("cut from " + ",".join(sorted(names.get(h, h) for h in plan.partitioned)))
    shaped = [("", plan.shaping)] + [
        (f" to {names.get(h, h)}", s) for h, s in sorted(plan.links.items())
    ]
    for toward, shaping in shaped:
        if shaping.delay or shaping.jitter:
            jitter = f"±{shaping.jitter * 1000:g}ms" if shaping.jitter else ""
            parts.append(f"delay{toward} {shaping.delay * 1000:g}ms{jitter}")
        if shaping.loss:
            parts.append(f"loss{toward} {shaping.loss * 100:g}%")
    return "; ".join(parts)


async def _change_plans(
    nodes: Sequence[LabNode], change: Callable[[LabNode, FaultPlan], FaultPlan]
) -> None:
    """Read, change and write back the plan of every node in `nodes` (all at once, so a
    partition starts on both sides together); a node that does not answer is an error."""

    async def one(node: LabNode) -> None:
        async with EngineClient(node.api, timeout=LAB_API_TIMEOUT) as engine:
            plan = FaultPlan.from_json(await engine.faults())
            await engine.set_faults(change(node, plan).to_json())

    results = await asyncio.gather(*(one(n) for n in nodes), return_exceptions=True)
    failed = [f"{n.name} ({r})" for n, r in zip(nodes, results, strict=True) if r is not None]
    if failed:
        raise LabError(f"could not change the faults of {', '.join(failed)}")


async def partition(state: LabState, groups: Sequence[Sequence[str]]) -> list[str]:
    """Cut the groups of nodes from each other (see `lab/chaos.py`), replacing any earlier
    partition; returns the nodes not running, which get nothing."""
    cuts = partition_cuts(groups, {n.name: n.address for n in state.nodes})
    running = [n for n in state.nodes if n.alive()]
    await _change_plans(running, lambda node, plan: plan.with_partition(cuts[node.name]))
    return [n.name for n in state.nodes if not n.alive()]


async def heal(state: LabState) -> list[str]:
    """Remove every fault (partition, delay, loss) from every running node; returns them."""
    running = [n for n in state.nodes if n.alive()]
    await _change_plans(running, lambda _node, _plan: FaultPlan())
    return [n.name for n in running]


async def shape(
    state: LabState,
    name: str,
    *,
    delay: tuple[float, float] | None = None,
    loss: float | None = None,
    toward: str | None = None,
) -> FaultPlan:
    """Set the delay (seconds, jitter) or the loss (0..1) of what `name` sends: to every
    destination, or to the node `toward` only. Returns the node's new plan."""
    node = state.node(name)
    if not node.alive():
        raise LabError(f"{name} is not running; `swarmlab restart {name}` starts it again")
    target = state.node(toward).address if toward is not None else None
    if toward == name:
        raise LabError(f"{name} cannot be delayed or lose packets toward itself; name another node")
    installed: list[FaultPlan] = []

    def change(_node: LabNode, plan: FaultPlan) -> FaultPlan:
        current = plan.toward(target) if target is not None else plan.shaping
        if delay is not None:
            current = replace(current, delay=delay[0], jitter=delay[1])
        if loss is not None:
            current = replace(current, loss=loss)
        installed.append(plan.with_shaping(current, target))
        return installed[-1]

    await _change_plans([node], change)
    return installed[-1]


@dataclass(frozen=True)
class FailoverReport:
    old_leader: str
    old_term: int
    new_leader: str
    new_term: int
    elected_after: float  # seconds from the SIGKILL to a new leader
    written_after: float  # seconds from the SIGKILL to the first acknowledged write
    written_through: str
    profile: str


async def failover(state: LabState, timeout: float = 60.0) -> FailoverReport:
    """SIGKILL the leader, then measure until a surviving manager leads (in a newer term) and
    until a write (`network create` through a surviving manager) succeeds. The probe network
    is removed afterwards; the old leader stays down."""
    rafts = await raft_states(state.nodes)
    old = _leader_of(rafts)
    if old is None:
        raise LabError("the lab has no leader right now; `swarmlab status` shows the managers")
    old_term = int(rafts[old]["term"])
    voters = sum(1 for m in rafts[old]["members"] if not m["learner"])
    survivors = [
        n for n in state.nodes if n.name.startswith("manager-") and n.name != old and n.alive()
    ]
    if len(survivors) < voters // 2 + 1:
        raise LabError(
            f"killing {old} would leave {len(survivors)} of {voters} managers: no quorum, "
            "no new leader (restart the stopped managers or add managers first)"
        )
    probe = f"failover-probe-{os.getpid()}-{int(time.time())}"
    kill(state, old)
    started = time.monotonic()

    async def elected() -> tuple[str, int, float]:
        async def check() -> tuple[str, int, float] | None:
            for name, raft in (await raft_states(survivors)).items():
                if raft["role"] == "leader" and raft["term"] > old_term:
                    return name, int(raft["term"]), time.monotonic() - started
            return None

        return await until(check, timeout, "a new leader", interval=0.02)

    async def written() -> tuple[str, float]:
        attempt = 0

        async def write() -> tuple[str, float]:
            nonlocal attempt
            node = survivors[attempt % len(survivors)]
            attempt += 1
            async with EngineClient(node.api, timeout=timeout) as engine:
                try:
                    await engine.create_network(probe)
                except EngineError as err:
                    if err.status != 409:  # 409: an earlier attempt did succeed
                        raise
            return node.name, time.monotonic() - started

        return await until(write, timeout, "a write to succeed", interval=0.02)

    (new, new_term, elected_after), (through, written_after) = await asyncio.gather(
        elected(), written()
    )
    # A committed write proves a leader was there; polling may only have seen it later.
    elected_after = min(elected_after, written_after)
    try:
        async with EngineClient(survivors[0].api, timeout=LAB_API_TIMEOUT) as engine:
            await engine.remove_network(probe)
    except Exception:  # the probe left behind is harmless; the measurement stands
        pass
    return FailoverReport(
        old, old_term, new, new_term, elected_after, written_after, through, state.profile
    )
