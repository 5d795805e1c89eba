"""This manager's standing as the Raft leader, for work the leader does from its own store.

Every write of a term goes through its leader, and the leader answers a write only once it has
applied it, so a leader's store holds every acknowledged write of its term. Writes of earlier
terms are another matter: a new leader commits what its predecessors left in its log only with
its first entry of the new term, and applies them after. Until then its store can lack a write
an old leader allocated from (a subnet, a VNI) and may even have acknowledged.

`settle` closes that gap once per term: a ReadIndex (which the Raft core answers only after
the leader has committed an entry of its own term) and a wait until the store has applied up
to it. From then on, until the term ends, the store is complete: no entry of an older term can
commit any more, and this term's entries are this leader's own. Work that allocates from the
store (the network creator) or checks it before a guarded write (the API's writes) needs no
further round trip in that term.
"""

from __future__ import annotations

import asyncio

from controlplane.raft.core import NotLeaderError
from controlplane.raft.driver import RaftDriver
from controlplane.raft.errors import NoLeaderError
from controlplane.raft.types import NONE, Role


class Leadership:
    def __init__(self, driver: RaftDriver) -> None:
        self._driver = driver
        self._settled_term = 0

    @property
    def leading(self) -> bool:
        return self._driver.core.role is Role.LEADER

    @property
    def settled_term(self) -> int:
        """The last term `settle` completed in (0: none yet)."""
        return self._settled_term

    @property
    def settled(self) -> bool:
        """This manager leads and its store holds every write acknowledged so far."""
        return self.leading and self._settled_term == self._driver.core.term

    async def settle(self, timeout: float) -> None:
        """Make `settled` true, or raise `NotLeaderError` (a follower) or a Raft error (no
        quorum confirmed the leadership in time)."""
        if self.settled:
            return
        core = self._driver.core
        if not self.leading:
            raise NotLeaderError(core.leader)
        term = core.term
        index = await self._driver.read_index_local(timeout)
        await self._driver.wait_applied(index, timeout)
        if core.term == term:
            self._settled_term = term

    async def propose_local(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        """Propose on this manager (`NotLeaderError` if it does not lead); (index, result).

        The driver keeps waiting for a proposal when its leader steps down (the entry may
        still commit under the next leader), so the wait ends early with `NoLeaderError` once
        no manager has led for two election timeouts: a lost quorum answers as Docker does
        ("The swarm does not have a leader"), not after the whole write timeout.

        The proposal is awaited in the caller's own task and a timer checks the leader once
        per tick, cancelling that task when it gives up (as `asyncio.timeout` does): no task
        of its own and no `asyncio.wait` per write, each of which cost a network create two
        more turns of the event loop before and after the commit."""
        watch = _LeaderWatch(self._driver)
        try:
            return await self._driver.propose_local(data, timeout)
        except asyncio.CancelledError:
            if watch.gave_up and watch.uncancel() == 0:
                raise NoLeaderError() from None
            raise
        finally:
            watch.stop()


class _LeaderWatch:
    """Cancels the task that made it once no manager has led for two election timeouts,
    checking once per tick while it runs."""

    def __init__(self, driver: RaftDriver) -> None:
        self._driver = driver
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._no_leader_since: float | None = None
        self.gave_up = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            driver.profile.tick_seconds, self._check
        )

    def _check(self) -> None:
        profile, now = self._driver.profile, self._loop.time()
        if self._driver.core.leader != NONE:
            self._no_leader_since = None
        elif self._no_leader_since is None:
            self._no_leader_since = now
        elif now - self._no_leader_since > 2 * profile.election_timeout and self._task:
            self.gave_up, self._timer = True, None
            self._task.cancel()
            return
        self._timer = self._loop.call_later(profile.tick_seconds, self._check)

    def uncancel(self) -> int:
        """Withdraw this watch's cancellation; the cancellations still asked for by others."""
        return self._task.uncancel() if self._task else 0

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
