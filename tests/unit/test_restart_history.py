"""Restart attempts as the leader remembers them (`restart_history.py`)."""

from __future__ import annotations

from controlplane.manager.restart_history import RestartHistory, kept_per_slot
from controlplane.pb.objects_pb2 import ServiceSpec, Task
from tests.unit.cluster_builders import SECOND, T0

SLOT = ("web", 1)


def task(created_s: int, *, attempts: int = 3, window_s: int = 0, version: int = 0) -> Task:
    t = Task(id=f"t{created_s}-{version}", service_id="web", slot=1, spec_version=version)
    t.meta.created_at_ns = T0 + created_s * SECOND
    t.spec.restart_policy.max_attempts = attempts
    t.spec.restart_policy.window_ns = window_s * SECOND
    return t


def failed_at(t: Task, at_s: int) -> Task:
    t.status.state = "failed"
    t.status.timestamp_ns = T0 + at_s * SECOND
    return t


def test_restarts_are_counted_up_to_max_attempts() -> None:
    history = RestartHistory()
    first = failed_at(task(0), 1)
    assert history.restarts(SLOT, first) == 0 and history.may_restart(SLOT, first)
    for n in range(1, 4):
        history.record(SLOT, task(n))
    last = failed_at(task(3), 4)
    assert history.restarts(SLOT, last) == 3 and not history.may_restart(SLOT, last)
    assert history.may_restart(("web", 2), last)  # another slot has its own count


def test_nothing_is_counted_without_max_attempts() -> None:
    history = RestartHistory()
    history.record(SLOT, task(1, attempts=0))
    assert history.restarts(SLOT, failed_at(task(1, attempts=0), 2)) == 0


def test_a_restart_of_another_spec_version_starts_the_count_again() -> None:
    history = RestartHistory()
    history.record(SLOT, task(1))
    history.record(SLOT, task(2))
    assert history.restarts(SLOT, failed_at(task(3, version=7), 4)) == 0
    history.record(SLOT, task(4, version=7))
    assert history.restarts(SLOT, failed_at(task(4, version=7), 5)) == 1
    assert history.restarts(SLOT, failed_at(task(2), 5)) == 0  # the old version's are gone


def test_a_window_counts_the_restarts_made_before_the_failure_within_it() -> None:
    history = RestartHistory()
    for at in (1, 5, 9):
        history.record(SLOT, task(at, window_s=10))
    assert history.restarts(SLOT, failed_at(task(9, window_s=10), 12)) == 2  # 5 and 9
    assert history.restarts(SLOT, failed_at(task(9, window_s=10), 9)) == 2  # before 9 only
    assert history.restarts(SLOT, failed_at(task(9, window_s=10), 30)) == 0


def test_a_new_leader_counts_all_but_the_first_task_of_the_highest_spec_version() -> None:
    old = [task(0), task(1)]
    current = [task(2, version=7), task(3, version=7), task(4, version=7)]
    rolled_back = [task(5)]  # a rollback's task: its version is the older one
    history = RestartHistory.rebuilt([(SLOT, [*current, *old, *rolled_back])])
    assert history.restarts(SLOT, failed_at(task(4, version=7), 5)) == 2
    assert history.restarts(SLOT, failed_at(task(5), 6)) == 0
    assert RestartHistory.rebuilt([(SLOT, [task(0)])]).restarts(SLOT, failed_at(task(0), 1)) == 0


def test_forgotten_services_have_no_restarts() -> None:
    history = RestartHistory()
    history.record(SLOT, task(1))
    history.forget_services(["web"])
    assert history.restarts(SLOT, failed_at(task(1), 2)) == 0


def test_a_slot_keeps_a_task_per_attempt_over_the_history_limit() -> None:
    spec = ServiceSpec()
    assert kept_per_slot(spec, 5) == 5
    spec.restart_policy.max_attempts = 1
    assert kept_per_slot(spec, 5) == 2  # swarmkit's reaper: max_attempts + 1, also below
    assert kept_per_slot(spec, -1) == 2
