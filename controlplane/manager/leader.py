"""The leader-only loops: allocator -> orchestrator -> scheduler over the replicated store.

The node process starts `LeaderLoops.run()` when this manager becomes the Raft leader and
cancels it when leadership ends. Each pass takes the store's current view and runs the three
pure passes in order; the first one with something to do proposes its transaction, and the
pass starts over on the new state. The view and the allocator are kept between passes, only
as copies of the store, so a loop started on a store that a previous leader left half-way
(tasks allocated but not scheduled, an update between batches, a restart waiting for its
delay) simply continues from there. Both are read from the store when the loop starts and
then kept equal to it by the store's change events (`live_view.py`, `store_allocation.py`);
the view is read again whenever a proposal does not commit, the allocator whenever an
allocation does not, so neither holds what the store does not. Besides them, the loops keep
what swarmkit's orchestrators keep in the leader's memory (`leader_memory.py`: restart
attempts, when a replacement starts and which task it waits for, when this leader started),
made by the first orchestration pass from the store and taught by each orchestration that
committed: a new leader starts from what the store shows, as swarmkit's does.

The loops share the event loop with the Engine API: the change that wakes them is followed,
and the pass started, only after the write that made it has answered its client
(`watch_reading.py`), and a pass yields between its stages, so an API call waits for at most
one stage of a pass, not for whole passes.

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
from controlplane.manager.leader_memory import LeaderMemory
from controlplane.manager.live_view import LiveView
from controlplane.manager.orchestrator import reconcile
from controlplane.manager.scheduler import schedule
from controlplane.manager.store_allocation import StoreAllocation
from controlplane.pb.objects_pb2 import Cluster, Network, Service, Task
from controlplane.raft.core import RaftError
from controlplane.store import Action, ErrorKind, Event, Store, StoreError, Transaction

log = logging.getLogger("controlplane.manager.leader")

Propose = Callable[[bytes], Awaitable[bytes]]
"""Commit a Transaction's bytes through Raft; returns the store's StoreTransactionResult."""
Settle = Callable[[float], Awaitable[None]]
SETTLE_TIMEOUT = 10.0

_RETRY_AT_ONCE = frozenset({ErrorKind.CONFLICT, ErrorKind.NOT_FOUND, ErrorKind.EXISTS})


def _earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _quiet_network(event: Event) -> bool:
    """A network written with its allocation (the creator allocates every network before it is
    written) that is not the ingress network: no service or node needs anything for it."""
    obj = event.object
    return (
        isinstance(obj, Network)
        and event.action is not Action.DELETED
        and bool(obj.vni and obj.ipam)
        and not obj.spec.ingress
    )


def wakes_passes(event: Event) -> bool:
    """Whether a change may give the passes work. A quiet network and a Cluster change (only
    its address pools matter, to the allocator, which follows them itself) give them none: a
    `docker network create` costs the leader no pass."""
    return not (_quiet_network(event) or isinstance(event.object, Cluster))


class LeaderLoops:
    def __init__(
        self,
        store: Store,
        propose: Propose,
        *,
        clock: Callable[[], int] = time.time_ns,
        retry_delay: float = 1.0,
        settle: Settle | None = None,
    ) -> None:
        """`clock` gives wall-clock nanoseconds (task timestamps are wall-clock, as Swarm's).
        `settle(timeout)` returns once this leader's store holds every write acknowledged
        before its term (`Leadership.settle`): the first pass waits for it, so a new leader
        never allocates what an old leader's last writes, committed but not applied here yet,
        already hold."""
        self._settle = settle
        self._store = store
        self._propose = propose
        self._clock = clock
        self._retry_delay = retry_delay
        self._problems: frozenset[str] = frozenset()
        self._view = LiveView(store)
        self._allocation = StoreAllocation(store, on_change=self._changed)
        # Services whose endpoints, tasks or spec changed since the last complete pass (None:
        # every service, e.g. a node changed or the loop just started), and the earliest time
        # a delayed step of any service falls due.
        self._focus: set[str] | None = None
        self._timer: int | None = None
        self._memory: LeaderMemory | None = None  # made by the first pass, on a settled store
        self.passes = 0
        self.proposals = 0
        self.idle = False  # True while waiting for a store change or a timer

    async def run(self) -> None:
        """Run until cancelled."""
        log.info("event=leader_loops_started")
        try:
            await self._settled()
            while True:
                try:
                    progressed, wake_at = await self.step()
                except Exception:
                    # A bug in a pass must not leave the swarm without its leader's loops.
                    log.exception("event=leader_pass_failed")
                    self._allocation.forget()
                    self._view.forget()
                    await asyncio.sleep(self._retry_delay)
                    continue
                if not progressed:
                    await self._sleep(wake_at)
        finally:
            self._allocation.close()
            log.info(
                "event=leader_loops_stopped passes=%d proposals=%d", self.passes, self.proposals
            )

    async def _settled(self) -> None:
        while self._settle is not None:
            try:
                await self._settle(SETTLE_TIMEOUT)
                return
            except RaftError as exc:  # no quorum yet: this leader cannot know its store
                log.warning("event=leader_settle_failed error=%r", str(exc))
                await asyncio.sleep(self._retry_delay)

    async def step(self) -> tuple[bool, int | None]:
        """One pass: propose the first transaction needed. Returns (something was proposed or
        must be retried now, the time in ns when a delayed step falls due).

        A pass looks at the services that changed since the last pass that found nothing to
        do (all of them when nodes, the ingress network or the whole store changed, or a
        timer fell due); tasks, nodes and the scheduler always get a full look."""
        self.passes += 1
        now = self._clock()
        if self._timer is not None and self._timer <= now:
            self._focus, self._timer = None, None
        allocator, known = self._allocation.current()  # notes the changes into _focus
        focus, self._focus = self._focus, set()
        view = self._view.current()
        allocation = allocate(view, now, allocator, focus)
        self._report([*known, *allocation.problems])
        if allocation.partial:
            # A failure that kept part of a claim or edited an object half-way: both are read
            # again. Tasks that cannot get an address (a full subnet) claim nothing: every pass
            # reports them, and rebuilding from the whole store each time cost O(store).
            self._allocation.forget()
            self._view.forget()
        if allocation.transaction is not None:
            if not await self._commit("allocate", allocation.transaction):
                self._allocation.forget()
            self._carry(focus)
            return True, self._timer
        await asyncio.sleep(0)  # let the API's requests in between the stages
        if self._memory is None:
            self._memory = LeaderMemory.at_start(view, now)
        plan = reconcile(view, now, self._memory, focus)
        self._timer = _earliest(plan.wake_at_ns, None if focus is None else self._timer)
        if plan.transaction is not None:
            if await self._commit("orchestrate", plan.transaction):
                self._memory.learn(plan.learned)
            self._carry(focus)
            return True, self._timer
        await asyncio.sleep(0)
        assignments = schedule(view, now)
        if assignments is not None:
            await self._commit("schedule", assignments)
            self._carry(focus)
            return True, self._timer
        return False, self._timer

    def _changed(self, event: Event) -> None:
        """Follow a store change into the view, and note which services it concerns
        (StoreAllocation's callback)."""
        self._view.follow(event)
        obj = event.object
        if self._focus is None or _quiet_network(event) or isinstance(obj, Cluster):
            return
        if isinstance(obj, Service):
            self._focus.add(obj.id)
        elif isinstance(obj, Task):
            self._focus.add(obj.service_id)
        else:  # a node, the ingress network, a network removed, the whole store
            self._focus = None

    def _carry(self, focus: set[str] | None) -> None:
        """A pass that stopped at a proposal leaves its focus to the next one."""
        if self._focus is not None:
            self._focus = None if focus is None else self._focus | focus

    async def _commit(self, stage: str, txn: Transaction) -> bool:
        """Propose `txn`; True when the store applied it. Failures other than a stale state
        wait `retry_delay` first. When it does not apply, the view's objects that the pass
        edited for it are not the store's: the view is read whole again."""
        try:
            result = await self._propose(txn.encode())
        except RaftError as exc:
            self._view.forget()
            log.warning("event=leader_proposal_failed stage=%s error=%r", stage, str(exc))
            await asyncio.sleep(self._retry_delay)
            return False
        self.proposals += 1
        err = StoreError.from_result(result)
        if err is None:
            log.debug("event=leader_proposal stage=%s actions=%d", stage, len(txn))
            return True
        self._view.forget()
        if err.kind in _RETRY_AT_ONCE:
            log.debug("event=leader_proposal_stale stage=%s error=%r", stage, err.message)
            return False
        log.error("event=leader_proposal_refused stage=%s error=%r", stage, err.message)
        await asyncio.sleep(self._retry_delay)
        return False

    def _report(self, problems: list[str]) -> None:
        """Log allocation problems when they change, not on every pass."""
        current = frozenset(problems)
        for problem in sorted(current - self._problems):
            log.warning("event=allocation_problem detail=%r", problem)
        self._problems = current

    async def _sleep(self, wake_at: int | None) -> None:
        timeout = None if wake_at is None else max(0.0, (wake_at - self._clock()) / 1e9)
        self.idle = True
        try:
            await self._allocation.changed(timeout, wakes_passes)
        finally:
            self.idle = False
