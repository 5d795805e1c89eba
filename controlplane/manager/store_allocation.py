"""An Allocator kept equal to the store by the store's own change events, so the leader does
not rebuild it from every network, service, task and node on every pass.

Rebuilding (`Allocator.restore`) parses every subnet and every address in the store: with a
few hundred objects that was most of the leader's CPU, and an API call waited behind it (the
leader's loops run on the API's event loop). Here the allocator is restored once, from a watch
opened before the read (so nothing is missed), and from then on each changed object gives back
what it held and claims what it holds now (`Allocator.claim_*`): the same state a restore of the
store would build, object by object.

A caller that allocates from `current()` changes the allocator ahead of the store. When the
write it proposes commits, the write's own events bring the allocator back in line with the
store; when it does not (refused, failed, outcome unknown) the caller says `forget()` and the
next `current()` restores from the store, as every pass did before. A snapshot restore of the
store, a watch that fell behind, or a change of the cluster's default address pools also
restore from scratch.

Inconsistencies (an address held twice) are reported per object, as `restore` finds them, and
stay reported until that object changes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from controlplane.manager.allocator import Allocator
from controlplane.manager.tasks import started_on_node, wants_running
from controlplane.manager.watch_reading import next_events
from controlplane.pb.objects_pb2 import Cluster, Network, Node, Service, Task
from controlplane.store import Action, Event, Store, StoreObject, Watch, WatchError


def holds_addresses(task: Task) -> bool:
    """Tasks whose addresses count as taken: meant to run, or possibly running on a node
    (restore also skips those whose observed state is terminal)."""
    return wants_running(task) or started_on_node(task)


_NETWORKS = ("networks", "")  # where a restore of every network reports what clashes


def _held(node: Node) -> list[tuple[str, str]]:
    return [(a.network_id, cidr) for a in node.attachments for cidr in a.addresses]


def _pools(cluster: Cluster | None) -> tuple[tuple[str, ...], int]:
    if cluster is None:
        return (), 0
    return tuple(cluster.default_address_pool), cluster.subnet_size


class StoreAllocation:
    def __init__(
        self,
        store: Store,
        kinds: Iterable[type[StoreObject]] | None = None,
        on_change: Callable[[Event], None] = lambda _event: None,
    ) -> None:
        """`kinds`: the object kinds whose allocations to keep (all by default; the network
        creator only needs networks). The Cluster object always counts (its address pools).
        `on_change` sees every change as the allocator follows it, and a RESTORED event when
        the allocator was restored from the whole store (anything may have changed)."""
        self._store = store
        self._on_change = on_change
        self._kinds = None if kinds is None else frozenset({*kinds, Cluster})
        self._watch: Watch | None = None
        self._allocator = Allocator()
        self._pools: tuple[tuple[str, ...], int] = ((), 0)
        self._problems: dict[tuple[str, str], list[str]] = {}
        self.restores = 0  # how many times the allocator was rebuilt from the whole store

    def current(self) -> tuple[Allocator, list[str]]:
        """The allocator of the store as it is now, and the inconsistencies it holds."""
        if self._watch is None:
            self._rebuild()
        else:
            try:
                events = self._watch.poll()
            except WatchError:
                self._rebuild()
            else:
                self._follow(events)
        return self._allocator, [p for found in self._problems.values() for p in found]

    def forget(self) -> None:
        """The allocator holds what the store may never have: restore it at the next use."""
        self.close()

    async def changed(
        self, timeout: float | None, wakes: Callable[[Event], bool] = lambda _event: True
    ) -> bool:
        """Follow the store's changes until one that `wakes` accepts (True), or until `timeout`
        seconds pass (False). A restore from the whole store counts as such a change."""
        if self._watch is None:
            self._rebuild()
        try:
            if timeout is None:  # no timer: no Timeout to arm and cancel on every change
                return await self._next_waking(wakes)
            async with asyncio.timeout(timeout):
                return await self._next_waking(wakes)
        except TimeoutError:
            return False
        except (WatchError, StopAsyncIteration):
            self.forget()
            return True

    async def _next_waking(self, wakes: Callable[[Event], bool]) -> bool:
        while True:
            assert self._watch is not None
            events = await next_events(self._watch)  # after the writer has answered
            if not self._follow(events) or any(wakes(event) for event in events):
                return True

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self._watch = None

    # ---- internals -------------------------------------------------------------------------

    def _rebuild(self) -> None:
        self.close()
        self._watch = self._store.watch(self._kinds)
        store = self._store
        clusters = store.list(Cluster)
        cluster = clusters[0] if clusters else None
        self._pools = _pools(cluster)
        self._allocator = Allocator.for_cluster(cluster) if cluster is not None else Allocator()
        self._problems = {}
        wanted = self._kinds
        allocator = self._allocator
        networks = store.list(Network) if wanted is None or Network in wanted else []
        self._note(_NETWORKS, allocator.restore(networks, (), ()))
        for service in store.list(Service) if wanted is None or Service in wanted else ():
            self._note(("Service", service.id), allocator.claim_service(service))
        for task in store.list(Task) if wanted is None or Task in wanted else ():
            if holds_addresses(task):
                self._note(("Task", task.id), allocator.claim_task(task))
        for node in store.list(Node) if wanted is None or Node in wanted else ():
            self._note(("Node", node.id), allocator.claim_attachments(node.id, _held(node)))
        self.restores += 1
        self._on_change(Event(Action.RESTORED, store.applied_index))

    def _follow(self, events: Iterable[Event]) -> bool:
        """Apply changes in order; False if one needed a restore from the store (done)."""
        for event in events:
            if not self._apply(event):
                self._rebuild()
                return False
            self._on_change(event)
        return True

    def _note(self, key: tuple[str, str], problems: list[str]) -> None:
        if problems:
            self._problems[key] = problems
        else:
            self._problems.pop(key, None)

    def _apply(self, event: Event) -> bool:
        """Bring the allocator up to one change; False when only a restore can."""
        obj = event.object
        if event.action is Action.RESTORED or obj is None:
            return False
        allocator = self._allocator
        deleted = event.action is Action.DELETED
        key = (type(obj).__name__, obj.id)
        found: list[str] = []
        match obj:
            case Cluster():
                return deleted or _pools(obj) == self._pools
            case Network():
                self._problems.pop(_NETWORKS, None)  # a restore's findings may be void now
                if deleted:
                    allocator.release_network(obj.id)
                else:
                    found = allocator.claim_network(obj)
            case Service():
                if deleted:
                    allocator.release_service(obj.id)
                else:
                    found = allocator.claim_service(obj)
            case Task():
                if deleted or not holds_addresses(obj):
                    allocator.release_task(obj.id)
                else:
                    found = allocator.claim_task(obj)
            case Node():
                found = allocator.claim_attachments(obj.id, [] if deleted else _held(obj))
        self._note(key, found)
        return True
