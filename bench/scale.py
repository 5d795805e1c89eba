"""Labs at scale: big services, many services, and what an idle node costs.

Run with `.venv/bin/python bench/scale.py` (about 10 minutes; `--quick` about 3) under the
shared lock (`flock /work/bench.lock ...`). Everything runs on loopback: a lab of 1 manager +
2 workers on 127.77.<lab>.x (default 133), userspace data path, formed by `SwarmLab.up()`;
then a lab of 3 managers + 2 workers on 127.77.<lab + 1>.x left idle; then the reference.

Measured on the 1+2 lab, through the leader's Engine API as the docker CLI sends it:
  1. for each N of `--sizes` (100 500 1000), on one overlay network with a /20 subnet (the
     default /24 holds 254 addresses: 500 tasks do not fit, in dockerd either):
     `POST /services/create` of N replicas of `busybox sleep 1d` until all N tasks run
     (the time the user waits for `docker service create` to converge), and the CPU the
     leader and the workers used meanwhile; with it still there, a second service of 1
     replica until it runs (what a big service costs the next user call); `docker service
     scale` back to 1 until a single task runs; then removal until no task of either is
     left;
  2. `--services` (50) services of 2 replicas, created one after the other, until all their
     tasks run: the latency of each create and the leader's CPU;
  3. the idle 3+2 lab: CPU of every node process over `--idle` seconds (60) from
     /proc/PID/stat, and its RSS.
`--py-spy` profiles the leader (py-spy, non-blocking) while the largest service is created,
writes the collapsed stacks to bench/results/scale-profile.txt and prints where the samples
went, by innermost Swarmlab function and by the passes that contain them.

The reference: a real dockerd (Debian's `docker.io`) in a network namespace of its own (so
its swarm ports bind nothing another dockerd on this machine may hold), its own data and exec
roots, pidfile and unix socket under a temporary directory, no bridge, no iptables, a
`busybox:latest` imported from /bin/busybox (no registry is ever reached). On it, one node
running every task, the same steps for N = 100 only (each task is a real process with its
runc shim: 500 or 1000 of them would not fit beside the other work of this 2-core machine),
and the 50 services. Its idle CPU is not comparable (one process against five) and is not
measured. It is stopped by PID (dockerd, then its containerd) afterwards.

Results: a table on stdout and bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

# bench/raft.py holds the measuring helpers the benches share (run as scripts, so bench/ is
# on sys.path).
from dockerd_reference import clean_up_after, containerd_pid
from raft import cpu_seconds, rss_kb, say

from controlplane.lab.engine import EngineClient, EngineError
from controlplane.lab.swarm_lab import SwarmLab, until

RESULTS = Path(__file__).resolve().parent / "results"
READY_TIMEOUT = 180.0
CONVERGE_TIMEOUT = 900.0  # default of --timeout: for N tasks to run, or go
POLL_EVERY = 0.5
NETWORK = "scale-net"
SUBNET = "10.199.0.0/20"  # 4,094 addresses: a default /24 holds 254 tasks, fewer than N
REFERENCE_SIZE = 100
SETTLE_S = 10.0
converge_timeout = (
    CONVERGE_TIMEOUT  # set from --timeout  # after a lab is Ready, before its idle CPU is measured
)


NETWORK_BODY = {"Name": NETWORK, "Driver": "overlay", "IPAM": {"Config": [{"Subnet": SUBNET}]}}
"""What `docker network create -d overlay --subnet 10.199.0.0/20 scale-net` sends."""


# ---- what is measured -----------------------------------------------------------------------


@dataclass
class Step:
    """One user action until the swarm converged, and the CPU it cost."""

    seconds: float | None = None
    call_ms: float | None = None  # the API call alone
    leader_cpu_s: float | None = None  # the leader (the reference: dockerd)
    others_cpu_s: float | None = None  # the other nodes (the reference: containerd)
    error: str = ""


@dataclass
class SizeResult:
    replicas: int
    create: Step = field(default_factory=Step)
    second: Step = field(default_factory=Step)
    scale_down: Step = field(default_factory=Step)
    remove: Step = field(default_factory=Step)


@dataclass
class ManyResult:
    services: int
    replicas: int
    all_running: Step = field(default_factory=Step)
    create_ms: list[float] = field(default_factory=list)
    remove: Step = field(default_factory=Step)


@dataclass
class SystemResult:
    name: str
    sizes: list[SizeResult] = field(default_factory=list)
    many: ManyResult | None = None
    idle_cpu_pct: dict[str, float] = field(default_factory=dict)
    idle_rss_kb: dict[str, int] = field(default_factory=dict)
    error: str = ""


class Meter:
    """CPU of the leader and of the other processes between `start()` and `stop()`."""

    def __init__(self, leader: Sequence[int], others: Sequence[int]) -> None:
        self.leader, self.others = list(leader), list(others)
        self._at = (0.0, 0.0)

    def _now(self) -> tuple[float, float]:
        return (
            sum(cpu_seconds(p) for p in self.leader),
            sum(cpu_seconds(p) for p in self.others),
        )

    def start(self) -> None:
        self._at = self._now()

    def stop(self, step: Step) -> None:
        leader, others = self._now()
        step.leader_cpu_s = round(leader - self._at[0], 2)
        step.others_cpu_s = round(others - self._at[1], 2)


def service_body(name: str, replicas: int) -> dict[str, Any]:
    """What `docker service create --name NAME --replicas N --network scale-net busybox sleep
    1d` sends."""
    return {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox:latest", "Args": ["sleep", "1d"]},
            "Networks": [{"Target": NETWORK}],
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
    }


async def running_tasks(api: EngineClient, service_id: str) -> tuple[int, int]:
    """(tasks of the service that run, tasks of the service listed at all)."""
    filters = json.dumps({"service": [service_id]})
    try:
        tasks = await api.request("GET", "/tasks", params={"filters": filters})
    except EngineError as err:
        if err.status == 404:  # the service is gone (dockerd refuses the filter then)
            return 0, 0
        raise
    running = sum(1 for t in tasks if t["Status"]["State"] == "running")
    return running, len(tasks)


async def wait_for(
    api: EngineClient, service_id: str, done: Callable[[int, int], bool], what: str
) -> None:
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while True:
        with contextlib.suppress(EngineError, aiohttp.ClientError):
            if done(*await running_tasks(api, service_id)):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {converge_timeout:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_EVERY)


async def timed(
    meter: Meter,
    step: Step,
    call: Callable[[], Awaitable[Any]],
    converged: Callable[[Any], Awaitable[None]],
) -> Any:
    """Make the call, wait until `converged(its answer)`; fill `step`. Errors are recorded."""
    meter.start()
    started = time.monotonic()
    try:
        answer = await call()
        step.call_ms = round((time.monotonic() - started) * 1000, 1)
        await converged(answer)
        step.seconds = round(time.monotonic() - started, 3)
        return answer
    except Exception as err:
        step.error = f"{type(err).__name__}: {err}"
        say(f"  failed: {step.error}")
        return None
    finally:
        meter.stop(step)


async def create(api: EngineClient, name: str, replicas: int) -> str:
    answer = await api.request("POST", "/services/create", service_body(name, replicas))
    return str(answer["ID"])


async def scale(api: EngineClient, service_id: str, replicas: int) -> None:
    service = await api.request("GET", f"/services/{service_id}")
    spec = service["Spec"]
    spec["Mode"] = {"Replicated": {"Replicas": replicas}}
    version = str(service["Version"]["Index"])
    await api.request("POST", f"/services/{service_id}/update", spec, {"version": version})


async def remove(api: EngineClient, service_ids: Sequence[str], step: Step, meter: Meter) -> None:
    """Remove the services and wait until none of their tasks is listed any more."""

    async def call() -> None:
        for service_id in service_ids:
            await api.request("DELETE", f"/services/{service_id}")

    async def gone(_answer: object) -> None:
        for service_id in service_ids:
            await wait_for(api, service_id, lambda _r, listed: listed == 0, "tasks removed")

    await timed(meter, step, call, gone)


async def measure_size(api: EngineClient, meter: Meter, replicas: int) -> SizeResult:
    result = SizeResult(replicas)
    say(f"  {replicas} replicas: create")
    created: list[str] = []

    async def create_big() -> str:
        created.append(await create(api, f"big-{replicas}", replicas))
        return created[0]

    big = await timed(
        meter,
        result.create,
        create_big,
        lambda sid: wait_for(api, sid, lambda r, _n: r >= replicas, f"{replicas} running"),
    )
    if big is None:  # not converged: removed all the same, so the next steps start clean
        await remove(api, created, result.remove, meter)
        return result
    say(f"    all running after {result.create.seconds} s; a second service")
    second = await timed(
        meter,
        result.second,
        lambda: create(api, f"second-{replicas}", 1),
        lambda sid: wait_for(api, sid, lambda r, _n: r >= 1, "the second service running"),
    )
    say(f"    second service running after {result.second.seconds} s; scale to 1")
    await timed(
        meter,
        result.scale_down,
        lambda: scale(api, big, 1),
        lambda _a: wait_for(api, big, lambda r, _n: r == 1, "one task left running"),
    )
    say(f"    one task running after {result.scale_down.seconds} s; remove")
    await remove(api, [big] + ([second] if second else []), result.remove, meter)
    say(f"    removed after {result.remove.seconds} s")
    return result


async def measure_many(api: EngineClient, meter: Meter, services: int, replicas: int) -> ManyResult:
    result = ManyResult(services, replicas)
    ids: list[str] = []

    async def create_all() -> list[str]:
        for n in range(services):
            started = time.monotonic()
            ids.append(await create(api, f"many-{n}", replicas))
            result.create_ms.append(round((time.monotonic() - started) * 1000, 1))
        return ids

    async def all_running(created: list[str]) -> None:
        for service_id in created:
            await wait_for(api, service_id, lambda r, _n: r >= replicas, "replicas running")

    say(f"  {services} services of {replicas} replicas")
    await timed(meter, result.all_running, create_all, all_running)
    say(f"    all running after {result.all_running.seconds} s; remove")
    await remove(api, ids, result.remove, meter)
    return result


# ---- py-spy ---------------------------------------------------------------------------------


class Profile:
    """py-spy on one process, from `start()` until `stop()` (SIGINT: py-spy then writes)."""

    def __init__(self, pid: int, output: Path) -> None:
        self.pid, self.output = pid, output
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(binary).exists():
            say("py-spy is not installed (.venv/bin/pip install py-spy): no profile")
            return
        self.output.parent.mkdir(parents=True, exist_ok=True)
        command = [binary, "record", "--pid", str(self.pid), "--rate", "100", "--format"]
        command += ["raw", "--threads", "--nonblocking", "--output", str(self.output)]
        self._process = await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def stop(self) -> list[tuple[float, str]]:
        process = self._process
        if process is None:
            return []
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()
        if not self.output.exists():
            say(f"py-spy wrote nothing (exit {process.returncode}); it needs ptrace rights")
            return []
        return summarize(self.output.read_text())


PASSES = (
    ("allocate [manager/allocation.py]", "allocation pass"),
    ("reconcile [manager/orchestrator.py]", "orchestrator pass"),
    ("schedule [manager/scheduler.py]", "scheduler pass"),
    ("current [manager/store_allocation.py]", "allocator following the store"),
    ("current [manager/live_view.py]", "view following the store"),
    ("push [store/watch.py]", "watch copies (Watch.push)"),
    ("apply_batch [store/memory.py]", "store apply"),
    ("follow [manager/assignments.py]", "dispatcher assignments"),
)


def summarize(raw: str) -> list[tuple[float, str]]:
    """Share of the main thread's samples spent inside each leader pass (inclusive), then the
    innermost Swarmlab functions (exclusive)."""
    inclusive: dict[str, int] = {}
    innermost: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit() or "MainThread" not in stack:
            continue
        count = int(number)
        total += count
        frames = [_frame(f) for f in stack.split(";") if "controlplane/" in f]
        for label in {label for key, label in PASSES if key in frames}:
            inclusive[label] = inclusive.get(label, 0) + count
        key = frames[-1] if frames else "outside Swarmlab code (event loop, gRPC, idle)"
        innermost[key] = innermost.get(key, 0) + count
    if not total:
        return []
    rows = [(100 * n / total, f"in {label}") for label, n in inclusive.items()]
    rows.sort(reverse=True)
    top = sorted(((100 * n / total, k) for k, n in innermost.items()), reverse=True)[:15]
    return rows + top


def _frame(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.split("controlplane/", 1)[-1].split(":", 1)[0]
    return f"{name} [{where}]"


# ---- ours -----------------------------------------------------------------------------------


async def bench_ours(args: argparse.Namespace, root: Path) -> SystemResult:
    result = SystemResult("swarmlab 1+2")
    lab = SwarmLab(root / "lab", managers=1, workers=2, lab=args.lab)
    try:
        say(f"ours: a 1+2 lab on 127.77.{args.lab}.x")
        await lab.up()
        leader = await until(lab.all_ready, READY_TIMEOUT, "the 1+2 lab Ready")
        meter = Meter([leader.pid], [n.pid for n in lab.nodes if n is not leader])
        async with lab.engine(leader) as api:
            await api.request("POST", "/networks/create", NETWORK_BODY)
            largest = max(args.sizes)
            for replicas in args.sizes:
                profile = None
                if args.py_spy and replicas == largest:
                    profile = Profile(leader.pid, args.py_spy)
                    await profile.start()
                result.sizes.append(await measure_size(api, meter, replicas))
                if profile is not None:
                    report_profile(await profile.stop(), args.py_spy)
            if args.services:
                result.many = await measure_many(api, meter, args.services, 2)
    except Exception as err:
        result.error = f"{type(err).__name__}: {err}"
        say(f"ours: stopped early: {result.error}")
    finally:
        lab.stop()
    return result


def report_profile(rows: list[tuple[float, str]], output: Path) -> None:
    say(f"  leader profile (py-spy, {output}):")
    for share, where in rows:
        say(f"    {share:5.1f}%  {where}")


async def bench_idle(args: argparse.Namespace, root: Path, result: SystemResult) -> None:
    lab = SwarmLab(root / "idle", managers=3, workers=2, lab=args.lab + 1)
    try:
        say(f"idle: a 3+2 lab on 127.77.{args.lab + 1}.x, {args.idle:.0f} s")
        await lab.up()
        await until(lab.all_ready, READY_TIMEOUT, "the 3+2 lab Ready")
        await asyncio.sleep(SETTLE_S)
        before = {n.name: cpu_seconds(n.pid) for n in lab.nodes}
        started = time.monotonic()
        await asyncio.sleep(args.idle)
        elapsed = time.monotonic() - started
        for node in lab.nodes:
            used = cpu_seconds(node.pid) - before[node.name]
            result.idle_cpu_pct[node.name] = round(100 * used / elapsed, 2)
            result.idle_rss_kb[node.name] = rss_kb(node.pid).get("VmRSS", 0)
    except Exception as err:
        result.error = f"{type(err).__name__}: {err}"
        say(f"idle: stopped early: {result.error}")
    finally:
        lab.stop()


# ---- the reference: a real dockerd ----------------------------------------------------------


def busybox_tar() -> bytes:
    """An image root holding /bin/busybox and the applets the tasks use."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "sleep"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return out.getvalue()


class Dockerd:
    """A dockerd in a network namespace of its own (`unshare --net`, loopback up), its Engine
    API on a unix socket only."""

    def __init__(self, binary: str, data_dir: Path, bridge: bool = False) -> None:
        """`bridge`: with dockerd's default docker0 (inside its namespace; none otherwise)."""
        self.data_dir = data_dir
        self.socket = data_dir / "docker.sock"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = (data_dir / "dockerd.log").open("wb")
        daemon = [
            binary,
            "--data-root",
            str(data_dir / "root"),
            "--exec-root",
            str(data_dir / "exec"),
            "--pidfile",
            str(data_dir / "dockerd.pid"),
            "-H",
            f"unix://{self.socket}",
            *([] if bridge else ["--bridge=none"]),
            "--iptables=false",
        ]
        # No route leaves the namespace, and the proxy that does not exist keeps any pull
        # from even trying.
        script = "ip link set lo up && exec env HTTP_PROXY=http://127.0.0.1:9 "
        script += "HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= " + " ".join(daemon)
        self.process = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", script], stdout=self.log, stderr=self.log
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def containerd_pid(self) -> int | None:
        return containerd_pid(self.data_dir)

    def shut_down(self) -> None:
        """SIGTERM to our dockerd (SIGKILL after 30 s), then clean up after it."""
        containerd = self.containerd_pid()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        clean_up_after(self.data_dir, containerd)
        self.log.close()


def dockerd_binary(args: argparse.Namespace) -> str:
    if args.no_dockerd:
        return ""
    return shutil.which("dockerd") or ""


async def bench_dockerd(args: argparse.Namespace, root: Path, binary: str) -> SystemResult:
    result = SystemResult("dockerd (1 node)")
    daemon = Dockerd(binary, root / "dockerd")
    api = EngineClient("docker", timeout=120.0, unix_socket=daemon.socket)
    try:
        say("dockerd: starting in its own network namespace")

        async def answers() -> bool | None:
            if daemon.process.poll() is not None:
                raise RuntimeError(f"dockerd exited: see {daemon.data_dir / 'dockerd.log'}")
            return True if await api.ping() else None

        await until(answers, READY_TIMEOUT, "dockerd's Engine API")
        await api.request(
            "POST",
            "/images/create",
            params={"fromSrc": "-", "repo": "busybox", "tag": "latest"},
            tar=busybox_tar(),
        )
        await api.request(
            "POST", "/swarm/init", {"ListenAddr": "127.0.0.1:2377", "AdvertiseAddr": "127.0.0.1"}
        )
        await api.request("POST", "/networks/create", NETWORK_BODY)
        containerd = daemon.containerd_pid()
        meter = Meter([daemon.pid], [containerd] if containerd else [])
        result.sizes.append(await measure_size(api, meter, REFERENCE_SIZE))
        if args.services:
            result.many = await measure_many(api, meter, args.services, 2)
    except Exception as err:
        result.error = f"{type(err).__name__}: {err}"
        say(f"dockerd: stopped early: {result.error}")
    finally:
        await api.close()
        daemon.shut_down()
    return result


# ---- the table ------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    unit: str
    ours: float | None
    reference: float | str | None


SIZE_ROWS: list[tuple[str, str, Callable[[SizeResult], float | None]]] = [
    ("create -> all running", "s", lambda s: s.create.seconds),
    ("create call", "ms", lambda s: s.create.call_ms),
    ("leader CPU while converging", "s", lambda s: s.create.leader_cpu_s),
    ("other processes' CPU", "s", lambda s: s.create.others_cpu_s),
    ("second service (1 replica) -> running", "s", lambda s: s.second.seconds),
    ("scale to 1 -> one task running", "s", lambda s: s.scale_down.seconds),
    ("leader CPU while scaling down", "s", lambda s: s.scale_down.leader_cpu_s),
    ("remove -> no task left", "s", lambda s: s.remove.seconds),
]
MANY_ROWS: list[tuple[str, str, Callable[[ManyResult], float | None]]] = [
    ("creates -> all running", "s", lambda m: m.all_running.seconds),
    ("create call, median", "ms", lambda m: _median(m.create_ms)),
    ("leader CPU", "s", lambda m: m.all_running.leader_cpu_s),
    ("remove -> no task left", "s", lambda m: m.remove.seconds),
]


def _size(system: SystemResult | None, replicas: int) -> SizeResult | None:
    if system is None:
        return None
    return next((s for s in system.sizes if s.replicas == replicas), None)


def build_rows(ours: SystemResult, ref: SystemResult | None, args: argparse.Namespace) -> list[Row]:
    why = "not run: " + (
        "no dockerd (apt-get install docker.io)"
        if ref is None
        else f"{REFERENCE_SIZE} only (a real process per task)"
    )
    rows: list[Row] = []
    for replicas in args.sizes:
        mine, theirs = _size(ours, replicas), _size(ref, replicas)
        if mine is None:
            continue
        for metric, unit, pick in SIZE_ROWS:
            reference = why if theirs is None else pick(theirs)
            rows.append(Row(f"{replicas} replicas: {metric}", unit, pick(mine), reference))
    if ours.many is not None:
        theirs_many = ref.many if ref is not None else None
        for metric, unit, pick_many in MANY_ROWS:
            label = f"{ours.many.services} services x {ours.many.replicas}: {metric}"
            reference = "not run" if theirs_many is None else pick_many(theirs_many)
            rows.append(Row(label, unit, pick_many(ours.many), reference))
    idle_note = "not measured: one process, not five"
    for name, pct in sorted(ours.idle_cpu_pct.items()):
        rows.append(Row(f"idle 3+2 lab: CPU of {name}", "% core", pct, idle_note))
    for name, kb in sorted(ours.idle_rss_kb.items()):
        rows.append(Row(f"idle 3+2 lab: RSS of {name}", "MB", round(kb / 1024, 1), idle_note))
    return rows


def _median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def render_table(rows: list[Row]) -> str:
    def text(value: float | str | None) -> str:
        if value is None:
            return "failed"
        if isinstance(value, str):
            return value
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"

    header = ("metric", "unit", "ours", "dockerd")
    lines = [(r.metric, r.unit, text(r.ours), text(r.reference)) for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(4)]
    out = []
    for i, line in enumerate([header, *lines]):
        out.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(line)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_json(
    path: Path,
    ours: SystemResult,
    ref: SystemResult | None,
    rows: list[Row],
    args: argparse.Namespace,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label": args.label,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ours": asdict(ours),
        "dockerd": asdict(ref) if ref is not None else None,
        "rows": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# ---- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[100, 500, 1000],
        help="replicas of the big service, one run each (default 100 500 1000)",
    )
    parser.add_argument(
        "--services",
        type=int,
        default=50,
        help="services of 2 replicas created one after the other (0: skip)",
    )
    parser.add_argument(
        "--idle", type=float, default=60.0, help="seconds the idle 3+2 lab is measured (0: skip)"
    )
    parser.add_argument(
        "--lab",
        type=int,
        default=133,
        help="lab number: 127.77.LAB.x for the 1+2 lab, LAB+1 for the idle one",
    )
    parser.add_argument("--no-dockerd", action="store_true", help="skip the reference")
    parser.add_argument(
        "--py-spy",
        type=Path,
        nargs="?",
        const=RESULTS / "scale-profile.txt",
        default=None,
        help="profile the leader during the largest create",
    )
    parser.add_argument(
        "--quick", action="store_true", help="sizes 100 200, 10 services, 20 s idle"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=CONVERGE_TIMEOUT,
        help="seconds to wait for a step to converge before recording it as failed",
    )
    parser.add_argument("--label", default="", help="a note stored in the JSON (a commit, say)")
    parser.add_argument("--json", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.services, args.idle = [100, 200], 10, 20.0
    if any(n < 1 for n in args.sizes) or args.services < 0 or args.idle < 0:
        parser.error("--sizes must be positive, --services and --idle not negative")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if not 0 <= args.lab <= 253:
        parser.error("--lab must be 0-253 (it and the next number are used)")
    return args


@contextlib.contextmanager
def work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="swarmlab-scale-") as root:
        yield Path(root)


async def main_async(args: argparse.Namespace) -> int:
    global converge_timeout
    converge_timeout = args.timeout
    binary = dockerd_binary(args)
    with work_dir() as root:
        ours = await bench_ours(args, root)
        if args.idle:
            await bench_idle(args, root, ours)
        ref = await bench_dockerd(args, root, binary) if binary else None
    rows = build_rows(ours, ref, args)
    say()
    say(render_table(rows))
    write_json(args.json, ours, ref, rows, args)
    say(f"\nresults written to {args.json}")
    return 1 if ours.error or any(s.create.error for s in ours.sizes) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
