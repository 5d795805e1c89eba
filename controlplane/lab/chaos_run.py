"""`swarmlab chaos run`: play a seeded fault schedule (`chaos_schedule`) on a running lab
while the workload (`chaos_workload`) writes through the managers, then heal everything, wait
for the swarm to converge and check the invariants (`chaos_checks`).

The faults are the lab's own switches (`control.kill/restart/partition/shape/heal`). Each phase
ends with every fault healed and every killed node restarted, so the next phase starts from a
whole lab. The schedule is the seed's; the timing of the real processes under it is not
(a restart takes as long as it takes), so a replay hits the same nodes with the same faults in
the same order, not at the same instants.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from controlplane.lab import control
from controlplane.lab.chaos_checks import CheckResult, converge
from controlplane.lab.chaos_schedule import (
    FAULT_KINDS,
    NODE_DOWN_KINDS,
    Fault,
    Phase,
    plan_schedule,
)
from controlplane.lab.chaos_workload import Ledger, Workload
from controlplane.lab.control import LabError, LabNode, LabState
from controlplane.lab.swarm_lab import until

log = logging.getLogger("controlplane.lab.chaos_run")

DEFAULT_CONVERGE_TIMEOUT = 120.0
KILL_TIMEOUT = 10.0  # seconds for a SIGKILLed process to be gone


@dataclass(frozen=True)
class ChaosOptions:
    seed: int
    duration: float  # seconds
    kinds: tuple[str, ...] = FAULT_KINDS
    allow_quorum_loss: bool = False
    converge_timeout: float = DEFAULT_CONVERGE_TIMEOUT
    clients: int = 2

    def replay_command(self, lab_dir: Path | None) -> str:
        words = ["swarmlab", "chaos", "run", "--seed", str(self.seed)]
        words += ["--duration", f"{self.duration:g}s", "--faults", ",".join(self.kinds)]
        if self.allow_quorum_loss:
            words.append("--allow-quorum-loss")
        if self.converge_timeout != DEFAULT_CONVERGE_TIMEOUT:
            words += ["--converge-timeout", f"{self.converge_timeout:g}"]
        if lab_dir is not None:
            words += ["--lab-dir", str(lab_dir)]
        return " ".join(words)


@dataclass(frozen=True)
class Event:
    at: float  # seconds from the start of the run, as it really happened
    phase: int  # 0: the healing at the end of the run
    what: str  # inject | heal
    text: str

    def line(self) -> str:
        when = f"phase {self.phase}" if self.phase else "end"
        return f"{self.at:7.1f}s  {when:<9} {self.what:<7} {self.text}"


@dataclass
class ChaosReport:
    options: ChaosOptions
    lab: str  # e.g. "3+2"
    schedule: list[Phase]
    events: list[Event] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    checks: list[CheckResult] = field(default_factory=list)
    converged_after: float = 0.0
    replay: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seed": self.options.seed,
            "duration": self.options.duration,
            "faults": list(self.options.kinds),
            "allow_quorum_loss": self.options.allow_quorum_loss,
            "lab": self.lab,
            "schedule": [p.to_json() for p in self.schedule],
            "events": [
                {"at": round(e.at, 3), "phase": e.phase, "what": e.what, "text": e.text}
                for e in self.events
            ],
            "workload": {
                "summary": self.ledger.summary(),
                "objects": [o.to_json() for o in self.ledger.objects.values()],
                "calls": [c.to_json() for c in self.ledger.calls],
            },
            "converged_after": round(self.converged_after, 3),
            "checks": [c.to_json() for c in self.checks],
            "replay": self.replay,
        }


def format_workload(ledger: Ledger) -> str:
    calls = ledger.calls
    totals = {o: sum(1 for c in calls if c.outcome == o) for o in ("ok", "rejected", "unknown")}
    lines = [
        f"workload: {len(calls)} calls, {totals['ok']} ok, {totals['rejected']} rejected, "
        f"{totals['unknown']} unknown outcome"
    ]
    for op, counts in sorted(ledger.summary().items()):
        lines.append(
            f"  {op:<16} {counts['ok']:>4} ok {counts['rejected']:>4} rejected "
            f"{counts['unknown']:>4} unknown"
        )
    return "\n".join(lines)


def format_checks(report: ChaosReport) -> str:
    lines = [f"checks (converged after {report.converged_after:.1f} s):"]
    lines += [f"  {'ok  ' if c.ok else 'FAIL'}  {c.name:<20} {c.detail}" for c in report.checks]
    if not report.ok:
        lines.append(f"FAILED with seed {report.options.seed}; replay: {report.replay}")
    return "\n".join(lines)


def run_prefix(seed: int) -> str:
    """The start of the names of this run's objects: the seed, and the run's start time so a
    replay on the same lab does not collide with what an earlier run left behind."""
    return f"chaos{seed}-{int(time.time()) % 1_000_000:06d}"


def lab_roles(state: LabState) -> tuple[list[str], list[str]]:
    """The lab's managers and workers, by name."""
    managers = [n.name for n in state.nodes if n.name.startswith("manager-")]
    return managers, [n.name for n in state.nodes if n.name not in managers]


async def run_chaos(
    lab_dir: Path,
    state: LabState,
    options: ChaosOptions,
    out: Callable[[str], None] = print,
    *,
    show_lab_dir: bool = False,
) -> ChaosReport:
    """Play the schedule on the lab in `lab_dir` (`state`) and check it; `out` gets the
    schedule and each event as it happens."""
    managers, workers = lab_roles(state)
    schedule = plan_schedule(
        options.seed,
        options.duration,
        options.kinds,
        managers,
        workers,
        allow_quorum_loss=options.allow_quorum_loss,
    )
    stopped = [n.name for n in state.nodes if not n.alive()]
    if stopped:
        raise LabError(
            f"{', '.join(stopped)} not running; `swarmlab restart` them (or `swarmlab up` "
            "again) so the chaos starts from a whole lab"
        )
    report = ChaosReport(
        options,
        f"{len(managers)}+{len(workers)}",
        schedule,
        replay=options.replay_command(lab_dir if show_lab_dir else None),
    )
    out(
        f"chaos: seed {options.seed}, {options.duration:g}s, faults "
        f"{','.join(options.kinds)}, lab {report.lab}, {len(schedule)} phases"
    )
    for phase in schedule:
        out(f"  planned +{phase.at:5.1f}s for {phase.hold:4.1f}s  {phase.describe()}")
    await control.heal(state)  # whatever an earlier command left
    workload = Workload(
        lambda: [(n.name, n.api) for n in state.nodes if n.name in managers and n.alive()],
        options.seed,
        clients=options.clients,
        prefix=run_prefix(options.seed),
    )
    started = time.monotonic()

    def record(phase: int, what: str, text: str) -> None:
        event = Event(time.monotonic() - started, phase, what, text)
        report.events.append(event)
        log.info("event=chaos_%s phase=%d faults=%r", what, phase, text)
        out(event.line())

    workload.start()
    try:
        for phase in schedule:
            await asyncio.sleep(max(0.0, phase.at - (time.monotonic() - started)))
            await _inject(lab_dir, state, phase.faults)
            record(phase.number, "inject", phase.describe())
            await asyncio.sleep(phase.hold)
            restarted = await _heal(lab_dir, state)
            record(phase.number, "heal", _healed_text(restarted))
        await asyncio.sleep(max(0.0, options.duration - (time.monotonic() - started)))
    finally:
        report.ledger = await workload.stop()
        restarted = await _heal(lab_dir, state)
        if restarted:
            record(0, "heal", _healed_text(restarted))
    out(format_workload(report.ledger))
    out(f"converging (up to {options.converge_timeout:g} s)...")
    report.checks, report.converged_after = await converge(
        state, report.ledger, options.converge_timeout, out
    )
    out(format_checks(report))
    if report.ok:
        out(f"removed the {await workload.remove_leftovers()} objects this run left")
    else:
        out(f"this run's objects (named {workload.prefix}-*) are left for you to inspect")
    return report


def _healed_text(restarted: Sequence[str]) -> str:
    return "faults healed" + (f", restarted {', '.join(restarted)}" if restarted else "")


async def _inject(lab_dir: Path, state: LabState, faults: Sequence[Fault]) -> None:
    """Nodes go down first: a node restarted after a partition began would come back
    without its side of the cut."""
    for fault in sorted(faults, key=lambda f: f.kind not in NODE_DOWN_KINDS):
        if fault.kind == "kill":
            node = control.kill(state, fault.targets[0])
            await until(partial(_gone, node), KILL_TIMEOUT, f"{node.name} to die")
        elif fault.kind == "restart":
            await control.restart(lab_dir, state, fault.targets[0])
        elif fault.kind == "partition":
            rest = [n.name for n in state.nodes if n.name not in fault.targets]
            await control.partition(state, [list(fault.targets), rest])
        elif fault.kind == "delay":
            delay = (fault.delay_ms / 1000, fault.jitter_ms / 1000)
            await control.shape(state, fault.targets[0], delay=delay)
        else:
            await control.shape(state, fault.targets[0], loss=fault.loss_percent / 100)


async def _gone(node: LabNode) -> bool | None:
    """Whether the killed node's process is gone (a SIGKILL takes a moment), so the faults
    injected next skip it."""
    return True if not node.alive() else None


async def _heal(lab_dir: Path, state: LabState) -> list[str]:
    """Restart every node that is not running (it comes back without faults), and remove
    every fault from the others; returns the restarted nodes."""
    restarted = [n.name for n in state.nodes if not n.alive()]
    for name in restarted:
        await control.restart(lab_dir, state, name)
    await control.heal(state)
    return restarted
