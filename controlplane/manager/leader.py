"""The leader-only loops: allocator -> orchestrator -> scheduler over the replicated store.

The node process starts `LeaderLoops.run()` when this manager becomes the Raft leader and
cancels it when leadership ends. Each pass reads the store afresh and runs the three pure
passes in order; the first one with something to do proposes its transaction, and the pass
starts over on the new state. Nothing is remembered between passes, so a loop started on a
store that a previous leader left half-way (tasks allocated but not scheduled, an update
between batches, a restart waiting for its delay) simply continues from there.

When no pass has anything to do the loop sleeps until the store changes (a watch) or until a
delayed step falls due (a restart delay, an update delay), never polling. A refused proposal
because the state moved under it (version conflict, object gone) is retried at once on the new
state; any other failure (no quorum, a timeout, a refusal that would repeat, even a bug in a
pass, logged with its traceback) waits `retry_delay` before the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from controlplane.manager.allocation import allocate
from controlplane.manager.orchestrator import reconcile
from controlplane.manager.scheduler import schedule
from controlplane.manager.view import ClusterView
from controlplane.raft.core import RaftError
from controlplane.store import ErrorKind, Store, StoreError, Transaction, Watch, WatchError

log = logging.getLogger("controlplane.manager.leader")

Propose = Callable[[bytes], Awaitable[bytes]]
"""Commit a Transaction's bytes through Raft; returns the store's StoreTransactionResult."""

_RETRY_AT_ONCE = frozenset({ErrorKind.CONFLICT, ErrorKind.NOT_FOUND, ErrorKind.EXISTS})


class LeaderLoops:
    def __init__(
        self,
        store: Store,
        propose: Propose,
        *,
        clock: Callable[[], int] = time.time_ns,
        retry_delay: float = 1.0,
    ) -> None:
        """`clock` gives wall-clock nanoseconds (task timestamps are wall-clock, as Swarm's)."""
        self._store = store
        self._propose = propose
        self._clock = clock
        self._retry_delay = retry_delay
        self._problems: frozenset[str] = frozenset()
        self.passes = 0
        self.proposals = 0
        self.idle = False  # True while waiting for a store change or a timer

    async def run(self) -> None:
        """Run until cancelled."""
        log.info("event=leader_loops_started")
        watch = self._store.watch()
        try:
            while True:
                watch = self._drain(watch)
                try:
                    progressed, wake_at = await self.step()
                except Exception:
                    # A bug in a pass must not leave the swarm without its leader's loops.
                    log.exception("event=leader_pass_failed")
                    await asyncio.sleep(self._retry_delay)
                    continue
                if not progressed:
                    watch = await self._sleep(watch, wake_at)
        finally:
            watch.close()
            log.info(
                "event=leader_loops_stopped passes=%d proposals=%d", self.passes, self.proposals
            )

    async def step(self) -> tuple[bool, int | None]:
        """One pass: propose the first transaction needed. Returns (something was proposed or
        must be retried now, the time in ns when a delayed step falls due)."""
        self.passes += 1
        now = self._clock()
        view = ClusterView.read(self._store)
        allocation = allocate(view, now)
        self._report(allocation.problems)
        if allocation.transaction is not None:
            return await self._commit("allocate", allocation.transaction), None
        plan = reconcile(view, now)
        if plan.transaction is not None:
            return await self._commit("orchestrate", plan.transaction), plan.wake_at_ns
        assignments = schedule(view, now)
        if assignments is not None:
            return await self._commit("schedule", assignments), plan.wake_at_ns
        return False, plan.wake_at_ns

    async def _commit(self, stage: str, txn: Transaction) -> bool:
        try:
            result = await self._propose(txn.encode())
        except RaftError as exc:
            log.warning("event=leader_proposal_failed stage=%s error=%r", stage, str(exc))
            await asyncio.sleep(self._retry_delay)
            return True
        self.proposals += 1
        err = StoreError.from_result(result)
        if err is None:
            log.debug("event=leader_proposal stage=%s actions=%d", stage, len(txn))
            return True
        if err.kind in _RETRY_AT_ONCE:
            log.debug("event=leader_proposal_stale stage=%s error=%r", stage, err.message)
            return True
        log.error("event=leader_proposal_refused stage=%s error=%r", stage, err.message)
        await asyncio.sleep(self._retry_delay)
        return True

    def _report(self, problems: list[str]) -> None:
        """Log allocation problems when they change, not on every pass."""
        current = frozenset(problems)
        for problem in sorted(current - self._problems):
            log.warning("event=allocation_problem detail=%r", problem)
        self._problems = current

    def _drain(self, watch: Watch) -> Watch:
        """Forget the buffered events (each pass reads the whole state); a broken watch is
        replaced."""
        try:
            watch.poll()
            return watch
        except WatchError:
            return self._store.watch()

    async def _sleep(self, watch: Watch, wake_at: int | None) -> Watch:
        timeout = None if wake_at is None else max(0.0, (wake_at - self._clock()) / 1e9)
        self.idle = True
        try:
            await asyncio.wait_for(watch.__anext__(), timeout)
        except TimeoutError:
            pass
        except (WatchError, StopAsyncIteration):
            watch.close()
            return self._store.watch()
        finally:
            self.idle = False
        return watch
