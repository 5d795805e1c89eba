"""Job services (`--mode replicated-job` / `--mode global-job`): tasks that run to completion.
Pure, like the orchestrator that calls it for every job service of a pass.

Model (swarmkit's `manager/orchestrator/jobs`): a job runs in iterations. The API starts
iteration 0 at create and a new one at every update of the service (`JobStatus.JobIteration`);
tasks carry the iteration they were made for, and tasks of an older one that still run are
removed. A job's tasks have desired state "complete": a task that completed is done for good;
one that failed is replaced in its slot at once, while the restart policy allows (condition
"any" counts as "on-failure": a completed job task is never restarted), by a task that waits
in desired "ready" for the restart delay (`delayed_start.py`), as swarmkit's restarts do;
a restart that fails while it still waits is replaced only once its own delay ran out
(`restart_waits`, as for services).

- Replicated job: at most `max_concurrent` tasks at once until `total_completions` have
  completed. Slots are numbered from 0, as swarmkit's (the CLI names slot 0's task after its
  node, `job.<node id>`).
- Global job: one task per eligible node (ready, active, matching the constraints), nodes that
  join later included; the task of a node that goes down, is drained or leaves is shut down.

Restart attempts are counted as for services, in the leader's memory
(`restart_history.py`), with one difference that is swarmkit 20.10's: a global job's
restarts are recorded under their node but looked up without it, so `max_attempts` never
stops a global job's restarts (its window neither); a replicated job's slot is given up
once they are used up.

A slot whose restarts are used up (or whose condition is "none") is given up: it gets no
new task, and counts neither as running nor completed, until swarmkit would reconcile the
job again. Its job orchestrator does so on an update of the service (here a new iteration),
on each report of a task of the job that finished on its own (completed, failed or
rejected), and for every job when a new leader starts; then the slot no longer has a task
meant to run, and gets a fresh one at once (no restart delay; it is no restart attempt, but
its failure finds the attempts still used up). So here a given-up slot is reopened once
another task of the iteration finished after its last task failed, or once a leader started
after it was given up (`LeaderMemory.started_at_ns`).

Decision where swarmkit acts by accident: a job task whose node is down, drained or gone is
shut down and its slot restarted as if it had failed (a replicated job's on another node), as
the orchestrator moves a service's tasks off such nodes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from controlplane.manager import constraints
from controlplane.manager.delayed_start import restart_delay_ns
from controlplane.manager.leader_memory import LeaderMemory
from controlplane.manager.restart_history import SlotId
from controlplane.manager.tasks import (
    DESIRED_COMPLETE,
    DESIRED_REMOVE,
    DESIRED_SHUTDOWN,
    Slot,
    SlotKey,
    is_terminal,
    node_is_usable,
    slot_key,
    wants_running,
)
from controlplane.manager.view import ClusterView
from controlplane.pb.objects_pb2 import Node, Service, ServiceSpec, Task

JOB_MODES = ("replicated_job", "global_job")
_FINISHED_ALONE = frozenset({"complete", "failed", "rejected"})
"""A task's ends that its node reports on its own (not ordered to stop): each makes
swarmkit's job orchestrator reconcile the job."""


def is_job(spec: ServiceSpec) -> bool:
    return spec.WhichOneof("mode") in JOB_MODES


class JobPlan(Protocol):
    """What a job needs of the orchestrator's pass (its `_Plan`)."""

    view: ClusterView
    now: int
    memory: LeaderMemory

    def set_desired(self, task: Task, desired: str) -> None: ...
    def create(self, service: Service, slot: Slot, *, start_at_ns: int | None = None) -> Task: ...
    def restarted(self, slot: SlotId, task: Task) -> None: ...
    def may_restart(self, slot: SlotId, task: Task) -> bool: ...
    def wait_for(self, replacement: Task, old: Task) -> None: ...
    def start_when_due(self, task: Task, slot_tasks: list[Task], desired: str) -> None: ...
    def restart_waits(self, task: Task, slot_tasks: list[Task]) -> bool: ...
    def remove(self, task: Task) -> None: ...
    def wake(self, at_ns: int) -> None: ...
    def gone_from_node(self, task: Task) -> bool: ...
    def history_limit(self) -> int: ...
    def trim_history(
        self,
        limit: int,
        tasks: list[Task],
        key: Callable[[Task], SlotKey],
        finished: Callable[[Task], bool],
    ) -> None: ...


class SlotState(Enum):
    COMPLETED = "completed"
    ACTIVE = "active"  # a task runs (or is on its way, a restart's waiting for its delay)
    GIVEN_UP = "given_up"  # failed, and the restart policy allows no further attempt
    REOPENED = "reopened"  # given up, then the job was reconciled: free for a fresh task


def reconcile_job(plan: JobPlan, service: Service, tasks: list[Task]) -> None:
    """The task changes that bring job `service` closer to its spec."""
    _JobReconciler(plan, service).run(tasks)


class _JobReconciler:
    def __init__(self, plan: JobPlan, service: Service) -> None:
        self.plan = plan
        self.service = service
        self.is_global = service.spec.WhichOneof("mode") == "global_job"
        self.iteration = service.job_status.job_iteration
        try:
            self.placement: list[constraints.Constraint] | None = constraints.parse(
                service.spec.placement.constraints
            )
        except constraints.ConstraintError:
            self.placement = None  # the API refuses these; from elsewhere it matches no node

    def key(self, task: Task) -> SlotKey:
        return slot_key(self.service.spec, task)

    def run(self, tasks: list[Task]) -> None:
        current: dict[SlotKey, list[Task]] = defaultdict(list)
        for task in tasks:
            if task.desired_state == DESIRED_REMOVE:
                self.plan.remove(task)  # forgotten once it stopped
            elif not self._of_this_iteration(task):
                if not is_terminal(task):
                    self.plan.remove(task)
            else:
                current[self.key(task)].append(task)
        given_up_before = {k for k, ts in current.items() if self._given_up_before_leader(ts)}
        settled = {key: self._settle(key, slot_tasks) for key, slot_tasks in current.items()}
        finished_at = [
            t.status.timestamp_ns
            for slot_tasks in current.values()
            for t in slot_tasks
            if t.status.state in _FINISHED_ALONE
        ]
        states = {
            key: state
            for key, state in settled.items()
            if not (
                state is SlotState.GIVEN_UP
                and (key in given_up_before or self._reopened(current[key], finished_at))
            )
        }
        if self.is_global:
            self._fill_nodes(states)
        else:
            self._fill_slots(states)
        self.plan.trim_history(self.plan.history_limit(), tasks, self.key, self._history)

    def _history(self, task: Task) -> bool:
        """Trimmed first: a stopped task of an older iteration (this one's, failed tries
        included, are what a new leader counts the restarts from)."""
        return not self._of_this_iteration(task) and self.plan.gone_from_node(task)

    def _of_this_iteration(self, task: Task) -> bool:
        return task.HasField("job_iteration") and task.job_iteration == self.iteration

    # ---- one slot -----------------------------------------------------------------------

    def _settle(self, key: SlotKey, tasks: list[Task]) -> SlotState:
        """The slot's state, after shutting down what failed and restarting what may be."""
        if any(t.status.state == "complete" for t in tasks):
            return SlotState.COMPLETED
        was_live = any(map(wants_running, tasks))  # before this pass shuts any down
        active = []
        held = False  # a failed try whose restart waits out its own delayed start first
        for task in tasks:
            if not wants_running(task):
                continue
            leaves = not is_terminal(task) and self._must_leave_node(task)
            restarts = is_terminal(task) or (leaves and not self.is_global)
            if restarts and self.plan.restart_waits(task, tasks):
                held = True
            elif leaves:
                self.plan.set_desired(task, DESIRED_SHUTDOWN)
            elif not is_terminal(task):
                active.append(task)
        for task in active:
            self.plan.start_when_due(task, tasks, DESIRED_COMPLETE)
        if active or held:
            return SlotState.ACTIVE
        finished = sorted(tasks, key=lambda t: (t.meta.created_at_ns, t.id))
        if not was_live:
            return SlotState.GIVEN_UP  # its last try ended in an earlier pass
        for task in finished:
            if wants_running(task):
                self.plan.set_desired(task, DESIRED_SHUTDOWN)  # a failed try is over
        return self._restart(key, finished[-1])

    def _given_up_before_leader(self, slot_tasks: list[Task]) -> bool:
        """Whether the slot was given up (its newest task, not completed, no longer meant to
        run) before this leader started: swarmkit's new leader reconciled the job since."""
        newest = max(slot_tasks, key=lambda t: (t.meta.created_at_ns, t.id))
        return (
            newest.status.state != "complete"
            and not wants_running(newest)
            and newest.meta.updated_at_ns < self.plan.memory.started_at_ns
        )

    def _reopened(self, slot_tasks: list[Task], finished_at: list[int]) -> bool:
        """Whether swarmkit reconciled the job since the given-up slot's last task failed:
        another of its tasks finished (of itself) later than that."""
        failed_at = max(t.status.timestamp_ns for t in slot_tasks)
        return any(at > failed_at for at in finished_at)

    def _must_leave_node(self, task: Task) -> bool:
        """Its node is down, drained or gone; for a global job also no longer matching."""
        if not task.node_id:
            return False
        node = self.plan.view.nodes.get(task.node_id)
        if not node_is_usable(node):
            return True
        return self.is_global and not self._node_matches(node)

    def _restart(self, key: SlotKey, latest: Task) -> SlotState:
        """A new try for a slot whose last task failed, started after the restart delay."""
        if latest.spec.restart_policy.condition == "none":
            return SlotState.GIVEN_UP
        slot = (self.service.id, key)
        if not self.is_global and not self.plan.may_restart(slot, latest):
            return SlotState.GIVEN_UP
        if self.is_global:
            node = self.plan.view.nodes.get(str(key))
            if node is None or not constraints.node_takes_global_task(self.placement, node):
                return SlotState.GIVEN_UP  # its node can take no task now
        delay = restart_delay_ns(latest, self.plan.view.nodes.get(latest.node_id))
        task = self._create(key, start_at_ns=self.plan.now + delay)
        self.plan.restarted(slot, task)
        self.plan.wait_for(task, latest)
        return SlotState.ACTIVE

    def _create(self, key: SlotKey, *, start_at_ns: int | None = None) -> Task:
        """A task of this iteration in slot `key`: a restart's (waiting until `start_at_ns`)
        or a new one (desired "complete")."""
        slot = Slot(node_id=key) if isinstance(key, str) else Slot(number=key)
        task = self.plan.create(self.service, slot, start_at_ns=start_at_ns)
        if start_at_ns is None:
            task.desired_state = DESIRED_COMPLETE
        task.job_iteration = self.iteration
        return task

    # ---- new tasks ----------------------------------------------------------------------

    def _fill_slots(self, states: dict[SlotKey, SlotState]) -> None:
        """Replicated job: new slots while fewer than MaxConcurrent run and the completions
        (done or under way) fall short of TotalCompletions."""
        job = self.service.spec.replicated_job
        counts = {state: 0 for state in SlotState}
        for state in states.values():
            counts[state] += 1
        may_start = job.max_concurrent - counts[SlotState.ACTIVE]
        still_needed = job.total_completions - sum(counts.values())
        free = (n for n in range(job.total_completions) if n not in states)
        for number, _ in zip(free, range(min(may_start, still_needed)), strict=False):
            self._create(number)

    def _fill_nodes(self, states: dict[SlotKey, SlotState]) -> None:
        """Global job: a task for every eligible node that has none in this iteration."""
        for node in sorted(self.plan.view.nodes.values(), key=lambda n: n.id):
            if node.id not in states and constraints.node_takes_global_task(self.placement, node):
                self._create(node.id)

    def _node_matches(self, node: Node | None) -> bool:
        return (
            node is not None
            and self.placement is not None
            and constraints.node_matches(self.placement, node)
        )
