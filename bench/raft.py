"""Raft write benchmark: our 3-manager cluster against a 3-member etcd cluster, side by side.

Run with `make bench` (or `.venv/bin/python bench/raft.py --help`). Everything runs on loopback
(managers on 127.77.<lab>.11-13:2377, etcd on 127.78.0.1-3), with fsync on, and both systems
get the same workload through the same kind of client: gRPC (grpc.aio), one shared channel per
system unless --channel-per-client. etcd is driven through its gRPC API (`etcdserverpb.KV/Put`)
with a hand-encoded PutRequest, so no etcd client library is needed.

Measured for each system, one after the other (never both loaded at once):
  1. one client writing sequentially to the leader: writes/s and p50/p99 commit latency;
  2. 64 concurrent clients (coroutines) writing to the leader: writes/s and p50/p99; ours
     twice: each write a unary `Control/Write` (as etcd's unary Put: the like-for-like row),
     then each client on one `Control/WriteStream` of its own with one write outstanding at a
     time (our API's cheaper path; etcd has no streaming Put, its column stays the unary run);
  3. VmRSS of each server process when idle and after the load phases;
  4. leader failover: SIGKILL the leader, then start a write through a survivor every 50 ms
     (0.5 s deadline each) until one succeeds; restart the killed member, wait until it has
     caught up, and repeat (--trials).

A "small write" is a 16-byte key and a 256-byte value: for us one store transaction creating
a Network named by the key with one 256-byte label; for etcd a Put of key -> value.
Results go to stdout (a table) and to bench/results/raft.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import uvloop

from controlplane.accept_pumps import AcceptPumps
from controlplane.client import ManagerClient, network_object
from controlplane.lab.processes import LabProcess, ManagerLab, ManagerProcess, manager_address
from controlplane.pb import control_pb2, objects_pb2
from controlplane.raft.transport import GRPC_OPTIONS
from controlplane.wire import length_delimited

RESULTS = Path(__file__).resolve().parent / "results"
KEY_BYTES = 16
VALUE_BYTES = 256
ELECTION_TIMEOUT_MS = 1000
HEARTBEAT_MS = 100
ATTEMPT_TIMEOUT = 0.5  # per write attempt during a failover
ATTEMPT_EVERY = 0.05  # a new write attempt this often during a failover
MAX_IN_FLIGHT = 16  # failover write attempts at once
FAILOVER_LIMIT = 30.0  # give up on a failover trial after this long
WRITE_TIMEOUT = 5.0  # per write during the load phases
MAX_OPS_PER_WORKER = 5_000_000  # a hard bound besides the phase duration

# A write of (key, value) with a deadline; raises on failure.
PutFn = Callable[[bytes, bytes, float], Awaitable[None]]
# Our two client paths: a unary `Control/Write` per write, or one `Control/WriteStream` per
# client with one write outstanding at a time.
CLIENT_PATHS = ("unary", "streamed")


def load_key(clients: int, path: str = "unary") -> str:
    """Where a load phase's result is kept in `SystemResult.load` (and the JSON)."""
    return str(clients) if path == "unary" else f"{clients} {path}"


def say(text: str = "") -> None:
    print(text, flush=True)


# ---- /proc -------------------------------------------------------------------------------------


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB, from /proc/PID/status."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                found[key] = int(rest.split()[0])
    except OSError:
        pass
    return found


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


# ---- measurements ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass
class LoadResult:
    clients: int
    seconds: float
    writes: int
    errors: int
    writes_per_second: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    writes_total: int  # successful writes including the warm-up (objects added to the store)
    client_cpu_percent: float  # this bench process, % of one core
    server_cpu_percent: dict[str, float]  # each server process, % of one core
    first_error: str = ""


@dataclass
class FailoverTrial:
    seconds: float
    attempts: int
    killed: str
    written_through: str


@dataclass
class SystemResult:
    name: str
    transport: str
    load: dict[str, LoadResult] = field(default_factory=dict)
    failover: list[FailoverTrial] = field(default_factory=list)
    rss_kb: dict[str, dict[str, int]] = field(default_factory=dict)  # after the load phases
    idle_rss_kb: dict[str, dict[str, int]] = field(default_factory=dict)  # before them
    filled_rss_kb: dict[str, dict[str, int]] = field(default_factory=dict)  # with `objects`
    objects: int = 0  # objects written by the fill phase, before any other write
    leader: str = ""  # the server that led during the load phases
    error: str = ""

    def cpu_ms_per_write(
        self, clients: int, servers: str = "leader", path: str = "unary"
    ) -> float | None:
        """Server CPU per write in a load phase: the leader's, or all servers' ("all")."""
        load = self.load.get(load_key(clients, path))
        if load is None or not load.writes_per_second:
            return None
        shares = load.server_cpu_percent
        percent = sum(shares.values()) if servers == "all" else shares.get(self.leader)
        return None if percent is None else 10 * percent / load.writes_per_second

    @property
    def failover_median(self) -> float | None:
        done = [t.seconds for t in self.failover]
        return statistics.median(done) if done else None

    @property
    def max_rss_mb(self) -> float | None:
        return _max_rss_mb(self.rss_kb)

    @property
    def max_idle_rss_mb(self) -> float | None:
        return _max_rss_mb(self.idle_rss_kb)

    @property
    def max_filled_rss_mb(self) -> float | None:
        return _max_rss_mb(self.filled_rss_kb)

    @property
    def growth_per_object(self) -> float | None:
        """Bytes of RSS per object from idle to the fill phase's end (the busiest server)."""
        deltas = [
            filled["VmRSS"] - self.idle_rss_kb[name]["VmRSS"]
            for name, filled in self.filled_rss_kb.items()
            if "VmRSS" in filled and "VmRSS" in self.idle_rss_kb.get(name, {})
        ]
        return max(deltas) * 1024 / self.objects if deltas and self.objects else None


def _max_rss_mb(rss: dict[str, dict[str, int]]) -> float | None:
    values = [r["VmRSS"] for r in rss.values() if "VmRSS" in r]
    return max(values) / 1024 if values else None


class KeyMaker:
    """Unique 16-byte ASCII keys (a run tag, the worker and a sequence number)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag  # 3 characters

    def key(self, worker: int, seq: int) -> bytes:
        return f"{self.tag}{worker:03d}{seq % 10**10:010d}".encode()


async def run_load(
    puts: Sequence[PutFn],
    *,
    duration: float,
    warmup: float,
    keys: KeyMaker,
    value: bytes,
    pids: dict[str, int],
) -> LoadResult:
    """One coroutine per entry of `puts` writes back to back for warmup + duration seconds;
    only writes that start and finish inside the measured window count."""
    clients = len(puts)
    # Not loop.time(): uvloop's clock ticks in whole milliseconds, as coarse as a write.
    clock = time.perf_counter
    start = clock()
    window_start = start + warmup
    window_end = window_start + duration
    latencies: list[float] = []
    errors = 0
    total = 0
    first_error = ""
    cpu_before: dict[str, float] = {}
    client_cpu_before = 0.0

    async def worker(n: int) -> None:
        nonlocal errors, total, first_error
        put = puts[n]
        for seq in range(MAX_OPS_PER_WORKER):
            began = clock()
            if began >= window_end:
                return
            try:
                await put(keys.key(n, seq), value, WRITE_TIMEOUT)
            except Exception as err:
                ended = clock()
                if began >= window_start and ended <= window_end:
                    errors += 1
                    first_error = first_error or f"{type(err).__name__}: {err}"
                await asyncio.sleep(0.01)  # do not spin on a failing server
                continue
            ended = clock()
            total += 1
            if began >= window_start and ended <= window_end:
                latencies.append(ended - began)

    async def mark_window() -> None:
        nonlocal client_cpu_before
        await asyncio.sleep(max(0.0, window_start - clock()))
        cpu_before.update({name: cpu_seconds(pid) for name, pid in pids.items()})
        client_cpu_before = time.process_time()

    marker = asyncio.create_task(mark_window())
    await asyncio.gather(*(worker(n) for n in range(clients)))
    await marker
    elapsed = clock() - window_start
    client_cpu = time.process_time() - client_cpu_before
    server_cpu = {
        name: round(100 * (cpu_seconds(pid) - cpu_before.get(name, 0.0)) / elapsed, 1)
        for name, pid in pids.items()
    }
    latencies.sort()
    return LoadResult(
        clients=clients,
        seconds=round(duration, 3),
        writes=len(latencies),
        errors=errors,
        writes_per_second=round(len(latencies) / duration, 1),
        p50_ms=round(1000 * percentile(latencies, 0.50), 3),
        p99_ms=round(1000 * percentile(latencies, 0.99), 3),
        mean_ms=round(1000 * statistics.fmean(latencies), 3) if latencies else 0.0,
        max_ms=round(1000 * latencies[-1], 3) if latencies else 0.0,
        writes_total=total,
        client_cpu_percent=round(100 * client_cpu / elapsed, 1),
        server_cpu_percent=server_cpu,
        first_error=first_error,
    )


async def fill(puts: Sequence[PutFn], count: int, keys: KeyMaker, value: bytes) -> int:
    """Write `count` new objects with one coroutine per entry of `puts`, before any other
    write, so both systems are compared for memory while holding the same data. Returns the
    writes that failed (normally none; each may or may not have been stored)."""
    started = 0
    failed = 0

    async def worker(n: int) -> None:
        nonlocal started, failed
        while started < count:
            started += 1
            try:
                await puts[n](keys.key(n, started), value, WRITE_TIMEOUT)
            except Exception as err:
                failed += 1
                if failed > 100:
                    raise RuntimeError(f"fill: more than 100 writes failed ({err})") from err
                await asyncio.sleep(0.05)

    await asyncio.gather(*(worker(n) for n in range(len(puts))))
    return failed


async def measure_filled(
    result: SystemResult,
    puts: Sequence[PutFn],
    objects: int,
    tag: str,
    value: bytes,
    pids: dict[str, int],
) -> None:
    """The fill phase: RSS of every server holding exactly `objects` objects."""
    say(f"{result.name}: writing {objects} objects with {len(puts)} clients ...")
    failed = await fill(puts, objects, KeyMaker(tag), value)
    result.objects = objects
    await asyncio.sleep(1.0)  # followers apply the last entries a moment after the leader
    result.filled_rss_kb = {name: rss_kb(pid) for name, pid in pids.items()}
    note = f" ({failed} writes failed and may be missing)" if failed else ""
    say(f"{result.name}: RSS with {objects} objects{note} (MB): {format_rss(result.filled_rss_kb)}")


def record_failover(result: SystemResult, system: str, trial: FailoverTrial) -> None:
    trial = replace(trial, seconds=round(trial.seconds, 3))
    result.failover.append(trial)
    say(
        f"{system}: failover trial {len(result.failover)}: killed {trial.killed}, first write "
        f"through {trial.written_through} after {trial.seconds:.3f} s ({trial.attempts} attempts)"
    )


async def first_success(
    kill: Callable[[], None],
    write: Callable[[int], Awaitable[object]],
    *,
    max_in_flight: int = MAX_IN_FLIGHT,
    limit: float = FAILOVER_LIMIT,
) -> tuple[float, int]:
    """Call `kill`, then start `write(n)` every ATTEMPT_EVERY seconds (at most
    `max_in_flight` at once) until one returns without raising.

    Returns (seconds from the kill to the end of the first successful write, attempts made).
    Staggered attempts give every system the same ~50 ms resolution, whatever it does with a
    write that arrives while there is no leader (wait for one, or fail at once)."""
    loop = asyncio.get_running_loop()
    succeeded: asyncio.Future[float] = loop.create_future()
    in_flight: set[asyncio.Task[None]] = set()

    async def attempt(n: int) -> None:
        with contextlib.suppress(Exception):
            await write(n)
            if not succeeded.done():
                succeeded.set_result(time.monotonic())

    started = time.monotonic()
    kill()
    attempts = 0
    try:
        while not succeeded.done() and time.monotonic() - started < limit:
            if len(in_flight) < max_in_flight:
                attempts += 1
                task = asyncio.create_task(attempt(attempts))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(succeeded), ATTEMPT_EVERY)
    finally:
        for task in list(in_flight):
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
    if not succeeded.done():
        raise TimeoutError(f"no write succeeded within {limit:.0f} s of the kill")
    return succeeded.result() - started, attempts


async def first_write_after(
    kill: Callable[[], None], put: PutFn, keys: KeyMaker, value: bytes, trial: int
) -> tuple[float, int]:
    """`first_success` with Raft/etcd puts, each with an ATTEMPT_TIMEOUT deadline."""

    def write(n: int) -> Awaitable[object]:
        return asyncio.wait_for(put(keys.key(trial, n), value, ATTEMPT_TIMEOUT), ATTEMPT_TIMEOUT)

    return await first_success(kill, write)


async def poll(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await check():
                return
        await asyncio.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}")


# ---- optional profile of our leader ------------------------------------------------------------


async def record_profile(pid: int, delay: float, duration: float, output: Path) -> None:
    """py-spy the leader during the measured window, then print where its main thread's busy
    samples went. Non-blocking: py-spy otherwise stops the process for every sample, which
    on this machine halved the leader's writes/s."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        say("py-spy is not installed (.venv/bin/pip install py-spy): no profile")
        return
    await asyncio.sleep(delay)
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [binary, "record", "--pid", str(pid), "--rate", "200", "--format", "raw"]
    command += ["--threads", "--nonblocking"]
    command += ["--duration", str(max(1, round(duration))), "--output", str(output)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await asyncio.wait_for(process.wait(), duration + 30)
    except TimeoutError:
        process.kill()
        await process.wait()
    if process.returncode != 0 or not output.exists():
        say(f"py-spy failed (exit {process.returncode}); it needs ptrace rights (root)")
        return
    say(f"leader profile (py-spy, main thread, {output}):")
    for share, where in summarize_profile(output.read_text())[:15]:
        say(f"  {share:5.1f}%  {where}")


def summarize_profile(raw: str) -> list[tuple[float, str]]:
    """Collapsed py-spy stacks -> share of main-thread samples, charged to the innermost
    controlplane function, else to gRPC, the selector (idle or waiting for the GIL) or other."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if "MainThread" not in stack or not number.isdigit():
            continue
        frames = stack.split(";")[1:]
        if not frames:
            continue
        ours = [f for f in frames if "controlplane/" in f and "controlplane/cli.py" not in f]
        if ours:
            name, _, where = ours[-1].partition(" (")
            where = where.split("controlplane/", 1)[-1].split(":", 1)[0]
            key = f"{name} [{where}]"
        elif "grpc/" in frames[-1] or "_consume_request_iterator" in stack:
            key = "gRPC aio (Python side)"
        elif "selectors.py" in frames[-1]:
            key = "in select(): event-loop polling, not Python work"
        elif frames[-1].startswith("Handle._run"):
            key = "event-loop callbacks in C/Cython (mostly gRPC aio)"
        else:
            key = "other: " + frames[-1].split(" (")[0]
        counts[key] = counts.get(key, 0) + int(number)
        total += int(number)
    return sorted(((100 * n / total, k) for k, n in counts.items()), reverse=True)


# ---- our managers ------------------------------------------------------------------------------


class Channels:
    """One shared channel per address, or a fresh one per caller (--channel-per-client)."""

    def __init__(self, factory: Callable[[str], Any], per_client: bool) -> None:
        self._factory = factory
        self._per_client = per_client
        self._shared: dict[str, Any] = {}
        self._all: list[Any] = []

    def get(self, address: str) -> Any:
        if not self._per_client and address in self._shared:
            return self._shared[address]
        made = self._factory(address)
        self._all.append(made)
        if not self._per_client:
            self._shared[address] = made
        return made

    async def close(self) -> None:
        for item in self._all:
            with contextlib.suppress(Exception):
                await item.close()
        self._all.clear()
        self._shared.clear()


class OursClient:
    """Raw gRPC calls to one manager's `Control/Write`, the client path etcd gets too.

    Like `EtcdClient.put`, a write is one unary call whose request bytes the bench makes
    cheaply: one Network template per client (the object a `docker network create` would
    write), whose id and name are set from the key before each write. Building every object
    from scratch (random id, timestamps) cost the bench as much CPU per write as a server.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(address, GRPC_OPTIONS)
        self._write = self._channel.unary_unary("/controlplane.v1.Control/Write", None, None)
        self.open_stream = self._channel.stream_stream(
            "/controlplane.v1.Control/WriteStream", None, None
        )
        self._request = WriteTemplate()

    async def connect(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._channel.channel_ready(), timeout)

    async def put(self, key: bytes, value: bytes, timeout: float) -> None:
        request = self._request.fill(key, value, timeout)
        raw = await self._write(request, timeout=timeout + 1.0)
        check_response(control_pb2.WriteResponse.FromString(raw))

    def streamed(self) -> OursStream:
        """A new client of its own on this channel: one `Control/WriteStream` call."""
        return OursStream(self)

    async def close(self) -> None:
        await self._channel.close(None)


class WriteTemplate:
    """A `WriteRequest` creating one Network (the object a `docker network create` would
    write), whose id and name are set from the key before each write."""

    def __init__(self) -> None:
        self.request = control_pb2.WriteRequest()
        action = self.request.transaction.actions.add(kind=objects_pb2.STORE_ACTION_CREATE)
        action.network.CopyFrom(network_object("template"))
        self._network = action.network

    def fill(self, key: bytes, value: bytes, timeout: float) -> bytes:
        name = key.decode()
        self._network.id = name.replace("_", "0").ljust(25, "0")  # unique, as the keys are
        self._network.spec.annotations.name = name
        self._network.spec.annotations.labels["v"] = value.decode()
        self.request.transaction.proposal_id = secrets.token_bytes(16)
        self.request.timeout_seconds = timeout
        return self.request.SerializeToString()


def check_response(response: control_pb2.WriteResponse) -> None:
    if response.HasField("error"):
        raise RuntimeError(f"write failed ({response.error.kind}): {response.error.message}")
    if not response.result.ok:
        raise RuntimeError(f"write rejected: {response.result.error}")


class OursStream:
    """One client on one `Control/WriteStream` call, one write outstanding at a time: send a
    request, wait for its answer, send the next. The stream opens on the first write and is
    opened again after a failure (a failover kills it). The deadline of a write is the one it
    carries (`timeout_seconds`): the server answers every write by then."""

    def __init__(self, client: OursClient) -> None:
        self._client = client
        self._request = WriteTemplate()
        self._call: Any = None

    async def put(self, key: bytes, value: bytes, timeout: float) -> None:
        request = self._request.fill(key, value, timeout)
        if self._call is None:
            self._call = self._client.open_stream()  # type: ignore[call-arg]
        try:
            await self._call.write(request)
            raw = await self._call.read()
        except BaseException:
            self._call.cancel()
            self._call = None
            raise
        if not isinstance(raw, bytes):  # grpc.aio.EOF
            self._call = None
            raise RuntimeError("the server ended the write stream")
        response = control_pb2.WriteResponse.FromString(raw)
        if response.proposal_id != self._request.request.transaction.proposal_id:
            raise RuntimeError("the stream answered another write than the one outstanding")
        check_response(response)

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None


async def bench_ours(args: argparse.Namespace, root: Path, value: bytes) -> SystemResult:
    result = SystemResult("ours", "gRPC Control.Write (grpc.aio)")
    lab = ManagerLab(root / "managers", 3, lab=args.lab, profile="lab")
    clients = Channels(OursClient, args.channel_per_client)
    try:
        say(f"ours: starting 3 managers on 127.77.{args.lab}.11-13:2377 (profile lab) ...")
        await lab.start()
        leader, _ = await lab.wait_leader()
        pids = {m.name: m.pid for m in lab.managers}
        result.leader = leader.name
        say(f"ours: leader is {leader.name} ({leader.address}), pids {pids}")
        result.idle_rss_kb = {m.name: rss_kb(m.pid) for m in lab.managers}
        fillers = [clients.get(leader.address).put for _ in range(args.clients)]
        await measure_filled(result, fillers, args.objects, "of_", value, pids)

        for count, path in ((1, "unary"), (args.clients, "unary"), (args.clients, "streamed")):
            streams = []
            if path == "streamed":
                streams = [clients.get(leader.address).streamed() for _ in range(count)]
                puts = [stream.put for stream in streams]
            else:
                puts = [clients.get(leader.address).put for _ in range(count)]
            profiler = None
            if args.py_spy and count > 1 and path == args.py_spy_path:
                profiler = asyncio.create_task(
                    record_profile(leader.pid, args.warmup, args.duration, args.py_spy)
                )
            load = await run_load(
                puts,
                duration=args.duration,
                warmup=args.warmup,
                keys=KeyMaker({"unary": "oc_", "streamed": "ot_"}[path] if count > 1 else "os_"),
                value=value,
                pids=pids,
            )
            for stream in streams:
                await stream.close()
            result.load[load_key(count, path)] = load
            say(f"ours: {count:>2} client(s), {path}: {format_load(load)}")
            if profiler is not None:
                await profiler
        result.rss_kb = {m.name: rss_kb(m.pid) for m in lab.managers}
        stored = result.objects + sum(load.writes_total for load in result.load.values())
        say(f"ours: RSS after load (MB, {stored} objects written): {format_rss(result.rss_kb)}")
        await clients.close()

        for trial in range(args.trials):
            leader, _ = await lab.wait_leader()
            survivor = next(m for m in lab.managers if m is not leader)
            writer = OursClient(survivor.address)
            try:
                async with ManagerClient(survivor.address) as client:
                    await client.status()  # the survivor answers before the kill
                await writer.connect()
                seconds, attempts = await first_write_after(
                    leader.kill, writer.put, KeyMaker("ofo"), value, trial
                )
            finally:
                await writer.close()
            record_failover(
                result, "ours", FailoverTrial(seconds, attempts, leader.name, survivor.name)
            )
            await restart_manager(lab, leader, value)
    except Exception as err:
        result.error = f"{type(err).__name__}: {err}"
        say(f"ours: FAILED: {result.error}")
    finally:
        await clients.close()
        lab.stop()
    return result


async def restart_manager(lab: ManagerLab, manager: ManagerProcess, value: bytes) -> None:
    """Restart a killed manager from its data directory and wait until it has caught up."""
    manager.start()
    await manager.wait_ready()
    _, leader_status = await lab.wait_leader()
    target = leader_status.commit

    async def caught_up() -> bool:
        status = await manager.status(0.5)
        return status.leader != 0 and status.applied >= target

    await poll(caught_up, 30.0, f"{manager.name} to catch up")
    writer = OursClient(manager.address)
    try:
        await writer.put(secrets.token_hex(8).encode(), value, 5.0)
    finally:
        await writer.close()


# ---- the gRPC floor ----------------------------------------------------------------------------


async def write_answered_at_once(
    request: control_pb2.WriteRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> control_pb2.WriteResponse:
    """`Control/Write` without Raft or store: the request is parsed and a success returned."""
    ok = objects_pb2.StoreTransactionResult(ok=True)
    return control_pb2.WriteResponse(index=1, result=ok)


async def stream_answered_at_once(
    requests: AsyncIterator[control_pb2.WriteRequest], context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    """`Control/WriteStream` without Raft or store: each request answered as it arrives."""
    ok = objects_pb2.StoreTransactionResult(ok=True)
    async for request in requests:
        await context.write(
            control_pb2.WriteResponse(
                index=1, result=ok, proposal_id=request.transaction.proposal_id
            )
        )


async def serve_floor(address: str) -> None:
    """The floor server process: a manager's gRPC stack (grpc.aio on uvloop, the same
    options, the same (de)serializers as the generated servicer, the same accept pumps on
    `Control/Write`) with nothing behind `Control/Write` and `Control/WriteStream`."""
    server = grpc.aio.server(options=GRPC_OPTIONS)
    write = grpc.unary_unary_rpc_method_handler(
        write_answered_at_once,
        request_deserializer=control_pb2.WriteRequest.FromString,
        response_serializer=control_pb2.WriteResponse.SerializeToString,
    )
    stream = grpc.stream_stream_rpc_method_handler(
        stream_answered_at_once,
        request_deserializer=control_pb2.WriteRequest.FromString,
        response_serializer=control_pb2.WriteResponse.SerializeToString,
    )
    handlers = {"Write": write, "WriteStream": stream}
    generic = grpc.method_handlers_generic_handler("controlplane.v1.Control", handlers)
    server.add_generic_rpc_handlers((generic,))
    pumps = AcceptPumps.register(server, [generic])
    server.add_insecure_port(address)
    await server.start()
    pumps.start()
    await server.wait_for_termination()


async def bench_floor(
    args: argparse.Namespace, root: Path, value: bytes
) -> dict[str, LoadResult] | None:
    """What 64 clients get from one Python gRPC server that does no work at all: the
    ceiling for our leader, which serves every write through the same kind of server. Both
    client paths, unary ("unary") and one stream per client ("streamed"), one after the
    other against the same server process."""
    process = LabProcess("floor", manager_address(9, args.lab), root / "floor")
    process.spawn_command(
        [sys.executable, str(Path(__file__).resolve()), "--serve-floor", process.address]
    )
    client = OursClient(process.address)
    streams: list[OursStream] = []
    loads: dict[str, LoadResult] = {}
    try:
        await poll(lambda: _connected(client), 30.0, "the gRPC floor server")
        for path in CLIENT_PATHS:
            if path == "unary":
                puts = [client.put for _ in range(args.clients)]
            else:
                streams = [client.streamed() for _ in range(args.clients)]
                puts = [stream.put for stream in streams]
            loads[path] = await run_load(
                puts,
                duration=args.duration,
                warmup=args.warmup,
                keys=KeyMaker("fu_" if path == "unary" else "fs_"),
                value=value,
                pids={"floor": process.pid},
            )
            say(f"floor: {args.clients} client(s), {path}: {format_load(loads[path])}")
        return loads
    except Exception as err:
        say(f"floor: FAILED: {type(err).__name__}: {err}")
        return loads or None
    finally:
        for stream in streams:
            await stream.close()
        await client.close()
        process.stop()


async def _connected(client: OursClient) -> bool:
    await client.connect(0.5)
    return True


# ---- etcd --------------------------------------------------------------------------------------


def put_request(key: bytes, value: bytes) -> bytes:
    """etcdserverpb.PutRequest{key: 1, value: 2}, encoded by hand."""
    return length_delimited(1, key) + length_delimited(2, value)


def decode_fields(data: bytes) -> dict[int, list[int | bytes]]:
    """A minimal protobuf decoder: field number -> values (varints and length-delimited)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        for _ in range(10):
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
        raise ValueError("varint too long")

    while pos < len(data):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        item: int | bytes
        if wire == 0:
            item = varint()
        elif wire == 2:
            size = varint()
            item = data[pos : pos + size]
            pos += size
        elif wire == 1:
            item, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            item, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(item)
    return fields


def _int(fields: dict[int, list[int | bytes]], number: int) -> int:
    value = fields.get(number, [0])[-1]
    return value if isinstance(value, int) else 0


@dataclass
class EtcdStatus:
    member_id: int
    leader: int
    raft_index: int
    applied_index: int


class EtcdClient:
    """Raw gRPC calls to one etcd member: KV/Put and Maintenance/Status."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(address, GRPC_OPTIONS)
        self._put = self._channel.unary_unary("/etcdserverpb.KV/Put", None, None)
        self._status = self._channel.unary_unary("/etcdserverpb.Maintenance/Status", None, None)

    async def put(self, key: bytes, value: bytes, timeout: float) -> None:
        await self._put(put_request(key, value), timeout=timeout)

    async def status(self, timeout: float = 1.0) -> EtcdStatus:
        raw = await self._status(b"", timeout=timeout)
        fields = decode_fields(raw)
        header_raw = fields.get(1, [b""])[-1]
        header = decode_fields(header_raw if isinstance(header_raw, bytes) else b"")
        return EtcdStatus(
            member_id=_int(header, 2),
            leader=_int(fields, 4),
            raft_index=_int(fields, 5),
            applied_index=_int(fields, 7),
        )

    async def close(self) -> None:
        await self._channel.close(None)


class EtcdMember(LabProcess):
    def __init__(
        self, name: str, host: str, data_dir: Path, binary: str, initial_cluster: str
    ) -> None:
        super().__init__(name, f"{host}:2379", data_dir)
        self.host = host
        self.binary = binary
        self.initial_cluster = initial_cluster

    @property
    def client_address(self) -> str:
        return self.address

    def start(self) -> None:
        command = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir / 'data'}",
            f"--listen-client-urls=http://{self.host}:2379",
            f"--advertise-client-urls=http://{self.host}:2379",
            f"--listen-peer-urls=http://{self.host}:2380",
            f"--initial-advertise-peer-urls=http://{self.host}:2380",
            f"--initial-cluster={self.initial_cluster}",
            "--initial-cluster-state=new",  # ignored on restart: the data dir decides
            "--initial-cluster-token=swarmlab-bench",
            f"--heartbeat-interval={HEARTBEAT_MS}",
            f"--election-timeout={ELECTION_TIMEOUT_MS}",
            "--pre-vote=true",  # as our managers (etcd 3.5+ default)
            "--log-level=warn",
        ]
        self.spawn_command(command)

    async def status(self) -> EtcdStatus:
        client = EtcdClient(self.client_address)
        try:
            return await client.status()
        finally:
            await client.close()

    def last_log_line(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self.data_dir / "stderr.log").read_text(errors="replace").splitlines()
            return lines[-1] if lines else ""
        return ""


class EtcdCluster:
    def __init__(self, root: Path, binary: str) -> None:
        hosts = [f"127.78.0.{n}" for n in (1, 2, 3)]
        initial = ",".join(f"etcd-{n}=http://{h}:2380" for n, h in enumerate(hosts, 1))
        self.members = [
            EtcdMember(f"etcd-{n}", h, root / f"etcd-{n}", binary, initial)
            for n, h in enumerate(hosts, 1)
        ]

    async def start(self) -> None:
        for member in self.members:
            member.start()
        for member in self.members:
            await self.wait_ready(member)

    async def wait_ready(self, member: EtcdMember, timeout: float = 30.0) -> None:
        async def ready() -> bool:
            if not member.alive():
                raise RuntimeError(f"{member.name} exited: {member.last_log_line()}")
            return (await member.status()).leader != 0

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await ready():
                    return
            except RuntimeError:
                raise
            except Exception:
                pass
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{member.name} did not become ready")

    async def leader(self, timeout: float = 30.0) -> tuple[EtcdMember, EtcdStatus]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in self.members:
                if not member.alive():
                    continue
                with contextlib.suppress(Exception):
                    status = await member.status()
                    if status.leader and status.leader == status.member_id:
                        return member, status
            await asyncio.sleep(0.05)
        raise TimeoutError("etcd elected no leader in time")

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def etcd_put(client: EtcdClient) -> PutFn:
    return client.put


async def bench_etcd(
    args: argparse.Namespace, root: Path, value: bytes, binary: str
) -> SystemResult:
    result = SystemResult("etcd", "gRPC etcdserverpb.KV/Put (grpc.aio, hand-encoded)")
    cluster = EtcdCluster(root / "etcd", binary)
    clients = Channels(EtcdClient, args.channel_per_client)
    try:
        say("etcd: starting 3 members on 127.78.0.1-3 (client 2379, peer 2380) ...")
        await cluster.start()
        leader, _ = await cluster.leader()
        pids = {m.name: m.pid for m in cluster.members}
        result.leader = leader.name
        say(f"etcd: leader is {leader.name} ({leader.client_address}), pids {pids}")
        result.idle_rss_kb = {m.name: rss_kb(m.pid) for m in cluster.members}
        fillers = [clients.get(leader.client_address).put for _ in range(args.clients)]
        await measure_filled(result, fillers, args.objects, "ef_", value, pids)

        for count in (1, args.clients):
            keys = KeyMaker("es_" if count == 1 else "ec_")
            puts = [etcd_put(clients.get(leader.client_address)) for _ in range(count)]
            load = await run_load(
                puts,
                duration=args.duration,
                warmup=args.warmup,
                keys=keys,
                value=value,
                pids=pids,
            )
            result.load[str(count)] = load
            say(f"etcd: {count:>2} client(s): {format_load(load)}")
        result.rss_kb = {m.name: rss_kb(m.pid) for m in cluster.members}
        stored = result.objects + sum(load.writes_total for load in result.load.values())
        say(f"etcd: RSS after load (MB, {stored} objects written): {format_rss(result.rss_kb)}")
        await clients.close()

        for trial in range(args.trials):
            leader, _ = await cluster.leader()
            survivor = next(m for m in cluster.members if m is not leader)
            client = EtcdClient(survivor.client_address)
            try:
                await client.status()  # connected before the kill
                seconds, attempts = await first_write_after(
                    leader.kill, client.put, KeyMaker("efo"), value, trial
                )
            finally:
                await client.close()
            record_failover(
                result, "etcd", FailoverTrial(seconds, attempts, leader.name, survivor.name)
            )
            await restart_etcd(cluster, leader, value)
    except Exception as err:
        result.error = f"{type(err).__name__}: {err}"
        say(f"etcd: FAILED: {result.error}")
    finally:
        await clients.close()
        cluster.stop()
    return result


async def restart_etcd(cluster: EtcdCluster, member: EtcdMember, value: bytes) -> None:
    """Restart a killed member from its data directory and wait until it has caught up."""
    member.start()
    await cluster.wait_ready(member)
    _, leader_status = await cluster.leader()
    target = leader_status.raft_index

    async def caught_up() -> bool:
        status = await member.status()
        return status.leader != 0 and status.applied_index >= target

    await poll(caught_up, 30.0, f"{member.name} to catch up")
    client = EtcdClient(member.client_address)
    try:
        await client.put(secrets.token_hex(8).encode(), value, 5.0)
    finally:
        await client.close()


# ---- report ------------------------------------------------------------------------------------


def format_load(load: LoadResult) -> str:
    cpu = " ".join(f"{k}={v:.0f}%" for k, v in load.server_cpu_percent.items())
    text = (
        f"{load.writes_per_second:8.1f} writes/s  p50 {load.p50_ms:7.2f} ms  "
        f"p99 {load.p99_ms:7.2f} ms  errors {load.errors}  "
        f"cpu: bench={load.client_cpu_percent:.0f}% {cpu}"
    )
    if load.first_error:
        text += f"  first error: {load.first_error[:120]}"
    return text


def format_rss(rss: dict[str, dict[str, int]]) -> str:
    return "  ".join(f"{name}={r.get('VmRSS', 0) / 1024:.1f}" for name, r in rss.items())


@dataclass
class Row:
    metric: str
    unit: str
    ours: float | None
    etcd: float | None
    target: str = ""
    passed: bool | None = None
    ratio_shown: bool = True

    @property
    def ratio(self) -> float | None:
        if not self.ratio_shown or self.ours is None or self.etcd is None or self.etcd == 0:
            return None
        return self.ours / self.etcd


# How each of our client paths is labelled in the table. etcd has no streaming Put: its column
# is always its unary 64-client run.
PATH_LABELS = {
    "unary": "unary Write (like for like)",
    "streamed": "one WriteStream each (ours only)",
}


def build_rows(
    ours: SystemResult,
    etcd: SystemResult | None,
    clients: int,
    floor: dict[str, LoadResult] | None = None,
) -> list[Row]:
    def load(system: SystemResult | None, key: str, attr: str) -> float | None:
        if system is None or key not in system.load:
            return None
        value: float = getattr(system.load[key], attr)
        return value

    rows: list[Row] = []
    etcd_key = load_key(clients)
    for n, path in ((1, "unary"), (clients, "unary"), (clients, "streamed")):
        label = "1 client" if n == 1 else f"{n} clients, {PATH_LABELS[path]}"
        key = load_key(n, path)
        rows.append(
            Row(
                f"{label}: throughput",
                "writes/s",
                load(ours, key, "writes_per_second"),
                load(etcd, load_key(n), "writes_per_second"),
            )
        )
        if n == clients:
            ratio = rows[-1].ratio
            rows[-1].target = "ratio >= 0.50"
            rows[-1].passed = None if ratio is None else ratio >= 0.5
        for attr, name in (("p50_ms", "p50"), ("p99_ms", "p99")):
            rows.append(
                Row(
                    f"{label}: {name} latency",
                    "ms",
                    load(ours, key, attr),
                    load(etcd, load_key(n), attr),
                )
            )
        if n == clients:
            for servers, name in (("leader", "the leader"), ("all", "all 3 servers")):
                rows.append(
                    Row(
                        f"{label}: CPU per write, {name}",
                        "ms/write",
                        ours.cpu_ms_per_write(n, servers, path),
                        etcd.cpu_ms_per_write(n, servers) if etcd else None,
                    )
                )
    for path, at_once in (floor or {}).items():
        rows.append(
            Row(
                f"{clients} clients: gRPC floor, {path} (answered at once)",
                "writes/s",
                at_once.writes_per_second,
                load(etcd, etcd_key, "writes_per_second"),
            )
        )
        rows.append(
            Row(
                f"{clients} clients: gRPC floor, {path}, CPU per write",
                "ms/write",
                10 * at_once.server_cpu_percent["floor"] / at_once.writes_per_second
                if at_once.writes_per_second
                else None,
                None,
            )
        )

    def trials(system: SystemResult | None) -> list[float]:
        return [t.seconds for t in system.failover] if system else []

    failover = Row(
        f"failover median ({len(ours.failover)} trials)",
        "s",
        ours.failover_median,
        etcd.failover_median if etcd else None,
        "ratio <= 1.00",
    )
    failover.passed = None if failover.ratio is None else failover.ratio <= 1.0
    rows.append(failover)
    for stat, pick in (("min", min), ("max", max)):
        ours_t, etcd_t = trials(ours), trials(etcd)
        rows.append(
            Row(
                f"failover {stat}",
                "s",
                pick(ours_t) if ours_t else None,
                pick(etcd_t) if etcd_t else None,
                ratio_shown=False,
            )
        )

    def written(system: SystemResult | None) -> float | None:
        if system is None:
            return None
        return system.objects + sum(x.writes_total for x in system.load.values())

    objects = ours.objects or (etcd.objects if etcd else 0)
    rows.append(
        Row(
            "max RSS of a server, idle",
            "MB",
            ours.max_idle_rss_mb,
            etcd.max_idle_rss_mb if etcd else None,
        )
    )
    rss = Row(
        f"max RSS of a server, {objects:,} objects",
        "MB",
        ours.max_filled_rss_mb,
        etcd.max_filled_rss_mb if etcd else None,
        "ours < 80 MB",
    )
    rss.passed = None if rss.ours is None else rss.ours < 80
    rows.append(rss)
    rows.append(
        Row(
            f"RSS growth per object (idle -> {objects:,})",
            "bytes",
            ours.growth_per_object,
            etcd.growth_per_object if etcd else None,
        )
    )
    rows.append(Row("objects written in all", "count", written(ours), written(etcd)))
    rows[-1].ratio_shown = False
    rows.append(
        Row(
            "max RSS of a server, after all writes",
            "MB",
            ours.max_rss_mb,
            etcd.max_rss_mb if etcd else None,
        )
    )
    return rows


def target_verdict(rows: list[Row], clients: int) -> str:
    """Issue 2's throughput target on each of our client paths, in one sentence."""
    parts = []
    for path, label in PATH_LABELS.items():
        row = next(r for r in rows if r.metric == f"{clients} clients, {label}: throughput")
        ratio = row.ratio
        verdict = "n/a" if ratio is None else f"{ratio:.2f}, {'met' if ratio >= 0.5 else 'missed'}"
        parts.append(f"{path} ({verdict})")
    return (
        f"issue 2's target, {clients}-client throughput >= 0.50 of etcd's (etcd on unary "
        f"KV/Put, one shared channel): " + "; ".join(parts) + ". The unary row is like for "
        "like; the streamed row is our API's own cheaper client path, still "
        f"{clients} concurrent clients each with one write outstanding, each acknowledged."
    )


def render_table(rows: list[Row], with_etcd: bool) -> str:
    def num(value: float | None, unit: str) -> str:
        if value is None:
            return "-"
        if unit in ("writes/s", "count", "bytes"):
            return f"{value:,.0f}"
        return f"{value:.3f}" if unit in ("s", "ms/write", "ms/call") else f"{value:.1f}"

    header = ["metric", "unit", "ours"]
    if with_etcd:
        header += ["etcd", "ours/etcd"]
    header += ["target", "result"]
    lines = [header]
    for row in rows:
        cells = [row.metric, row.unit, num(row.ours, row.unit)]
        if with_etcd:
            ratio = row.ratio
            cells += [num(row.etcd, row.unit), "-" if ratio is None else f"{ratio:.2f}"]
        if row.passed is None:
            verdict = "n/a" if row.target else ""
        else:
            verdict = "PASS" if row.passed else "FAIL"
        lines.append([*cells, row.target, verdict])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        cells = [
            cell.ljust(w) if j < 2 else cell.rjust(w)
            for j, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _jsonable(system: SystemResult | None) -> dict[str, Any] | None:
    if system is None:
        return None
    data = asdict(system)
    data["failover_median_s"] = system.failover_median
    data["max_rss_mb"] = system.max_rss_mb
    data["max_idle_rss_mb"] = system.max_idle_rss_mb
    data["max_filled_rss_mb"] = system.max_filled_rss_mb
    data["growth_per_object_bytes"] = system.growth_per_object
    return data


def write_json(
    path: Path,
    args: argparse.Namespace,
    ours: SystemResult,
    etcd: SystemResult | None,
    etcd_note: str,
    rows: list[Row],
    floor: dict[str, LoadResult] | None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "clients": args.clients,
            "trials": args.trials,
            "objects": args.objects,
            "key_bytes": KEY_BYTES,
            "value_bytes": VALUE_BYTES,
            "election_timeout_ms": ELECTION_TIMEOUT_MS,
            "heartbeat_ms": HEARTBEAT_MS,
            "failover_attempt_timeout_s": ATTEMPT_TIMEOUT,
            "failover_attempt_every_s": ATTEMPT_EVERY,
            "channels": "per-client" if args.channel_per_client else "shared",
            "fsync": True,
        },
        "ours": _jsonable(ours),
        "etcd": _jsonable(etcd),
        "etcd_note": etcd_note,
        "grpc_floor": {path: asdict(at_once) for path, at_once in floor.items()} if floor else None,
        "rows": [{**asdict(row), "ratio": row.ratio} for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# ---- main --------------------------------------------------------------------------------------


def etcd_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if "etcd" in line), "?")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each phase")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (phase 2)")
    parser.add_argument("--trials", type=int, default=5, help="failover trials")
    parser.add_argument(
        "--objects",
        type=int,
        default=10_000,
        help="objects written first; the RSS target is measured holding exactly these",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s phases, 2 trials")
    parser.add_argument("--no-etcd", action="store_true", help="measure our managers only")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the gRPC floor phase (Write answered at once)"
    )
    parser.add_argument("--serve-floor", metavar="ADDR", help=argparse.SUPPRESS)
    parser.add_argument("--etcd", default="", help="etcd binary (default: etcd on PATH)")
    parser.add_argument("--lab", type=int, default=210, help="managers use 127.77.<lab>.x")
    parser.add_argument(
        "--channel-per-client",
        action="store_true",
        help="one gRPC channel per client coroutine instead of one shared channel",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        nargs="?",
        const=RESULTS / "leader-profile.txt",
        default=None,
        help="profile our leader with py-spy during a concurrent phase (collapsed stacks)",
    )
    parser.add_argument(
        "--py-spy-path",
        choices=CLIENT_PATHS,
        default="streamed",
        help="which concurrent phase --py-spy profiles (default: streamed)",
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "raft.json", help="JSON output")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.trials, args.objects = 2.0, 0.5, 2, 2_000
    if not (0 < args.duration <= 600 and 0 <= args.warmup <= 60):
        parser.error("--duration must be in (0, 600] and --warmup in [0, 60]")
    if not (1 <= args.clients <= 999 and 0 <= args.trials <= 50 and 0 <= args.lab <= 255):
        parser.error("--clients must be 1..999, --trials 0..50, --lab 0..255")
    if not 1 <= args.objects <= 1_000_000:
        parser.error("--objects must be 1..1000000")
    return args


@contextlib.contextmanager
def work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="swarmlab-bench-") as tmp:
        yield Path(tmp)


async def main_async(args: argparse.Namespace) -> int:
    value = secrets.token_hex(VALUE_BYTES // 2).encode()  # 256 ASCII bytes (a label is a str)
    binary = args.etcd or shutil.which("etcd") or ""
    if args.no_etcd:
        etcd_note = "etcd skipped (--no-etcd)"
    elif not binary:
        etcd_note = "etcd is not installed (apt-get install etcd-server): ours alone"
    else:
        etcd_note = f"etcd {etcd_version(binary)} ({binary})"
    channels = "one channel per client" if args.channel_per_client else "one shared channel"
    say(
        f"workload: {KEY_BYTES}-byte key, {VALUE_BYTES}-byte value, fsync on; phases of "
        f"{args.duration:g} s after {args.warmup:g} s warm-up; 1 and {args.clients} clients "
        f"over gRPC ({channels}; ours: Control.Write, and with {args.clients} clients also "
        f"one Control.WriteStream each; etcd: KV/Put); {args.trials} failover "
        f"trials; election timeout "
        f"{ELECTION_TIMEOUT_MS} ms"
    )
    say(f"reference: {etcd_note}")
    with work_dir() as root:
        ours = await bench_ours(args, root, value)
        floor = None if args.no_floor else await bench_floor(args, root, value)
        etcd = None
        if binary and not args.no_etcd:
            etcd = await bench_etcd(args, root, value, binary)
    rows = build_rows(ours, etcd, args.clients, floor)
    say()
    say(render_table(rows, etcd is not None))
    say("\nratios are ours/etcd; throughput: higher is better; latency, failover and RSS: lower.")
    say(target_verdict(rows, args.clients))
    if etcd is None:
        say(f"note: {etcd_note}")
    for system in (ours, etcd):
        if system is not None and system.error:
            say(f"note: {system.name} did not finish: {system.error}")
    write_json(args.json, args, ours, etcd, etcd_note, rows, floor)
    say(f"results: {args.json}")
    return 1 if ours.error or (etcd is not None and etcd.error) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_floor:  # the floor phase's server process
        uvloop.run(serve_floor(args.serve_floor))
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
