"""The Raft consensus state machine, sans I/O.

`RaftNode` never touches a clock, a socket or a disk. Its inputs are `tick()`, `step(message)`,
`propose(data)`, `read_index(context)`, membership and leadership-transfer requests; its outputs
are gathered in a `Ready` (see `types.Ready` for the order in which a driver must act on one).
The same object runs under the asyncio driver with gRPC and fsync, and under the deterministic
simulator with thousands of seeds.

Implemented: leader election with randomized timeouts, PreVote and CheckQuorum (with the leader
lease that makes a rejoining node with a higher term unable to disrupt a healthy cluster), log
replication with per-follower probe/pipeline/snapshot flow control, commit by current-term
majority, ReadIndex reads, leader transfer, single-step membership changes with learners, and
log compaction with snapshots; and one hint from the transport, `report_leader_gone`, that lets
followers replace a crashed leader without waiting a whole election timeout. The structure
follows the Raft dissertation (Ongaro, 2014) and the way etcd-io/raft splits the problem.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import TypeVar

from controlplane.raft.log import CompactedError, RaftLog
from controlplane.raft.progress import Progress, ProgressState
from controlplane.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

# Marks votes requested on behalf of a leader transfer: they bypass the leader lease.
CAMPAIGN_TRANSFER = b"transfer"


class RaftError(Exception):
    """A request the Raft node cannot take now; the message says why and what to do."""


class NotLeaderError(RaftError):
    def __init__(self, leader: int) -> None:
        self.leader = leader
        where = f"the leader is {leader:016x}" if leader else "there is no leader right now"
        super().__init__(f"this manager is not the leader: {where}")


class ConfChangeError(RaftError):
    """A membership change that is invalid, or unsafe right now."""


class QuorumLossError(ConfChangeError):
    pass


Member = TypeVar("Member", bound=Hashable)


def keeps_quorum(
    voters: AbstractSet[Member], reachable: AbstractSet[Member], removed: Member
) -> bool:
    """Whether the voters left once `removed` goes still have a reachable majority, so the
    cluster can commit without it. Removing a non-voter (a learner) changes no majority."""
    if removed not in voters:
        return True
    remaining = set(voters) - {removed}
    return len(remaining & set(reachable)) >= len(remaining) // 2 + 1


@dataclass(frozen=True, slots=True)
class Config:
    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20
    # Appends in flight to one follower. Beyond this a new append waits for an answer and then
    # carries everything proposed meanwhile: under load each message (a gRPC stream write and
    # read, and a Ready on the follower, each costing more CPU than the entries it carries)
    # takes many entries instead of a handful, while a lone write still goes out at once.
    max_inflight: int = 4
    max_committed_bytes_per_ready: int = 8 << 20
    pre_vote: bool = True
    check_quorum: bool = True

    def __post_init__(self) -> None:
        if self.id == NONE:
            raise ValueError("node id 0 is reserved")
        if self.heartbeat_tick < 1 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 1 <= heartbeat_tick < election_tick")


@dataclass(frozen=True, slots=True)
class ProgressView:
    """A read-only copy of a follower's progress, for status pages and membership decisions."""

    match: int
    next: int
    state: str
    is_learner: bool
    recently_heard: bool


class RaftNode:
    def __init__(
        self,
        config: Config,
        *,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: Iterable[Entry] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.id = config.id
        self.config = config
        self._rng = rng or random.Random()
        hard_state = hard_state or HardState()
        self.log = RaftLog(snapshot, list(entries), hard_state.commit)
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.leader = NONE
        self.role = Role.FOLLOWER
        conf = snapshot.meta.conf if snapshot is not None else ConfState()
        self.voters: set[int] = set(conf.voters)
        self.learners: set[int] = set(conf.learners)
        self.progress: dict[int, Progress] = {}
        self._reset_progress()

        self.ticks = 0  # ticks since start: a monotonic clock for "recently heard"
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._reset_randomized_timeout()
        self._votes: dict[int, bool] = {}
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self._needs_broadcast = False

        self._msgs: list[Message] = []
        # Peer -> position in _msgs of our plain acknowledgement to it (see _respond_append).
        self._pending_ack: dict[int, int] = {}
        self._read_states: list[ReadState] = []
        # ReadIndex requests: context -> (commit index at request, acks); in request order.
        self._pending_reads: dict[bytes, tuple[int, set[int]]] = {}
        # Requests received before this term's first commit; served once it commits.
        self._reads_awaiting_commit: list[bytes] = []
        self._prev_hard_state = hard_state
        self._prev_soft_state = SoftState(self.leader, self.role)

    # ---- introspection ----------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def conf_state(self) -> ConfState:
        return ConfState(voters=tuple(sorted(self.voters)), learners=tuple(sorted(self.learners)))

    def is_voter(self) -> bool:
        return self.id in self.voters

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def progress_view(self) -> dict[int, ProgressView]:
        """Leader only: each member's replication progress (empty on followers)."""
        if self.role is not Role.LEADER:
            return {}
        return {
            node: ProgressView(
                match=pr.match,
                next=pr.next,
                state=pr.state.value,
                is_learner=pr.is_learner,
                recently_heard=node == self.id or self._recently_heard(pr),
            )
            for node, pr in self.progress.items()
        }

    def learner_to_promote(self, slack: int = 100) -> int:
        """Leader only: a reachable learner within `slack` entries of the commit index, ready
        to become a voter (NONE if there is none, or a membership change is pending)."""
        if self.role is not Role.LEADER or self.pending_conf_index > self.log.applied:
            return NONE
        for learner in sorted(self.learners):
            pr = self.progress.get(learner)
            if pr and self._recently_heard(pr) and pr.match + slack >= self.log.committed:
                return learner
        return NONE

    def _recently_heard(self, pr: Progress) -> bool:
        return self.ticks - pr.last_heard_tick <= self.config.election_tick

    # ---- inputs -----------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        # The only voter has no one to disrupt and no one to wait for: it leads at once (a new
        # swarm's first manager, a forced new cluster), not after a whole election timeout.
        alone = self.voters == {self.id}
        if self.is_voter() and (alone or self.election_elapsed >= self._randomized_timeout):
            self.election_elapsed = 0
            self._campaign(pre_vote=self.config.pre_vote, transfer=False)

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum and not self._quorum_recently_active():
                self._become_follower(self.term, NONE)
                return
            for node, pr in self.progress.items():
                pr.recent_active = node == self.id
            self.lead_transferee = NONE  # a transfer that took a whole election timeout failed
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            # Carry the newest pending read on every heartbeat, so one lost message cannot
            # leave a read waiting for the rest of the term.
            newest_read = next(reversed(self._pending_reads), b"")
            self._broadcast_heartbeat(newest_read)

    def propose(self, data: bytes, entry_type: EntryType = EntryType.NORMAL) -> int:
        """Append a normal (or batch) entry; returns its index. Raises NotLeaderError on a
        follower."""
        if entry_type is EntryType.CONF_CHANGE:
            raise ValueError("membership changes go through propose_conf_change")
        return self._append_proposal(entry_type, data)

    def _append_proposal(self, entry_type: EntryType, data: bytes) -> int:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader)
        if self.lead_transferee != NONE:
            raise RaftError(
                f"leadership is being transferred to {self.lead_transferee:016x}; retry shortly"
            )
        index = self.log.last_index() + 1
        self.log.append([Entry(term=self.term, index=index, type=entry_type, data=data)])
        # The leader counts its own copy only once it is on disk (see `advance`), so it may
        # send the entry to followers while its own fsync is still running.
        self._needs_broadcast = True
        return index

    def propose_conf_change(self, change: ConfChange, data: bytes) -> int:
        """Propose one membership change; refused while another is not yet applied, or when
        it would leave the cluster without a reachable majority."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader)
        if self.pending_conf_index > self.log.applied:
            raise ConfChangeError(
                "another membership change is in progress; retry once it has been applied"
            )
        self._validate_conf_change(change)
        index = self._append_proposal(EntryType.CONF_CHANGE, data)
        self.pending_conf_index = index
        return index

    def _validate_conf_change(self, change: ConfChange) -> None:
        node = change.node_id
        member = node in self.voters or node in self.learners
        if change.type is ConfChangeType.ADD_LEARNER and member:
            raise ConfChangeError(f"{node:016x} is already a member")
        if change.type is ConfChangeType.PROMOTE and node not in self.learners:
            raise ConfChangeError(f"{node:016x} is not a learner; add it as a learner first")
        if change.type is ConfChangeType.REMOVE and not member:
            raise ConfChangeError(f"{node:016x} is not a member")
        if change.type is ConfChangeType.DEMOTE and node not in self.voters:
            raise ConfChangeError(f"{node:016x} is not a voting member")
        if change.type in (ConfChangeType.REMOVE, ConfChangeType.DEMOTE) and node in self.voters:
            remaining = self.voters - {node}
            if not remaining:
                raise ConfChangeError("cannot remove the last voting member")
            reachable = {
                v
                for v in remaining
                if v == self.id or (v in self.progress and self._recently_heard(self.progress[v]))
            }
            if not keeps_quorum(self.voters, reachable, node):
                raise QuorumLossError(
                    "can't remove member: this would result in a loss of quorum "
                    f"({len(reachable)} of the {len(remaining)} remaining managers are reachable)"
                )

    def apply_conf_change(self, change: ConfChange) -> ConfState:
        """Called by the driver when it applies a committed conf-change entry."""
        node = change.node_id
        if change.type is ConfChangeType.ADD_LEARNER:
            if node not in self.voters:
                self.learners.add(node)
        elif change.type is ConfChangeType.PROMOTE:
            self.learners.discard(node)
            self.voters.add(node)
        elif change.type is ConfChangeType.DEMOTE:
            if node in self.voters:
                self.voters.discard(node)
                self.learners.add(node)
        elif change.type is ConfChangeType.REMOVE:
            self.voters.discard(node)
            self.learners.discard(node)
        self._sync_progress_with_conf()
        if self.role is Role.LEADER:
            if not self.is_voter():
                # A leader removed or demoted from the voters steps down; the driver transfers
                # leadership first when it can, so this only happens when it could not.
                self._become_follower(self.term, NONE)
            else:
                if self.lead_transferee not in self.voters:
                    self.lead_transferee = NONE
                if self._maybe_commit():
                    self._needs_broadcast = True
                self._release_confirmed_reads()  # the quorum may have shrunk
        return self.conf_state()

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read. A `ReadState(index, context)` appears in a later Ready
        once a quorum confirmed this node is still the leader; serve the read after applying
        up to that index."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader)
        if self.log.term(self.log.committed) != self.term:
            self._reads_awaiting_commit.append(context)
            return
        self._start_read(context)

    def _start_read(self, context: bytes) -> None:
        if self.quorum() == 1:
            self._read_states.append(ReadState(self.log.committed, context))
            return
        self._pending_reads[context] = (self.log.committed, {self.id})
        self._broadcast_heartbeat(context)

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to a caught-up voter (used when the leader leaves or is demoted)."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader)
        if to == self.id:
            return
        if to not in self.voters:
            raise RaftError(f"cannot transfer leadership to {to:016x}: not a voting member")
        self.lead_transferee = to
        self.election_elapsed = 0
        if self.progress[to].match == self.log.last_index():
            self._send(Message(MessageType.TIMEOUT_NOW, to=to, frm=self.id, term=self.term))
        else:
            self._send_append(to)

    def report_unreachable(self, to: int) -> None:
        """The transport failed to deliver to `to`: stop pipelining and probe instead."""
        pr = self.progress.get(to)
        if self.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def report_leader_gone(self, leader: int) -> None:
        """The transport saw the link from `leader` close (a crashed leader's sockets are
        closed by its OS at once). A follower of that leader then forgets it, which ends the
        leader lease, and campaigns 1 to election_tick / 2 ticks later instead of after a
        whole randomized election timeout; the random delay keeps the followers from all
        campaigning at once. Only a hint: a live leader keeps its followers in lease (they
        refuse the pre-vote) and its next heartbeat makes this node follow it again, and a
        partition that closes nothing still waits for the timeout. Votes are unaffected."""
        if self.role is not Role.FOLLOWER or leader == NONE or self.leader != leader:
            return
        self.leader = NONE
        if self.is_voter():
            delay = 1 + self._rng.randrange(max(1, self.config.election_tick // 2))
            self.election_elapsed = max(self.election_elapsed, self._randomized_timeout - delay)

    def report_snapshot(self, to: int, *, failed: bool) -> None:
        pr = self.progress.get(to)
        if self.role is not Role.LEADER or pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if failed:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for the follower's answer (or a heartbeat) before probing

    def snapshot_taken(self, index: int, data: bytes) -> Snapshot:
        """The state machine serialized itself at applied `index`: keep it for slow followers."""
        term = self.log.term(index)
        if term is None or index > self.log.applied:
            raise ValueError(f"cannot snapshot at {index}: not applied or already compacted")
        snapshot = Snapshot(SnapshotMeta(index=index, term=term, conf=self.conf_state()), data)
        self.log.set_snapshot(snapshot)
        return snapshot

    def release_snapshot_data(self) -> None:
        """Keep only the metadata of the latest snapshot: for a driver that stores snapshots
        on disk and fills in the data of the SNAPSHOT messages it sends (the data is as big as
        the whole state). Call after the Ready that installed a snapshot was advanced."""
        if self.log.pending_snapshot is None and self.log.snapshot.data:
            self.log.snapshot = Snapshot(self.log.snapshot.meta)

    def compact(self, index: int) -> None:
        """Drop log entries up to `index` (kept entries let slow followers avoid a snapshot)."""
        self.log.compact(min(index, self.log.snapshot.meta.index))

    # ---- messages ---------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Handle one message from a peer. Messages not for us, from a stale term or
        otherwise out of place are ignored as the protocol prescribes."""
        if m.to != self.id or m.frm == self.id or m.frm == NONE:
            return
        if m.term > self.term:
            if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
                # The lease ends one tick early: nodes tick on their own clocks, so a candidate
                # whose timeout just fired may find us a fraction of a tick behind; without the
                # slack its pre-vote fails and the election waits a whole new timeout.
                in_lease = (
                    self.config.check_quorum
                    and self.leader != NONE
                    and self.election_elapsed < self.config.election_tick - 1
                )
                if in_lease and m.context != CAMPAIGN_TRANSFER:
                    return  # we heard from a live leader recently: do not help depose it
            if m.type is MessageType.PRE_VOTE or (
                m.type is MessageType.PRE_VOTE_RESP and not m.reject
            ):
                pass  # pre-votes carry the term the sender would use; they change nothing
            elif m.type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if m.type in (MessageType.APPEND, MessageType.HEARTBEAT):
                # A deposed leader: tell it the new term so it steps down.
                self._send(Message(MessageType.APPEND_RESP, to=m.frm, frm=self.id, term=self.term))
            elif m.type is MessageType.PRE_VOTE:
                self._send(
                    Message(
                        MessageType.PRE_VOTE_RESP,
                        to=m.frm,
                        frm=self.id,
                        term=self.term,
                        reject=True,
                    )
                )
            return

        if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader == NONE)
            or (m.type is MessageType.PRE_VOTE and m.term > self.term)
        )
        resp_type = (
            MessageType.VOTE_RESP if m.type is MessageType.VOTE else MessageType.PRE_VOTE_RESP
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(resp_type, to=m.frm, frm=self.id, term=m.term))
            if m.type is MessageType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp_type, to=m.frm, frm=self.id, term=self.term, reject=True))

    def _step_follower(self, m: Message) -> None:
        if m.type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
            self.election_elapsed = 0
            self.leader = m.frm
            if m.type is MessageType.APPEND:
                self._handle_append(m)
            elif m.type is MessageType.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif m.type is MessageType.TIMEOUT_NOW and self.is_voter():
            self._campaign(pre_vote=False, transfer=True)

    def _step_candidate(self, m: Message) -> None:
        if m.type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT):
            self._become_follower(self.term, m.frm)
            self._step_follower(m)
            return
        expected = (
            MessageType.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MessageType.VOTE_RESP
        )
        if m.type is not expected or m.frm not in self.voters:
            return
        self._votes.setdefault(m.frm, not m.reject)
        granted = sum(1 for v in self._votes.values() if v)
        rejected = len(self._votes) - granted
        if granted >= self.quorum():
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False, transfer=False)
            else:
                self._become_leader()
        elif len(self.voters) - rejected < self.quorum():
            self._become_follower(self.term, NONE)

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return  # not (or no longer) a member
        if m.type is MessageType.APPEND_RESP:
            pr.recent_active = True
            pr.last_heard_tick = self.ticks
            self._handle_append_response(m, pr)
        elif m.type is MessageType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.last_heard_tick = self.ticks
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and len(pr.inflight) >= pr.max_inflight:
                pr.inflight.popleft()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._ack_read(m.context, m.frm)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        if not pr.maybe_update(m.index):
            # Nothing new, but the follower's answer unblocks a waiting probe.
            if pr.state is ProgressState.PROBE and pr.match < self.log.last_index():
                pr.probe_sent = False
                self._send_append(m.frm)
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.acknowledge_inflight(m.index)
        if self._maybe_commit():
            # Told at the next `ready()`, not now: the answers of one batch of inbound
            # messages, and the proposals made meanwhile, then reach each follower as one
            # append (new entries and the new commit index) instead of one per answer.
            self._needs_broadcast = True
        else:
            while self._owes_append(pr) and self._send_append(m.frm):
                if pr.next > self.log.last_index():
                    break
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(MessageType.TIMEOUT_NOW, to=m.frm, frm=self.id, term=self.term))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._respond_append(m.frm, self.log.committed)
            return
        last = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self._respond_append(m.frm, last)
        else:
            # Skip back a whole term at a time: the leader can then jump over every entry of
            # a term we do not share instead of probing them one round trip each.
            hint, hint_term = self.log.find_conflict_by_term(
                min(m.index, self.log.last_index()), m.log_term
            )
            self._send(
                Message(
                    MessageType.APPEND_RESP,
                    to=m.frm,
                    frm=self.id,
                    term=self.term,
                    index=m.index,
                    reject=True,
                    reject_hint=hint,
                    log_term=hint_term,
                )
            )

    def _respond_append(self, to: int, index: int) -> None:
        """Acknowledge our log up to `index`. Acknowledgements are cumulative, so one still
        waiting in this Ready (for an append handled a moment ago) is raised to `index`
        instead of adding a second: a follower handed several appends at once answers once."""
        position = self._pending_ack.get(to)
        if position is not None:
            pending = self._msgs[position]
            if pending.term == self.term and pending.index <= index:
                self._msgs[position] = replace(pending, index=index)
                return
        self._pending_ack[to] = len(self._msgs)
        self._send(
            Message(MessageType.APPEND_RESP, to=to, frm=self.id, term=self.term, index=index)
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._send(
            Message(
                MessageType.HEARTBEAT_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                context=m.context,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        snapshot = m.snapshot
        if snapshot is None:
            return
        meta = snapshot.meta
        if meta.index <= self.log.committed:
            self._respond_append(m.frm, self.log.committed)
            return
        if self.log.match_term(meta.index, meta.term):
            # We already hold everything the snapshot covers: just move the commit forward.
            # Answer with the commit index, not our last index: entries after it may be a
            # stale tail of an older term that the leader must not count as replicated.
            self.log.commit_to(meta.index)
            self._respond_append(m.frm, self.log.committed)
            return
        self.log.restore(snapshot)
        self.voters = set(meta.conf.voters)
        self.learners = set(meta.conf.learners)
        self._sync_progress_with_conf()
        self._respond_append(m.frm, self.log.last_index())

    # ---- leader mechanics -------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _send_append(self, to: int) -> bool:
        """Send the entries `to` is missing (or a snapshot); False when nothing could be sent."""
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        entries: list[Entry] = []
        if prev_term is not None:
            try:
                entries = self.log.slice(
                    pr.next, self.log.last_index() + 1, self.config.max_size_per_msg
                )
            except CompactedError:
                prev_term = None
        if prev_term is None:
            return self._send_snapshot(to, pr)
        self._send(
            Message(
                MessageType.APPEND,
                to=to,
                frm=self.id,
                term=self.term,
                log_term=prev_term,
                index=prev_index,
                entries=tuple(entries),
                commit=self.log.committed,
            )
        )
        pr.commit_sent = self.log.committed
        if entries:
            pr.sent_append(entries[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _owes_append(self, pr: Progress) -> bool:
        """Whether a follower that just answered should get an append now: it lacks entries
        not yet sent to it, or has not been sent the commit index. Not when everything it
        lacks is in flight and it was told the commit (the broadcast at commit time usually
        has): the slower follower's answer to each entry then drew an empty append (and the
        follower's answer to it), about one more message each way per entry with 64 writers."""
        last = self.log.last_index()
        return pr.match < last and (pr.next <= last or pr.commit_sent < self.log.committed)

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        snapshot = self.log.snapshot
        if snapshot.meta.index == 0 or not pr.recent_active:
            # No snapshot yet, or the peer looks down: do not ship a snapshot into the void.
            return False
        self._send(
            Message(MessageType.SNAPSHOT, to=to, frm=self.id, term=self.term, snapshot=snapshot)
        )
        pr.become_snapshot(snapshot.meta.index)
        return True

    def _broadcast_append(self) -> None:
        for node in self.progress:
            if node != self.id:
                self._send_append(node)

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for node, pr in self.progress.items():
            if node == self.id:
                continue
            self._send(
                Message(
                    MessageType.HEARTBEAT,
                    to=node,
                    frm=self.id,
                    term=self.term,
                    commit=min(pr.match, self.log.committed),
                    context=context,
                )
            )

    def _maybe_commit(self) -> bool:
        matches = sorted(
            (self.progress[v].match for v in self.voters if v in self.progress), reverse=True
        )
        if len(matches) < self.quorum():
            return False
        committed = self.log.maybe_commit(matches[self.quorum() - 1], self.term)
        if committed and self._reads_awaiting_commit:
            waiting, self._reads_awaiting_commit = self._reads_awaiting_commit, []
            for context in waiting:
                self._start_read(context)
        return committed

    def _quorum_recently_active(self) -> bool:
        active = sum(
            1
            for v in self.voters
            if v == self.id or (v in self.progress and self.progress[v].recent_active)
        )
        return active >= self.quorum()

    def _ack_read(self, context: bytes, frm: int) -> None:
        pending = self._pending_reads.get(context)
        if pending is None or frm not in self.voters:
            return
        pending[1].add(frm)
        self._release_confirmed_reads()

    def _release_confirmed_reads(self) -> None:
        """Serve every read up to the newest one a quorum confirmed: its heartbeat went out
        after the older requests, so it proves leadership for them too."""
        confirmed = None
        for context, (_, acks) in self._pending_reads.items():
            if len(acks & self.voters) >= self.quorum():
                confirmed = context
        if confirmed is None:
            return
        for context in list(self._pending_reads):
            index, _ = self._pending_reads.pop(context)
            self._read_states.append(ReadState(index, context))
            if context == confirmed:
                break

    # ---- role changes -----------------------------------------------------------------------

    def _reset_randomized_timeout(self) -> None:
        timeout = self.config.election_tick
        self._randomized_timeout = timeout + self._rng.randrange(timeout)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {}
        self.lead_transferee = NONE
        self._pending_reads = {}
        self._reads_awaiting_commit = []
        self._reset_progress()

    def _reset_progress(self) -> None:
        last = self.log.last_index()
        self.progress = {}
        for node in self.voters | self.learners:
            pr = Progress(
                last + 1, max_inflight=self.config.max_inflight, is_learner=node in self.learners
            )
            if node == self.id:
                pr.match = min(last, self.log.stable_index)
                pr.become_replicate()
            self.progress[node] = pr

    def _sync_progress_with_conf(self) -> None:
        members = self.voters | self.learners
        for node in list(self.progress):
            if node not in members:
                del self.progress[node]
        for node in members:
            pr = self.progress.get(node)
            if pr is None:
                pr = Progress(
                    self.log.last_index() + 1,
                    max_inflight=self.config.max_inflight,
                    is_learner=node in self.learners,
                )
                # A new member counts as active until an election timeout proves otherwise.
                pr.recent_active = True
                pr.last_heard_tick = self.ticks
                self.progress[node] = pr
            pr.is_learner = node in self.learners

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _campaign(self, *, pre_vote: bool, transfer: bool) -> None:
        if self.log.has_unapplied_conf_change():
            return  # our voter set may be about to change: campaign once it is applied
        if pre_vote:
            self._reset_randomized_timeout()
            self.role = Role.PRE_CANDIDATE
            self.leader = NONE
            self._votes = {}
            vote_term = self.term + 1
            vote_type = MessageType.PRE_VOTE
        else:
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.id
            vote_term = self.term
            vote_type = MessageType.VOTE
        self._votes[self.id] = True
        if self.quorum() == 1:
            if pre_vote:
                self._campaign(pre_vote=False, transfer=transfer)
            else:
                self._become_leader()
            return
        context = CAMPAIGN_TRANSFER if transfer else b""
        for node in sorted(self.voters):
            if node == self.id:
                continue
            self._send(
                Message(
                    vote_type,
                    to=node,
                    frm=self.id,
                    term=vote_term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                    context=context,
                )
            )

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        for pr in self.progress.values():
            pr.recent_active = True
            pr.last_heard_tick = self.ticks
        # Any conf change in the uncommitted tail might be pending: be conservative.
        self.pending_conf_index = self.log.last_index()
        # An empty entry of our term lets us commit (and learn the commit index) at once.
        self._append_proposal(EntryType.NORMAL, b"")

    # ---- output -----------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._needs_broadcast
            or self._read_states
            or self.log.stable_index < self.log.last_index()
            or self.log.pending_snapshot is not None
            or self.log.committed > self.log.applied
            or self.hard_state() != self._prev_hard_state
            or SoftState(self.leader, self.role) != self._prev_soft_state
        )

    def ready(self) -> Ready:
        if self._needs_broadcast:
            self._needs_broadcast = False
            if self.role is Role.LEADER:
                self._broadcast_append()
        hard_state = self.hard_state()
        rd = Ready(
            soft_state=SoftState(self.leader, self.role),
            hard_state=hard_state if hard_state != self._prev_hard_state else None,
            entries=self.log.unstable_entries(),
            snapshot=self.log.pending_snapshot,
            committed_entries=self.log.next_committed(self.config.max_committed_bytes_per_ready),
            messages=self._msgs,
            read_states=self._read_states,
        )
        self._msgs = []
        self._pending_ack = {}
        self._read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied everything in `rd`."""
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
        self._prev_soft_state = rd.soft_state
        if rd.snapshot is not None:
            self.log.snapshot_applied()
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER and self.id in self.progress:
                self.progress[self.id].maybe_update(self.log.stable_index)
                if self._maybe_commit():
                    self._needs_broadcast = True
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
