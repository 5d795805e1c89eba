"""Raft core behaviour on a lock-step, loss-free network (the simulation tests add faults)."""

from __future__ import annotations

import random

import pytest

from controlplane.pb import raft_pb2
from controlplane.raft.core import (
    ConfChangeError,
    Config,
    NotLeaderError,
    QuorumLossError,
    RaftNode,
)
from controlplane.raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Role,
)


def conf_data(change: ConfChange) -> bytes:
    return raft_pb2.ConfChange(
        type=int(change.type), node_id=change.node_id, address=change.address
    ).SerializeToString()


def bootstrap(voters: list[int]) -> list[Entry]:
    return [
        Entry(1, i + 1, EntryType.CONF_CHANGE, conf_data(ConfChange(ConfChangeType.PROMOTE, v)))
        for i, v in enumerate(voters)
    ]


class Cluster:
    """Nodes exchanging messages instantly; `cut` links drop messages both ways."""

    def __init__(self, ids: list[int], seed: int = 1, **config: int | bool) -> None:
        self.rng = random.Random(seed)
        entries = bootstrap(ids)
        self.nodes = {
            i: RaftNode(
                Config(id=i, **config),  # type: ignore[arg-type]
                hard_state=HardState(term=1, commit=len(ids)),
                entries=entries,
                rng=self.rng,
            )
            for i in ids
        }
        self.applied: dict[int, list[Entry]] = {i: [] for i in ids}
        self.cut: set[frozenset[int]] = set()
        self.down: set[int] = set()
        self.read_states: dict[int, list[bytes]] = {i: [] for i in ids}
        self.settle()

    def add(self, node_id: int) -> None:
        self.nodes[node_id] = RaftNode(Config(id=node_id), rng=self.rng)
        self.applied[node_id] = []
        self.read_states[node_id] = []

    def settle(self, rounds: int = 100) -> None:
        for _ in range(rounds):
            moved = False
            for nid, node in list(self.nodes.items()):
                if nid in self.down or not node.has_ready():
                    continue
                moved = True
                rd = node.ready()
                for entry in rd.committed_entries:
                    self.applied[nid].append(entry)
                    if entry.type is EntryType.CONF_CHANGE:
                        pb = raft_pb2.ConfChange.FromString(entry.data)
                        node.apply_conf_change(
                            ConfChange(ConfChangeType(pb.type), pb.node_id, pb.address)
                        )
                self.read_states[nid].extend(r.context for r in rd.read_states)
                node.advance(rd)
                for m in rd.messages:
                    self.deliver(m)
            if not moved:
                return

    def deliver(self, m: Message) -> None:
        if m.to in self.down or frozenset((m.frm, m.to)) in self.cut or m.to not in self.nodes:
            return
        self.nodes[m.to].step(m)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for nid, node in self.nodes.items():
                if nid not in self.down:
                    node.tick()
            self.settle()

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.role is Role.LEADER and i not in self.down]

    def elect(self) -> int:
        for _ in range(200):
            self.tick()
            leaders = self.leaders()
            if len(leaders) == 1:
                return leaders[0]
        raise AssertionError(f"no single leader: {self.leaders()}")

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut.add(frozenset((node_id, other)))

    def heal(self) -> None:
        self.cut.clear()

    def data(self, node_id: int) -> list[bytes]:
        return [e.data for e in self.applied[node_id] if e.type is EntryType.NORMAL and e.data]


def test_single_node_elects_itself_and_commits() -> None:
    c = Cluster([1])
    leader = c.elect()
    assert leader == 1
    c.nodes[1].propose(b"x")
    c.settle()
    assert c.data(1) == [b"x"]


def test_three_nodes_elect_one_leader_and_replicate() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    for i in range(5):
        c.nodes[leader].propose(f"v{i}".encode())
    c.settle()
    c.tick(2)
    for nid in c.nodes:
        assert c.data(nid) == [f"v{i}".encode() for i in range(5)]


def test_follower_refuses_proposals_and_names_the_leader() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    follower = next(i for i in c.nodes if i != leader)
    with pytest.raises(NotLeaderError) as err:
        c.nodes[follower].propose(b"x")
    assert err.value.leader == leader
    assert f"{leader:016x}" in str(err.value)


def test_batch_entries_replicate_like_normal_ones_and_conf_changes_are_refused() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    index = c.nodes[leader].propose(b"two proposals", EntryType.BATCH)
    c.settle()
    for nid in c.nodes:
        assert c.nodes[nid].log.term(index) is not None
        assert c.nodes[nid].log.committed >= index
    with pytest.raises(ValueError, match="propose_conf_change"):
        c.nodes[leader].propose(b"x", EntryType.CONF_CHANGE)


def test_partitioned_leader_steps_down_by_check_quorum() -> None:
    c = Cluster([1, 2, 3])
    old = c.elect()
    c.isolate(old)
    c.tick(40)
    assert c.nodes[old].role is not Role.LEADER
    new = [i for i in c.leaders() if i != old]
    assert len(new) == 1
    assert c.nodes[new[0]].term > c.nodes[old].term - 1


def test_rejoining_node_with_higher_term_does_not_disrupt() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    term = c.nodes[leader].term
    lonely = next(i for i in c.nodes if i != leader)
    c.isolate(lonely)
    c.tick(60)  # pre-vote keeps its term from growing while it cannot win
    assert c.nodes[lonely].term == term
    c.heal()
    c.tick(5)
    assert c.leaders() == [leader]
    assert c.nodes[leader].term == term


def test_without_prevote_a_partitioned_node_inflates_its_term_but_lease_protects() -> None:
    c = Cluster([1, 2, 3], pre_vote=False)
    leader = c.elect()
    term = c.nodes[leader].term
    lonely = next(i for i in c.nodes if i != leader)
    c.isolate(lonely)
    c.tick(60)
    assert c.nodes[lonely].term > term
    c.heal()
    c.tick(3)
    # The leader learns a higher term and steps down; the cluster elects again.
    leader2 = c.elect()
    assert c.nodes[leader2].term > term


def test_lagging_follower_catches_up() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    lagger = next(i for i in c.nodes if i != leader)
    c.down.add(lagger)
    for i in range(50):
        c.nodes[leader].propose(f"v{i}".encode())
        c.settle()
    c.down.discard(lagger)
    c.tick(5)
    assert c.data(lagger) == c.data(leader)
    assert len(c.data(lagger)) == 50


def test_snapshot_catch_up_after_compaction() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    lagger = next(i for i in c.nodes if i != leader)
    c.down.add(lagger)
    for i in range(30):
        c.nodes[leader].propose(f"v{i}".encode())
    c.settle()
    node = c.nodes[leader]
    node.snapshot_taken(node.log.applied, b"state-at-applied")
    node.compact(node.log.applied)
    c.down.discard(lagger)
    c.tick(5)
    follower = c.nodes[lagger]
    assert follower.log.snapshot.data == b"state-at-applied"
    assert follower.log.committed == node.log.committed
    node.report_snapshot(lagger, failed=False)
    node.propose(b"after")
    c.settle()
    c.tick(2)
    assert c.data(lagger)[-1] == b"after"


def test_read_index_confirms_leadership_with_a_quorum() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    c.nodes[leader].read_index(b"r1")
    c.settle()
    assert c.read_states[leader] == [b"r1"]
    c.isolate(leader)
    c.nodes[leader].read_index(b"r2")
    c.settle()
    assert c.read_states[leader] == [b"r1"]  # no quorum: never confirmed


def test_leader_transfer() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    target = next(i for i in c.nodes if i != leader)
    c.nodes[leader].transfer_leadership(target)
    c.settle()
    assert c.leaders() == [target]


def add_member(c: Cluster, leader: int, node_id: int) -> None:
    change = ConfChange(ConfChangeType.ADD_LEARNER, node_id, "x")
    c.nodes[leader].propose_conf_change(change, conf_data(change))
    c.settle()
    c.tick(3)
    promote = ConfChange(ConfChangeType.PROMOTE, node_id)
    c.nodes[leader].propose_conf_change(promote, conf_data(promote))
    c.settle()
    c.tick(2)


def test_add_learner_then_promote() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    c.nodes[leader].propose(b"before")
    c.settle()
    c.add(4)
    add_member(c, leader, 4)
    assert 4 in c.nodes[leader].voters
    assert c.nodes[4].is_voter()
    assert c.data(4) == [b"before"]


def test_one_conf_change_at_a_time() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    change = ConfChange(ConfChangeType.ADD_LEARNER, 9)
    c.nodes[leader].propose_conf_change(change, conf_data(change))
    other = ConfChange(ConfChangeType.ADD_LEARNER, 10)
    with pytest.raises(ConfChangeError, match="in progress"):
        c.nodes[leader].propose_conf_change(other, conf_data(other))


def test_removal_refused_when_it_would_lose_quorum() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    a, b = (i for i in c.nodes if i != leader)
    c.down.add(a)
    c.tick(30)
    assert c.leaders() == [leader]  # 2 of 3 still up
    change = ConfChange(ConfChangeType.REMOVE, b)
    with pytest.raises(QuorumLossError, match="loss of quorum"):
        c.nodes[leader].propose_conf_change(change, conf_data(change))
    # Removing the dead one is fine: the two live managers remain a majority of two.
    dead = ConfChange(ConfChangeType.REMOVE, a)
    c.nodes[leader].propose_conf_change(dead, conf_data(dead))
    c.settle()
    c.tick(2)
    assert c.nodes[leader].voters == {leader, b}


def test_stale_term_messages_are_answered_not_obeyed() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    follower = next(i for i in c.nodes if i != leader)
    node = c.nodes[follower]
    before = (node.term, node.log.last_index())
    node.step(
        Message(
            MessageType.APPEND,
            to=follower,
            frm=99,
            term=0,
            index=0,
            log_term=0,
            entries=(Entry(0, 1, data=b"evil"),),
        )
    )
    assert (node.term, node.log.last_index()) == before


def test_read_survives_the_loss_of_its_heartbeat() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    for other in c.nodes:
        if other != leader:
            c.cut.add(frozenset((leader, other)))
    c.nodes[leader].read_index(b"r1")
    c.settle()  # the heartbeat carrying r1 is lost
    c.heal()
    c.tick(2)  # later heartbeats carry the pending read again
    assert c.read_states[leader] == [b"r1"]


def test_newer_confirmed_read_serves_older_ones_in_order() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    c.isolate(leader)
    c.nodes[leader].read_index(b"old")
    c.settle()
    c.heal()
    c.nodes[leader].read_index(b"new")
    c.settle()
    assert c.read_states[leader] == [b"old", b"new"]


def test_snapshot_that_we_already_hold_is_answered_with_the_commit_index() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    for i in range(5):
        c.nodes[leader].propose(f"v{i}".encode())
    c.settle()
    c.tick(2)
    node = c.nodes[leader]
    snapshot = node.snapshot_taken(node.log.applied, b"s")
    follower_id = next(i for i in c.nodes if i != leader)
    follower = c.nodes[follower_id]
    # A stale tail of an older term after the snapshot index must not be reported as matched.
    follower.log.append([Entry(1, follower.log.last_index() + 1, data=b"stale")])
    follower.step(
        Message(
            MessageType.SNAPSHOT,
            to=follower_id,
            frm=leader,
            term=node.term,
            snapshot=snapshot,
        )
    )
    answer = follower.ready().messages[-1]
    assert answer.type is MessageType.APPEND_RESP
    assert answer.index == snapshot.meta.index


def test_deposed_leader_tail_is_skipped_a_term_at_a_time() -> None:
    c = Cluster([1, 2, 3])
    old = c.elect()
    c.isolate(old)
    for i in range(30):  # a long uncommitted tail on the isolated leader
        c.nodes[old].propose(f"lost{i}".encode())
    c.settle()
    c.tick(40)
    new = next(i for i in c.leaders() if i != old)
    c.nodes[new].propose(b"kept")
    c.settle()
    c.heal()
    appends_sent = 0
    for _ in range(10):
        c.tick()
        appends_sent += 1
        if c.data(old) == c.data(new):
            break
    assert c.data(old) == c.data(new)
    assert b"lost0" not in c.data(old)
    assert appends_sent < 10  # not one round trip per stale entry


def test_learner_is_offered_for_promotion_only_when_caught_up() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    c.add(4)
    c.down.add(4)
    change = ConfChange(ConfChangeType.ADD_LEARNER, 4, "x")
    c.nodes[leader].propose_conf_change(change, conf_data(change))
    c.settle()
    for i in range(150):
        c.nodes[leader].propose(f"v{i}".encode())
    c.settle()
    c.tick(12)
    assert c.nodes[leader].learner_to_promote(slack=100) == 0  # unreachable and far behind
    c.down.discard(4)
    c.tick(3)
    assert c.nodes[leader].learner_to_promote(slack=100) == 4


def test_the_only_voter_leads_at_its_first_tick() -> None:
    """A new swarm's first manager (or a forced new cluster) has nobody to wait for."""
    cluster = Cluster([1], election_tick=10)
    node = cluster.nodes[1]
    ticks = 0
    while node.role is not Role.LEADER:
        cluster.tick(1)
        ticks += 1
        assert ticks <= 2, "the single voter waited for an election timeout"


def test_a_voter_with_peers_still_waits_for_its_election_timeout() -> None:
    cluster = Cluster([1, 2, 3], election_tick=10)
    cluster.tick(1)
    assert all(n.role is not Role.LEADER for n in cluster.nodes.values())


def test_followers_told_the_leader_is_gone_elect_a_new_one_before_an_election_timeout() -> None:
    c = Cluster([1, 2, 3])
    old = c.elect()
    c.tick(3)
    c.down.add(old)
    followers = [n for n in c.nodes if n != old]
    for n in followers:
        c.nodes[n].report_leader_gone(old)
        assert c.nodes[n].leader == 0
    ticks = 0
    while not c.leaders():
        c.tick()
        ticks += 1
        assert ticks < 50, "no leader elected"
    # Campaigns start 1 to election_tick / 2 ticks after the hint, not after 10 to 19.
    assert ticks <= c.nodes[followers[0]].config.election_tick // 2 + 1
    new = c.leaders()[0]
    assert new in followers and c.nodes[new].term == c.nodes[old].term + 1
    c.nodes[new].propose(b"after")
    c.settle()
    assert all(c.data(n)[-1:] == [b"after"] for n in followers)


def test_a_leader_gone_hint_about_a_live_leader_does_not_depose_it() -> None:
    """One follower's link dropped while the leader is fine: the other follower is still in
    the leader's lease and refuses the pre-vote, and the next heartbeat brings it back."""
    c = Cluster([1, 2, 3])
    leader = c.elect()
    term = c.nodes[leader].term
    hinted = next(n for n in c.nodes if n != leader)
    c.nodes[hinted].report_leader_gone(leader)
    c.tick(15)
    assert c.leaders() == [leader] and c.nodes[leader].term == term
    assert c.nodes[hinted].leader == leader and c.nodes[hinted].term == term


def test_a_leader_gone_hint_about_another_node_is_ignored() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    follower, other = (n for n in c.nodes if n != leader)
    c.nodes[follower].report_leader_gone(other)
    assert c.nodes[follower].leader == leader
    c.nodes[leader].report_leader_gone(follower)
    assert c.nodes[leader].role is Role.LEADER


def appends_to(node: RaftNode, leader: int, count: int) -> list[Message]:
    """`count` appends from the leader, one entry each, as they would arrive back to back."""
    term = node.term
    last = node.log.last_index()
    return [
        Message(
            MessageType.APPEND,
            to=node.id,
            frm=leader,
            term=term,
            log_term=term if i else node.log.last_term(),
            index=last + i,
            entries=(Entry(term, last + i + 1, data=f"e{i}".encode()),),
            commit=node.log.committed,
        )
        for i in range(count)
    ]


def test_a_follower_handed_several_appends_at_once_acknowledges_them_once() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    follower_id = next(i for i in c.nodes if i != leader)
    follower = c.nodes[follower_id]
    for message in appends_to(follower, leader, 3):
        follower.step(message)
    answers = [m for m in follower.ready().messages if m.type is MessageType.APPEND_RESP]
    assert [(a.to, a.index, a.reject) for a in answers] == [
        (leader, follower.log.last_index(), False)
    ]


def test_a_refused_append_is_answered_on_its_own_beside_an_acknowledgement() -> None:
    c = Cluster([1, 2, 3])
    leader = c.elect()
    follower_id = next(i for i in c.nodes if i != leader)
    follower = c.nodes[follower_id]
    good = appends_to(follower, leader, 1)[0]
    gap = Message(
        MessageType.APPEND,
        to=follower_id,
        frm=leader,
        term=follower.term,
        log_term=follower.term,
        index=follower.log.last_index() + 5,  # entries the follower does not have
        entries=(Entry(follower.term, follower.log.last_index() + 6),),
    )
    follower.step(good)
    follower.step(gap)
    answers = [m for m in follower.ready().messages if m.type is MessageType.APPEND_RESP]
    assert [a.reject for a in answers] == [False, True]
    # The next Ready starts afresh: a new append gets an answer of its own.
    follower.step(appends_to(follower, leader, 1)[0])
    assert [m.index for m in follower.ready().messages] == [follower.log.last_index()]


def test_the_leader_tells_a_new_commit_index_once_per_ready_with_the_new_entries() -> None:
    c = Cluster([1, 2, 3])
    leader_id = c.elect()
    leader = c.nodes[leader_id]
    index = leader.propose(b"first")
    rd = leader.ready()
    leader.advance(rd)  # the leader's own copy is on disk
    answers = [
        Message(MessageType.APPEND_RESP, to=leader_id, frm=m.to, term=leader.term, index=index)
        for m in rd.messages
        if m.type is MessageType.APPEND
    ]
    assert len(answers) == 2
    for answer in answers:
        leader.step(answer)
    assert leader.log.committed == index
    second = leader.propose(b"second")
    appends = [m for m in leader.ready().messages if m.type is MessageType.APPEND]
    assert sorted(m.to for m in appends) == sorted(i for i in c.nodes if i != leader_id)
    for append in appends:
        assert append.commit == index
        assert [e.index for e in append.entries] == [second]


def test_a_slower_followers_late_answer_draws_no_append_when_it_was_told_everything() -> None:
    """The faster follower's answer commits the entry; the commit goes out with the next
    entry to both. The slower follower's answer to the first entry then needs no reply: the
    entry after it is in flight and the commit index reached it with that entry. (It drew an
    empty append, and the follower's answer to it, for every entry under load.)"""
    c = Cluster([1, 2, 3])
    leader_id = c.elect()
    leader = c.nodes[leader_id]
    fast, slow = sorted(i for i in c.nodes if i != leader_id)

    def answer(frm: int, index: int) -> None:
        leader.step(
            Message(MessageType.APPEND_RESP, to=leader_id, frm=frm, term=leader.term, index=index)
        )

    first = leader.propose(b"first")
    leader.advance(leader.ready())
    answer(fast, first)
    assert leader.log.committed == first
    second = leader.propose(b"second")
    sent = leader.ready()
    leader.advance(sent)
    appends = [m for m in sent.messages if m.type is MessageType.APPEND]
    assert {(m.to, m.commit, m.entries[-1].index) for m in appends} == {
        (fast, first, second),
        (slow, first, second),
    }
    answer(slow, first)
    assert not [m for m in leader.ready().messages if m.to == slow]
    # A new entry still reaches it, once.
    third = leader.propose(b"third")
    answer(slow, second)
    to_slow = [m for m in leader.ready().messages if m.to == slow]
    assert [m.entries[-1].index for m in to_slow] == [third]


def test_a_follower_not_yet_told_the_commit_is_told_on_its_answer() -> None:
    """A follower whose window was full when the commit was broadcast got nothing then; its
    answer to an older entry frees the window and it is sent the commit index, even though
    everything it lacks is already in flight."""
    c = Cluster([1, 2, 3], max_inflight=2)
    leader_id = c.elect()
    leader = c.nodes[leader_id]
    fast, slow = sorted(i for i in c.nodes if i != leader_id)
    first = leader.propose(b"first")
    leader.advance(leader.ready())
    second = leader.propose(b"second")
    leader.advance(leader.ready())  # two appends in flight to each follower: windows full

    def answer(frm: int, index: int) -> None:
        leader.step(
            Message(MessageType.APPEND_RESP, to=leader_id, frm=frm, term=leader.term, index=index)
        )

    answer(fast, second)
    assert leader.log.committed == second
    broadcast = leader.ready()
    leader.advance(broadcast)
    assert slow not in {m.to for m in broadcast.messages}
    answer(slow, first)
    told = [m for m in leader.ready().messages if m.to == slow]
    assert [(m.type, m.commit, m.entries) for m in told] == [(MessageType.APPEND, second, ())]
