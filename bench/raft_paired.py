"""Paired A/B of two versions of the managers: CPU per write, side by side, in turns.

On a shared machine writes/s move by several times between minutes, so two versions measured
one after the other cannot be compared. This bench starts two 3-manager clusters at once, A
running the code of `--against` (a git revision of this checkout, or a source tree) and B this
checkout (or `--tree`), fills each with `--objects` objects, then runs `--rounds` rounds of
`--clients` writers against each leader in turn, alternating which goes first. Every round
records, for each cluster, writes/s, the CPU per write of the leader and of each follower
(`/proc/PID/stat`), each thread's share (`/proc/PID/task/*/stat`, by thread name; "main" is
the event loop), the leader's context switches per write (its threads' hand-offs) and the
writes per Raft entry. The result is the median of the per-round B/A
ratios. The writes are `bench/raft.py`'s (same client, same load loop).

    .venv/bin/python bench/raft_paired.py --against main

Clusters listen on 127.77.<lab-a>.11-13 and 127.77.<lab-b>.11-13 (`--port`, 2377 by default).
Only processes this bench started are stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvloop

# The environment this bench was started with. Importing `controlplane` (below, for the
# client) sets defaults in it, such as gRPC's; each cluster must get its own tree's.
LAUNCH_ENVIRONMENT = dict(os.environ)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.raft` from a checkout

from bench.raft import (  # noqa: E402
    CLIENT_PATHS,
    Channels,
    KeyMaker,
    OursClient,
    fill,
    run_load,
    say,
)
from controlplane.lab.processes import ManagerLab, ManagerProcess, manager_address  # noqa: E402

CHECKOUT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Context switches of all threads of `pid` so far (voluntary and not): each is a thread
    going to sleep or being put aside, so per write they count the threads' hand-offs."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended
        total += sum(
            int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
        )
    return total


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid`, summed by thread name ("main" for the first)."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = "main" if int(task.name) == pid else stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return found


class TreeLab(ManagerLab):
    """A manager cluster whose processes run the `controlplane` package found in `tree`.

    `python -S` skips site-packages' .pth files, so the editable install of this checkout
    cannot shadow the tree, and `-P` keeps the working directory off `sys.path` (with `-m` it
    would come first: run from a checkout, both clusters ran the checkout's code); the
    dependencies come from this interpreter's site-packages. The processes get the environment
    the bench started with: environment defaults that B's `controlplane` sets on import (this
    bench imports it too) would otherwise reach A's processes as well."""

    def __init__(self, tree: Path | None, root: Path, lab: int, port: int, managers: int) -> None:
        super().__init__(root, managers, lab=lab)
        self.tree = tree
        for n, manager in enumerate(self.managers, 1):
            manager.address = manager_address(n, lab, port)
            if tree is not None:
                manager.spawn = self._spawner(manager)  # type: ignore[method-assign]

    def _spawner(self, manager: ManagerProcess) -> Any:
        def spawn(arguments: list[str]) -> None:
            manager.spawn_command(
                [sys.executable, "-S", "-P", "-m", "controlplane.cli", *arguments]
            )

        return spawn

    async def start(self) -> None:
        if self.tree is None:
            await super().start()
            return
        site = [p for p in sys.path if p.endswith("site-packages")]
        before = dict(os.environ)
        os.environ.clear()
        os.environ.update(LAUNCH_ENVIRONMENT)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(self.tree), *site])
        try:
            await super().start()
        finally:
            os.environ.clear()
            os.environ.update(before)


@contextmanager
def source_tree(against: str, scratch: Path) -> Iterator[Path]:
    """`against` as a directory holding `controlplane/`: itself, or a git revision exported."""
    path = Path(against)
    if (path / "controlplane").is_dir():
        yield path
        return
    out = scratch / "against"
    out.mkdir()
    try:
        archive = subprocess.run(
            ["git", "-C", str(CHECKOUT), "archive", against, "controlplane"],
            check=True,
            capture_output=True,
        ).stdout
    except subprocess.CalledProcessError as err:
        raise SystemExit(
            f"--against {against!r} is neither a source tree nor a git revision of "
            f"{CHECKOUT}: {err.stderr.decode().strip()}"
        ) from err
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    yield out


async def measure_round(
    name: str, lab: ManagerLab, leader: ManagerProcess, channels: Channels, args: Any, turn: int
) -> dict[str, Any]:
    pids = {m.name: m.pid for m in lab.managers}
    target = leader
    if args.through == "follower":  # it forwards every write to the leader
        target = next(m for m in lab.managers if m is not leader)
    streams = []
    if args.client_path == "streamed":
        streams = [channels.get(target.address).streamed() for _ in range(args.clients)]
        puts = [stream.put for stream in streams]
    else:
        puts = [channels.get(target.address).put for _ in range(args.clients)]
    first_index = (await leader.status()).last_index
    threads_before = {n: thread_cpu(p) for n, p in pids.items()}
    switches_before = context_switches(leader.pid)
    load = await run_load(
        puts,
        duration=args.duration,
        warmup=args.warmup,
        keys=KeyMaker(f"{name.lower()}{turn % 100:02d}"),
        value=b"v" * 256,
        pids=pids,
    )
    threads_after = {n: thread_cpu(p) for n, p in pids.items()}
    for stream in streams:
        await stream.close()
    switches = context_switches(leader.pid) - switches_before
    entries = (await leader.status()).last_index - first_index
    rate = load.writes_per_second or float("nan")
    followers = [v for k, v in load.server_cpu_percent.items() if k != leader.name]
    threads: dict[str, float] = {}
    for server, after in threads_after.items():
        role, share = ("leader", 1) if server == leader.name else ("follower", len(followers))
        for thread, seconds in after.items():
            spent = seconds - threads_before[server].get(thread, 0.0)
            key = f"{role}:{thread}"
            threads[key] = threads.get(key, 0.0) + 1000 * spent / max(load.writes_total, 1) / share
    return {
        "round": turn,
        "cluster": name,
        "writes_per_second": load.writes_per_second,
        "leader_ms_per_write": 10 * load.server_cpu_percent[leader.name] / rate,
        "follower_ms_per_write": 10 * statistics.fmean(followers) / rate if followers else 0.0,
        "writes_per_entry": load.writes_total / max(entries, 1),
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "leader_switches_per_write": switches / max(load.writes_total, 1),
        "errors": load.errors,
        "bench_cpu_percent": load.client_cpu_percent,
        "thread_ms_per_write": {k: round(v, 4) for k, v in sorted(threads.items())},
    }


METRICS = (
    "writes_per_second",
    "leader_ms_per_write",
    "follower_ms_per_write",
    "leader_switches_per_write",
    "writes_per_entry",
    "p50_ms",
    "p99_ms",
)


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    def series(cluster: str, metric: str) -> list[float]:
        return [r[metric] for r in rows if r["cluster"] == cluster]

    return {
        metric: {
            "A": statistics.median(series("A", metric)),
            "B": statistics.median(series("B", metric)),
            "B/A": statistics.median(
                b / a if a else float("nan")
                for a, b in zip(series("A", metric), series("B", metric), strict=True)
            ),
        }
        for metric in METRICS
    }


async def main_async(args: argparse.Namespace) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="raft-paired-") as scratch,
        source_tree(args.against, Path(scratch)) as tree_a,
    ):
        labs = {
            "A": TreeLab(tree_a, Path(scratch) / "A", args.lab_a, args.port, args.managers),
            "B": TreeLab(
                args.tree or CHECKOUT, Path(scratch) / "B", args.lab_b, args.port, args.managers
            ),
        }
        channels = {name: Channels(OursClient, False) for name in labs}
        try:
            leaders = {}
            for name, lab in labs.items():
                say(
                    f"{name}: starting {args.managers} manager(s) "
                    f"on 127.77.{lab.lab}.x:{args.port} ..."
                )
                await lab.start()
                leaders[name], _ = await lab.wait_leader()
                puts = [channels[name].get(leaders[name].address).put] * args.clients
                await fill(puts, args.objects, KeyMaker(f"f{name.lower()}_"), b"v" * 256)
            rows = []
            for turn in range(args.rounds):
                order = ("A", "B") if turn % 2 == 0 else ("B", "A")
                if args.together:
                    measured = await asyncio.gather(
                        *(
                            measure_round(n, labs[n], leaders[n], channels[n], args, turn)
                            for n in order
                        )
                    )
                else:
                    measured = [
                        await measure_round(n, labs[n], leaders[n], channels[n], args, turn)
                        for n in order
                    ]
                for name, row in zip(order, measured, strict=True):
                    rows.append(row)
                    say(
                        f"round {turn} {name}: {row['writes_per_second']:7.0f} writes/s, "
                        f"leader {row['leader_ms_per_write']:.3f} ms/write, "
                        f"follower {row['follower_ms_per_write']:.3f}, "
                        f"leader {row['leader_switches_per_write']:.1f} switches/write, "
                        f"{row['writes_per_entry']:.1f} writes/entry"
                    )
        finally:
            for pool in channels.values():
                await pool.close()
            for lab in labs.values():
                lab.stop()
    summary = summarize(rows)
    for metric, values in summary.items():
        say(f"{metric:22s} A {values['A']:9.3f}  B {values['B']:9.3f}  B/A {values['B/A']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="A: a git revision or a source tree")
    parser.add_argument("--tree", type=Path, help="B: a source tree (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per cluster")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each round")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--managers", type=int, default=3, help="managers per cluster")
    parser.add_argument("--objects", type=int, default=2000, help="written before the rounds")
    parser.add_argument("--lab-a", type=int, default=214, help="A on 127.77.<lab-a>.x")
    parser.add_argument("--lab-b", type=int, default=215, help="B on 127.77.<lab-b>.x")
    parser.add_argument("--port", type=int, default=2377)
    parser.add_argument(
        "--together",
        action="store_true",
        help="load both clusters at once in each round (both see the same moment of a "
        "shared machine) instead of one after the other",
    )
    parser.add_argument(
        "--client-path",
        choices=CLIENT_PATHS,
        default="unary",
        help="how the writers write: a unary Control/Write each, or one Control/WriteStream "
        "per writer with one write outstanding (both sides must serve it)",
    )
    parser.add_argument(
        "--through",
        choices=("leader", "follower"),
        default="leader",
        help="whom the writers write to: the leader, or a follower that forwards each write "
        "to it (the route of a docker command sent to a follower); needs --managers 2 or more",
    )
    parser.add_argument("--json", type=Path, help="write every round and the summary here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or not 1 <= args.clients <= 999 or args.duration <= 0:
        parser.error("--rounds must be at least 1, --clients 1..999, --duration above 0")
    if not 1 <= args.managers <= 7:
        parser.error("--managers must be 1..7")
    if args.through == "follower" and args.managers < 2:
        parser.error("--through follower needs --managers 2 or more")
    if args.lab_a == args.lab_b or not all(0 <= n <= 255 for n in (args.lab_a, args.lab_b)):
        parser.error("--lab-a and --lab-b must differ and be 0..255")
    if args.tree is not None and not (args.tree / "controlplane").is_dir():
        parser.error(f"--tree {args.tree} holds no controlplane/ package")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return uvloop.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
