"""A value a manager derives from the swarm's Cluster object and reads on hot paths (every
gRPC call, every Raft Ready): derived again only when the Cluster changed in the store (a
watch polled without waiting), so reading it costs next to nothing. Until a Cluster exists
(before `swarm init`, or ever in a Raft-only lab) there is no watch, which would make every
write of the store announce its changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from controlplane.pb.objects_pb2 import Cluster
from controlplane.store import Store, Watch, WatchError

T = TypeVar("T")


class FollowedCluster(Generic[T]):
    def __init__(self, store: Store, derive: Callable[[Cluster | None], T]) -> None:
        """`derive` gets the Cluster (None before `swarm init` wrote it)."""
        self._store = store
        self._derive = derive
        self._watch: Watch | None = None
        self._value: T = derive(None)

    def current(self) -> T:
        try:
            changed = self._watch is None or self._watch.closed or bool(self._watch.poll())
        except WatchError:  # it fell behind: read the Cluster again
            changed = True
        if changed:
            clusters = self._store.list(Cluster)
            if clusters and (self._watch is None or self._watch.closed):
                self._watch = self._store.watch(kinds=(Cluster,), maxsize=16)
            self._value = self._derive(clusters[0] if clusters else None)
        return self._value
