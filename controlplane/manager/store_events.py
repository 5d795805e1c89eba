"""The swarm-scope engine events of a manager: dockerd turns the changes of swarmkit's store
into `docker events` messages with `scope: swarm`, and so does this watcher, on every manager
(each applies the same Raft log to its own store).

Nodes, services, networks, secrets and configs give `create`, `update` and `remove`, with
`name` (never a secret's data) and, for an update, what changed: a node's `state`,
`availability` and `role`, a service's `image`, `replicas` and `updatestate`, each as `.old`
and `.new`. The time is the object's own
(created or updated in the store); a removal has none, so it is the moment it is seen.
"""

from __future__ import annotations

import asyncio
import logging
import time

from controlplane.event_hub import EventHub
from controlplane.manager.watch_reading import next_events
from controlplane.pb.objects_pb2 import Config, Network, Node, Secret, Service
from controlplane.store import Action, Event, Store, WatchError
from controlplane.store.kinds import name_of

log = logging.getLogger(__name__)

Watched = Node | Service | Network | Secret | Config
KINDS: tuple[type[Watched], ...] = (Node, Service, Network, Secret, Config)
ACTIONS = {Action.CREATED: "create", Action.UPDATED: "update", Action.DELETED: "remove"}


def changes(old: Watched, new: Watched) -> dict[str, str]:
    """The `.old`/`.new` attributes dockerd adds to an update event."""
    pairs: list[tuple[str, str, str]] = []
    if isinstance(old, Node) and isinstance(new, Node):
        pairs = [
            ("state", old.status.state, new.status.state),
            ("availability", old.spec.availability, new.spec.availability),
            ("role", old.role, new.role),
        ]
    elif isinstance(old, Service) and isinstance(new, Service):
        pairs = [("image", old.spec.container.image, new.spec.container.image)]
        if old.spec.WhichOneof("mode") == new.spec.WhichOneof("mode") == "replicas":
            pairs.append(("replicas", str(old.spec.replicas), str(new.spec.replicas)))
        if new.HasField("update_status"):
            pairs.append(("updatestate", old.update_status.state, new.update_status.state))
    out: dict[str, str] = {}
    for key, before, after in pairs:
        if before != after:
            if before:
                out[f"{key}.old"] = before
            out[f"{key}.new"] = after
    return out


class StoreEvents:
    """Watches one manager's store and publishes its changes to the node's event hub."""

    def __init__(self, store: Store, hub: EventHub, replayed_until: int = 0) -> None:
        """Changes at Raft indexes up to `replayed_until` are the manager's own log applied
        again after a restart: they were news before it, so they give no event now."""
        self._store = store
        self._hub = hub
        self._replayed_until = replayed_until
        self._seen: dict[str, Watched] = {}  # by id: the version the last event described

    async def run(self) -> None:
        """Until cancelled; a watch that overflows is restarted from a fresh listing (the
        changes missed meanwhile give no event, as a restarted dockerd would not give them)."""
        while True:
            watch = self._store.watch(KINDS, maxsize=4096)
            self._seen = self._listing()
            try:
                while True:
                    for event in await next_events(watch):  # after the writer has answered
                        self._take(event)
            except StopAsyncIteration:
                pass
            except WatchError as err:
                log.warning("event=store_events_resync error=%s", err)
            finally:
                watch.close()
            await asyncio.sleep(0)

    def _take(self, event: Event) -> None:
        if event.action is Action.RESTORED:
            self._seen = self._listing()
        elif event.index <= self._replayed_until and isinstance(event.object, Watched):
            self._remember(event.action, event.object)
        elif isinstance(event.object, Watched):
            self._publish(event.action, event.object)

    def _listing(self) -> dict[str, Watched]:
        store = self._store
        listed: tuple[list[Watched], ...] = (
            list(store.list(Node)),
            list(store.list(Service)),
            list(store.list(Network)),
            list(store.list(Secret)),
            list(store.list(Config)),
        )
        return {o.id: o for objects in listed for o in objects}

    def _remember(self, action: Action, obj: Watched) -> None:
        if action is Action.DELETED:
            self._seen.pop(obj.id, None)
        else:
            self._seen[obj.id] = obj

    def _publish(self, action: Action, obj: Watched) -> None:
        name = {"name": name_of(obj)}
        old = self._seen.get(obj.id)
        changed = changes(old, obj) if action is Action.UPDATED and old is not None else {}
        self._remember(action, obj)
        if action is Action.DELETED:
            when = time.time_ns()
        else:
            created = action is Action.CREATED
            when = obj.meta.created_at_ns if created else obj.meta.updated_at_ns
        kind = type(obj).DESCRIPTOR.name.lower()
        for verb, attributes in _as_dockerd_tells_them(action, obj, name, changed):
            self._hub.publish(kind, verb, obj.id, attributes, scope="swarm", time_ns=when or None)


def _as_dockerd_tells_them(
    action: Action, obj: Watched, name: dict[str, str], changed: dict[str, str]
) -> list[tuple[str, dict[str, str]]]:
    """The events of one write, as `docker events` shows swarmkit's writes. One of ours is
    two writes in swarmkit: a network is created, then written again once its allocator has
    given it a subnet and a VNI (`create`, then `update`). (A service update and the rolling
    update's `updating` state are two writes here too: the API's, then the orchestrator's.)"""
    if action is Action.CREATED and isinstance(obj, Network):
        return [("create", name), ("update", name)]
    return [(ACTIONS[action], name | changed)]
