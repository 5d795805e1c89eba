"""One node's engine events, what `docker events` streams: the parts of the node that change
something (the container runtime, exec sessions, network attachments, and on managers the
store watcher of `manager/store_events.py`) publish here; `api/events.py` serves them.

As dockerd: the last 256 events are kept for `--since`, each subscriber gets every event
published after it subscribed. A subscriber that falls far behind is dropped (its stream
ends) rather than slowing down the node or holding memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

KEPT_EVENTS = 256  # dockerd's eventsLimit
SUBSCRIBER_BACKLOG = 4096  # events a subscriber may be behind before it is dropped


@dataclass(frozen=True)
class EngineEvent:
    type: str  # "container", "network", "service", "node"
    action: str
    actor_id: str
    attributes: Mapping[str, str]
    scope: str  # "local" (this node) or "swarm" (the cluster's store, on managers)
    time_ns: int

    def message(self) -> dict[str, Any]:
        """Docker's EventMessage. Container events also carry the deprecated `status`, `id`
        and `from` that dockerd still fills; attributes are sorted, as Go marshals maps."""
        body: dict[str, Any] = {}
        if self.type == "container":
            body = {"status": self.action, "id": self.actor_id, "from": self.attributes["image"]}
        return body | {
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": dict(sorted(self.attributes.items()))},
            "scope": self.scope,
            "time": self.time_ns // 1_000_000_000,
            "timeNano": self.time_ns,
        }


@dataclass
class Subscription:
    """The events published since `EventHub.subscribe`; `next()` raises `SubscriberDropped`
    once the subscriber fell `SUBSCRIBER_BACKLOG` events behind."""

    _queue: asyncio.Queue[EngineEvent | None] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_BACKLOG)
    )
    dropped: bool = False

    def offer(self, event: EngineEvent) -> bool:
        """False when this subscriber is too far behind (it is then dropped)."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True
            self._queue.get_nowait()  # room for the end marker
            self._queue.put_nowait(None)
            return False
        return True

    async def next(self) -> EngineEvent:
        event = await self._queue.get()
        if event is None:
            raise SubscriberDropped(
                f"the events reader fell more than {SUBSCRIBER_BACKLOG} events behind and was "
                "dropped; run `docker events` again (with --since to catch up)"
            )
        return event


class SubscriberDropped(Exception):
    pass


class EventHub:
    """A node's events. Belongs to the node's event loop."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._kept: deque[EngineEvent] = deque(maxlen=KEPT_EVENTS)
        self._subscribers: list[Subscription] = []
        # Names and drivers of networks by id, for the network events of this node (the
        # node sets it to its data path's view); unknown ids are shown by id.
        self.network_names: Callable[[str], tuple[str, str] | None] = lambda _id: None

    def publish(
        self,
        type_: str,
        action: str,
        actor_id: str,
        attributes: Mapping[str, str],
        *,
        scope: str = "local",
        time_ns: int | None = None,
    ) -> EngineEvent:
        event = EngineEvent(
            type_,
            action,
            actor_id,
            dict(attributes),
            scope,
            self._clock() if time_ns is None else time_ns,
        )
        self._kept.append(event)
        kept = [s for s in self._subscribers if s.offer(event)]
        if len(kept) < len(self._subscribers):
            log.warning("event=events_subscriber_dropped behind=%d", SUBSCRIBER_BACKLOG)
        self._subscribers = kept
        return event

    def container(
        self,
        action: str,
        container_id: str,
        name: str,
        image: str,
        labels: Mapping[str, str],
        **extra: str,
    ) -> None:
        """dockerd's container events: the container's labels, `image`, `name`, and the
        action's own attributes (`exitCode`, `signal`, `execID`)."""
        self.publish(
            "container", action, container_id, {**labels, "image": image, "name": name, **extra}
        )

    def network(self, action: str, network_id: str, **extra: str) -> None:
        """A local network event (`connect`/`disconnect` with `container`): named and typed
        from the node's view of the network."""
        name, driver = self.network_names(network_id) or (network_id, "overlay")
        self.publish("network", action, network_id, {**extra, "name": name, "type": driver})

    def kept(self) -> list[EngineEvent]:
        """The events still kept, oldest first."""
        return list(self._kept)

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
