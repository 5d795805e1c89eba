"""When a replacement task starts. Pure: a task, what the leader knows of it and the time in,
a time out.

swarmkit's restart supervisor (`manager/orchestrator/restart/restart.go`) makes a restart's
new task at once, with desired state "ready", and a rolling update does the same for its new
tasks: the agent prepares such a task (its container is created) but does not start it.
`DelayStart` then moves it to "running" once the restart delay ran out and the task it
replaces stopped, or, if that one never reports, once `OLD_TASK_TIMEOUT_NS` passed. So
`docker service ps` shows the replacement (`Ready`) during a restart delay and while a
stop-first update stops the old task.

swarmkit keeps both in the leader's memory, and so does this leader (`DelayedStart`, in
`LeaderMemory.waiting`): the start time, and the task it replaces (none if that one had
already stopped or its node was down). A new leader knows neither (`after_leader_change`,
swarmkit's taskinit.CheckTasks): it starts a waiting task once the restart policy's delay
(no exception for a drained node) ran out after the task's last status, waiting for no
other task.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.manager.tasks import DEFAULT_RESTART_DELAY_NS, DESIRED_READY
from controlplane.pb.objects_pb2 import Node, Task

OLD_TASK_TIMEOUT_NS = 60 * 1_000_000_000
"""swarmkit's defaultOldTaskTimeout: how long a replacement waits at most for the task it
replaces to stop (counted from its creation)."""


@dataclass(frozen=True)
class DelayedStart:
    """What the leader knows of a waiting replacement."""

    start_at_ns: int  # when its delay runs out
    replaces: str = ""  # the task it waits for, if any


def policy_delay_ns(task: Task) -> int:
    """`task`'s restart policy's delay (`--restart-delay`, Swarm's 5 s when unset)."""
    policy = task.spec.restart_policy
    return policy.delay_ns if policy.HasField("delay_ns") else DEFAULT_RESTART_DELAY_NS


def restart_delay_ns(task: Task, node: Node | None) -> int:
    """How long `task`'s successor waits: its restart policy's delay, none if `task`'s node
    (`node`) is drained, as swarmkit's."""
    if node is not None and node.spec.availability == "drain":
        return 0
    return policy_delay_ns(task)


def after_leader_change(task: Task) -> DelayedStart:
    """A new leader's start of waiting `task`: the policy's delay after its last status."""
    return DelayedStart(task.status.timestamp_ns + policy_delay_ns(task))


def hold(task: Task) -> None:
    """Make a new task a replacement that waits (desired "ready")."""
    task.desired_state = DESIRED_READY


def is_waiting(task: Task) -> bool:
    return task.desired_state == DESIRED_READY


def start_due_ns(task: Task, delayed: DelayedStart, old_runs: bool) -> int:
    """When waiting `task` may start: at its start time, but not while the task it replaces
    runs (`old_runs`), unless that one is OLD_TASK_TIMEOUT_NS late. The caller looks again
    when it stops."""
    if old_runs:
        return max(delayed.start_at_ns, task.meta.created_at_ns + OLD_TASK_TIMEOUT_NS)
    return delayed.start_at_ns
