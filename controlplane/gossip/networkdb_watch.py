"""Watches on NetworkDB tables, usable from plain code (poll) and from asyncio (a callback).

A watch starts with a CREATE event for every entry it matches, then receives every change, so a
reader that applies the events in order mirrors the tables without a separate initial read.

Without `on_event`, events wait in a bounded queue for `poll()`. A reader that falls `limit`
events behind loses the queue: the watch is closed with `overflowed` set, and the reader opens a
new one (which starts again from a full set of CREATE events) - the same contract as a
compacted etcd watch, and the only way to bound memory without silently losing changes. With
`on_event` (e.g. an asyncio queue's `put_nowait`, or a function that wakes a task), each event is
handed over at once instead of being queued.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from controlplane.gossip.networkdb_types import WatchEvent

EventCallback = Callable[[WatchEvent], object]


class Watch:
    """Changes of the entries of one table and/or one network (None matches any)."""

    __slots__ = ("_events", "_limit", "closed", "network", "on_event", "overflowed", "table")

    def __init__(
        self,
        table: str | None,
        network: str | None,
        limit: int,
        on_event: EventCallback | None,
        initial: list[WatchEvent],
    ) -> None:
        """`initial` (the CREATEs of the current state) does not count against `limit`."""
        self.table = table
        self.network = network
        self.on_event = on_event
        self.closed = False
        self.overflowed = False
        self._events: deque[WatchEvent] = deque()
        self._limit = limit + len(initial)
        for event in initial:
            self.deliver(event)

    def matches(self, table: str, network: str) -> bool:
        return (self.table is None or self.table == table) and (
            self.network is None or self.network == network
        )

    def poll(self) -> list[WatchEvent]:
        """Every event queued since the last poll, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def close(self) -> None:
        """Stop receiving events; NetworkDB forgets closed watches."""
        self.closed = True

    def deliver(self, event: WatchEvent) -> None:
        if self.closed:
            return
        if self.on_event is not None:
            self.on_event(event)
        elif len(self._events) >= self._limit:
            self._events.clear()
            self.overflowed = True
            self.closed = True
        else:
            self._events.append(event)
