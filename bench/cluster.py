"""Cluster benchmark: a lab of 3 managers + 2 workers, and a one-manager swarm of ours, against a
real single-node dockerd swarm.

Run with `make bench` (or `.venv/bin/python bench/cluster.py --help`). Everything runs on
loopback: our nodes on 127.77.<lab>.x (managers .11-.13, workers .101-.102), the reference
dockerd on 127.77.<lab + 2>.1 (Engine API on 2375 over plain TCP, as ours, swarm on 2377), our
one-manager swarm on 127.77.<lab + 3>.11.

Measured for us, one thing after the other:
  1. `SwarmLab.up()` of 3 managers + 2 workers until `GET /nodes` shows all 5 Ready;
  2. VmRSS of every node process when idle;
  3. latency of `POST /networks/create` (overlay, attachable, as the CLI sends it) and of
     `POST /services/create` (0 replicas, so the call and nothing behind it is timed), N
     sequential calls each, through the leader's Engine API;
  4. a 20-replica service: time until its 20 tasks run, then VmRSS of every node again;
  5. failover, with the `lab` and the `swarm` timing profiles: SIGKILL the leader's process,
     then the time until a survivor's `GET /nodes` names a new leader, and until a network
     create through a survivor succeeds (an attempt every 50 ms, each left to block); the
     killed node is restarted and every manager reachable again before the next trial.
Then a swarm of ours with one manager and no worker, the reference's shape (every write is
one fsync on one node, no replication), and the reference, both up at once: their ready times
and idle RSS, then the calls of 3. made in turns (10 to one, 10 to the other), so both are
measured on the same machine load and the API latency compares like with like; the 3+2 lab's
figures add Raft's round trip to two followers and their fsyncs.
For the reference (Debian's `docker.io`; `make bench` installs it when missing and root): a
dockerd with its own --data-root, --exec-root and sockets under a temporary directory, its
bridge and iptables off, `swarm init` on its own address; the same calls of 3., in turns with
our one-manager swarm's, and its RSS (dockerd and its containerd). Its time from spawn to
swarm active is printed beside our lab's ready time for scale only: one process against
five. It is stopped by PID afterwards.
Results go to stdout (a table) and to bench/results/cluster.json.

`--against REV_OR_TREE` is an A/B of two versions instead: no 3+2 lab; one-manager swarms of
that version (A, on 127.77.<lab + 2>.11) and of this checkout (B, on 127.77.<lab + 3>.11),
and the reference, their calls in turns, `--rounds` times; bench/results/cluster-against.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# bench/raft.py holds the measuring helpers the benches share, bench/dockerd_reference.py what
# they need around a real dockerd (run as scripts, so bench/ is on sys.path).
from dockerd_reference import clean_up_after, containerd_pid
from raft import first_success, percentile, poll, rss_kb, say
from raft_paired import source_tree

from controlplane.lab.engine import EngineClient
from controlplane.lab.processes import LabProcess, NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

RESULTS = Path(__file__).resolve().parent / "results"
READY_TIMEOUT = 120.0  # for a lab to be all Ready, or dockerd to answer
REPLICAS = 20
CALL_TIMEOUT = 30.0
MAX_IN_FLIGHT = 64  # failover write attempts at once
FAILOVER_LIMIT = 60.0  # give up on a failover trial after this long
ROUND_CALLS = 10  # calls to one system before the next one's turn, when measured together
REAL_SWARM_FAILOVER = (12.46, 12.56)  # /work/shared/reference/real-swarm/FINDINGS.md, section 4


@dataclass
class Latency:
    calls: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    first_error: str = ""
    cpu_ms_per_call: float | None = None  # the serving processes' CPU (user + system) per call
    latencies_ms: list[float] = field(default_factory=list)  # every call, in the order made


@dataclass
class FailoverTrial:
    killed: str
    new_leader: str
    leader_s: float  # kill -> a survivor's /nodes names another leader
    write_s: float  # kill -> the first network create through a survivor succeeded
    attempts: int


@dataclass
class SystemResult:
    name: str
    ready_s: float | None = None
    latency: dict[str, Latency] = field(default_factory=dict)
    idle_rss_kb: dict[str, int] = field(default_factory=dict)
    loaded_rss_kb: dict[str, int] = field(default_factory=dict)
    replicas_running_s: float | None = None
    failover: dict[str, list[FailoverTrial]] = field(default_factory=dict)
    ready_s_by_profile: dict[str, float] = field(default_factory=dict)
    error: str = ""


# ---- the calls, the same for both systems --------------------------------------------------


def network_body(name: str) -> dict[str, Any]:
    """What `docker network create -d overlay --attachable NAME` sends (network-create-cli28)."""
    return {
        "Name": name,
        "CheckDuplicate": True,
        "Driver": "overlay",
        "Attachable": True,
        "IPAM": {"Driver": "default", "Config": [], "Options": {}},
        "Options": {},
        "Labels": {},
    }


def service_body(name: str, replicas: int) -> dict[str, Any]:
    return {
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": "nginx:latest"}},
        "Mode": {"Replicated": {"Replicas": replicas}},
    }


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU the processes used so far (/proc/PID/stat utime and stime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return total / ticks


@dataclass
class CallSample:
    """Sequential calls of one kind to one system, possibly in several rounds: what they took
    and the CPU its serving processes used meanwhile."""

    latencies_ms: list[float] = field(default_factory=list)
    calls: int = 0
    errors: int = 0
    first_error: str = ""
    cpu_s: float = 0.0

    def add(self, other: CallSample) -> None:
        self.latencies_ms += other.latencies_ms
        self.calls += other.calls
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.cpu_s += other.cpu_s

    def summary(self) -> Latency:
        latencies = sorted(self.latencies_ms)
        return Latency(
            calls=self.calls,
            errors=self.errors,
            p50_ms=round(percentile(latencies, 0.50), 2),
            p90_ms=round(percentile(latencies, 0.90), 2),
            p99_ms=round(percentile(latencies, 0.99), 2),
            mean_ms=round(statistics.fmean(latencies), 2) if latencies else 0.0,
            max_ms=round(latencies[-1], 2) if latencies else 0.0,
            first_error=self.first_error,
            cpu_ms_per_call=round(self.cpu_s * 1000 / self.calls, 3) if self.calls else None,
            latencies_ms=[round(ms, 3) for ms in self.latencies_ms],
        )


async def time_calls(
    sample: CallSample,
    engine: EngineClient,
    numbers: range,
    path: str,
    body: Callable[[int], dict[str, Any]],
    pids: Sequence[int],
) -> None:
    """Sequential POSTs, one per number, into `sample`; failures are counted, not timed. The
    CPU the serving processes `pids` used over the calls is the steady figure on a busy
    machine, where wall-clock latency follows the other processes' load."""
    cpu_before = cpu_seconds(pids)
    for n in numbers:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(engine.request("POST", path, body(n)), CALL_TIMEOUT)
        except Exception as err:
            sample.errors += 1
            sample.first_error = sample.first_error or f"{type(err).__name__}: {err}"
            continue
        finally:
            sample.calls += 1
        sample.latencies_ms.append((time.perf_counter() - started) * 1000)
    sample.cpu_s += cpu_seconds(pids) - cpu_before


@dataclass
class Served:
    """A system under measurement: where its results go, its API, and the processes serving
    it (our node, or dockerd and its containerd) whose CPU is counted per call."""

    result: SystemResult
    engine: EngineClient
    pids: list[int]
    processes: dict[str, int] = field(default_factory=dict)  # name -> pid, for their RSS


CALLS = {
    "network create": ("/networks/create", lambda n: network_body(f"bench-net-{n}")),
    "service create": ("/services/create", lambda n: service_body(f"bench-svc-{n}", 0)),
}


async def measure_calls(
    systems: Sequence[Served], calls: int, first: int = 0
) -> dict[str, list[CallSample]]:
    """`calls` of each kind to every system (numbered from `first`, so that later rounds name
    new objects); the samples per kind, in the order of `systems`. With several systems the
    calls go in rounds of ROUND_CALLS to each in turn, so all of them see the same machine: on
    a shared machine the load changes within seconds, and a system measured a minute after
    another would be judged on another machine's load. The order of the turns rotates every
    round (with two systems: reversed every other round), so no system always goes first or
    always follows the same one.

    Every client's connection is opened first (a `/_ping`), so no system's first timed call
    pays for a TCP connection the other's client already had: dockerd's client has made its
    `swarm init` by then, our client is new, and with 100 calls the p99 is the slowest one."""
    for system in systems:
        await system.engine.ping()
    measured = {}
    for call, (path, body) in CALLS.items():
        samples = [CallSample() for _ in systems]
        turns = list(zip(systems, samples, strict=True))
        for round_number, start in enumerate(range(first, first + calls, ROUND_CALLS)):
            numbers = range(start, min(first + calls, start + ROUND_CALLS))
            shift = round_number % len(turns)
            for system, sample in turns[shift:] + turns[:shift]:
                await time_calls(sample, system.engine, numbers, path, body, system.pids)
        for system, sample in turns:
            latency = system.result.latency[call] = sample.summary()
            say(
                f"{system.result.name}: {call}: p50 {latency.p50_ms:.2f} ms, p90 "
                f"{latency.p90_ms:.2f} ms, p99 {latency.p99_ms:.2f} ms over {latency.calls} "
                f"calls ({latency.errors} errors), CPU {latency.cpu_ms_per_call} ms per call"
            )
        measured[call] = samples
    return measured


def vm_rss(pids: dict[str, int]) -> dict[str, int]:
    return {name: rss_kb(pid).get("VmRSS", 0) for name, pid in pids.items()}


# ---- ours ---------------------------------------------------------------------------------


async def start_lab(lab: SwarmLab) -> float:
    """Seconds from starting the processes until every node is Ready (the user's wait)."""
    started = time.monotonic()
    await lab.up()
    await until(lab.all_ready, READY_TIMEOUT, "every node of the lab to be Ready", 0.05)
    return time.monotonic() - started


async def replicas_running(engine: EngineClient, service_id: str, count: int) -> bool:
    tasks = await engine.request("GET", "/tasks")
    running = [
        t
        for t in tasks
        if t["ServiceID"] == service_id
        and t["DesiredState"] == "running"
        and t["Status"]["State"] == "running"
    ]
    return len(running) == count


async def first_write(
    kill: Callable[[], None], engines: list[EngineClient], tag: str
) -> tuple[float, int]:
    """Call `kill`, then start a network create through a survivor every 50 ms
    (alternating) until one succeeds; (seconds from the kill to that success, attempts).

    Attempts are not cut short: Swarm's API blocks a write while there is no leader and
    completes it once there is one (as the real swarm's failover measurement did), and a
    request given up by the client would still hold its place in the engine."""

    def write(n: int) -> Awaitable[object]:
        engine = engines[n % len(engines)]
        return engine.request("POST", "/networks/create", network_body(f"{tag}-{n}"))

    return await first_success(kill, write, max_in_flight=MAX_IN_FLIGHT, limit=FAILOVER_LIMIT)


async def failover_trial(lab: SwarmLab, tag: str) -> FailoverTrial:
    leader = await until(lab.all_ready, READY_TIMEOUT, "a ready lab with a leader")
    survivors = [m for m in lab.managers if m is not leader]
    engines = [EngineClient(m.api, timeout=FAILOVER_LIMIT) for m in survivors]
    killed_at: list[float] = []
    new_leader: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()

    def kill() -> None:
        killed_at.append(time.monotonic())
        leader.kill()

    async def watch_leader() -> None:
        while not killed_at:
            await asyncio.sleep(0.01)
        while True:
            for engine in engines:
                with contextlib.suppress(Exception):
                    rows = await asyncio.wait_for(engine.nodes(), 0.5)
                    for row in rows:
                        status = row.get("ManagerStatus", {})
                        host = row["Description"]["Hostname"]
                        if status.get("Leader") and host != leader.name:
                            new_leader.set_result((host, time.monotonic() - killed_at[0]))
                            return
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_leader())
    try:
        write_s, attempts = await first_write(kill, engines, tag)
        host, leader_s = await asyncio.wait_for(new_leader, READY_TIMEOUT)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        for engine in engines:
            await engine.close()
    leader.start()
    await until(lab.all_ready, READY_TIMEOUT, f"{leader.name} back and reachable")
    return FailoverTrial(leader.name, host, round(leader_s, 3), round(write_s, 3), attempts)


async def run_failover(result: SystemResult, lab: SwarmLab, profile: str, trials: int) -> None:
    done = result.failover.setdefault(profile, [])
    for trial in range(1, trials + 1):
        outcome = await failover_trial(lab, f"failover-{profile}-{trial}")
        done.append(outcome)
        say(
            f"ours ({profile}): failover {trial}: killed {outcome.killed}, {outcome.new_leader} "
            f"leads after {outcome.leader_s:.3f} s, first write after {outcome.write_s:.3f} s "
            f"({outcome.attempts} attempts)"
        )


async def bench_ours(args: argparse.Namespace, root: Path) -> SystemResult:
    result = SystemResult("ours")
    try:
        lab = SwarmLab(root / "lab", managers=3, workers=2, lab=args.lab, profile="lab")
        try:
            result.ready_s = round(await start_lab(lab), 3)
            result.ready_s_by_profile["lab"] = result.ready_s
            say(f"ours (lab): 3 managers + 2 workers all Ready after {result.ready_s:.2f} s")
            pids = {n.name: n.pid for n in lab.nodes}
            result.idle_rss_kb = vm_rss(pids)
            leader = await until(lab.all_ready, READY_TIMEOUT, "a ready lab with a leader")
            async with lab.engine(leader) as engine:
                await measure_calls([Served(result, engine, [leader.pid])], args.calls)
                created = await engine.request(
                    "POST", "/services/create", service_body("bench-replicas", REPLICAS)
                )
                started = time.monotonic()
                await poll(
                    lambda: replicas_running(engine, created["ID"], REPLICAS),
                    READY_TIMEOUT,
                    f"{REPLICAS} running replicas",
                )
                result.replicas_running_s = round(time.monotonic() - started, 3)
            say(f"ours: {REPLICAS} replicas running {result.replicas_running_s:.2f} s after create")
            result.loaded_rss_kb = vm_rss(pids)
            await run_failover(result, lab, "lab", args.trials)
        finally:
            lab.stop()
        if args.swarm_trials:
            lab = SwarmLab(root / "swarm", managers=3, workers=2, lab=args.lab + 1, profile="swarm")
            try:
                ready = round(await start_lab(lab), 3)
                result.ready_s_by_profile["swarm"] = ready
                say(f"ours (swarm): 3 managers + 2 workers all Ready after {ready:.2f} s")
                await run_failover(result, lab, "swarm", args.swarm_trials)
            finally:
                lab.stop()
    except Exception as err:
        result.error = f"{type(err).__name__}: {err}"
        say(f"ours: stopped early: {result.error}")
    return result


def tree_spawner(node: NodeProcess, tree: Path) -> Callable[[list[str]], None]:
    """`node.spawn` running the `controlplane` package found in `tree`, as `bench/raft_paired.py`
    runs its clusters: `-S` keeps the editable install's .pth files from shadowing the tree,
    `-P` the working directory off `sys.path`; the dependencies come from this interpreter's
    site-packages."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    python_path = os.pathsep.join([str(tree), *site])

    def spawn(arguments: list[str]) -> None:
        command = [sys.executable, "-S", "-P", "-m", "controlplane.cli", *arguments]
        node.spawn_command(["env", f"PYTHONPATH={python_path}", *command])

    return spawn


async def start_single(
    lab_number: int,
    root: Path,
    result: SystemResult,
    stack: contextlib.AsyncExitStack,
    tree: Path | None = None,
) -> Served | None:
    """One manager, no worker: the shape of the dockerd reference, on 127.77.<lab_number>.11,
    running this checkout's code or `tree`'s. Stopped with `stack`; None (and `result.error`)
    if it did not come up."""
    lab = SwarmLab(root, managers=1, workers=0, lab=lab_number, profile="lab")
    if tree is not None:
        for node in lab.nodes:
            node.spawn = tree_spawner(node, tree)  # type: ignore[method-assign]
    stack.callback(lab.stop)
    try:
        result.ready_s = round(await start_lab(lab), 3)
        say(f"{result.name}: all Ready after {result.ready_s:.2f} s")
        processes = {n.name: n.pid for n in lab.nodes}
        result.idle_rss_kb = vm_rss(processes)
        leader = await until(lab.all_ready, READY_TIMEOUT, "a ready one-manager swarm")
        engine = await stack.enter_async_context(lab.engine(leader))
        return Served(result, engine, [leader.pid], processes)
    except Exception as err:
        result.error = f"{type(err).__name__}: {err}"
        say(f"{result.name}: stopped early: {result.error}")
        return None


async def bench_alongside_dockerd(
    args: argparse.Namespace, root: Path, binary: str
) -> tuple[SystemResult | None, SystemResult | None]:
    """Our one-manager swarm and the reference dockerd, both up at once and their calls made
    in turns (`measure_calls`): (ours, dockerd's), None for a system not measured."""
    single = None if args.no_single else SystemResult("ours, 1 manager")
    dockerd = SystemResult("dockerd") if binary else None
    async with contextlib.AsyncExitStack() as stack:
        systems = []
        if single is not None:
            systems.append(await start_single(args.lab + 3, root / "single", single, stack))
        if dockerd is not None:
            systems.append(await start_dockerd(args, root, binary, dockerd, stack))
        up = [system for system in systems if system is not None]
        try:
            await measure_calls(up, args.calls)
        except Exception as err:
            for system in up:
                system.result.error = f"{type(err).__name__}: {err}"
            say(f"calls stopped early: {type(err).__name__}: {err}")
        for system in up:
            system.result.loaded_rss_kb = vm_rss(system.processes)
    return single, dockerd


async def bench_against(
    args: argparse.Namespace, root: Path, binary: str, tree_a: Path
) -> dict[str, Any]:
    """A/B of two versions: one-manager swarms running `tree_a`'s code (A, on
    127.77.<lab+2>.11, beside dockerd's .1) and this checkout's (B, on 127.77.<lab+3>.11),
    and dockerd, all up at once; `--rounds` rounds of `measure_calls`, their calls in turns.
    Both swarms are spawned the same way (`tree_spawner`), so A against A differs only by
    where it runs. Returns every round's and the pooled figures, and the per-round B - A."""
    names = {"A": f"A ({args.against})", "B": "B (this checkout)"}
    results = {key: SystemResult(name) for key, name in names.items()}
    checkout = Path(__file__).resolve().parent.parent
    async with contextlib.AsyncExitStack() as stack:
        a = await start_single(args.lab + 2, root / "A", results["A"], stack, tree_a)
        b = await start_single(args.lab + 3, root / "B", results["B"], stack, checkout)
        if a is None or b is None:
            raise SystemExit(
                f"a swarm did not come up: A {results['A'].error or 'up'}, "
                f"B {results['B'].error or 'up'}"
            )
        systems = [a, b]
        if binary:
            dockerd = await start_dockerd(args, root, binary, SystemResult("dockerd"), stack)
            systems += [dockerd] if dockerd is not None else []
        pooled = {call: [CallSample() for _ in systems] for call in CALLS}
        rounds = []
        for number in range(args.rounds):
            say(f"round {number + 1} of {args.rounds}")
            measured = await measure_calls(systems, args.calls, first=number * args.calls)
            figures: dict[str, dict[str, Any]] = {}
            for call, samples in measured.items():
                for total, sample in zip(pooled[call], samples, strict=True):
                    total.add(sample)
                figures[call] = {
                    system.result.name: latency_figures(sample.summary())
                    for system, sample in zip(systems, samples, strict=True)
                }
            rounds.append(figures)
    report: dict[str, Any] = {"rounds": rounds, "pooled": {}, "b_minus_a": {}}
    for call, samples in pooled.items():
        report["pooled"][call] = {
            system.result.name: latency_figures(sample.summary())
            for system, sample in zip(systems, samples, strict=True)
        }
        report["b_minus_a"][call] = {
            figure: statistics.median(
                one[call][names["B"]][figure] - one[call][names["A"]][figure] for one in rounds
            )
            for figure in ("p50_ms", "p90_ms", "p99_ms", "cpu_ms_per_call")
        }
    return report


def latency_figures(latency: Latency) -> dict[str, Any]:
    """A sample's summary without every call's latency."""
    figures = asdict(latency)
    del figures["latencies_ms"]
    return figures


def render_against(report: dict[str, Any]) -> str:
    lines = []
    for call, systems in report["pooled"].items():
        lines.append(f"{call}, all rounds pooled (ms):")
        for name, figures in systems.items():
            lines.append(
                f"  {name:28s} p50 {figures['p50_ms']:6.2f}  p90 {figures['p90_ms']:6.2f}  "
                f"p99 {figures['p99_ms']:6.2f}  CPU per call {figures['cpu_ms_per_call']:.3f}"
                f"  errors {figures['errors']}"
            )
        diff = report["b_minus_a"][call]
        lines.append(
            f"  B - A, median of the rounds'  p50 {diff['p50_ms']:+.2f}  p90 {diff['p90_ms']:+.2f}"
            f"  p99 {diff['p99_ms']:+.2f}  CPU per call {diff['cpu_ms_per_call']:+.3f}"
        )
    return "\n".join(lines)


# ---- the reference: a real dockerd --------------------------------------------------------


class Dockerd(LabProcess):
    """A dockerd of our own: its own roots and sockets in `data_dir`, no bridge, no iptables,
    and an HTTP proxy that does not exist, so an image pull can never leave loopback."""

    def start(self, binary: str) -> None:
        dead_proxy = f"http://{self.address}:9"
        self.spawn_command(
            [
                "env",
                f"HTTP_PROXY={dead_proxy}",
                f"HTTPS_PROXY={dead_proxy}",
                "NO_PROXY=",
                binary,
                "--data-root",
                str(self.data_dir / "root"),
                "--exec-root",
                str(self.data_dir / "exec"),
                "--pidfile",
                str(self.data_dir / "dockerd.pid"),
                "-H",
                f"unix://{self.data_dir / 'docker.sock'}",
                "-H",
                f"tcp://{self.api}",
                "--tls=false",
                "--bridge=none",
                "--iptables=false",
            ]
        )

    @property
    def api(self) -> str:
        return f"{self.address}:2375"

    def containerd_pid(self) -> int | None:
        return containerd_pid(self.data_dir)

    def shut_down(self) -> None:
        """SIGTERM (SIGKILL after 10 s) to our dockerd, then clean up after it."""
        containerd = self.containerd_pid()
        self.stop()
        clean_up_after(self.data_dir, containerd)


def dockerd_version(binary: str) -> str:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    return "?"


async def start_dockerd(
    args: argparse.Namespace,
    root: Path,
    binary: str,
    result: SystemResult,
    stack: contextlib.AsyncExitStack,
) -> Served | None:
    """Our dockerd, its swarm initialised. Shut down with `stack`; None (and `result.error`)
    if it did not come up."""
    address = f"127.77.{args.lab + 2}.1"
    daemon = Dockerd("dockerd", address, root / "dockerd")
    started = time.monotonic()
    daemon.start(binary)
    stack.callback(daemon.shut_down)
    try:
        engine = await stack.enter_async_context(EngineClient(daemon.api))

        async def answers() -> bool:
            if not daemon.alive():
                raise RuntimeError(f"dockerd exited: {daemon.startup_error()}")
            return await engine.ping()

        await poll(answers, READY_TIMEOUT, "dockerd's Engine API")
        await engine.request(
            "POST",
            "/swarm/init",
            {"ListenAddr": f"{address}:2377", "AdvertiseAddr": address},
        )
        result.ready_s = round(time.monotonic() - started, 3)
        say(f"dockerd: answering and swarm active after {result.ready_s:.2f} s")
        processes = {"dockerd": daemon.pid}
        containerd = daemon.containerd_pid()
        if containerd is not None:
            processes["containerd"] = containerd
        result.idle_rss_kb = vm_rss(processes)
        return Served(result, engine, list(processes.values()), processes)
    except Exception as err:
        result.error = f"{type(err).__name__}: {err}"
        say(f"dockerd: stopped early: {result.error}")
        return None


# ---- the table ----------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    unit: str
    ours: float | None
    dockerd: float | None
    target: str = ""
    passed: bool | None = None
    single: float | None = None  # our one-manager swarm, where measured
    single_passed: bool | None = None


def at_most(row: Row, limit: float | None) -> Row:
    row.passed = None if row.ours is None or limit is None else row.ours <= limit
    row.single_passed = None if row.single is None or limit is None else row.single <= limit
    return row


def quantile_ms(latency: Latency | None, quantile: str) -> float | None:
    if latency is None or latency.calls <= latency.errors:
        return None
    value: float = getattr(latency, f"{quantile}_ms")
    return value


def mb(rss: dict[str, int], prefix: str) -> float | None:
    values = [kb for name, kb in rss.items() if name.startswith(prefix)]
    return max(values) / 1024 if values else None


def build_rows(
    ours: SystemResult, single: SystemResult | None, dockerd: SystemResult | None
) -> list[Row]:
    ref = dockerd or SystemResult("dockerd")
    one = single or SystemResult("ours, 1 manager")
    ready = Row("lab 3+2 all Ready, lab profile", "s", ours.ready_s, ref.ready_s, "< 5 s")
    ready.passed = None if ours.ready_s is None else ours.ready_s < 5.0
    ready.single = one.ready_s
    rows = [ready]
    swarm_ready = ours.ready_s_by_profile.get("swarm")
    rows.append(Row("lab 3+2 all Ready, swarm profile", "s", swarm_ready, None))
    for call in ("network create", "service create"):
        mine, alone, theirs = ours.latency.get(call), one.latency.get(call), ref.latency.get(call)
        for quantile in ("p50", "p90", "p99"):
            other = quantile_ms(theirs, quantile)
            row = Row(f"{call} {quantile}", "ms", quantile_ms(mine, quantile), other)
            row.single = quantile_ms(alone, quantile)
            row.target = "<= dockerd" if dockerd else ""
            rows.append(at_most(row, other))
        cpu = [x.cpu_ms_per_call if x else None for x in (mine, theirs, alone)]
        rows.append(
            Row(f"{call} CPU per call, serving process", "ms", cpu[0], cpu[1], single=cpu[2])
        )
        errors = [x.errors if x else None for x in (mine, theirs, alone)]
        rows.append(Row(f"{call} errors", "count", errors[0], errors[1], single=errors[2]))
    rows += [
        Row(
            "RSS idle, largest manager / dockerd",
            "MB",
            mb(ours.idle_rss_kb, "manager"),
            mb(ref.idle_rss_kb, "dockerd"),
            single=mb(one.idle_rss_kb, "manager"),
        ),
        Row("RSS idle, largest worker", "MB", mb(ours.idle_rss_kb, "worker"), None),
        Row(
            "RSS loaded, largest manager / dockerd",
            "MB",
            mb(ours.loaded_rss_kb, "manager"),
            mb(ref.loaded_rss_kb, "dockerd"),
            single=mb(one.loaded_rss_kb, "manager"),
        ),
        Row("RSS loaded, largest worker", "MB", mb(ours.loaded_rss_kb, "worker"), None),
        Row(
            "RSS idle / loaded, dockerd's containerd",
            "MB",
            None,
            mb(ref.loaded_rss_kb, "containerd"),
        ),
        Row(f"{REPLICAS} replicas running after create", "s", ours.replicas_running_s, None),
    ]
    for profile, trials in ours.failover.items():
        leader = statistics.median(t.leader_s for t in trials) if trials else None
        write = statistics.median(t.write_s for t in trials) if trials else None
        real = REAL_SWARM_FAILOVER if profile == "swarm" else (None, None)
        rows.append(Row(f"failover ({profile}): new leader, median", "s", leader, real[0]))
        rows.append(Row(f"failover ({profile}): first write, median", "s", write, real[1]))
    return rows


def render_table(rows: list[Row]) -> str:
    def num(value: float | None, unit: str) -> str:
        if value is None:
            return "-"
        return f"{value:.0f}" if unit == "count" else f"{value:.2f}"

    def verdict(passed: bool | None) -> str:
        return "" if passed is None else ("PASS" if passed else "FAIL")

    lines = [["metric", "unit", "ours 3+2", "ours 1m", "dockerd", "target", "3+2", "1m"]]
    for row in rows:
        cells = [row.metric, row.unit, num(row.ours, row.unit), num(row.single, row.unit)]
        cells += [num(row.dockerd, row.unit), row.target]
        lines.append([*cells, verdict(row.passed), verdict(row.single_passed)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for i, line in enumerate(lines):
        cells = [
            cell.ljust(w) if j in (0, 1, 5, 6, 7) else cell.rjust(w)
            for j, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_json(
    path: Path,
    args: argparse.Namespace,
    ours: SystemResult,
    single: SystemResult | None,
    dockerd: SystemResult | None,
    note: str,
    rows: list[Row],
    load: dict[str, list[float]],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": load,  # 1, 5 and 15 minutes, when the bench started and ended
        },
        "config": {
            "calls": args.calls,
            "trials_lab": args.trials,
            "trials_swarm": args.swarm_trials,
            "replicas": REPLICAS,
            "lab": args.lab,
        },
        "ours": asdict(ours),
        "ours_single_manager": asdict(single) if single else None,
        "dockerd": asdict(dockerd) if dockerd else None,
        "reference": note,
        "real_swarm_failover_s": {
            "new_leader_mean": REAL_SWARM_FAILOVER[0],
            "first_write_mean": REAL_SWARM_FAILOVER[1],
            "source": "/work/shared/reference/real-swarm/FINDINGS.md, section 4",
        },
        "rows": [asdict(row) for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="calls per API latency sample")
    parser.add_argument("--trials", type=int, default=5, help="failover trials, lab profile")
    parser.add_argument(
        "--swarm-trials", type=int, default=2, help="failover trials, swarm profile (0: skip)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 calls, 1+1 trials")
    parser.add_argument("--no-dockerd", action="store_true", help="measure ours only")
    parser.add_argument(
        "--no-single", action="store_true", help="skip our one-manager swarm's column"
    )
    parser.add_argument("--dockerd", default="", help="dockerd binary (default: on PATH)")
    parser.add_argument(
        "--lab", type=int, default=190, help="ours on 127.77.<lab>.x, lab+1 and lab+3"
    )
    parser.add_argument(
        "--against",
        metavar="REV_OR_TREE",
        help="A/B mode: one-manager swarms of this version (a git revision or a source tree) "
        "and of this checkout beside dockerd, their calls in turns, --rounds times; no 3+2 lab",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --calls, with --against")
    parser.add_argument(
        "--json",
        type=Path,
        help="JSON output (default: bench/results/cluster.json, cluster-against.json with "
        "--against)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.trials, args.swarm_trials = 20, 1, 1
    if args.json is None:
        args.json = RESULTS / ("cluster-against.json" if args.against else "cluster.json")
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be 1..100")
    if not (1 <= args.calls <= 10_000 and 0 <= args.trials <= 50 and 0 <= args.swarm_trials <= 50):
        parser.error("--calls must be 1..10000, --trials and --swarm-trials 0..50")
    if not 0 <= args.lab <= 252:
        parser.error("--lab must be 0..252 (the bench also uses lab+1, lab+2 and lab+3)")
    return args


@contextlib.contextmanager
def work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="swarmlab-bench-") as tmp:
        yield Path(tmp)


def reference_note(args: argparse.Namespace) -> tuple[str, str]:
    """(dockerd binary or "", a sentence about the reference)."""
    binary = args.dockerd or shutil.which("dockerd") or ""
    if args.no_dockerd:
        return "", "dockerd skipped (--no-dockerd)"
    if not binary:
        return "", "dockerd is not installed (apt-get install docker.io): ours alone"
    if os.geteuid() != 0:
        return "", "dockerd needs root: ours alone"
    return binary, f"{dockerd_version(binary)} ({binary}), single-node swarm"


async def main_against(args: argparse.Namespace) -> int:
    binary, note = reference_note(args)
    say(
        f"A/B: {args.against} (A) against this checkout (B); {args.rounds} rounds of "
        f"{args.calls} calls of each kind; reference: {note}"
    )
    load = {"start": list(os.getloadavg())}
    with work_dir() as root, source_tree(args.against, root) as tree_a:
        report = await bench_against(args, root, binary, tree_a)
    load["end"] = list(os.getloadavg())
    say()
    say(render_against(report))
    say(
        "load average (1, 5, 15 min): at the start "
        + ", ".join(f"{x:.2f}" for x in load["start"])
        + "; at the end "
        + ", ".join(f"{x:.2f}" for x in load["end"])
    )
    document = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average": load,
        "config": {"against": args.against, "rounds": args.rounds, "calls": args.calls},
        "reference": note,
        **report,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    say(f"results: {args.json}")
    return 0


async def main_async(args: argparse.Namespace) -> int:
    if args.against:
        return await main_against(args)
    binary, note = reference_note(args)
    say(
        f"3 managers + 2 workers; {args.calls} calls per API sample; {REPLICAS}-replica service; "
        f"failover trials: {args.trials} (lab profile), {args.swarm_trials} (swarm profile)"
    )
    say(f"reference: {note}")
    load = {"start": list(os.getloadavg())}
    with work_dir() as root:
        ours = await bench_ours(args, root)
        single, dockerd = await bench_alongside_dockerd(args, root, binary)
    rows = build_rows(ours, single, dockerd)
    load["end"] = list(os.getloadavg())
    say()
    say(render_table(rows))
    say(
        "\n'ours 1m' is a swarm of ours with one manager and no worker, the reference's shape; "
        "'ours 3+2' adds Raft replication to two followers (each write fsynced on a quorum). "
        "dockerd is one process serving one node; its ready time is spawn to swarm active. "
        "Its failover figures are a real 3-manager Docker 20.10 swarm's (FINDINGS.md), "
        "not measured in this run."
    )
    systems = (ours, single, dockerd)
    for system in systems:
        if system is not None and system.error:
            say(f"note: {system.name} did not finish: {system.error}")
    say(
        "load average (1, 5, 15 min): at the start "
        + ", ".join(f"{x:.2f}" for x in load["start"])
        + "; at the end "
        + ", ".join(f"{x:.2f}" for x in load["end"])
        + f" ({os.cpu_count()} CPUs)"
    )
    write_json(args.json, args, ours, single, dockerd, note, rows, load)
    say(f"results: {args.json}")
    return 1 if any(system is not None and system.error for system in systems) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
