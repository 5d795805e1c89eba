"""When a replacement waiting in desired "ready" may start (`manager/delayed_start.py`)."""

from __future__ import annotations

from controlplane.manager.delayed_start import (
    OLD_TASK_TIMEOUT_NS,
    DelayedStart,
    after_leader_change,
    hold,
    is_waiting,
    restart_delay_ns,
    start_due_ns,
)
from controlplane.manager.tasks import DEFAULT_RESTART_DELAY_NS
from controlplane.pb.objects_pb2 import Node, Task
from tests.unit.cluster_builders import SECOND, T0


def test_the_restart_delay_is_the_policys_or_swarms_and_none_off_a_drained_node() -> None:
    task = Task(id="t")
    active, drained = Node(id="n1"), Node(id="n2")
    active.spec.availability = "active"
    drained.spec.availability = "drain"
    assert restart_delay_ns(task, active) == DEFAULT_RESTART_DELAY_NS
    assert restart_delay_ns(task, None) == DEFAULT_RESTART_DELAY_NS  # its node is gone
    task.spec.restart_policy.delay_ns = 0  # `--restart-delay 0s` is kept, not the default
    assert restart_delay_ns(task, active) == 0
    task.spec.restart_policy.delay_ns = 7 * SECOND
    assert restart_delay_ns(task, active) == 7 * SECOND
    assert restart_delay_ns(task, drained) == 0


def test_a_waiting_task_starts_at_its_time_or_a_minute_after_it_was_made() -> None:
    task = Task(id="new")
    task.meta.created_at_ns = T0
    hold(task)
    assert is_waiting(task) and task.desired_state == "ready"
    delayed = DelayedStart(T0 + 5 * SECOND, replaces="old")
    assert start_due_ns(task, delayed, old_runs=False) == T0 + 5 * SECOND
    assert start_due_ns(task, delayed, old_runs=True) == T0 + OLD_TASK_TIMEOUT_NS
    late = DelayedStart(T0 + 2 * OLD_TASK_TIMEOUT_NS, replaces="old")
    assert start_due_ns(task, late, old_runs=True) == T0 + 2 * OLD_TASK_TIMEOUT_NS


def test_a_new_leader_waits_the_policys_delay_after_the_last_status() -> None:
    """swarmkit's taskinit.CheckTasks: also for a task made off a drained node (no delay
    then) or by an update; it waits for no other task."""
    task = Task(id="new")
    task.status.timestamp_ns = T0
    assert after_leader_change(task) == DelayedStart(T0 + DEFAULT_RESTART_DELAY_NS)
    task.spec.restart_policy.delay_ns = 0
    assert after_leader_change(task) == DelayedStart(T0)
