"""The SWIM core, one node driven by hand: message handling, incarnations, refutation."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from controlplane.gossip.config import LAB, GossipConfig
from controlplane.gossip.suspicion import suspicion_timeout
from controlplane.gossip.swim import SwimNode
from controlplane.gossip.types import (
    Ack,
    Address,
    Alive,
    Dead,
    EventKind,
    IndirectPing,
    Member,
    MemberEvent,
    MemberRecord,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Output,
    Packet,
    Ping,
    PushPull,
    PushPullRequest,
    SendPacket,
    Suspect,
    TcpPing,
    UserMessage,
    UserMsg,
    UserState,
)


def addr(name: str) -> Address:
    return (f"10.0.0.{ord(name[-1]) - ord('a') + 1}", 7946)


def meta(name: str, role: str = "worker") -> NodeMeta:
    ip = addr(name)[0]
    return NodeMeta(f"id-{name}", role, ip, ip)


def node(name: str = "a", config: GossipConfig = LAB, incarnation: int = 0) -> SwimNode:
    return SwimNode(
        name,
        addr(name),
        meta(name),
        config,
        now=0.0,
        rng=random.Random(1),
        incarnation=incarnation,
    )


def alive(name: str, incarnation: int = 0) -> Alive:
    return Alive(name, incarnation, addr(name), meta(name))


def known(n: SwimNode, name: str) -> Member:
    member = n.member(name)
    assert member is not None, f"{n.name} does not know {name}"
    return member


def packet(sender: str, *messages: Message) -> Packet:
    return Packet(sender, messages)


def sent(outputs: list[Output]) -> list[SendPacket]:
    return [o for o in outputs if isinstance(o, SendPacket)]


def events(outputs: list[Output]) -> list[tuple[EventKind, str, MemberState]]:
    return [(o.kind, o.member.name, o.member.state) for o in outputs if isinstance(o, MemberEvent)]


def knows(n: SwimNode, *names: str) -> None:
    n.receive_packet(0.0, addr(names[0]), packet(names[0], *(alive(x) for x in names)))
    n.take_outputs()


def run(n: SwimNode, until: float) -> list[Output]:
    """Tick `n` at each of its deadlines up to `until`; return everything it output."""
    outputs: list[Output] = []
    while (deadline := n.next_deadline()) <= until:
        n.tick(deadline)
        outputs += n.take_outputs()
    return outputs


def test_a_new_node_knows_only_itself_and_announces_itself() -> None:
    a = node()
    assert [m.name for m in a.members()] == ["a"]
    assert a.member("a") is not None
    a.receive_packet(0.0, addr("b"), packet("b", Ping(1, "a", "b", addr("b"))))
    (reply,) = sent(a.take_outputs())
    assert reply.dst == addr("b")
    assert reply.packet.messages[0] == Ack(1)
    assert alive("a") in reply.packet.messages  # its own alive rides on the ack


def test_a_ping_for_another_name_is_not_answered() -> None:
    a = node()
    a.receive_packet(0.0, addr("b"), packet("b", Ping(1, "zed", "b", addr("b"))))
    assert a.take_outputs() == []
    assert a.counters.misdirected_pings == 1


def test_news_of_a_member_is_a_join_and_is_passed_on() -> None:
    a = node()
    a.take_outputs()
    a.receive_packet(0.0, addr("b"), packet("b", alive("b", 3)))
    assert events(a.take_outputs()) == [(EventKind.JOIN, "b", MemberState.ALIVE)]
    member = a.member("b")
    assert member is not None and member.incarnation == 3 and member.meta == meta("b")
    assert a.member_count() == a.member_count(MemberState.ALIVE) == 2
    a.receive_packet(0.0, addr("c"), packet("c", Ping(9, "a", "c", addr("c"))))
    (reply,) = sent(a.take_outputs())
    assert alive("b", 3) in reply.packet.messages


def test_incarnation_precedence_follows_swim() -> None:
    a = node()
    knows(a, "b")
    a.receive_packet(1.0, addr("c"), packet("c", alive("b", 2)))
    assert events(a.take_outputs()) == []  # same state, same metadata: nothing to tell
    a.receive_packet(1.0, addr("c"), packet("c", Suspect("b", 1, "c")))  # older: ignored
    assert known(a, "b").state is MemberState.ALIVE
    a.receive_packet(1.0, addr("c"), packet("c", Suspect("b", 2, "c")))
    assert events(a.take_outputs()) == [(EventKind.SUSPECT, "b", MemberState.SUSPECT)]
    a.receive_packet(1.0, addr("c"), packet("c", alive("b", 2)))  # suspect beats alive
    assert known(a, "b").state is MemberState.SUSPECT
    a.receive_packet(1.0, addr("b"), packet("b", alive("b", 3)))
    assert events(a.take_outputs()) == [(EventKind.ALIVE_AGAIN, "b", MemberState.ALIVE)]
    assert a.counters.suspicions_refuted == 1
    a.receive_packet(1.0, addr("c"), packet("c", Dead("b", 3, "c")))
    assert events(a.take_outputs()) == [(EventKind.DEAD, "b", MemberState.DEAD)]
    a.receive_packet(1.0, addr("c"), packet("c", alive("b", 3)))  # dead beats alive
    a.receive_packet(1.0, addr("c"), packet("c", Suspect("b", 3, "c")))
    assert known(a, "b").state is MemberState.DEAD
    a.receive_packet(2.0, addr("b"), packet("b", alive("b", 4)))
    assert events(a.take_outputs()) == [(EventKind.ALIVE_AGAIN, "b", MemberState.ALIVE)]


def test_a_dead_message_from_the_member_itself_means_it_left() -> None:
    a = node()
    knows(a, "b")
    a.receive_packet(1.0, addr("b"), packet("b", Dead("b", 0, "b")))
    assert events(a.take_outputs()) == [(EventKind.LEFT, "b", MemberState.LEFT)]


@pytest.mark.parametrize("accusation", [Suspect("a", 4, "b"), Dead("a", 4, "b")])
def test_an_accusation_is_refuted_with_a_higher_incarnation(accusation: Message) -> None:
    a = node(incarnation=2)
    knows(a, "b")
    a.receive_packet(1.0, addr("b"), packet("b", accusation, Ping(7, "a", "b", addr("b"))))
    assert a.incarnation == 5
    assert known(a, "a").state is MemberState.ALIVE
    assert a.counters.refutations == 1
    assert a.health_score == 1  # being accused hints that we are the slow one
    (reply,) = sent(a.take_outputs())
    assert reply.packet.messages[:2] == (Ack(7), alive("a", 5))  # the refutation rides the ack


def test_an_alive_about_ourselves_with_other_data_is_outbid() -> None:
    a = node()
    stale = Alive("a", 3, addr("a"), meta("a", role="manager"))  # our previous life
    a.receive_packet(1.0, addr("b"), packet("b", stale))
    assert a.incarnation == 4
    assert a.meta == meta("a")
    a.receive_packet(1.0, addr("b"), packet("b", alive("a", 4)))  # our own news echoed back
    assert a.incarnation == 4


def test_a_known_name_from_another_address_is_a_conflict() -> None:
    a = node()
    knows(a, "b")
    a.receive_packet(1.0, addr("c"), packet("c", Alive("b", 9, addr("c"), meta("b"))))
    assert known(a, "b").addr == addr("b")
    assert a.counters.address_conflicts == 1
    a.receive_packet(1.0, addr("b"), packet("b", Dead("b", 0, "b")))  # b leaves
    a.take_outputs()
    a.receive_packet(2.0, addr("c"), packet("c", Alive("b", 0, addr("c"), meta("b"))))
    assert known(a, "b").addr == addr("c")
    assert events(a.take_outputs()) == [(EventKind.ALIVE_AGAIN, "b", MemberState.ALIVE)]


def test_a_dead_members_name_can_be_reclaimed_after_the_reclaim_time() -> None:
    a = node(config=replace(LAB, dead_node_reclaim_time=1.0))
    knows(a, "b")
    a.receive_packet(0.0, addr("c"), packet("c", Dead("b", 0, "c")))
    moved = Alive("b", 0, addr("c"), meta("b"))
    a.receive_packet(0.5, addr("c"), packet("c", moved))
    assert known(a, "b").addr == addr("b") and a.counters.address_conflicts == 1
    a.receive_packet(1.5, addr("c"), packet("c", moved))
    assert known(a, "b").addr == addr("c")
    assert known(a, "b").state is MemberState.ALIVE


def test_a_probe_of_a_suspect_member_carries_the_suspicion_first() -> None:
    a = node()
    knows(a, "b")
    a.receive_packet(0.0, addr("c"), packet("c", Suspect("b", 0, "c")))
    a.take_outputs()
    probes = [p for p in sent(run(a, 0.2)) if any(isinstance(m, Ping) for m in p.packet.messages)]
    assert probes and probes[0].dst == addr("b")
    first, second = probes[0].packet.messages[:2]
    assert first == Suspect("b", 0, "a")
    assert isinstance(second, Ping) and second.target == "b"


def test_without_the_buddy_system_the_probe_is_a_plain_ping() -> None:
    a = node(config=replace(LAB, buddy=False))
    knows(a, "b")
    a.receive_packet(0.0, addr("c"), packet("c", Suspect("b", 0, "c")))
    probes = [p for p in sent(run(a, 0.2)) if any(isinstance(m, Ping) for m in p.packet.messages)]
    assert isinstance(probes[0].packet.messages[0], Ping)


def test_a_missed_probe_leads_to_indirect_probes_then_suspicion() -> None:
    a = node()
    knows(a, "b", "c", "d", "e")
    start, ping = first_probe(a)
    outputs = run(a, start + LAB.probe_interval * 1.01)
    indirect = [p for p in sent(outputs) if isinstance(p.packet.messages[0], IndirectPing)]
    assert len(indirect) == LAB.indirect_checks
    assert addr(ping.target) not in {p.dst for p in indirect}
    assert (EventKind.SUSPECT, ping.target, MemberState.SUSPECT) in events(outputs)
    assert a.counters.indirect_probes == 1 and a.counters.probe_failures == 1
    # Nobody answered, nor sent the nacks they owed: our own links are suspect.
    assert a.health_score == LAB.indirect_checks


def first_probe(n: SwimNode) -> tuple[float, Ping]:
    """Run `n` until it sends its first ping; return when, and the ping."""
    while True:
        now = n.next_deadline()
        n.tick(now)
        for out in sent(n.take_outputs()):
            for m in out.packet.messages:
                if isinstance(m, Ping):
                    return now, m


def test_an_ack_through_a_relay_completes_the_probe() -> None:
    a = node()
    knows(a, "b", "c", "d", "e")
    start, ping = first_probe(a)
    run(a, start + LAB.probe_timeout)  # past the direct timeout, not the interval
    assert a.counters.indirect_probes == 1
    a.receive_packet(start + LAB.probe_timeout, addr("c"), packet("c", Ack(ping.seq)))
    outputs = run(a, start + LAB.probe_interval * 1.01)
    assert all(kind is not EventKind.SUSPECT for kind, _, _ in events(outputs))
    assert a.counters.acks == 1
    assert a.health_score == 0


def test_nacks_from_relays_keep_the_prober_healthy() -> None:
    a = node()
    knows(a, "b", "c", "d", "e")
    start, ping = first_probe(a)
    run(a, start + LAB.probe_timeout)
    for relay in ("b", "c", "d", "e"):
        if relay != ping.target:
            a.receive_packet(start + LAB.probe_timeout, addr(relay), packet(relay, Nack(ping.seq)))
    run(a, start + LAB.probe_interval * 1.01)
    assert a.counters.nacks == LAB.indirect_checks
    assert a.counters.probe_failures == 1
    assert a.health_score == 0  # the target is dead, we are fine


def test_a_relay_forwards_the_ack_or_answers_with_a_nack() -> None:
    b = node("b")
    b.take_outputs()
    request = IndirectPing(42, "c", addr("c"), True, "a", addr("a"))
    b.receive_packet(0.0, addr("a"), packet("a", request))
    (ping_out,) = sent(b.take_outputs())
    assert ping_out.dst == addr("c")
    relay_ping = ping_out.packet.messages[0]
    assert isinstance(relay_ping, Ping) and relay_ping.target == "c"
    b.receive_packet(0.01, addr("c"), packet("c", Ack(relay_ping.seq)))
    (forward,) = sent(b.take_outputs())
    assert forward.dst == addr("a") and forward.packet.messages[0] == Ack(42)
    b.receive_packet(0.02, addr("a"), packet("a", replace(request, seq=43)))
    b.take_outputs()
    nacks = [p for p in sent(run(b, 0.02 + LAB.probe_timeout)) if p.dst == addr("a")]
    assert nacks[0].packet.messages[0] == Nack(43)


def test_suspicion_timeout_starts_long_and_shrinks_with_confirmations() -> None:
    a = node()
    knows(a, "b", "c", "d", "e", "f")
    n = 6
    low, high = LAB.suspicion_min_timeout(n), LAB.suspicion_max_timeout(n)
    a.receive_packet(0.0, addr("c"), packet("c", Suspect("b", 0, "c")))
    a.receive_packet(0.0, addr("c"), packet("c", Suspect("b", 0, "c")))  # the same accuser
    assert known(a, "b").state is MemberState.SUSPECT
    a.receive_packet(0.0, addr("d"), packet("d", Suspect("b", 0, "d")))
    a.receive_packet(0.0, addr("e"), packet("e", Suspect("b", 0, "e")))
    deaths = _death_times(a, "b", high + 1)
    assert deaths and deaths[0] == pytest.approx(low)


def test_without_lifeguard_the_suspicion_timeout_is_fixed() -> None:
    a = node(config=LAB.without_lifeguard())
    knows(a, "b", "c", "d", "e", "f")
    a.receive_packet(0.0, addr("c"), packet("c", Suspect("b", 0, "c")))
    deaths = _death_times(a, "b", 10.0)
    assert deaths and deaths[0] == pytest.approx(LAB.suspicion_min_timeout(6))


def test_our_own_failed_probe_confirms_a_suspicion() -> None:
    a = node()  # nobody answers its probes here
    knows(a, "b", "c", "d", "e", "f")
    a.receive_packet(0.0, addr("c"), packet("c", Suspect("b", 0, "c")))
    deaths = _death_times(a, "b", 10.0)
    low, high = LAB.suspicion_min_timeout(6), LAB.suspicion_max_timeout(6)
    assert deaths and deaths[0] == pytest.approx(suspicion_timeout(1, 2, low, high))


def _death_times(n: SwimNode, name: str, until: float) -> list[float]:
    times = []
    while (deadline := n.next_deadline()) <= until:
        n.tick(deadline)
        for kind, who, _ in events(n.take_outputs()):
            if kind is EventKind.DEAD and who == name:
                times.append(deadline)
    return times


def test_push_pull_merges_second_hand_deaths_as_suspicions() -> None:
    a = node()
    knows(a, "b", "c", "d")
    remote = PushPull(
        join=False,
        members=(
            MemberRecord("b", addr("b"), 0, MemberState.DEAD, meta("b")),
            MemberRecord("c", addr("c"), 0, MemberState.LEFT, meta("c")),
            MemberRecord("e", addr("e"), 5, MemberState.ALIVE, meta("e")),
            MemberRecord("f", addr("f"), 0, MemberState.DEAD, meta("f")),  # unknown: ignored
        ),
        user_state=b"tables",
        sender="d",
    )
    response = a.handle_push_pull(1.0, addr("d"), remote)
    assert {r.name for r in response.members} == {"a", "b", "c", "d"}  # answered before merge
    assert all(r.state is MemberState.ALIVE for r in response.members)
    assert response.sender == "a" and not response.join
    outputs = a.take_outputs()
    assert events(outputs) == [
        (EventKind.SUSPECT, "b", MemberState.SUSPECT),
        (EventKind.LEFT, "c", MemberState.LEFT),
        (EventKind.JOIN, "e", MemberState.ALIVE),
    ]
    assert UserState("d", b"tables", False) in outputs
    assert a.member("f") is None


def test_join_push_pulls_with_each_seed_and_merges_the_answers() -> None:
    a = node()
    a.set_user_state(b"mine")
    a.join(0.0, [addr("b"), addr("a"), addr("c")])
    requests = [o for o in a.take_outputs() if isinstance(o, PushPullRequest)]
    assert [r.dst for r in requests] == [addr("b"), addr("c")]  # not ourselves
    assert requests[0].request.join and requests[0].request.user_state == b"mine"
    answer = PushPull(True, (MemberRecord("b", addr("b"), 1, MemberState.ALIVE, meta("b")),), b"")
    a.push_pull_result(0.1, addr("b"), answer)
    a.push_pull_result(0.1, addr("c"), None)
    assert events(a.take_outputs()) == [(EventKind.JOIN, "b", MemberState.ALIVE)]
    assert a.counters.push_pulls == 2 and a.counters.push_pull_failures == 1


def test_user_broadcasts_ride_on_packets_and_replace_by_key() -> None:
    a = node()
    knows(a, "b")
    a.queue_broadcast(b"v1", key=b"k")
    a.queue_broadcast(b"v2", key=b"k")
    a.queue_broadcast(b"other")
    a.receive_packet(0.0, addr("b"), packet("b", Ping(1, "a", "b", addr("b"))))
    (reply,) = sent(a.take_outputs())
    assert UserMsg(b"v2") in reply.packet.messages
    assert UserMsg(b"other") in reply.packet.messages
    assert UserMsg(b"v1") not in reply.packet.messages
    with pytest.raises(ValueError, match="does not fit"):
        a.queue_broadcast(b"x" * LAB.packet_budget)


def test_user_messages_are_handed_up_with_their_sender() -> None:
    a = node()
    a.receive_packet(0.0, addr("b"), packet("b", UserMsg(b"hello")))
    assert UserMessage("b", b"hello") in a.take_outputs()


def test_update_meta_publishes_under_a_new_incarnation() -> None:
    a = node()
    knows(a, "b")
    new = replace(meta("a"), role="manager")
    a.update_meta(1.0, new)
    assert a.incarnation == 1 and a.meta == new
    a.receive_packet(1.0, addr("b"), packet("b", Ping(1, "a", "b", addr("b"))))
    (reply,) = sent(a.take_outputs())
    assert Alive("a", 1, addr("a"), new) in reply.packet.messages
    b = node("b")
    knows(b, "a")
    b.receive_packet(1.0, addr("a"), reply.packet)
    assert events(b.take_outputs()) == [(EventKind.UPDATE, "a", MemberState.ALIVE)]


def test_leave_announces_itself_and_stops_probing() -> None:
    a = node()
    knows(a, "b")
    a.leave(1.0)
    assert a.left and not a.leave_finished
    assert known(a, "a").state is MemberState.LEFT
    outputs = run(a, 3.0)
    assert not any(
        isinstance(m, Ping) for p in sent(outputs) for m in p.packet.messages
    )  # no probes after leaving
    gossip = [m for p in sent(outputs) for m in p.packet.messages]
    assert Dead("a", 0, "a") in gossip
    assert a.leave_finished
    a.receive_packet(3.0, addr("b"), packet("b", Suspect("a", 0, "b")))
    assert a.incarnation == 0  # a node that left does not refute


def test_dead_members_are_gossiped_to_then_reaped() -> None:
    a = node()
    knows(a, "b", "c")
    a.receive_packet(0.0, addr("c"), packet("c", Dead("b", 0, "c")))
    a.take_outputs()
    a.queue_broadcast(b"news")
    early = {p.dst for p in sent(run(a, 1.0))}
    assert addr("b") in early  # still gossiped to: it may be alive and needs to hear it
    outputs = run(a, LAB.gossip_to_the_dead_time + 1.0)
    assert (EventKind.REAPED, "b", MemberState.DEAD) in events(outputs)
    assert a.member("b") is None


def test_a_member_that_answers_over_tcp_is_not_suspected() -> None:
    a = node()
    knows(a, "b", "c", "d", "e")
    start, ping = first_probe(a)
    outputs = run(a, start + LAB.probe_timeout)
    (tcp,) = [o for o in outputs if isinstance(o, TcpPing)]
    assert tcp.dst == addr(ping.target) and tcp.ping.seq == ping.seq
    assert tcp.timeout == pytest.approx(LAB.probe_interval - LAB.probe_timeout)
    a.tcp_ping_result(start + LAB.probe_timeout + 0.01, ping.seq, True)
    outputs = run(a, start + LAB.probe_interval * 1.01)
    assert all(kind is not EventKind.SUSPECT for kind, _, _ in events(outputs))
    assert a.counters.tcp_rescues == 1 and a.counters.probe_failures == 0


def test_a_failed_tcp_ping_does_not_save_the_member() -> None:
    a = node()
    knows(a, "b", "c", "d", "e")
    start, ping = first_probe(a)
    run(a, start + LAB.probe_timeout)
    a.tcp_ping_result(start + LAB.probe_timeout + 0.01, ping.seq, False)
    outputs = run(a, start + LAB.probe_interval * 1.01)
    assert (EventKind.SUSPECT, ping.target, MemberState.SUSPECT) in events(outputs)


def test_tcp_pings_can_be_turned_off() -> None:
    a = node(config=replace(LAB, tcp_pings=False))
    knows(a, "b", "c", "d", "e")
    start, _ = first_probe(a)
    assert not any(isinstance(o, TcpPing) for o in run(a, start + LAB.probe_interval))


def test_the_tcp_ping_server_side_answers_only_for_its_own_name() -> None:
    a = node()
    assert a.handle_tcp_ping(0.0, addr("b"), Ping(3, "a", "b", addr("b"))) == Ack(3)
    assert a.handle_tcp_ping(0.0, addr("b"), Ping(4, "zed", "b", addr("b"))) is None


def test_the_gossip_round_idles_while_nothing_waits_and_wakes_for_a_broadcast() -> None:
    a = node()
    knows(a, "b")
    run(a, 2.0)  # the alives queued at the start go out, to their retransmit limit
    wakes = 0
    while (deadline := a.next_deadline()) <= 3.0:
        a.tick(deadline)
        assert not any(
            isinstance(m, UserMsg) for o in sent(a.take_outputs()) for m in o.packet.messages
        )
        wakes += 1
    # A second of probes (and at most a push-pull); idle gossip rounds would add 50.
    assert wakes <= round(1.0 / LAB.probe_interval) + 2
    a.queue_broadcast(b"news")
    deadline = a.next_deadline()
    assert deadline <= 3.0 + LAB.gossip_interval
    a.tick(max(deadline, 3.0))
    carried = [m for o in sent(a.take_outputs()) for m in o.packet.messages]
    assert UserMsg(b"news") in carried
