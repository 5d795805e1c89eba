"""The leader's ClusterView, kept equal to the store by its change events instead of read whole
for every pass: after a service create the next pass decodes that one service, not every
object of the store (with 2,000 services, reading the view was 40% of the leader's loop).
Its tasks are kept in a `TaskIndex` (by service, by state, node load), so a task's change
costs the view that one task, not a sort of all of them.

The passes edit the view's objects in place as they build their transaction. What they edit
they also write, so once that transaction commits, its events bring the stored objects back
into the view; when it does not commit, or a pass reports problems (it may have stopped
half-way through editing an object), the view is read whole again at its next use, as after a
restore of the store or a watch that fell behind.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from controlplane.manager.view import ClusterView
from controlplane.pb.objects_pb2 import Cluster, Network, Node, Service, Task
from controlplane.store import Action, Event, Store, StoreObject

_Obj = TypeVar("_Obj", bound=StoreObject)


class LiveView:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._view: ClusterView | None = None  # None: read the whole store at the next use
        self.reads = 0  # how many times the view was read whole (tests follow it)

    def current(self) -> ClusterView:
        """The view of the store as of the last event followed."""
        if self._view is None:
            self._view = ClusterView.read(self._store)
            self.reads += 1
        return self._view

    def forget(self) -> None:
        """The view's objects may differ from the store's: read it whole at the next use."""
        self._view = None

    def follow(self, event: Event) -> None:
        """Bring the view up to one change of the store (every kind, in commit order)."""
        view, obj = self._view, event.object
        if view is None:
            return
        if event.action is Action.RESTORED or obj is None:
            self._view = None
            return
        deleted = event.action is Action.DELETED
        if isinstance(obj, Task):
            if deleted:
                view.index.remove(obj.id)
            else:
                view.index.put(obj)
        elif isinstance(obj, Service):
            _put(view.services, obj, deleted)
        elif isinstance(obj, Network):
            _put(view.networks, obj, deleted)
        elif isinstance(obj, Node):
            _put(view.nodes, obj, deleted)
        elif isinstance(obj, Cluster):
            self._view = dataclasses.replace(view, cluster=None if deleted else obj)


def _put(table: dict[str, _Obj], obj: _Obj, deleted: bool) -> None:
    if deleted:
        table.pop(obj.id, None)
    else:
        table[obj.id] = obj
