"""The virtual clock and the simulated network: ordering, determinism, faults, partitions."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.sim.clock import Simulator
from controlplane.sim.network import Faults, SimNetwork

Trace = list[tuple[float, str, str, Any]]


def make_net(
    seed: int = 1, faults: Faults | None = None, nodes: str = "abcd"
) -> tuple[Simulator, SimNetwork[str, object], Trace]:
    sim = Simulator(seed)
    net: SimNetwork[str, object] = SimNetwork(sim, faults)
    trace: Trace = []
    for name in nodes:
        attach(net, trace, name)
    return sim, net, trace


def attach(net: SimNetwork[str, object], trace: Trace, name: str) -> None:
    def deliver(src: str, payload: object) -> None:
        trace.append((net.sim.now, src, name, payload))

    net.attach(name, deliver)


def assert_balanced(net: SimNetwork[str, object]) -> None:
    s = net.stats
    assert s.sent + s.duplicated == s.delivered + s.dropped + s.in_flight


# Clock


def test_timers_run_in_time_order_and_ties_in_scheduling_order() -> None:
    sim = Simulator()
    seen: list[str] = []
    sim.call_at(2.0, seen.append, "late")
    sim.call_at(1.0, seen.append, "first")
    sim.call_at(1.0, seen.append, "second")
    sim.call_later(0.5, seen.append, "early")
    assert sim.pending == 4
    sim.run_until(10.0)
    assert seen == ["early", "first", "second", "late"]
    assert sim.now == 10.0
    assert sim.events_run == 4
    assert sim.pending == 0


def test_cancelled_timers_never_fire_and_cancel_is_idempotent() -> None:
    sim = Simulator()
    seen: list[int] = []
    keep = sim.call_later(1.0, seen.append, 1)
    drop = sim.call_later(1.0, seen.append, 2)
    drop.cancel()
    drop.cancel()
    assert not drop.active and keep.active
    assert sim.pending == 1
    assert sim.step() is True
    assert sim.step() is False
    keep.cancel()  # after firing: harmless
    assert seen == [1]
    assert sim.pending == 0


def test_many_cancellations_keep_the_survivors_in_order() -> None:
    sim = Simulator()
    seen: list[int] = []
    timers = [sim.call_at(float(i), seen.append, i) for i in range(2000)]
    for i, timer in enumerate(timers):
        if i % 10:
            timer.cancel()
    assert sim.pending == 200
    assert sim.run_until_quiet(10_000.0)
    assert seen == list(range(0, 2000, 10))
    assert sim.now == 1990.0


def test_timers_scheduled_from_callbacks_and_zero_delay() -> None:
    sim = Simulator()
    seen: list[tuple[float, str]] = []

    def first() -> None:
        seen.append((sim.now, "first"))
        sim.call_later(0.0, lambda: seen.append((sim.now, "zero-delay")))

    sim.call_at(1.0, first)
    sim.call_at(1.0, lambda: seen.append((sim.now, "tie")))
    sim.run_for(5.0)
    assert seen == [(1.0, "first"), (1.0, "tie"), (1.0, "zero-delay")]


def test_callback_exceptions_propagate() -> None:
    sim = Simulator()

    def boom() -> None:
        raise RuntimeError("invariant broken")

    sim.call_later(1.0, boom)
    with pytest.raises(RuntimeError, match="invariant broken"):
        sim.run_until(2.0)
    assert sim.now == 1.0


def test_scheduling_in_the_past_is_refused() -> None:
    sim = Simulator()
    sim.run_until(5.0)
    with pytest.raises(ValueError):
        sim.call_at(4.0, print)
    with pytest.raises(ValueError):
        sim.call_later(-1.0, print)
    with pytest.raises(ValueError):
        sim.run_until(1.0)


def test_run_while_stops_on_the_predicate_or_the_limit() -> None:
    sim = Simulator()
    count = [0]

    def tick() -> None:
        count[0] += 1
        sim.call_later(1.0, tick)

    sim.call_at(1.0, tick)
    assert sim.run_while(lambda: count[0] < 3, until=100.0) is True
    assert sim.now == 3.0 and count[0] == 3
    assert sim.run_while(lambda: count[0] < 1000, until=10.5) is False
    assert sim.now == 10.5 and count[0] == 10
    assert sim.run_until_quiet(20.0) is False
    assert sim.now == 20.0


def test_seeded_rng_is_reproducible() -> None:
    a, b = Simulator(42), Simulator(42)
    assert [a.rng.random() for _ in range(5)] == [b.rng.random() for _ in range(5)]
    assert Simulator(43).rng.random() != Simulator(42).rng.random()


# Network


def chatter(seed: int, faults: Faults) -> Trace:
    """Nodes forward a hop counter to random peers; returns the delivery trace."""
    sim = Simulator(seed)
    net: SimNetwork[str, int] = SimNetwork(sim, faults)
    names = ["n1", "n2", "n3", "n4", "n5"]
    trace: Trace = []

    def make(name: str) -> None:
        def deliver(src: str, hops: int) -> None:
            trace.append((sim.now, src, name, hops))
            if hops < 6:
                for _ in range(2):
                    net.send(name, sim.rng.choice(names), hops + 1)

        net.attach(name, deliver)

    for name in names:
        make(name)
    for name in names:
        net.send(name, names[0], 0)
    sim.run_until_quiet(1_000.0)
    return trace


def test_same_seed_same_delivery_trace() -> None:
    faults = Faults(drop=0.1, duplicate=0.1, delay_min=0.001, delay_max=0.05)
    first = chatter(7, faults)
    assert len(first) > 100
    assert chatter(7, faults) == first
    assert chatter(8, faults) != first


def test_drops_and_duplicates_are_counted() -> None:
    sim, net, trace = make_net(faults=Faults(drop=1.0))
    for _ in range(10):
        net.send("a", "b", "x")
    sim.run_until_quiet(10.0)
    assert trace == []
    assert net.stats.dropped_loss == 10 and net.stats.dropped == 10
    assert_balanced(net)

    net.faults = Faults(duplicate=1.0)
    for i in range(10):
        net.send("a", "b", i)
    sim.run_until_quiet(20.0)
    assert sorted(p for *_, p in trace) == sorted(list(range(10)) * 2)
    assert net.stats.duplicated == 10 and net.stats.delivered == 20
    assert_balanced(net)


def test_random_loss_rate_is_roughly_the_configured_one() -> None:
    sim, net, _ = make_net(faults=Faults(drop=0.3, duplicate=0.2))
    for _ in range(5000):
        net.send("a", "b", None)
    assert net.stats.in_flight > 0
    assert_balanced(net)
    sim.run_until_quiet(10.0)
    assert 1300 < net.stats.dropped_loss < 1700
    assert 500 < net.stats.duplicated < 900
    assert net.stats.in_flight == 0
    assert_balanced(net)


def test_random_delays_reorder_unless_fifo_is_asked() -> None:
    for reorder in (True, False):
        sim, net, trace = make_net(faults=Faults(delay_min=0.0, delay_max=1.0, reorder=reorder))
        for i in range(200):
            net.send("a", "b", i)
            sim.run_for(0.01)
        sim.run_until_quiet(100.0)
        order = [p for *_, p in trace]
        assert sorted(order) == list(range(200))
        assert (order != sorted(order)) is reorder


def test_delays_stay_within_bounds() -> None:
    sim, net, trace = make_net(faults=Faults(delay_min=0.2, delay_max=0.3))
    for _ in range(100):
        net.send("a", "b", None)
    sim.run_until_quiet(10.0)
    assert all(0.2 <= t <= 0.3 for t, *_ in trace)


def test_partition_blocks_between_groups_and_heals() -> None:
    sim, net, trace = make_net()
    net.partition({"a", "b"}, {"c"})  # "d" is unlisted: a group of its own with other unlisted
    assert net.can_reach("a", "b") and net.can_reach("b", "a")
    assert not net.can_reach("a", "c") and not net.can_reach("c", "b")
    assert not net.can_reach("d", "a") and not net.can_reach("d", "c")
    assert net.can_reach("c", "c")
    for dst in "bcd":
        net.send("a", dst, "hello")
    sim.run_until_quiet(1.0)
    assert [(src, dst) for _, src, dst, _ in trace] == [("a", "b")]
    assert net.stats.dropped_partition == 2

    net.heal()
    net.send("a", "c", "again")
    sim.run_until_quiet(2.0)
    assert trace[-1][1:] == ("a", "c", "again")
    assert_balanced(net)


def test_partition_of_one_group_cuts_it_from_everyone_else() -> None:
    _, net, _ = make_net()
    net.partition({"a"})
    assert not net.can_reach("a", "b") and not net.can_reach("c", "a")
    assert net.can_reach("b", "c") and net.can_reach("c", "d")
    net.partition()
    assert net.can_reach("a", "b")
    with pytest.raises(ValueError):
        net.partition({"a"}, {"a", "b"})


def test_messages_in_flight_when_a_partition_starts_are_delivered() -> None:
    sim, net, trace = make_net(faults=Faults(delay_min=1.0, delay_max=1.0))
    net.send("a", "b", "on the wire")
    sim.run_for(0.5)
    net.partition({"a"}, {"b"})
    net.send("a", "b", "cut")
    sim.run_for(0.1)
    net.heal()  # healing does not resurrect the message sent across the partition
    sim.run_until_quiet(10.0)
    assert [p for *_, p in trace] == ["on the wire"]
    assert net.stats.dropped_partition == 1


def test_isolate_and_one_way_block() -> None:
    sim, net, trace = make_net()
    net.isolate("a")
    assert not net.can_reach("a", "b") and not net.can_reach("b", "a")
    assert net.can_reach("b", "c")
    net.heal()
    net.block("a", "b")
    assert not net.can_reach("a", "b") and net.can_reach("b", "a")
    net.send("a", "b", "blocked")
    net.send("b", "a", "passes")
    sim.run_until_quiet(1.0)
    assert [p for *_, p in trace] == ["passes"]
    net.unblock("a", "b")
    assert net.can_reach("a", "b")


def test_detach_drops_messages_in_flight_even_after_restart() -> None:
    sim, net, trace = make_net(faults=Faults(delay_min=1.0, delay_max=1.0))
    net.send("a", "b", "to the crashed incarnation")
    net.send("b", "a", "from the crashing node")
    sim.run_for(0.5)
    net.detach("b")
    assert not net.is_attached("b")
    net.send("b", "a", "a crashed node cannot send")
    net.send("a", "b", "nobody listens")
    attach(net, trace, "b")  # restarted before the first message arrives
    sim.run_until_quiet(10.0)
    assert [p for *_, p in trace] == ["from the crashing node"]
    assert net.stats.dropped_down == 3
    net.send("a", "b", "new incarnation")
    sim.run_until_quiet(20.0)
    assert trace[-1][1:] == ("a", "b", "new incarnation")
    assert_balanced(net)


def test_link_fault_override() -> None:
    sim, net, trace = make_net()
    net.set_link_faults("a", "b", Faults(drop=1.0))
    net.send("a", "b", "lost")
    net.send("b", "a", "kept")
    net.send("a", "c", "kept too")
    sim.run_until_quiet(1.0)
    assert sorted(p for *_, p in trace) == ["kept", "kept too"]
    net.set_link_faults("a", "b", None)
    net.send("a", "b", "now kept")
    sim.run_until_quiet(2.0)
    assert trace[-1][3] == "now kept"


def test_invalid_faults_and_double_attach_are_refused() -> None:
    with pytest.raises(ValueError):
        Faults(drop=1.5)
    with pytest.raises(ValueError):
        Faults(delay_min=0.5, delay_max=0.1)
    _, net, _ = make_net()
    with pytest.raises(ValueError):
        net.attach("a", lambda src, payload: None)


def test_delivery_exceptions_propagate() -> None:
    sim = Simulator()
    net: SimNetwork[int, str] = SimNetwork(sim)

    def deliver(src: int, payload: str) -> None:
        raise AssertionError(payload)

    net.attach(1, deliver)
    net.attach(2, deliver)
    net.send(1, 2, "seen by the test")
    with pytest.raises(AssertionError, match="seen by the test"):
        sim.run_until_quiet(1.0)
