"""The pure parts of the SWIM layer: configuration math, suspicion, awareness, broadcast queue."""

from __future__ import annotations

import math

import pytest

from controlplane.gossip.awareness import Awareness
from controlplane.gossip.broadcast import BroadcastQueue, message_size, packet_overhead
from controlplane.gossip.config import LAB, LAN, PROFILES, GossipConfig
from controlplane.gossip.suspicion import Suspicion, suspicion_timeout
from controlplane.gossip.types import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Message,
    Nack,
    NodeMeta,
    Ping,
    Suspect,
    UserMsg,
)

META = NodeMeta("abcdefghijklmnopqrstuvwxy", "worker", "10.0.0.7", "10.0.0.7")


def alive(name: str, incarnation: int = 1) -> Alive:
    return Alive(name, incarnation, ("10.0.0.7", 7946), META)


# ---- config --------------------------------------------------------------------------------------


def test_lan_profile_is_memberlists_default_lan_config() -> None:
    assert (LAN.probe_interval, LAN.probe_timeout, LAN.indirect_checks) == (1.0, 0.5, 3)
    assert (LAN.retransmit_mult, LAN.suspicion_mult, LAN.suspicion_max_timeout_mult) == (4, 4, 6)
    assert (LAN.gossip_interval, LAN.gossip_nodes, LAN.gossip_to_the_dead_time) == (0.2, 3, 30.0)
    assert (LAN.push_pull_interval, LAN.awareness_max_multiplier, LAN.packet_budget) == (
        30.0,
        8,
        1400,
    )
    assert PROFILES == {"lan": LAN, "lab": LAB}


def test_lab_profile_keeps_the_lan_ratios_ten_times_faster() -> None:
    for name in ("probe_interval", "probe_timeout", "gossip_interval", "push_pull_interval"):
        assert getattr(LAB, name) == pytest.approx(getattr(LAN, name) / 10)
    assert LAB.indirect_checks == LAN.indirect_checks
    assert LAB.suspicion_mult == LAN.suspicion_mult


def test_derived_values_follow_memberlist_util() -> None:
    assert LAN.retransmit_limit(1) == 4  # ceil(log10(2)) = 1
    assert LAN.retransmit_limit(9) == 4
    assert LAN.retransmit_limit(10) == 8  # ceil(log10(11)) = 2
    assert LAN.retransmit_limit(999) == 12
    assert LAN.retransmit_limit(1000) == 16
    # log10(n) floored at 1: small clusters get SuspicionMult probe intervals.
    assert LAN.suspicion_min_timeout(3) == pytest.approx(4.0)
    assert LAN.suspicion_min_timeout(100) == pytest.approx(8.0)
    assert LAN.suspicion_min_timeout(1000) == pytest.approx(12.0)
    assert LAN.suspicion_max_timeout(1000) == pytest.approx(72.0)
    assert LAN.suspicion_confirmations(100) == 2
    assert LAN.suspicion_confirmations(3) == 0  # nobody left to confirm
    assert LAN.push_pull_period(32) == 30.0
    assert LAN.push_pull_period(33) == 60.0
    assert LAN.push_pull_period(64) == 60.0
    assert LAN.push_pull_period(65) == 90.0
    assert LAN.push_pull_period(1000) == 180.0
    # A relay nacks within the requester's indirect phase (interval - timeout).
    assert LAN.relay_timeout() == pytest.approx(0.4)


def test_without_lifeguard_turns_every_part_off() -> None:
    plain = LAN.without_lifeguard()
    assert not (plain.awareness or plain.nacks or plain.dynamic_suspicion or plain.buddy)
    assert plain.probe_interval == LAN.probe_interval


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="probe_timeout"):
        GossipConfig(probe_timeout=2.0)
    with pytest.raises(ValueError, match="packet_budget"):
        GossipConfig(packet_budget=100)


# ---- suspicion -----------------------------------------------------------------------------------


def test_suspicion_timeout_shrinks_logarithmically_from_max_to_min() -> None:
    assert suspicion_timeout(0, 2, 8.0, 48.0) == pytest.approx(48.0)
    expected = 48.0 - 40.0 * math.log(2) / math.log(3)
    assert suspicion_timeout(1, 2, 8.0, 48.0) == pytest.approx(expected)
    assert suspicion_timeout(2, 2, 8.0, 48.0) == pytest.approx(8.0)
    assert suspicion_timeout(5, 2, 8.0, 48.0) == pytest.approx(8.0)  # never below min
    assert suspicion_timeout(0, 0, 8.0, 48.0) == pytest.approx(8.0)  # no confirmations expected


def test_suspicion_counts_each_independent_confirmation_once() -> None:
    s = Suspicion("a", 2, 8.0, 48.0, now=100.0)
    assert s.deadline == pytest.approx(148.0)
    assert not s.confirm("a")  # the accuser echoing itself
    assert s.confirm("b")
    assert not s.confirm("b")
    first = s.deadline
    assert 108.0 < first < 148.0
    assert s.confirm("c")
    assert s.deadline == pytest.approx(108.0)
    assert not s.confirm("d")  # already at the minimum
    assert s.confirmations == 2


def test_suspicion_without_expected_confirmations_uses_the_minimum() -> None:
    s = Suspicion("a", 0, 4.0, 24.0, now=0.0)
    assert s.deadline == pytest.approx(4.0)
    assert not s.confirm("b")


# ---- awareness -----------------------------------------------------------------------------------


def test_awareness_is_clamped_and_scales_timeouts() -> None:
    a = Awareness(8)
    a.apply(-1)
    assert a.score == 0
    assert a.scale(0.5) == pytest.approx(0.5)
    a.apply(3)
    assert a.scale(0.5) == pytest.approx(2.0)
    a.apply(100)
    assert a.score == 7
    assert a.scale(1.0) == pytest.approx(8.0)


# ---- broadcast queue -----------------------------------------------------------------------------


def test_message_sizes_are_plausible_protobuf_estimates() -> None:
    assert message_size(Ack(1)) < 8
    assert message_size(Nack(300)) < 10
    ping = Ping(7, "node-0001", "node-0002", ("10.0.0.2", 7946))
    assert 30 < message_size(ping) < 60
    ind = IndirectPing(7, "node-0001", ("10.0.0.1", 7946), True, "node-0002", ("10.0.0.2", 7946))
    assert message_size(ind) > message_size(ping)
    assert 90 < message_size(alive("node-0001")) < 140
    assert message_size(Suspect("node-0001", 3, "node-0002")) < 32
    assert message_size(Dead("node-0001", 3, "node-0001")) < 32
    assert message_size(UserMsg(b"x" * 500)) > 500


def test_queue_sends_fewest_transmits_first_and_newest_first() -> None:
    q = BroadcastQueue()
    q.queue(alive("a"), "a")
    q.queue(alive("b"), "b")
    q.queue(alive("c"), "c")
    one = message_size(alive("a"))
    assert names(q.take(one, 10)) == ["c"]
    assert names(q.take(one, 10)) == ["b"]
    # a: never sent; then, of those sent once, the one sent last.
    assert names(q.take(2 * one, 10)) == ["a", "b"]
    assert names(q.take(3 * one, 10)) == ["a", "c", "b"]


def test_queue_drops_an_item_after_its_transmit_limit() -> None:
    q = BroadcastQueue()
    q.queue(alive("a"), "a")
    for _ in range(3):
        assert names(q.take(1000, 3)) == ["a"]
    assert q.take(1000, 3) == []
    assert len(q) == 0
    assert "a" not in q


def test_queue_replaces_an_older_item_with_the_same_key() -> None:
    q = BroadcastQueue()
    q.queue(alive("a", 1), "a")
    q.take(1000, 10)
    q.queue(Suspect("a", 1, "x"), "a")
    q.queue(UserMsg(b"u"))
    q.queue(UserMsg(b"v"))  # no key: never replaces anything
    assert len(q) == 3
    taken = q.take(1000, 10)
    assert taken == [UserMsg(b"v"), UserMsg(b"u"), Suspect("a", 1, "x")]


def test_queue_fills_the_room_and_skips_what_does_not_fit() -> None:
    q = BroadcastQueue()
    q.queue(Suspect("small", 1, "x"), "small")
    q.queue(alive("big"), "big")
    room = message_size(Suspect("small", 1, "x")) + 5
    assert q.take(room, 10) == [Suspect("small", 1, "x")]
    assert q.take(1000, 10) == [alive("big"), Suspect("small", 1, "x")]


def test_a_full_packet_stays_within_the_budget() -> None:
    q = BroadcastQueue()
    for i in range(100):
        q.queue(alive(f"node-{i:04d}"), i)
    room = LAN.packet_budget - packet_overhead("node-0000")
    taken = q.take(room, 10)
    assert sum(message_size(m) for m in taken) <= room
    assert len(taken) >= 10


def names(messages: list[Message]) -> list[str]:
    out = []
    for m in messages:
        assert isinstance(m, Alive)
        out.append(m.name)
    return out
