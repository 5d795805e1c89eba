"""Restart attempts (`--restart-max-attempts`) as swarmkit's restart supervisor counts them:
in the leader's memory, per slot. Pure: tasks in, counts out.

swarmkit 20.10 (`manager/orchestrator/restart/restart.go`, `taskinit/init.go`):
- A restart (a successor made because a task finished or left its node) is recorded when
  its task is made, stamped with the task's creation time, if its restart policy sets
  `max_attempts` (nothing counts them otherwise). A slot is a service's replica number, or
  its node for a global service. A restart of another spec version (`Task.spec_version`:
  every service update makes one, `service scale` too) than the slot's recorded ones starts
  the count again.
- A task may be restarted while its slot has fewer than `max_attempts` restarts of its spec
  version; with a window, counting only those made in the window before the task's last
  status.
- The history lives as long as the leader's orchestrator: a new leader rebuilds it from the
  store (`rebuilt`): in each slot, of the tasks of the highest spec version, all but the
  oldest count as restarts made at their creation. That is why the task history
  limit keeps `max_attempts + 1` tasks per slot (`kept_per_slot`), as swarmkit's task reaper
  does. Where the two differ (a slot reused by a scale-up, a task the history limit still
  deleted), the new leader counts what the store shows, as swarmkit's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controlplane.manager.tasks import SlotKey
from controlplane.pb.objects_pb2 import ServiceSpec, Task

SlotId = tuple[str, SlotKey]
"""A slot of a service: (service id, replica number or node id)."""


@dataclass
class _SlotRestarts:
    spec_version: int  # of the restarts counted
    made_at_ns: list[int] = field(default_factory=list)  # oldest first


class RestartHistory:
    """The restarts made in each slot, as this leader knows them."""

    def __init__(self) -> None:
        self._slots: dict[SlotId, _SlotRestarts] = {}

    @classmethod
    def rebuilt(cls, slots: Iterable[tuple[SlotId, list[Task]]]) -> RestartHistory:
        """A new leader's history, from each slot's tasks in the store."""
        history = cls()
        for slot, tasks in slots:
            if not tasks:
                continue
            ordered = sorted(tasks, key=lambda t: (t.meta.created_at_ns, t.id))
            version = max(t.spec_version for t in tasks)
            for task in [t for t in ordered if t.spec_version == version][1:]:
                history.record(slot, task)
        return history

    def record(self, slot: SlotId, task: Task) -> None:
        """`task` was made in `slot` by a restart."""
        policy = task.spec.restart_policy
        if not policy.max_attempts:
            return
        known = self._slots.get(slot)
        if known is None or known.spec_version != task.spec_version:
            known = self._slots[slot] = _SlotRestarts(task.spec_version)
        made_at = task.meta.created_at_ns
        known.made_at_ns.append(made_at)
        if policy.window_ns:
            # Any later failure is stamped after `made_at`: older restarts never count again.
            known.made_at_ns = [at for at in known.made_at_ns if at > made_at - policy.window_ns]

    def restarts(self, slot: SlotId, task: Task) -> int:
        """The restarts that count against restarting `task` (which stopped in `slot`)."""
        known = self._slots.get(slot)
        if known is None or known.spec_version != task.spec_version:
            return 0
        window = task.spec.restart_policy.window_ns
        if not window:
            return len(known.made_at_ns)
        stamp = task.status.timestamp_ns
        return sum(1 for at in known.made_at_ns if stamp - window < at < stamp)

    def may_restart(self, slot: SlotId, task: Task) -> bool:
        """Whether `task`'s restart policy allows one more attempt in `slot`."""
        limit = task.spec.restart_policy.max_attempts
        return not limit or self.restarts(slot, task) < limit

    def forget_services(self, service_ids: Iterable[str]) -> None:
        """Removed services (swarmkit's ClearServiceHistory)."""
        gone = set(service_ids)
        if gone:
            self._slots = {k: v for k, v in self._slots.items() if k[0] not in gone}


def kept_per_slot(spec: ServiceSpec, history_limit: int) -> int:
    """Tasks the history limit keeps per slot: `max_attempts + 1` when set (swarmkit's task
    reaper keeps them, over the cluster's limit, so that a new leader can count the slot's
    restarts), else the cluster's limit."""
    attempts = spec.restart_policy.max_attempts
    return attempts + 1 if attempts else history_limit
