"""Change notifications for the loops that react to the store (allocator, orchestrator, ...).

The store pushes events into each watch's bounded buffer right after a transaction is applied
and never waits for a reader: applying a Raft entry must not stall because one consumer is
slow. A watch whose buffer is full is closed instead (Swarm drops slow watchers too), and its
reader gets `WatchOverflow`: it has missed events, so it must list the store again and start
a new watch.

A watch is read either from asyncio (`async for event in watch`) or synchronously
(`watch.poll()`, for tests and simulation). Like the store, it belongs to one thread: the one
running the event loop, if any.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType

from controlplane.store.kinds import StoreObject


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    RESTORED = "restored"  # the whole store was replaced by a snapshot: resync from scratch


@dataclass(frozen=True, slots=True)
class Event:
    """One change, at the Raft index that made it.

    `object` is the object after the change (before it, for a delete), a copy of the watcher's
    own. A RESTORED event has no kind and no object.
    """

    action: Action
    index: int
    kind: type[StoreObject] | None = None
    object: StoreObject | None = None


# A predicate sees the store's own object, shared by every watch: it reads, never modifies.
Predicate = Callable[[Event], bool]


class WatchError(Exception):
    """The watch is closed because something went wrong; list the store and watch again."""


class WatchOverflow(WatchError):
    """The reader fell too far behind and missed events."""


class Watch:
    def __init__(
        self,
        kinds: frozenset[type[StoreObject]] | None,
        predicate: Predicate | None,
        maxsize: int,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._kinds = kinds
        self._predicate = predicate
        self._maxsize = maxsize
        self._buffer: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._error: WatchError | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, event: Event) -> bool:
        """Called by the store. Returns False once the watch is closed, so the store drops it.

        Restore events reach every watch, whatever its kinds and predicate: all its earlier
        events are void.
        """
        if self._closed:
            return False
        if event.action is not Action.RESTORED:
            if self._kinds is not None and event.kind not in self._kinds:
                return True
            try:
                if self._predicate is not None and not self._predicate(event):
                    return True
            except Exception as exc:
                # A faulty predicate is its reader's problem, never the store's.
                return self._fail(WatchError(f"watch predicate raised {exc!r}; watch closed"))
            # The watcher's own copy, made only for the events it keeps (a write concerns few
            # watchers): nothing it does with the object can reach the store or another one.
            event = dataclasses.replace(event, object=deepcopy(event.object))
        if len(self._buffer) >= self._maxsize:
            return self._fail(
                WatchOverflow(
                    f"watch fell more than {self._maxsize} events behind the store and was "
                    "closed; list the current state and start a new watch"
                )
            )
        self._buffer.append(event)
        self._ready.set()
        return True

    def poll(self) -> list[Event]:
        """Every buffered event, oldest first; [] when none or closed. Raises WatchError."""
        self._raise_if_failed()
        events = list(self._buffer)
        self._buffer.clear()
        self._ready.clear()
        return events

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        while True:
            self._raise_if_failed()
            if self._buffer:
                return self._buffer.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """Stop receiving; buffered events are dropped and `async for` loops end."""
        self._closed = True
        self._buffer.clear()
        self._ready.set()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _fail(self, error: WatchError) -> bool:
        self.close()
        self._error = error
        return False

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error.with_traceback(None)
