"""The fault schedule of `swarmlab chaos run`: from a seed, the lab's node names and the
options, the phases of faults to inject. Pure (no I/O, no clock), so the same seed gives the
same schedule on every machine and a failing soak can be replayed; only the timing of the real
processes under it varies.

A phase injects one or two faults at once at `at` seconds into the run, holds them for `hold`
seconds, then everything is healed and killed nodes are restarted before the next phase
starts. A phase never costs the swarm more managers than it can lose and keep its Raft quorum
(`(managers - 1) // 2`), unless `allow_quorum_loss`: a killed manager, a restarted one (down
for its restart) and a manager on the cut-off side of a partition each count as lost.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

FAULT_KINDS = ("kill", "restart", "partition", "delay", "loss")
NODE_DOWN_KINDS = ("kill", "restart")  # the fault takes the process away

FIRST_PHASE_AT = 3.0  # seconds of calm first, so the workload has written something
HOLD = (4.0, 10.0)  # seconds a phase's faults last
GAP = (3.0, 6.0)  # seconds of calm between one phase's heal and the next phase
DELAY_MS = (50, 400)
JITTER_SHARE = 0.25  # jitter is up to this share of the delay
LOSS_PERCENT = (5, 30)
MIN_DURATION = FIRST_PHASE_AT + HOLD[1]  # room for at least one phase


class ScheduleError(ValueError):
    """The options cannot give a schedule; the message says which and what to change."""


@dataclass(frozen=True)
class Fault:
    """One fault: `kill`/`restart`/`delay`/`loss` name one node in `targets`; `partition`
    names the nodes cut off from all the others."""

    kind: str
    targets: tuple[str, ...]
    delay_ms: int = 0
    jitter_ms: int = 0
    loss_percent: int = 0

    def describe(self) -> str:
        nodes = ",".join(self.targets)
        if self.kind == "partition":
            return f"partition {nodes} / the rest"
        if self.kind == "delay":
            return f"delay {nodes} {self.delay_ms}ms±{self.jitter_ms}ms"
        if self.kind == "loss":
            return f"loss {nodes} {self.loss_percent}%"
        return f"{self.kind} {nodes}"

    def to_json(self) -> dict[str, object]:
        shown: dict[str, object] = {"kind": self.kind, "targets": list(self.targets)}
        if self.kind == "delay":
            shown |= {"delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms}
        if self.kind == "loss":
            shown["loss_percent"] = self.loss_percent
        return shown


@dataclass(frozen=True)
class Phase:
    number: int  # from 1
    at: float  # seconds from the start of the run
    hold: float  # seconds before everything is healed
    faults: tuple[Fault, ...]

    def describe(self) -> str:
        return "; ".join(f.describe() for f in self.faults)

    def to_json(self) -> dict[str, object]:
        return {
            "phase": self.number,
            "at": self.at,
            "hold": self.hold,
            "faults": [f.to_json() for f in self.faults],
        }


def parse_fault_kinds(text: str) -> tuple[str, ...]:
    """'kill,partition' -> ('kill', 'partition'), in the given order, without repeats."""
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    if not kinds:
        raise ScheduleError(f"--faults names no fault; choose from {','.join(FAULT_KINDS)}")
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ScheduleError(
            f"unknown fault {unknown[0]!r} in --faults; choose from {','.join(FAULT_KINDS)}"
        )
    return kinds


def quorum_budget(managers: int, allow_quorum_loss: bool) -> int:
    """How many managers one phase may take away."""
    return managers if allow_quorum_loss else (managers - 1) // 2


def plan_schedule(
    seed: int,
    duration: float,
    kinds: Sequence[str],
    managers: Sequence[str],
    workers: Sequence[str],
    *,
    allow_quorum_loss: bool = False,
) -> list[Phase]:
    """The phases of a run of `duration` seconds; every phase ends (healed) by `duration`."""
    if duration < MIN_DURATION:
        raise ScheduleError(
            f"a chaos run of {duration:g}s has no room for a phase; give --duration "
            f"{MIN_DURATION:g}s or more"
        )
    if not managers:
        raise ScheduleError("the lab has no manager; start one with `swarmlab up`")
    budget = quorum_budget(len(managers), allow_quorum_loss)
    usable = [k for k in kinds if _can_fault(k, budget, workers, len(managers))]
    if not usable:
        raise ScheduleError(
            f"none of the faults {','.join(kinds)} can hit this lab ({len(managers)} managers, "
            f"{len(workers)} workers) without losing the Raft quorum; add managers or workers, "
            "add delay or loss to --faults, or pass --allow-quorum-loss"
        )
    rng = random.Random(seed)
    phases: list[Phase] = []
    at = FIRST_PHASE_AT
    while True:
        hold = round(rng.uniform(*HOLD), 1)
        if at + hold > duration:
            return phases
        faults = _phase_faults(rng, usable, managers, workers, budget)
        phases.append(Phase(len(phases) + 1, round(at, 1), hold, faults))
        at += hold + round(rng.uniform(*GAP), 1)


def _can_fault(kind: str, budget: int, workers: Sequence[str], managers: int) -> bool:
    if kind in ("delay", "loss"):
        return True
    if kind == "partition":  # a side of its own needs a node, and the rest must keep quorum
        return (budget > 0 or bool(workers)) and managers + len(workers) > 1
    return budget > 0 or bool(workers)


def _phase_faults(
    rng: random.Random,
    kinds: Sequence[str],
    managers: Sequence[str],
    workers: Sequence[str],
    budget: int,
) -> tuple[Fault, ...]:
    """One or two faults on distinct nodes, at most one partition, within `budget`."""
    wanted = rng.choice((1, 1, 2))
    faults: list[Fault] = []
    touched: set[str] = set()
    for _ in range(wanted):  # the first always fits (the kinds are usable); a second may not
        choices = [k for k in kinds if not (k == "partition" and _has_partition(faults))]
        if not choices:
            break
        kind = rng.choice(choices)
        fault = _one_fault(rng, kind, managers, workers, budget - _lost(faults, managers), touched)
        if fault is None:
            continue
        faults.append(fault)
        touched |= set(fault.targets)
    return tuple(faults)


def _has_partition(faults: Sequence[Fault]) -> bool:
    return any(f.kind == "partition" for f in faults)


def _lost(faults: Sequence[Fault], managers: Sequence[str]) -> int:
    """Managers taken away by `faults` (delay and loss take none)."""
    return sum(
        1
        for f in faults
        if f.kind in (*NODE_DOWN_KINDS, "partition")
        for t in f.targets
        if t in managers
    )


def _one_fault(
    rng: random.Random,
    kind: str,
    managers: Sequence[str],
    workers: Sequence[str],
    budget: int,
    touched: set[str],
) -> Fault | None:
    free_managers = [m for m in managers if m not in touched]
    free_workers = [w for w in workers if w not in touched]
    if kind in ("delay", "loss"):
        pool = free_managers + free_workers
        if not pool:
            return None
        target = (rng.choice(pool),)
        if kind == "delay":
            delay = rng.randint(*DELAY_MS)
            return Fault(kind, target, delay_ms=delay, jitter_ms=int(delay * JITTER_SHARE))
        return Fault(kind, target, loss_percent=rng.randint(*LOSS_PERCENT))
    if kind in NODE_DOWN_KINDS:
        pool = (free_managers if budget > 0 else []) + free_workers
        return Fault(kind, (rng.choice(pool),)) if pool else None
    # A partition: one node drawn like a kill's target, then maybe more managers (within the
    # budget) and workers; never the whole lab, so there is a rest to cut it from.
    pool = (free_managers if budget > 0 else []) + free_workers
    if not pool:
        return None
    first = rng.choice(pool)
    room = budget - (first in managers)
    more_managers = [m for m in free_managers if m != first]
    more_workers = [w for w in free_workers if w != first]
    side = {first}
    side |= set(rng.sample(more_managers, rng.randint(0, max(0, min(room, len(more_managers))))))
    side |= set(rng.sample(more_workers, rng.randint(0, len(more_workers))))
    if len(side) == len(managers) + len(workers):
        side.discard(first)
        if not side:
            return None
    return Fault(kind, tuple(n for n in (*managers, *workers) if n in side))
