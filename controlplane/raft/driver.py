"""The asyncio driver that runs a Raft core for real: ticks, fsync, gRPC, applying entries.

One loop owns the ordering of each `Ready`: persist (group commit: everything proposed while
the previous batch was being fsynced goes into the next one), send, apply, advance. Clients
call `propose` / `linearizable_read` from any manager: a follower forwards to the leader and
then waits until it has applied the leader's answer, so a client reads its own writes on the
manager it talks to. Every wait has a deadline; the errors say what happened (`errors.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc

from controlplane.pb import raft_pb2
from controlplane.raft.codec import (
    decode_batch,
    decode_conf_change,
    encode_batch,
    encode_conf_change,
)
from controlplane.raft.core import ConfChangeError, Config, NotLeaderError, RaftError, RaftNode
from controlplane.raft.errors import (
    NoLeaderError,
    ProposalDroppedError,
    ProposalTimeoutError,
    RemoteNotLeaderError,
    TransportError,
)
from controlplane.raft.storage import RaftStorage, RecoveredState
from controlplane.raft.transport import Credentials, Transport
from controlplane.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    Ready,
    Role,
    Snapshot,
)
from controlplane.wire import CodecError

log = logging.getLogger("controlplane.raft")
T = TypeVar("T")

# How often proposals waiting for their entry are checked against their deadlines: a
# proposal fails with ProposalTimeoutError at most this much after its timeout.
DEADLINE_SWEEP_SECONDS = 0.05
# Entries a leader lets replicate before holding new proposals back (see _pipeline_full).
MAX_UNCOMMITTED_ENTRIES = 1
# Entries of one write each, in a row, after which the only voter syncs on its event loop
# (see _sync_on_loop): a lone writer's pattern, which concurrent writers seldom keep up.
LONE_WRITES_BEFORE_LOOP_SYNC = 8
# ... as long as its syncs take less than this, on a moving average: a slow disk (or a loaded
# machine's) would stall everything else on the loop, which a thread overlaps with the sync.
LOOP_SYNC_LIMIT_SECONDS = 0.001


@dataclass(frozen=True)
class Profile:
    """Raft timing. Swarm's defaults: a 1 s tick, election after 10 ticks, heartbeat each tick."""

    name: str
    tick_seconds: float
    election_tick: int
    heartbeat_tick: int

    @property
    def election_timeout(self) -> float:
        return self.tick_seconds * self.election_tick


PROFILES = {
    "swarm": Profile("swarm", tick_seconds=1.0, election_tick=10, heartbeat_tick=1),
    "lab": Profile("lab", tick_seconds=0.1, election_tick=10, heartbeat_tick=1),
}


class StateMachine(Protocol):
    def apply(self, index: int, data: bytes) -> bytes: ...

    def apply_batch(self, index: int, transactions: Sequence[bytes]) -> list[bytes]: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes, index: int) -> None: ...


def bootstrap(storage: RaftStorage, node_id: int, address: str) -> None:
    """Start a new cluster whose only voting member is this node (`swarm init`)."""
    change = ConfChange(ConfChangeType.PROMOTE, node_id, address)
    first = Entry(term=1, index=1, type=EntryType.CONF_CHANGE, data=encode_conf_change(change))
    storage.save([first], HardState(term=1, vote=NONE, commit=1))


def new_id(taken: set[int] | None = None) -> int:
    """A random non-zero 63-bit id (cluster or node), avoiding `taken`."""
    while True:
        value = int.from_bytes(os.urandom(8), "big") >> 1
        if value and value not in (taken or set()):
            return value


class RaftDriver:
    def __init__(
        self,
        *,
        storage: RaftStorage,
        recovered: RecoveredState,
        state_machine: StateMachine,
        listen: str,
        profile: Profile = PROFILES["lab"],
        snapshot_interval: int | Callable[[], int] = 10_000,
        keep_entries: int = 500,
        credentials: Credentials | None = None,
    ) -> None:
        """`snapshot_interval`: entries applied between two snapshots, or what gives it
        whenever the driver asks (a manager's follows the swarm's `--snapshot-interval`)."""
        self.cluster_id = recovered.cluster_id
        self.node_id = recovered.node_id
        self.profile = profile
        self.listen = listen
        self._storage = storage
        self._sm = state_machine
        self._snapshot_interval = (
            snapshot_interval if callable(snapshot_interval) else lambda: snapshot_interval
        )
        self._keep_entries = keep_entries
        self.members: dict[int, str] = {}
        self._snapshot_index = 0
        snapshot = recovered.snapshot
        if snapshot is not None:
            self._restore(snapshot)
            # Snapshot data stays on disk (it is as big as the store): the core keeps the
            # metadata and the transport reads the data back when a follower needs it.
            snapshot = Snapshot(snapshot.meta)
        self.core = RaftNode(
            Config(
                id=self.node_id,
                election_tick=profile.election_tick,
                heartbeat_tick=profile.heartbeat_tick,
            ),
            hard_state=recovered.hard_state,
            snapshot=snapshot,
            entries=recovered.entries,
            rng=random.Random(),
        )
        self._synced_hard_state = recovered.hard_state
        self.applied = self.core.log.applied
        self.transport = Transport(self, credentials)
        self.transport.on_snapshot_sent = self._snapshot_sent
        self.transport.load_snapshot = self._load_snapshot
        self.transport.on_unreachable = self.core.report_unreachable
        self._inbox: list[Message] = []
        self._links_closed: list[int] = []
        self._wake = asyncio.Event()
        # Raft index -> (term proposed in, the futures of the proposals in that entry).
        self._proposals: dict[int, tuple[int, list[asyncio.Future[tuple[int, bytes]]]]] = {}
        # Proposals of this turn of the event loop, not yet in the log (see _propose_batch).
        self._batch: list[tuple[bytes, asyncio.Future[tuple[int, bytes]]]] = []
        # Entries proposed in a row that carried one write each, and the syncs' moving
        # average duration (see _sync_on_loop).
        self._lone_writes = 0
        self._sync_seconds = 0.0
        # Every proposal waiting for its entry, with its deadline (see _await_proposal).
        self._deadlines: dict[asyncio.Future[tuple[int, bytes]], float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._leader_changed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()
        self._last_role = self.core.role
        self._last_leader = NONE

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self, services: Sequence[Callable[[grpc.aio.Server], None]] = ()) -> None:
        """Listen on 2377 (with `services` sharing the port) and start the Raft loop."""
        self._loop = asyncio.get_running_loop()
        await self.transport.start(self.listen, services)
        await self._sync_peers()
        self._loop_task = asyncio.create_task(self._run(), name="raft-loop")
        log.info(
            "event=raft_started node=%016x cluster=%016x listen=%s profile=%s",
            self.node_id,
            self.cluster_id,
            self.listen,
            self.profile.name,
        )

    async def wait_failed(self) -> BaseException:
        """Return the error that stopped the Raft loop (a disk failure, say): the process must
        exit then, since continuing without durable state would break its promises."""
        assert self._loop_task is not None, "start() first"
        try:
            await asyncio.shield(self._loop_task)
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            return err
        return RuntimeError("the Raft loop ended")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in self._background:
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        # With the sweep gone, no deadline would end these waits: answer them now.
        for future in self._deadlines:
            if not future.done():
                future.set_exception(ProposalTimeoutError("outcome unknown: this manager stopped"))
        self._deadlines = {}
        self._batch = []
        await self.transport.stop()
        self._storage.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.profile.tick_seconds
        next_tick = loop.time() + tick
        while not self._stopping:
            if not self._wake.is_set():  # under load it is: no timer to arm then
                # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancellation
                # that races with its own timeout, and stop() would then wait forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_tick - loop.time())):
                        await self._wake.wait()
            self._wake.clear()
            # Messages first: answers that arrived while we were busy count before a tick
            # can decide, say, that the followers went quiet.
            self._step_inbox()
            if loop.time() >= next_tick:
                # One tick however late we are: after a stall (a slow fsync, a paused
                # process) a burst of ticks would fire elections and check-quorum at once.
                self.core.tick()
                self._on_tick()
                next_tick = max(next_tick + tick, loop.time())
            while self.core.has_ready():
                await self._handle_ready(self.core.ready())
                self._step_inbox()

    def _step_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for message in inbox:
            self.core.step(message)
        gone, self._links_closed = self._links_closed, []
        for node in gone:
            self.core.report_leader_gone(node)
        if not self._pipeline_full():
            self._propose_batch()

    def _pipeline_full(self) -> bool:
        """Whether new proposals should wait for the entry in flight to commit. Each entry
        costs the leader and the followers a Ready, an fsync hand-off, and an append and its
        answer per follower, whatever it carries; so while one replicates, the proposals that
        arrive meanwhile wait and then go out as one entry. Measured with 64 writers, A/B
        side by side: leader CPU per write -14%, followers' -24%, 30% more writes/s (one or
        two entries in flight: no difference). A lone client never waits: its previous
        entry has committed by the time it writes again. Held proposals keep their deadline."""
        core = self.core
        return (
            core.role is Role.LEADER
            and core.log.last_index() - core.log.committed >= MAX_UNCOMMITTED_ENTRIES
        )

    def deliver(self, message: Message) -> None:
        """Called by the transport for each good inbound message."""
        self._inbox.append(message)
        self._wake.set()

    def link_closed(self, node_id: int) -> None:
        """Called by the transport when the stream from a peer ends. Handled after the
        messages that came before it, so a heartbeat still queued cannot undo it."""
        self._links_closed.append(node_id)
        self._wake.set()

    # ---- the Ready cycle --------------------------------------------------------------------

    async def _handle_ready(self, rd: Ready) -> None:
        early, late = rd.split_messages()
        for message in early:
            self.transport.send(message)
        committed = rd.committed_entries
        sync = rd.must_sync(self._synced_hard_state)
        if rd.hard_state is not None and not sync:
            # Only the commit index moved (a follower told of a commit, a leader that just
            # committed): a small write without fsync costs less than a trip to a thread.
            self._persist(rd, sync)
        elif sync and rd.snapshot is None and self._sync_on_loop():
            self._persist(rd, sync)
            if late:
                # The acknowledgements leave before we apply (they wait only for the sync).
                for message in late:
                    self.transport.send(message)
                late = []
                await asyncio.sleep(0)
        elif sync:
            persisting = asyncio.ensure_future(asyncio.to_thread(self._persist, rd, sync))
            if rd.snapshot is None:
                # Entries already on our disk need not wait for this fsync: applying them
                # while it runs answers their clients one fsync sooner (a leader's committed
                # entries are all stable).
                stable = self.core.log.stable_index
                ready_now = [e for e in committed if e.index <= stable]
                committed = committed[len(ready_now) :]
                await self._apply_all(ready_now)
            await persisting
        for message in late:
            self.transport.send(message)
        if rd.snapshot is not None:
            self._restore(rd.snapshot)
            self._fail_proposals_upto(rd.snapshot.meta.index)
            await self._sync_peers()
        await self._apply_all(committed)
        for read in rd.read_states:
            future = self._reads.pop(read.context, None)
            if future is not None and not future.done():
                future.set_result(read.index)
        self.core.advance(rd)
        if rd.snapshot is not None:
            self.core.release_snapshot_data()
        self.applied = self.core.log.applied
        self._notify_applied()
        self._on_soft_state()
        await self._maybe_snapshot()

    def _sync_on_loop(self) -> bool:
        """Whether this node syncs its WAL on the event loop rather than in a worker thread.
        A follower does: it has no clients, and the leader sends the next append only once
        this one is acknowledged, so a thread would overlap the sync with nothing and cost
        its hand-offs (measured A/B with 64 writers: each follower's CPU per write -10% to
        -30%). A leader with followers must not: its loop takes new writes while the entry
        syncs here and replicates there, and they make the next entry (syncing on the loop
        cut its writes per entry by half with three managers, 24% more CPU per write).

        The only voter is its own quorum: nothing overlaps its sync but the writes that
        arrive meanwhile and the loop's other work. Writing alone (its last
        LONE_WRITES_BEFORE_LOOP_SYNC entries held one write each) on a fast disk (syncs under
        LOOP_SYNC_LIMIT_SECONDS on average) it syncs on the loop and saves the two hand-offs
        (one-manager service create, A/B at load 4-5: 0.10 ms less CPU, 0.06 ms off the
        p50). Writes that come together (any entry of several) send the sync back to the
        thread, where those arriving meanwhile wait and share the next entry: on the loop
        they would each make an entry of their own (64 writers, A/B against the thread
        always: 0.59 of the writes/s always on the loop, 0.94 so). Slow syncs do too: the
        loop's other work (timers, reads, the leader's passes) would wait for them (at load
        12 the loop's sync was 1 ms slower at p50, where identical code differed by 0.5).
        Decided per Ready from the configuration applied so far: a manager that joins,
        leaves or is demoted changes it from the next write on."""
        core = self.core
        if core.role is not Role.LEADER:
            return True
        return (
            core.voters == {core.id}
            and self._lone_writes >= LONE_WRITES_BEFORE_LOOP_SYNC
            and self._sync_seconds < LOOP_SYNC_LIMIT_SECONDS
        )

    async def _apply_all(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            await self._apply(entry)

    def _persist(self, rd: Ready, sync: bool) -> None:
        if rd.snapshot is not None:
            self._storage.save_snapshot(rd.snapshot)
        if not sync:
            self._storage.save(rd.entries, rd.hard_state, sync=False)
            return
        started = time.perf_counter()
        self._storage.save(rd.entries, rd.hard_state, sync=True)
        self._sync_seconds += (time.perf_counter() - started - self._sync_seconds) / 8
        if rd.hard_state is not None:
            self._synced_hard_state = rd.hard_state

    def _restore(self, snapshot: Snapshot) -> None:
        payload = raft_pb2.SnapshotPayload.FromString(snapshot.data)
        self._sm.restore(payload.state, snapshot.meta.index)
        self.members = {m.node_id: m.address for m in payload.members}
        self._snapshot_index = snapshot.meta.index
        log.info("event=snapshot_restored index=%d", snapshot.meta.index)

    async def _apply(self, entry: Entry) -> None:
        results = [b""]
        if entry.type is EntryType.CONF_CHANGE:
            change = decode_conf_change(entry.data)
            self.core.apply_conf_change(change)
            if change.type is ConfChangeType.REMOVE:
                self.members.pop(change.node_id, None)
            elif change.address:
                self.members[change.node_id] = change.address
            log.info(
                "event=membership_changed change=%s node=%016x voters=%s learners=%s",
                change.type.name.lower(),
                change.node_id,
                ",".join(f"{v:016x}" for v in sorted(self.core.voters)),
                ",".join(f"{v:016x}" for v in sorted(self.core.learners)),
            )
            await self._sync_peers()
        elif entry.type is EntryType.BATCH:
            try:
                results = self._sm.apply_batch(entry.index, decode_batch(entry.data))
            except CodecError as err:  # never written so by us: skip it on every replica alike
                log.error("event=bad_batch_entry index=%d error=%r", entry.index, str(err))
                results = []
        elif entry.data:
            results = [self._sm.apply(entry.index, entry.data)]
        pending = self._proposals.pop(entry.index, None)
        if pending is None:
            return
        term, futures = pending
        for position, future in enumerate(futures):
            if future.done():
                continue
            if term == entry.term and position < len(results):
                future.set_result((entry.index, results[position]))
            else:
                future.set_exception(ProposalDroppedError())

    def _fail_proposals_upto(self, index: int) -> None:
        for proposal_index in [i for i in self._proposals if i <= index]:
            _, futures = self._proposals.pop(proposal_index)
            for future in futures:
                if not future.done():
                    future.set_exception(
                        ProposalTimeoutError("outcome unknown: this manager installed a snapshot")
                    )

    def _notify_applied(self) -> None:
        still = []
        for index, future in self._applied_waiters:
            if index <= self.applied:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((index, future))
        self._applied_waiters = still

    def _on_soft_state(self) -> None:
        role, leader = self.core.role, self.core.leader
        if leader != self._last_leader:
            log.info("event=leader_changed term=%d leader=%016x", self.core.term, leader)
            self._last_leader = leader
            self._leader_changed.set()
            self._leader_changed = asyncio.Event()
        if role is not self._last_role:
            log.info("event=role_changed term=%d role=%s", self.core.term, role.label())
            if self._last_role is Role.LEADER:
                for future in self._reads.values():
                    if not future.done():
                        future.set_exception(NotLeaderError(leader))
                self._reads.clear()
            self._last_role = role

    async def _maybe_snapshot(self) -> None:
        if self.applied - self._snapshot_index < self._snapshot_interval():
            return
        payload = raft_pb2.SnapshotPayload(
            members=[
                raft_pb2.Member(node_id=n, address=a, learner=n in self.core.learners)
                for n, a in sorted(self.members.items())
            ],
            state=self._sm.snapshot(),
        )
        snapshot = self.core.snapshot_taken(self.applied, payload.SerializeToString())
        del payload
        await asyncio.to_thread(self._storage.save_snapshot, snapshot)
        self.core.release_snapshot_data()  # on disk now: see __init__
        self._snapshot_index = snapshot.meta.index
        self.core.compact(self.applied - self._keep_entries)
        log.info("event=snapshot_taken index=%d bytes=%d", self.applied, len(snapshot.data))

    def _load_snapshot(self, wanted: Snapshot) -> Snapshot:
        """The data of the snapshot the core is sending, from disk (in the transport's thread;
        the core lets go of the data only once it is saved). A newer one may have replaced it
        meanwhile: any snapshot the leader took is committed, so the follower may install it."""
        snapshot = self._storage.load_snapshot()
        if snapshot.meta.index < wanted.meta.index:
            raise RuntimeError(
                f"the newest snapshot on disk is at index {snapshot.meta.index}, "
                f"older than {wanted.meta.index}"
            )
        return snapshot

    def _snapshot_sent(self, peer: int, failed: bool) -> None:
        self.core.report_snapshot(peer, failed=failed)
        self._wake.set()

    async def _sync_peers(self) -> None:
        await self.transport.set_peers(
            {n: a for n, a in self.members.items() if n != self.node_id and a}
        )

    def _on_tick(self) -> None:
        """Leader housekeeping: promote a learner that has caught up."""
        learner = self.core.learner_to_promote()
        if learner == NONE:
            return
        change = ConfChange(ConfChangeType.PROMOTE, learner, self.members.get(learner, ""))
        try:
            self.core.propose_conf_change(change, encode_conf_change(change))
        except RaftError as err:
            log.info("event=promote_deferred node=%016x reason=%r", learner, str(err))

    # ---- leader-local requests --------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the driver runs on. Cached: on Python 3.11 `asyncio.get_running_loop()`
        makes a getpid() system call each time, and a write asked for it several times."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def propose_local(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        """Propose on this manager, which must be the leader; returns (index, result).

        Proposals made while the Raft loop was busy (persisting the previous batch, say)
        share one entry (`_propose_batch`), each with its own result."""
        if self.core.role is not Role.LEADER:
            raise NotLeaderError(self.core.leader)
        future: asyncio.Future[tuple[int, bytes]] = self._running_loop().create_future()
        self._batch.append((data, future))
        if not self._pipeline_full():
            # Held proposals go out when the entry in flight commits: the answer that commits
            # it wakes the Raft loop anyway, so waking it now per write would be wasted.
            self._wake.set()
        return await self._await_proposal(future, timeout)

    def _propose_batch(self) -> None:
        """Append the proposals waiting for the Raft loop as one entry (a plain one when
        there is one): one append, one WAL record and one replication for all of them."""
        batch = [(data, future) for data, future in self._batch if not future.done()]
        self._batch = []
        if not batch:
            return
        self._lone_writes = self._lone_writes + 1 if len(batch) == 1 else 0
        try:
            if len(batch) == 1:
                index = self.core.propose(batch[0][0])
            else:
                index = self.core.propose(encode_batch([d for d, _ in batch]), EntryType.BATCH)
        except RaftError as err:  # not the leader any more, a transfer under way: all of them
            for _, future in batch:
                future.set_exception(err)
            return
        self._register(index, [future for _, future in batch])

    def _register(self, index: int, futures: list[asyncio.Future[tuple[int, bytes]]]) -> None:
        previous = self._proposals.get(index)
        if previous is not None:  # proposed in an older term, then overwritten
            for future in previous[1]:
                if not future.done():
                    future.set_exception(ProposalDroppedError())
        self._proposals[index] = (self.core.term, futures)
        self._wake.set()

    async def _await_proposal(
        self, future: asyncio.Future[tuple[int, bytes]], timeout: float
    ) -> tuple[int, bytes]:
        """Wait for the proposal's result, or ProposalTimeoutError once `timeout` has passed.

        No timer per proposal (asyncio.timeout costs a timer handle, a Timeout object and
        a few loop lookups per write): the deadline goes into a table that one periodic
        sweep checks while proposals wait. The future is ours alone, so the sweep (or a cancelled
        caller) may finish it; the apply step skips done futures."""
        loop = self._running_loop()
        self._deadlines[future] = loop.time() + timeout
        if self._sweeper is None:
            self._sweeper = loop.call_later(DEADLINE_SWEEP_SECONDS, self._expire_proposals)
        return await future

    def _expire_proposals(self) -> None:
        """Fail the proposals whose deadline has passed; forget the finished ones."""
        loop = self._running_loop()
        now = loop.time()
        waiting = {}
        for future, deadline in self._deadlines.items():
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(ProposalTimeoutError())
            else:
                waiting[future] = deadline
        self._deadlines = waiting
        # Proposals held back (_pipeline_full) that ended need no place in the log.
        self._batch = [(data, future) for data, future in self._batch if not future.done()]
        self._sweeper = (
            loop.call_later(DEADLINE_SWEEP_SECONDS, self._expire_proposals) if waiting else None
        )

    async def read_index_local(self, timeout: float) -> int:
        context = os.urandom(12)
        future: asyncio.Future[int] = self._running_loop().create_future()
        self._reads[context] = future
        try:
            self.core.read_index(context)
            self._wake.set()
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise ProposalTimeoutError() from None
        finally:
            self._reads.pop(context, None)

    async def propose_conf_change(self, change: ConfChange, timeout: float) -> None:
        """Leader only. Waits while another membership change is being applied."""
        loop = self._running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                index = self.core.propose_conf_change(change, encode_conf_change(change))
                break
            except ConfChangeError as err:
                if "in progress" not in str(err) or loop.time() >= deadline:
                    raise
                await asyncio.sleep(self.profile.tick_seconds)
        future: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._register(index, [future])
        await self._await_proposal(future, deadline - loop.time())

    # ---- requests from anywhere -------------------------------------------------------------

    async def propose(self, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
        """Commit `data` through whichever manager leads; returns (index, result) once this
        manager has applied it."""
        deadline = self._running_loop().time() + timeout
        if self.core.role is Role.LEADER:
            # The leader's own clients, the common case, go straight in.
            try:
                return await self.propose_local(data, timeout)
            except NotLeaderError:
                pass  # deposed meanwhile: find the new leader below

        async def forward(address: str) -> tuple[int, bytes]:
            index, result = await self.transport.propose(address, data, self._remaining(deadline))
            await self.wait_applied(index, self._remaining(deadline))
            return index, result

        return await self.on_leader(
            lambda: self.propose_local(data, self._remaining(deadline)), forward, deadline
        )

    async def linearizable_read(self, timeout: float = 10.0) -> int:
        """Wait until this manager's state reflects every write committed before the call."""
        deadline = self._running_loop().time() + timeout

        async def forward(address: str) -> int:
            request = raft_pb2.ReadIndexRequest(timeout_seconds=self._remaining(deadline))
            response: raft_pb2.ReadIndexResponse = await self.transport.call(
                address, "ReadIndex", request, self._remaining(deadline), to_leader=True
            )
            return response.index

        index = await self.on_leader(
            lambda: self.read_index_local(self._remaining(deadline)), forward, deadline
        )
        await self.wait_applied(index, self._remaining(deadline))
        return index

    async def on_leader(
        self,
        local: Callable[[], Awaitable[T]],
        forward: Callable[[str], Awaitable[T]],
        deadline: float,
    ) -> T:
        """Run `local()` if we lead, else `forward(leader address)`; retry while leadership
        moves (a `NotLeaderError` from `local`, a `TransportError` or `RemoteNotLeaderError`
        from `forward`), and fail with NoLeaderError when no leader emerges in time. The route
        every call the leader serves takes, from any manager."""
        loop = self._running_loop()
        no_leader_since: float | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ProposalTimeoutError()
            leader = self.core.leader
            if leader == self.node_id:
                try:
                    return await local()
                except NotLeaderError:
                    continue
            address = self.members.get(leader) if leader != NONE else None
            if address is None:
                no_leader_since = no_leader_since or loop.time()
                if loop.time() - no_leader_since > 2 * self.profile.election_timeout:
                    raise NoLeaderError()
                await self._wait_leader_change(min(remaining, self.profile.tick_seconds))
                continue
            no_leader_since = None
            try:
                return await forward(address)
            except (TransportError, RemoteNotLeaderError):
                await self._wait_leader_change(min(remaining, self.profile.tick_seconds))

    async def _wait_leader_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._leader_changed.wait()

    def _remaining(self, deadline: float) -> float:
        return max(0.0, deadline - self._running_loop().time())

    async def wait_applied(self, index: int, timeout: float) -> None:
        if index <= self.applied:
            return
        future: asyncio.Future[None] = self._running_loop().create_future()
        self._applied_waiters.append((index, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise ProposalTimeoutError(
                f"this manager has not caught up to index {index} yet"
            ) from None

    # ---- membership -------------------------------------------------------------------------

    async def join(self, request: raft_pb2.JoinRequest) -> raft_pb2.JoinResponse:
        """Add a manager as a learner (promoted once caught up); forwarded to the leader."""
        if not request.address:
            raise ValueError("join: the joining manager must give its advertised address")
        if self.core.leader != self.node_id:
            address = self.members.get(self.core.leader)
            if address is None:
                raise NoLeaderError()
            response: raft_pb2.JoinResponse = await self.transport.call(
                address, "Join", request, 30.0
            )
            return response
        for node, address in self.members.items():
            if address == request.address and node != request.node_id:
                raise ValueError(
                    f"address {request.address} is already used by manager {node:016x}; "
                    "remove that manager first"
                )
        node_id = request.node_id or new_id(set(self.members))
        if node_id not in self.core.voters and node_id not in self.core.learners:
            change = ConfChange(ConfChangeType.ADD_LEARNER, node_id, request.address)
            await self.propose_conf_change(change, 30.0)
        return raft_pb2.JoinResponse(
            cluster_id=self.cluster_id, node_id=node_id, members=self._member_list()
        )

    async def leave(self, request: raft_pb2.LeaveRequest) -> None:
        """Remove a manager; a leader that removes itself hands leadership over first."""
        node_id = request.node_id
        if self.core.leader == self.node_id and node_id == self.node_id:
            await self._transfer_away(10.0)
        if self.core.leader != self.node_id:
            address = self.members.get(self.core.leader)
            if address is None:
                raise NoLeaderError()
            await self.transport.call(address, "Leave", request, 30.0)
            return
        await self.propose_conf_change(ConfChange(ConfChangeType.REMOVE, node_id), 30.0)

    async def _transfer_away(self, timeout: float) -> None:
        progress = self.core.progress_view()
        candidates = [
            (view.match, node)
            for node, view in progress.items()
            if node != self.node_id and node in self.core.voters and view.recently_heard
        ]
        if not candidates:
            raise ConfChangeError("no other reachable manager can take over the leadership")
        target = max(candidates)[1]
        self.core.transfer_leadership(target)
        self._wake.set()
        deadline = self._running_loop().time() + timeout
        while self.core.leader == self.node_id:
            if self._running_loop().time() > deadline:
                raise ProposalTimeoutError("leadership transfer did not complete")
            await self._wait_leader_change(self.profile.tick_seconds)

    def _member_list(self) -> list[raft_pb2.Member]:
        return [
            raft_pb2.Member(node_id=n, address=a, learner=n in self.core.learners)
            for n, a in sorted(self.members.items())
        ]

    def status(self) -> raft_pb2.StatusResponse:
        core = self.core
        progress = core.progress_view()
        return raft_pb2.StatusResponse(
            node_id=self.node_id,
            cluster_id=self.cluster_id,
            role=core.role.label(),
            term=core.term,
            leader=core.leader,
            commit=core.log.committed,
            applied=self.applied,
            last_index=core.log.last_index(),
            snapshot_index=self._snapshot_index,
            members=self._member_list(),
            match={n: v.match for n, v in progress.items()},
            reachable=sorted(n for n in progress if self.reachable(n)),
        )

    def reachable(self, node: int) -> bool:
        """Whether this node hears from `node` and can send to it: what `docker node ls`
        shows as the manager's reachability (on the leader, which hears from everyone)."""
        view = self.core.progress_view().get(node)
        if view is None or not view.recently_heard:
            return False
        return node == self.node_id or self.transport.delivering(node)

    async def leader_status(self, timeout: float = 10.0) -> raft_pb2.StatusResponse:
        """The leader's status, asked from any manager: only the leader knows which members
        it hears from, which is what a safe membership change is judged on."""
        deadline = self._running_loop().time() + timeout

        async def local() -> raft_pb2.StatusResponse:
            return self.status()

        async def forward(address: str) -> raft_pb2.StatusResponse:
            response: raft_pb2.StatusResponse = await self.transport.call(
                address,
                "Status",
                raft_pb2.StatusRequest(),
                self._remaining(deadline),
                to_leader=True,
            )
            if response.leader != response.node_id:
                raise RemoteNotLeaderError(f"{address} no longer leads")
            return response

        return await self.on_leader(local, forward, deadline)
