"""The chaos schedule over many seeds: the same seed gives the same schedule, phases never
overlap nor outlast the run, and no phase costs more managers than the quorum allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.lab.chaos_run import ChaosOptions
from controlplane.lab.chaos_schedule import (
    FAULT_KINDS,
    Phase,
    ScheduleError,
    parse_fault_kinds,
    plan_schedule,
    quorum_budget,
)

MANAGERS = ("manager-1", "manager-2", "manager-3")
WORKERS = ("worker-1", "worker-2")
SEEDS = range(300)


def managers_lost(phase: Phase) -> int:
    return sum(
        1
        for f in phase.faults
        if f.kind in ("kill", "restart", "partition")
        for t in f.targets
        if t in MANAGERS
    )


def test_the_same_seed_gives_the_same_schedule_and_seeds_differ() -> None:
    schedules = [plan_schedule(s, 120, FAULT_KINDS, MANAGERS, WORKERS) for s in SEEDS]
    assert schedules == [plan_schedule(s, 120, FAULT_KINDS, MANAGERS, WORKERS) for s in SEEDS]
    assert len({tuple(s) for s in schedules}) == len(schedules)


@pytest.mark.parametrize("seed", SEEDS)
def test_phases_keep_the_quorum_and_fit_in_the_run(seed: int) -> None:
    phases = plan_schedule(seed, 120, FAULT_KINDS, MANAGERS, WORKERS)
    assert phases and [p.number for p in phases] == list(range(1, len(phases) + 1))
    end = 0.0
    for phase in phases:
        assert phase.at > end and phase.at + phase.hold <= 120  # healed before the next
        end = phase.at + phase.hold
        assert 1 <= len(phase.faults) <= 2
        assert managers_lost(phase) <= 1  # 3 managers keep quorum with 2
        targets = [t for f in phase.faults for t in f.targets]
        assert len(targets) == len(set(targets))  # no node hit twice in a phase
        assert sum(f.kind == "partition" for f in phase.faults) <= 1
        for fault in phase.faults:
            assert fault.kind in FAULT_KINDS
            if fault.kind == "partition":
                assert 0 < len(fault.targets) < len(MANAGERS) + len(WORKERS)
            else:
                assert len(fault.targets) == 1
            if fault.kind == "delay":
                assert 50 <= fault.delay_ms <= 400 and fault.jitter_ms <= fault.delay_ms
            if fault.kind == "loss":
                assert 5 <= fault.loss_percent <= 30


def test_only_the_chosen_kinds_are_used() -> None:
    for seed in SEEDS:
        phases = plan_schedule(seed, 60, ("partition",), MANAGERS, WORKERS)
        assert {f.kind for p in phases for f in p.faults} == {"partition"}


def test_allow_quorum_loss_takes_more_managers_than_the_budget() -> None:
    lost = [
        managers_lost(p)
        for seed in SEEDS
        for p in plan_schedule(
            seed, 120, ("kill", "partition"), MANAGERS, WORKERS, allow_quorum_loss=True
        )
    ]
    assert max(lost) >= 2
    assert quorum_budget(3, False) == 1 and quorum_budget(5, False) == 2
    assert quorum_budget(3, True) == 3


def test_a_single_manager_without_workers_gets_network_faults_only() -> None:
    for seed in SEEDS:
        for phase in plan_schedule(seed, 60, FAULT_KINDS, ("manager-1",), ()):
            assert {f.kind for f in phase.faults} <= {"delay", "loss"}


def test_a_single_manager_lab_keeps_its_manager_and_faults_its_workers() -> None:
    for seed in SEEDS:
        for phase in plan_schedule(seed, 60, ("kill", "partition"), ("manager-1",), WORKERS):
            assert all("manager-1" not in f.targets for f in phase.faults)


def test_bad_options_say_what_to_change() -> None:
    with pytest.raises(ScheduleError, match="--duration 13s or more"):
        plan_schedule(1, 5, FAULT_KINDS, MANAGERS, WORKERS)
    with pytest.raises(ScheduleError, match="without losing the Raft quorum"):
        plan_schedule(1, 60, ("kill", "restart"), ("manager-1",), ())
    with pytest.raises(ScheduleError, match="no manager"):
        plan_schedule(1, 60, FAULT_KINDS, (), WORKERS)


def test_parse_fault_kinds() -> None:
    assert parse_fault_kinds("kill, partition,kill") == ("kill", "partition")
    with pytest.raises(ScheduleError, match=r"unknown fault 'reboot'.*choose from kill,restart"):
        parse_fault_kinds("kill,reboot")
    with pytest.raises(ScheduleError, match="names no fault"):
        parse_fault_kinds(" , ")


def test_faults_describe_themselves() -> None:
    phases = plan_schedule(7, 120, FAULT_KINDS, MANAGERS, WORKERS)
    described = [p.describe() for p in phases]
    assert all(d for d in described)
    shown = phases[0].to_json()
    assert shown["phase"] == 1 and shown["at"] == phases[0].at


def test_the_replay_command_repeats_every_option_that_shapes_the_run() -> None:
    plain = ChaosOptions(seed=3, duration=120)
    assert plain.replay_command(None) == (
        "swarmlab chaos run --seed 3 --duration 120s --faults kill,restart,partition,delay,loss"
    )
    every = ChaosOptions(5, 90.5, ("kill",), allow_quorum_loss=True, converge_timeout=30)
    assert every.replay_command(Path("/tmp/lab")) == (
        "swarmlab chaos run --seed 5 --duration 90.5s --faults kill --allow-quorum-loss "
        "--converge-timeout 30 --lab-dir /tmp/lab"
    )
