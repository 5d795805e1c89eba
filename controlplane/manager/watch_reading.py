"""Reading a store watch on the event loop of the Engine API without delaying a write's answer.

When a Raft entry is applied, the store pushes its events into the watches first and only then
completes the proposal that wrote it: the watchers' tasks are woken ahead of the handler
waiting for that proposal, so whatever they do with the event (the leader's allocator and view
following it, `docker events` publishing it) ran on the path of the client's answer. A reader
that yields once after waking goes behind that handler, and reads the events buffered
meanwhile together.
"""

from __future__ import annotations

import asyncio

from controlplane.store import Event, Watch


async def next_events(watch: Watch) -> list[Event]:
    """The watch's next events (at least one, oldest first), read after the tasks woken by the
    same write have run. Raises StopAsyncIteration once the watch is closed and WatchError as
    the watch does."""
    first = await watch.__anext__()
    await asyncio.sleep(0)
    return [first, *watch.poll()]
