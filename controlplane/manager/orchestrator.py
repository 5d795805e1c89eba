"""The orchestrator: from services and the tasks they have, the task changes that make the
cluster match what the services ask for. Pure: a ClusterView and the time in, a transaction out.

Model (swarmkit's): a replicated service owns slots 1..N, a global service one slot per
eligible node; a slot's *live* task is the one with desired state "running". Decisions are
recomputed from the store on every pass, so a new leader picks up whatever a previous one left
half-done (a batch of an update, a restart waiting for its delay). Only what swarmkit keeps in
the leader's memory is kept in this leader's (`leader_memory.py`): the restart attempts made
per slot (rebuilt from the store by a new leader), and when a waiting replacement starts and
which task it waits for (a new leader restarts the delay from the task's last status).

- Scale: missing slots get a new task (the lowest slot numbers, reusing slots that had tasks
  before); extra slots get desired state "remove" (tasks not running first, then the highest
  slots), and such tasks are deleted once they stopped or never reached a node.
- Replacement (swarmkit's restart supervisor): the new task is made at once and waits in
  desired "ready" (prepared on its node, not started) until `delayed_start.py` lets it
  start. A live task on a node that is down or gone gets desired "shutdown" and its slot a
  new task that starts after the restart delay; on a drained node, one that starts once the
  old task stopped (a global service's task just leaves the node). A finished task (failed,
  rejected, shutdown, or also complete for the "any" condition) gets desired "shutdown" and
  its slot a new task that starts after the restart delay. Either replacement is a restart
  attempt, made only if the restart policy allows it: not under condition "none" (nor
  "on-failure" for a completed task), nor once `max_attempts` replacements of the same spec
  happened in the slot (within the window, if any), as this leader counts them
  (`restart_history.py`). A replacement waits for the one task it replaces, if that one
  still ran on a node that is up. A replacement that fails (or must leave its node) while it
  still waits to start is replaced only once its own start falls due, as swarmkit's: a task
  its node rejects at once (a missing image) gets a successor once per restart delay, not
  in a tight loop. A finished task not restarted keeps
  desired "running"; a task that left its node without a successor gets "shutdown" and
  `holds_slot`: either keeps its slot taken, without a task running, as swarmkit does.
- Rolling update: `rolling_update.py` decides, pass by pass, which slots start updating and
  what the service's UpdateStatus becomes (swarmkit's updater: parallelism, delay, monitor,
  failure action and ratio, rollback); this module carries it out. The slot's new task is made
  at once, desired "ready". stop-first (default): the old task is shut down, and the new one
  starts once the old one stopped. start-first: the new task starts beside the old one at
  once, and the old one is shut down when the new one runs.
- History: finished tasks are kept per slot up to Swarm's retention limit, then deleted.
- Standalone containers' network attachments (`network_attachments.py`) are their nodes'
  business, except on a node that is gone (`docker node rm` orphans its tasks) or down for
  swarmkit's 24 hours: then nothing runs the container any more and the attachment is
  deleted, freeing its address.

Job services (`--mode replicated-job|global-job`) are reconciled by `jobs.py`, with the same
plan (and history limit).

Timed steps (a restart delay, the update delay) are reported in `wake_at_ns`: the caller runs
the pass again then. A replacement waiting for the task it replaces to stop is looked at again
on the pass that the stopped task's report brings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from controlplane.manager import constraints
from controlplane.manager.delayed_start import (
    DelayedStart,
    after_leader_change,
    hold,
    is_waiting,
    restart_delay_ns,
    start_due_ns,
)
from controlplane.manager.jobs import is_job, reconcile_job
from controlplane.manager.leader_memory import LeaderMemory, Learned
from controlplane.manager.restart_history import SlotId, kept_per_slot
from controlplane.manager.rolling_update import (
    ROLLBACK_STARTED,
    SlotState,
    effective_config,
    plan_update,
)
from controlplane.manager.tasks import (
    DESIRED_REMOVE,
    DESIRED_RUNNING,
    DESIRED_SHUTDOWN,
    Slot,
    SlotKey,
    history_limit,
    is_terminal,
    new_task,
    node_is_usable,
    slot_key,
    started_on_node,
    task_template,
    wants_running,
)
from controlplane.manager.view import ClusterView
from controlplane.pb.objects_pb2 import Node, Service, ServiceSpec, Task
from controlplane.store import Transaction

Key = SlotKey

ORPHAN_DELAY_NS = 24 * 3600 * 1_000_000_000  # swarmkit's defaultNodeDownPeriod


@dataclass
class Reconciliation:
    transaction: Transaction | None
    wake_at_ns: int | None  # when a delayed step falls due; None if none is waiting
    learned: Learned  # for the leader's memory, once the transaction committed


def reconcile(
    view: ClusterView, now_ns: int, memory: LeaderMemory, focus: Collection[str] | None = None
) -> Reconciliation:
    """The changes that bring the services in `focus` (all if None) closer to their specs, and
    remove the tasks of services that are gone; `wake_at_ns` covers the focused services.
    `memory` is what this leader remembers of its earlier passes (`leader_memory.py`)."""
    plan = _Plan(view, now_ns, memory)
    index = view.index
    for task in index.attachments():
        plan.sweep_attachment(task)
    for service_id in index.service_ids():
        if service_id not in view.services:
            plan.learned.services_gone.add(service_id)
            for task in index.of_service(service_id):
                plan.remove(task)
    for service in view.services_in(focus):
        if is_job(service.spec):
            reconcile_job(plan, service, index.of_service(service.id))
        else:
            _ServiceReconciler(plan, service, index.of_service(service.id)).run()
    return plan.result()


class _Plan:
    """The changes of one pass; each object is written at most once per transaction."""

    def __init__(self, view: ClusterView, now_ns: int, memory: LeaderMemory) -> None:
        self.view = view
        self.now = now_ns
        self.memory = memory
        self.learned = Learned()
        self.updated: dict[str, Task] = {}
        self.created: dict[str, Task] = {}
        self.deleted: set[str] = set()
        self.services: dict[str, Service] = {}
        self.wake_at: int | None = None

    def set_desired(self, task: Task, desired: str) -> None:
        """A new desired state; a waiting replacement that gets one (started, shut down)
        waits no more."""
        if task.desired_state == desired or task.id in self.deleted:
            return
        if task.id in self.memory.waiting:
            self.learned.done_waiting.add(task.id)
        task.desired_state = desired
        task.meta.updated_at_ns = self.now
        self.updated[task.id] = task

    def release_slot(self, task: Task) -> None:
        """A task that held its slot no longer does: the slot has a new task."""
        task.holds_slot = False
        task.meta.updated_at_ns = self.now
        self.updated[task.id] = task

    def delete(self, task: Task) -> None:
        self.updated.pop(task.id, None)
        self.deleted.add(task.id)
        if task.id in self.memory.waiting:
            self.learned.done_waiting.add(task.id)

    def remove(self, task: Task) -> None:
        """Scale-down or service removal: stop it, and forget it once it no longer runs."""
        if self.gone_from_node(task):
            self.delete(task)
        else:
            self.set_desired(task, DESIRED_REMOVE)

    def gone_from_node(self, task: Task) -> bool:
        """Nothing runs it: finished, never handed to a node, or its node is down or gone."""
        return is_terminal(task) or not started_on_node(task) or self.node_lost(task)

    def sweep_attachment(self, task: Task) -> None:
        """A standalone container's attachment is its node's business (it detaches it), but
        nothing will once its node is gone: removed (`docker node rm` orphans its tasks), or
        down for ORPHAN_DELAY_NS (swarmkit's: a node that comes back sooner still runs the
        container with that address). Then the managers delete it, which frees its address,
        as swarmkit's task reaper deletes orphaned tasks that belong to no service."""
        node = self.view.nodes.get(task.node_id)
        if is_terminal(task) or node is None:
            self.delete(task)
        elif node.status.state == "down":
            due = node.meta.updated_at_ns + ORPHAN_DELAY_NS  # down since its last write
            if self.now >= due:
                self.delete(task)
            else:
                self.wake(due)

    def node_lost(self, task: Task) -> bool:
        """The task's node is down or no longer in the swarm."""
        node = self.view.nodes.get(task.node_id)
        return node is None or node.status.state == "down"

    def create(self, service: Service, slot: Slot, *, start_at_ns: int | None = None) -> Task:
        """A new task of `service` in `slot`; with `start_at_ns`, a replacement that waits
        (desired "ready") until then (and for the task it replaces: `wait_for`)."""
        task = new_task(service, slot, self.now)
        if start_at_ns is not None:
            hold(task)
            self.learned.waiting[task.id] = DelayedStart(start_at_ns)
        self.created[task.id] = task
        return task

    def restarted(self, slot: SlotId, task: Task) -> None:
        """`task` is a restart in `slot`: it counts against the restart policy's attempts."""
        self.learned.restarts.append((slot, task))

    def may_restart(self, slot: SlotId, task: Task) -> bool:
        return self.memory.restarts.may_restart(slot, task)

    def wait_for(self, replacement: Task, old: Task) -> None:
        """`replacement` starts only once `old` stopped (or OLD_TASK_TIMEOUT_NS passed), as
        swarmkit's DelayStart; not if `old` already stopped or its node is down."""
        delayed = self.learned.waiting[replacement.id]
        if not (is_terminal(old) or self.node_lost(old)):
            self.learned.waiting[replacement.id] = DelayedStart(delayed.start_at_ns, old.id)

    def start_when_due(self, task: Task, slot_tasks: list[Task], desired: str) -> None:
        """Move a waiting replacement on to `desired` (running, or complete for a job's
        task) once its start time came and the task it replaces stopped (`wait_for`); not
        in the pass that made it (swarmkit starts it in a transaction of its own). A task
        this leader does not know (a write it took for failed that did commit) waits as a
        new leader's would. A replacement that finished while it waited and is not
        restarted moves on too (swarmkit starts it before it restarts it), to "running":
        finished and not restarted, like any task that ran."""
        if not is_waiting(task) or task.id in self.created:
            return
        delayed = self.memory.waiting.get(task.id) or after_leader_change(task)
        due = start_due_ns(task, delayed, self._replaced_runs(delayed, slot_tasks))
        if self.now >= due:
            self.set_desired(task, desired)
        else:
            self.wake(due)

    def restart_waits(self, task: Task, slot_tasks: list[Task]) -> bool:
        """Whether the restart of `task` (it failed, was rejected, or leaves its node) waits:
        it is itself a replacement still waiting out its delayed start, as this leader knows
        it (`memory.waiting`). swarmkit's restart supervisor holds such a restart until that
        start falls due, to avoid a tight restart loop (a missing image, a port its node
        cannot publish: rejected while prepared, again and again); then it restarts it as
        any other, with a new delay. The pass is woken then."""
        delayed = self.memory.waiting.get(task.id)
        if delayed is None or not is_waiting(task):
            return False
        due = start_due_ns(task, delayed, self._replaced_runs(delayed, slot_tasks))
        if self.now >= due:
            return False
        self.wake(due)
        return True

    def _replaced_runs(self, delayed: DelayedStart, slot_tasks: list[Task]) -> bool:
        """Whether the task a waiting replacement waits for still runs on its node."""
        return any(t.id == delayed.replaces and not self.gone_from_node(t) for t in slot_tasks)

    def wake(self, at_ns: int) -> None:
        self.wake_at = at_ns if self.wake_at is None else min(self.wake_at, at_ns)

    def history_limit(self) -> int:
        """The cluster's task history limit (`swarm update --task-history-limit`,
        HISTORY_LIMIT by default)."""
        return history_limit(self.view.cluster)

    def trim_history(
        self,
        limit: int,
        tasks: list[Task],
        key: Callable[[Task], Key],
        finished: Callable[[Task], bool],
    ) -> None:
        """Keep at most `limit` of `tasks` per slot (`key`): the oldest of those `finished`
        (and not changed in this pass) go first."""
        per_key: dict[Key, list[Task]] = defaultdict(list)
        for task in tasks:
            if task.id not in self.deleted:
                per_key[key(task)].append(task)
        for slot_tasks in per_key.values():
            excess = len(slot_tasks) - limit
            if excess <= 0:
                continue
            old = sorted(
                (t for t in slot_tasks if t.id not in self.updated and finished(t)),
                key=lambda t: (t.meta.created_at_ns, t.id),
            )
            for task in old[:excess]:
                self.delete(task)

    def result(self) -> Reconciliation:
        if not (self.services or self.created or self.updated or self.deleted):
            # No Transaction: it draws a random id.
            return Reconciliation(None, self.wake_at, self.learned)
        txn = Transaction()
        for service in self.services.values():
            txn.update(service)
        for task in self.created.values():
            txn.create(task)
        for task in self.updated.values():
            txn.update(task)
        for task_id in sorted(self.deleted):
            txn.delete(Task, task_id)
        return Reconciliation(txn if len(txn) else None, self.wake_at, self.learned)


def _holds_slot(task: Task) -> bool:
    """A task that left its node while its restart policy allowed no successor: its slot
    stays taken, without a task running, until the service is scaled down or updated (as
    swarmkit's updater still counts a task its restart policy does not restart)."""
    return task.holds_slot and task.desired_state == DESIRED_SHUTDOWN


class _ServiceReconciler:
    def __init__(self, plan: _Plan, service: Service, tasks: list[Task]) -> None:
        self.plan = plan
        self.service = service
        self.tasks = tasks
        self.is_global = service.spec.WhichOneof("mode") == "global"
        self._template: ServiceSpec | None = None  # of the spec the service has now
        self.created: list[Task] = []  # this pass's new tasks of the service
        try:
            self.placement: list[constraints.Constraint] | None = constraints.parse(
                service.spec.placement.constraints
            )
        except constraints.ConstraintError:
            self.placement = None  # the API refuses these; from elsewhere it matches no node

    def _up_to_date(self, task: Task) -> bool:
        """`is_up_to_date`, with the service's task template made once per pass, not once
        per task (a copy of the whole spec: with 1,000 tasks, most of a pass)."""
        if self._template is None:
            self._template = task_template(self.service.spec)
        return task.spec == self._template

    def key(self, task: Task) -> Key:
        return slot_key(self.service.spec, task)

    def slot(self, key: Key) -> Slot:
        return Slot(node_id=key) if isinstance(key, str) else Slot(number=key)

    def run(self) -> None:
        plan = self.plan
        live: dict[Key, list[Task]] = defaultdict(list)
        in_slot: dict[Key, list[Task]] = defaultdict(list)
        for task in self.tasks:
            in_slot[self.key(task)].append(task)
            if task.desired_state == DESIRED_REMOVE:
                plan.remove(task)
            elif wants_running(task):
                live[self.key(task)].append(task)
        for key in list(live):
            live[key] = self._keep_or_replace(key, live[key], in_slot[key])
            live[key] = self._one_per_slot(live[key])
            for task in live[key]:
                plan.start_when_due(task, in_slot[key], DESIRED_RUNNING)
        rolling_back = self.service.update_status.state == ROLLBACK_STARTED
        for key, slot_tasks in in_slot.items():
            if rolling_back:
                self._free_dead_slot(live, key, slot_tasks)
            elif not live.get(key):
                live[key] = [t for t in slot_tasks if _holds_slot(t)][-1:]
        self._scale(live)
        self._fill(live)  # before the update: a refilled slot counts as in flight
        self._update(live)
        self._trim_history()

    # ---- live tasks ---------------------------------------------------------------------

    def _free_dead_slot(
        self, live: dict[Key, list[Task]], key: Key, slot_tasks: list[Task]
    ) -> None:
        """While rolling back, a slot whose tasks all stopped and were not restarted (held)
        no longer counts: `_fill` gives it a new task at once, as swarmkit's replicated
        orchestrator refills such a slot (its restart supervisor counts it as dead during a
        rollback, so that the rollback converges)."""
        if any(not is_terminal(t) for t in live.get(key, [])):
            return
        for task in live.pop(key, []):
            self.plan.set_desired(task, DESIRED_SHUTDOWN)
        for task in slot_tasks:
            if _holds_slot(task):
                self.plan.release_slot(task)

    def _keep_or_replace(self, key: Key, tasks: list[Task], slot_tasks: list[Task]) -> list[Task]:
        """The tasks that stay live; the others get desired "shutdown" and, as swarmkit's
        restart supervisor does, their slot a successor at once that waits (desired
        "ready"): a finished task that the restart policy restarts, for the restart delay
        (also beside the old task a start-first update was to replace; not beside a task of
        the current spec); a replicated task whose node is down or gone, for the restart
        delay too, or drained, for the old task to stop, if the restart policy restarts it
        (it counts as an attempt; if not, the task holds its slot empty). A global
        service's task leaves its node for good. A replacement that finishes or must leave
        its node while it still waits out its own delayed start stays as it is until that
        start falls due (`_Plan.restart_waits`)."""
        kept: list[Task] = []
        replaced: list[Task] = []
        for task in tasks:
            leaves = self._must_leave_node(task)
            restarts = is_terminal(task) or (leaves and not self.is_global)
            if restarts and self.plan.restart_waits(task, slot_tasks):
                kept.append(task)
            elif leaves:
                self.plan.set_desired(task, DESIRED_SHUTDOWN)
                if self.is_global:
                    continue
                if self._should_restart(task):
                    replaced.append(task)
                else:
                    task.holds_slot = True
            elif is_terminal(task) and self._should_restart(task):
                self.plan.set_desired(task, DESIRED_SHUTDOWN)
                replaced.append(task)
            else:
                kept.append(task)
        fresh = any(map(self._up_to_date, replaced))
        if replaced and (not kept or (fresh and not any(map(self._up_to_date, kept)))):
            old = replaced[0]
            delay = restart_delay_ns(old, self.plan.view.nodes.get(old.node_id))
            successor = self._create(self.slot(key), start_at_ns=self.plan.now + delay)
            self.plan.restarted((self.service.id, key), successor)
            self.plan.wait_for(successor, old)
            kept.append(successor)
        return kept

    def _must_leave_node(self, task: Task) -> bool:
        """Its node is down, drained or gone; or (global) no longer matches the constraints."""
        if not task.node_id:
            return False
        node = self.plan.view.nodes.get(task.node_id)
        if node is None or not node_is_usable(node):
            return True
        return self.is_global and not self._node_keeps_task(node)

    def _should_restart(self, task: Task) -> bool:
        """Whether the restart policy replaces a live task that finished or leaves its node
        (swarmkit's ShouldRestart: "on-failure" restarts all but a completed task, and no
        more than `max_attempts` restarts of the slot, as this leader counts them)."""
        condition = task.spec.restart_policy.condition or "any"
        if condition == "none" or (condition == "on-failure" and task.status.state == "complete"):
            return False
        return self.plan.may_restart((self.service.id, self.key(task)), task)

    def _node_keeps_task(self, node: Node) -> bool:
        """Global: a usable node keeps its task while it still matches the constraints."""
        return self.placement is not None and constraints.node_matches(self.placement, node)

    def _one_per_slot(self, tasks: list[Task]) -> list[Task]:
        """A slot runs one task; two live ones happen during a start-first update (kept until the
        new one runs) or when a leader died half-way (the newest up-to-date one is kept)."""
        if len(tasks) < 2:
            return tasks
        ordered = sorted(tasks, key=lambda t: (t.meta.created_at_ns, t.id), reverse=True)
        fresh = [t for t in ordered if self._up_to_date(t)]
        start_first = effective_config(self.service).order == "start-first"
        if fresh and fresh[0].status.state != "running" and start_first:
            keep = [fresh[0], *[t for t in ordered if t not in fresh][:1]]
        else:
            keep = [fresh[0] if fresh else ordered[0]]
        for task in tasks:
            if task not in keep:
                self.plan.set_desired(task, DESIRED_SHUTDOWN)
        return keep

    # ---- scale --------------------------------------------------------------------------

    def _scale(self, live: dict[Key, list[Task]]) -> None:
        if self.is_global:
            return
        occupied = [k for k, ts in live.items() if ts]
        extra = len(occupied) - self.service.spec.replicas
        if extra <= 0:
            return

        def running_last(key: Key) -> tuple[bool, int]:
            running = any(t.status.state == "running" for t in live.get(key, []))
            return (running, -int(key))

        for key in sorted(occupied, key=running_last)[:extra]:
            for task in live.pop(key, []):
                self.plan.remove(task)

    def _fill(self, live: dict[Key, list[Task]]) -> None:
        occupied = {k for k, ts in live.items() if ts}
        if self.is_global:
            for node in sorted(self.plan.view.nodes.values(), key=lambda n: n.id):
                if node.id not in occupied and constraints.node_takes_global_task(
                    self.placement, node
                ):
                    live[node.id] = [self._create(Slot(node_id=node.id))]
            return
        missing = self.service.spec.replicas - len(occupied)
        if missing <= 0:
            return
        used_before = sorted({t.slot for t in self.tasks if t.slot > 0 and t.slot not in occupied})
        candidates = used_before + [
            n for n in range(1, len(occupied) + missing + 1) if n not in occupied
        ]
        chosen = list(dict.fromkeys(candidates))[:missing]  # in order, each number once
        for number in chosen:
            live[number] = [self._create(Slot(number=number))]

    def _create(
        self, slot: Slot, *, by_update: bool = False, start_at_ns: int | None = None
    ) -> Task:
        task = self.plan.create(self.service, slot, start_at_ns=start_at_ns)
        task.by_update = by_update
        self.created.append(task)
        return task

    # ---- rolling update -----------------------------------------------------------------

    def _update(self, live: dict[Key, list[Task]]) -> None:
        """One step of the service's rolling update (`rolling_update.py` decides it)."""
        slots = [SlotState(k, ts) for k, ts in live.items() if ts]
        step = plan_update(
            self.service,
            [*self.tasks, *self.created],
            slots,
            self.plan.now,
            key=self.key,
            up_to_date=self._up_to_date,
        )
        if step.wake_at_ns is not None:
            self.plan.wake(step.wake_at_ns)
        for key in step.dispatch:
            self._update_slot(key, live)
        if step.status is not None:
            service = self._service_for_update()
            service.update_status.CopyFrom(step.status)
            service.meta.updated_at_ns = self.plan.now
        if step.roll_back:
            service = self._service_for_update()
            service.spec.CopyFrom(service.previous_spec)
            service.spec_version = service.previous_spec_version
            service.ClearField("previous_spec")  # swarmkit's: no rollback of this rollback
            service.ClearField("previous_spec_version")
            self._template = None

    def _update_slot(self, key: Key, live: dict[Key, list[Task]]) -> None:
        """The slot's new task, made at once and waiting (desired "ready"), started by a
        later pass: start-first, at once, beside the old ones (`_one_per_slot` stops them
        once it runs); stop-first, once the old ones, shut down now, stopped."""
        new = self._create(self.slot(key), by_update=True, start_at_ns=self.plan.now)
        for task in live[key]:
            if _holds_slot(task):
                self.plan.release_slot(task)
        if effective_config(self.service).order == "start-first":
            live[key].append(new)
            return
        running = [t for t in live[key] if wants_running(t)]
        for task in live[key]:
            self.plan.set_desired(task, DESIRED_SHUTDOWN)
        if running:
            self.plan.wait_for(new, running[-1])  # swarmkit's updater: the last one it stopped
        live[key] = [new]

    def _service_for_update(self) -> Service:
        service = self.plan.services.get(self.service.id)
        if service is None:
            service = self.plan.services[self.service.id] = self.service
        return service

    # ---- history ------------------------------------------------------------------------

    def _trim_history(self) -> None:
        def finished(t: Task) -> bool:
            return not (wants_running(t) or _holds_slot(t)) and self.plan.gone_from_node(t)

        limit = kept_per_slot(self.service.spec, self.plan.history_limit())
        self.plan.trim_history(limit, self.tasks, self.key, finished)
