"""A service's rolling update (or rollback), one pass at a time: which slots start updating now,
what the service's UpdateStatus becomes, whether the update rolls back, and when to look again.
Pure: the service, its tasks and the time in, a decision out; the orchestrator applies it.

The model is swarmkit's updater (`manager/orchestrator/update/updater.go`):

- An update runs over the *dirty* slots (a task not of the current spec, or two tasks in the
  slot). `parallelism` workers (0: one per dirty slot) take them in turn. A worker updates its
  slot (its new task is made at once, desired "ready"; stop-first: stop the old task, then
  start the new one; start-first: start the new one, then stop the old once it runs), waits
  for the new task to reach running or any later state (a task that fails at once frees its
  worker too), then sleeps `delay` before its next slot.
- A task the update created that stops (fails, completes, is rejected or shut down) within
  `monitor` of reaching running counts as a failure, unless the failure action is "continue".
  Once failures / slots updated by this run exceed `max_failure_ratio`: "pause" sets
  `paused` ("update paused due to failure or early termination of task X"); "rollback" puts
  the previous spec back (`rollback_started`, "update rolled back due to ..."), and the
  rollback runs with `rollback_config`; a failure during a rollback pauses it
  (`rollback_paused`) under "rollback" as under "pause": a rollback is never rolled back.
- A worker freed by a task that failed at once takes its next slot before the failure
  pauses the update (swarmkit's select picks either; dockerd 20.10 was seen moving on), so
  a paused update of parallelism 1 and no delay has taken one slot more than the one that
  failed; a worker still sleeping its delay takes none, nor does any when rolling back.
- When every dirty slot was taken and every worker is done (its delay slept), the update
  waits one more `monitor`, failures still counting, then is `completed` ("update completed")
  or `rollback_completed` ("rollback completed").

swarmkit keeps the failures seen and the workers in the updater's memory; here all of it is
read from the store, so a new leader resumes an update where the old one left it: the tasks a
run created carry `by_update` and are newer than UpdateStatus.started_at_ns, the failures
already counted are in UpdateStatus.failed_task_ids, and a task's `started_at_ns` marks where
its monitor window began.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controlplane.manager.tasks import TERMINAL, SlotKey, rank
from controlplane.pb.objects_pb2 import Service, Task, UpdateConfig, UpdateStatus

UPDATING = "updating"
PAUSED = "paused"
COMPLETED = "completed"
ROLLBACK_STARTED = "rollback_started"
ROLLBACK_PAUSED = "rollback_paused"
ROLLBACK_COMPLETED = "rollback_completed"

IN_PROGRESS = (UPDATING, ROLLBACK_STARTED)
NEVER = 2**63 - 1
DEFAULT_MONITOR_NS = 5_000_000_000
"""swarmkit's default monitor period, also for a config whose Monitor is 0 (dockerd sends no
Monitor for 0)."""


def default_update_config() -> UpdateConfig:
    """Swarm's defaults for `--update-*` and `--rollback-*` flags the user did not give."""
    return UpdateConfig(
        parallelism=1,
        delay_ns=0,
        failure_action="pause",
        order="stop-first",
        monitor_ns=DEFAULT_MONITOR_NS,
        max_failure_ratio=0.0,
    )


def effective_config(service: Service) -> UpdateConfig:
    """The config the current run follows: `rollback_config` while rolling back."""
    spec = service.spec
    if service.update_status.state in (ROLLBACK_STARTED, ROLLBACK_PAUSED):
        present, config = spec.HasField("rollback_config"), spec.rollback_config
    else:
        present, config = spec.HasField("update_config"), spec.update_config
    return config if present else default_update_config()


@dataclass(frozen=True)
class SlotState:
    """One slot (a replica number, or a node for a global service) as the orchestrator sees it
    this pass."""

    key: SlotKey
    live: Sequence[Task]  # its tasks meant to run (desired running, or ready to start)


@dataclass
class UpdateStep:
    """What the orchestrator does for the update this pass."""

    dispatch: list[SlotKey] = field(default_factory=list)  # slots to update now, in order
    status: UpdateStatus | None = None  # the service's new UpdateStatus; None: unchanged
    roll_back: bool = False  # put previous_spec back as the spec (and clear it)
    wake_at_ns: int | None = None  # when a delay or the monitor period runs out


def plan_update(
    service: Service,
    tasks: Sequence[Task],
    slots: Sequence[SlotState],
    now_ns: int,
    *,
    key: Callable[[Task], SlotKey],
    up_to_date: Callable[[Task], bool],
) -> UpdateStep:
    """The next step of `service`'s update. `tasks`: all of the service's tasks (history
    included); `slots`: its live slots; `key`: a task's slot; `up_to_date`: whether a task is
    of the service's current spec."""
    return _Pass(service, tasks, slots, now_ns, key, up_to_date).run()


class _Pass:
    def __init__(
        self,
        service: Service,
        tasks: Sequence[Task],
        slots: Sequence[SlotState],
        now_ns: int,
        key: Callable[[Task], SlotKey],
        up_to_date: Callable[[Task], bool],
    ) -> None:
        self.service = service
        self.tasks = tasks
        self.slots = slots
        self.now = now_ns
        self.key = key
        self.up_to_date = up_to_date
        self.config = effective_config(service)
        self.monitor = self.config.monitor_ns or DEFAULT_MONITOR_NS
        self.step = UpdateStep()
        self.status = UpdateStatus()
        self.status.CopyFrom(service.update_status)

    def run(self) -> UpdateStep:
        state = self.status.state
        if state in (PAUSED, ROLLBACK_PAUSED):
            return self.step  # until the user updates the service again (or rolls it back)
        if state not in IN_PROGRESS:
            if not self._undispatched(self._run_tasks()):
                return self.step
            self._start()
        run_tasks = self._run_tasks()
        todo = self._undispatched(run_tasks)
        total = len(todo) + len(self._dispatched(run_tasks))
        free_at = self._workers_free_at(run_tasks)
        stopped_at = self._count_failures(run_tasks, total)
        if stopped_at is None:
            free = [t for t in free_at if t <= self.now]
            for t in free_at:
                if self.now < t < NEVER:
                    self._wake(t)  # a worker sleeping its delay
        else:  # only the workers free before the failure took a slot; none if rolling back
            free = [] if self.step.roll_back else [t for t in free_at if t <= stopped_at]
        busy = len(free_at) - len(free)
        self.step.dispatch = todo[: max(0, (self.config.parallelism or total) - busy)]
        if stopped_at is None and not todo and not busy:
            self._complete_after_monitor(run_tasks)
        if self.status != self.service.update_status:
            self.step.status = self.status
        return self.step

    # ---- the run's slots ----------------------------------------------------------------

    def _run_tasks(self) -> list[Task]:
        """The tasks this run created, oldest first: marked, of the current spec, and made
        since the update (or the update this rollback undoes) started."""
        if self.status.state not in IN_PROGRESS:
            return []
        since = self.status.started_at_ns
        run = [
            t
            for t in self.tasks
            if t.by_update and t.meta.created_at_ns >= since and self.up_to_date(t)
        ]
        return sorted(run, key=lambda t: (t.meta.created_at_ns, t.id))

    def _dispatched(self, run_tasks: list[Task]) -> set[SlotKey]:
        """Slots this run took: those with a task of it."""
        return {self.key(t) for t in run_tasks}

    def _undispatched(self, run_tasks: list[Task]) -> list[SlotKey]:
        """Dirty slots this run has not taken yet, in slot order."""
        taken = self._dispatched(run_tasks)
        dirty = [
            s.key
            for s in self.slots
            if s.key not in taken
            and (len(s.live) > 1 or any(not self.up_to_date(t) for t in s.live))
        ]
        return sorted(dirty, key=lambda k: str(k).zfill(12))

    def _start(self) -> None:
        self.status.Clear()
        self.status.state = UPDATING
        self.status.message = "update in progress"
        self.status.started_at_ns = self.now

    # ---- workers ------------------------------------------------------------------------

    def _workers_free_at(self, run_tasks: list[Task]) -> list[int]:
        """For each slot this run took, when its worker is (or was) free: once its new task
        reached running (after the old one stopped, stop-first), and the update delay after
        it was slept (NEVER while that has not happened yet)."""
        latest: dict[SlotKey, Task] = {self.key(t): t for t in run_tasks}
        free_at = []
        for task in latest.values():
            done = _reached_running(task)
            free_at.append(_done_at(task) + self.config.delay_ns if done else NEVER)
        return free_at

    # ---- failures -----------------------------------------------------------------------

    def _count_failures(self, run_tasks: list[Task], total: int) -> int | None:
        """Count the run's new failures; the time of the one that made the failure action
        stop the run, if one did."""
        if (self.config.failure_action or "pause") == "continue":
            return None
        counted = list(self.status.failed_task_ids)
        fresh = [t for t in run_tasks if t.id not in counted and self._failed_early(t)]
        for task in sorted(fresh, key=lambda t: (t.status.timestamp_ns, t.id)):
            counted.append(task.id)
            self.status.failed_task_ids.append(task.id)
            if len(counted) / max(total, 1) > self.config.max_failure_ratio:
                self._act_on_failure(task.id)
                return task.status.timestamp_ns
        return None

    def _failed_early(self, task: Task) -> bool:
        """Stopped (any state past running) within the monitor period of reaching running."""
        if task.status.state not in TERMINAL:
            return False
        return task.status.timestamp_ns - _done_at(task) <= self.monitor

    def _act_on_failure(self, task_id: str) -> None:
        why = f"due to failure or early termination of task {task_id}"
        rolling_back = self.status.state == ROLLBACK_STARTED
        action = self.config.failure_action or "pause"
        if action == "rollback" and not rolling_back and self.service.HasField("previous_spec"):
            self.status.state = ROLLBACK_STARTED
            self.status.message = f"update rolled back {why}"
            del self.status.failed_task_ids[:]  # the rollback counts its own failures
            self.step.roll_back = True
            return
        self.status.state = ROLLBACK_PAUSED if rolling_back else PAUSED
        verb = "rollback" if rolling_back and action == "rollback" else "update"
        self.status.message = f"{verb} paused {why}"

    # ---- completion ---------------------------------------------------------------------

    def _complete_after_monitor(self, run_tasks: list[Task]) -> None:
        """Every slot done: complete once the monitor period after the last one ran out."""
        if run_tasks:
            settled = max(_done_at(t) for t in run_tasks) + self.config.delay_ns + self.monitor
            if self.now < settled:
                self._wake(settled)
                return
        rollback = self.status.state == ROLLBACK_STARTED
        self.status.state = ROLLBACK_COMPLETED if rollback else COMPLETED
        self.status.message = "rollback completed" if rollback else "update completed"
        self.status.completed_at_ns = self.now
        del self.status.failed_task_ids[:]

    def _wake(self, at_ns: int) -> None:
        wake = self.step.wake_at_ns
        self.step.wake_at_ns = at_ns if wake is None else min(wake, at_ns)


def _reached_running(task: Task) -> bool:
    return rank(task.status.state) >= rank("running")


def _done_at(task: Task) -> int:
    """When the task reached running (or failed without being seen running)."""
    return task.started_at_ns or task.status.timestamp_ns
