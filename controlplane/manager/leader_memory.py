"""What the leader's orchestrators keep in memory for as long as this manager leads, as
swarmkit's do, and so forget at a leader change. Pure: passes read it; LeaderLoops teaches
it what a committed pass did.

- `restarts`: the restart attempts made per slot (`restart_history.py`), rebuilt from the
  store when the leader starts.
- `replaced`: which task a waiting replacement waits for (swarmkit's DelayStart watches the
  one task it replaces; a new leader's waits for none, only for the start time).
- `started_at_ns`: when this leader's orchestrators started. swarmkit's job orchestrator
  reconciles every job then, which gives each slot given up before a fresh task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.manager.restart_history import RestartHistory, SlotId
from controlplane.manager.tasks import slot_key
from controlplane.manager.view import ClusterView
from controlplane.pb.objects_pb2 import Task


@dataclass
class Learned:
    """What a pass did that the leader keeps in memory once its transaction committed."""

    restarts: list[tuple[SlotId, Task]] = field(default_factory=list)  # restarts' new tasks
    replaced: dict[str, str] = field(default_factory=dict)  # new task id -> the one it waits for
    done_waiting: set[str] = field(default_factory=set)  # replacements started or deleted
    services_gone: set[str] = field(default_factory=set)


@dataclass
class LeaderMemory:
    started_at_ns: int
    restarts: RestartHistory = field(default_factory=RestartHistory)
    replaced: dict[str, str] = field(default_factory=dict)

    @classmethod
    def at_start(cls, view: ClusterView, now_ns: int) -> LeaderMemory:
        """A new leader's memory: restart history rebuilt from the store (swarmkit's
        taskinit.CheckTasks), nothing known of what waiting replacements replace."""
        slots: dict[SlotId, list[Task]] = {}
        for service in view.services.values():
            for task in view.index.of_service(service.id):
                slot = (service.id, slot_key(service.spec, task))
                slots.setdefault(slot, []).append(task)
        return cls(now_ns, RestartHistory.rebuilt(slots.items()))

    def learn(self, learned: Learned) -> None:
        """Keep what a committed pass did."""
        for slot, task in learned.restarts:
            self.restarts.record(slot, task)
        self.replaced.update(learned.replaced)
        for task_id in learned.done_waiting:
            self.replaced.pop(task_id, None)
        self.restarts.forget_services(learned.services_gone)
