"""What the leader's orchestrators keep in memory for as long as this manager leads, as
swarmkit's do, and so forget at a leader change. Pure: passes read it; LeaderLoops teaches
it what a committed pass did.

- `restarts`: the restart attempts made per slot (`restart_history.py`), rebuilt from the
  store when the leader starts.
- `waiting`: when each waiting replacement may start and which task it waits for
  (`delayed_start.py`: swarmkit's DelayStart timers; a new leader restarts them from the
  tasks' last statuses and makes them wait for no task). A waiting task that fails is
  restarted only once its own start falls due (`_Plan.restart_waits`, swarmkit's guard
  against tight restart loops); one that already finished at a leader change has no timer
  and is restarted at once, as swarmkit's taskinit leaves it.
- `started_at_ns`: when this leader's orchestrators started. swarmkit's job orchestrator
  reconciles every job then, which gives each slot given up before a fresh task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.manager.delayed_start import DelayedStart, after_leader_change, is_waiting
from controlplane.manager.restart_history import RestartHistory, SlotId
from controlplane.manager.tasks import is_terminal, slot_key
from controlplane.manager.view import ClusterView
from controlplane.pb.objects_pb2 import Task


@dataclass
class Learned:
    """What a pass did that the leader keeps in memory once its transaction committed."""

    restarts: list[tuple[SlotId, Task]] = field(default_factory=list)  # restarts' new tasks
    waiting: dict[str, DelayedStart] = field(default_factory=dict)  # by new task id
    done_waiting: set[str] = field(default_factory=set)  # replacements started or deleted
    services_gone: set[str] = field(default_factory=set)


@dataclass
class LeaderMemory:
    started_at_ns: int
    restarts: RestartHistory = field(default_factory=RestartHistory)
    waiting: dict[str, DelayedStart] = field(default_factory=dict)

    @classmethod
    def at_start(cls, view: ClusterView, now_ns: int) -> LeaderMemory:
        """A new leader's memory, from the store as swarmkit's taskinit.CheckTasks makes it:
        restart history rebuilt, waiting replacements' timers restarted."""
        slots: dict[SlotId, list[Task]] = {}
        waiting: dict[str, DelayedStart] = {}
        for service in view.services.values():
            for task in view.index.of_service(service.id):
                slot = (service.id, slot_key(service.spec, task))
                slots.setdefault(slot, []).append(task)
                if is_waiting(task) and not is_terminal(task):
                    waiting[task.id] = after_leader_change(task)
        return cls(now_ns, RestartHistory.rebuilt(slots.items()), waiting)

    def learn(self, learned: Learned) -> None:
        """Keep what a committed pass did."""
        for slot, task in learned.restarts:
            self.restarts.record(slot, task)
        self.waiting.update(learned.waiting)
        for task_id in learned.done_waiting:
            self.waiting.pop(task_id, None)
        self.restarts.forget_services(learned.services_gone)
