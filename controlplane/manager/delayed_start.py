"""When a replacement task starts. Pure: a task and the time in, a time out.

swarmkit's restart supervisor (`manager/orchestrator/restart/restart.go`) makes a restart's
new task at once, with desired state "ready", and a rolling update does the same for its new
tasks: the agent prepares such a task (its container is created) but does not start it.
`DelayStart` then moves it to "running" once the restart delay ran out and the task it
replaces stopped, or, if that one never reports, once `OLD_TASK_TIMEOUT_NS` passed. So
`docker service ps` shows the replacement (`Ready`) during a restart delay and while a
stop-first update stops the old task.

Which task a replacement waits for is the leader's memory (`LeaderMemory.replaced`), as in
swarmkit: none if that task had already stopped or its node was down when the replacement
was made, and a new leader's replacements wait for none. swarmkit keeps the timers in the
leader's memory too (a new leader restarts them: the restart policy's delay from the
waiting task's last status); here the task carries its start time (`start_at_ns`) and the
orchestrator looks at it on every pass, so a new leader starts it when that falls due.
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.manager.tasks import DEFAULT_RESTART_DELAY_NS, DESIRED_READY
from controlplane.pb.objects_pb2 import Node, Task

OLD_TASK_TIMEOUT_NS = 60 * 1_000_000_000
"""swarmkit's defaultOldTaskTimeout: how long a replacement waits at most for the task it
replaces to stop (counted from its creation)."""


def restart_delay_ns(task: Task, node: Node | None) -> int:
    """How long `task`'s successor waits: its restart policy's delay (`--restart-delay`,
    Swarm's 5 s when unset), none if `task`'s node (`node`) is drained, as swarmkit's."""
    if node is not None and node.spec.availability == "drain":
        return 0
    policy = task.spec.restart_policy
    return policy.delay_ns if policy.HasField("delay_ns") else DEFAULT_RESTART_DELAY_NS


def hold(task: Task, start_at_ns: int) -> None:
    """Make a new task a replacement that waits (desired "ready") until `start_at_ns`."""
    task.desired_state = DESIRED_READY
    task.start_at_ns = start_at_ns


def is_waiting(task: Task) -> bool:
    return task.desired_state == DESIRED_READY


def start_due_ns(task: Task, still_running: Iterable[Task]) -> int:
    """When waiting `task` may start: at its start time, but not while the task it replaces
    (`still_running`: empty once it stopped) runs, unless that one is OLD_TASK_TIMEOUT_NS
    late. The caller looks again when it stops."""
    if any(True for _ in still_running):
        return max(task.start_at_ns, task.meta.created_at_ns + OLD_TASK_TIMEOUT_NS)
    return task.start_at_ns
