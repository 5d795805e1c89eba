"""The fault plan: its JSON form and its checks, and the decisions the transports ask of it,
made with a scripted random source so each is exact."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pytest

from controlplane.faults import (
    MAX_RETRANSMITS,
    RETRANSMIT_TIMEOUT,
    FaultPlan,
    FaultPlanError,
    Faults,
    Shaping,
    host_of,
)

PEER = "127.77.189.12"


class ScriptedRandom(random.Random):
    """`random()` and `uniform()` answer from a script, in order."""

    def __init__(self, draws: Iterable[float] = (), uniforms: Iterable[float] = ()) -> None:
        super().__init__(0)
        self._draws = list(draws)
        self._uniforms = list(uniforms)

    def random(self) -> float:
        return self._draws.pop(0)

    def uniform(self, a: float, b: float) -> float:
        value = self._uniforms.pop(0)
        assert a <= value <= b
        return value


def test_host_of_strips_ports_and_brackets() -> None:
    assert host_of("127.77.189.11:2377") == "127.77.189.11"
    assert host_of("127.77.189.11") == "127.77.189.11"
    assert host_of("[::1]:2377") == "::1"
    assert host_of("::1") == "::1"


def test_a_plan_round_trips_through_json() -> None:
    plan = FaultPlan(
        frozenset({PEER}),
        Shaping(delay=0.2, jitter=0.05, loss=0.1),
        {"127.77.189.13": Shaping(delay=1.0)},
    )
    raw = plan.to_json()
    assert raw == {
        "partitioned": [PEER],
        "delay_ms": 200.0,
        "jitter_ms": 50.0,
        "loss_percent": 10.0,
        "links": {"127.77.189.13": {"delay_ms": 1000.0, "jitter_ms": 0.0, "loss_percent": 0.0}},
    }
    assert FaultPlan.from_json(raw) == plan
    assert FaultPlan.from_json({}) == FaultPlan()
    assert FaultPlan.from_json({}).clean


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ([], "a fault plan is a JSON object, got list"),
        ({"delay": 200}, "unknown field 'delay' in the plan"),
        ({"partitioned": "127.77.189.12"}, "partitioned must be a list of host addresses"),
        ({"partitioned": [""]}, "partitioned must be a list of host addresses"),
        ({"delay_ms": -1}, "delay_ms in the plan must be between 0 and 60000, got -1"),
        ({"delay_ms": "200ms"}, "delay_ms in the plan must be a number, got '200ms'"),
        ({"delay_ms": True}, "delay_ms in the plan must be a number, got True"),
        ({"loss_percent": 101}, "loss_percent in the plan must be between 0 and 100, got 101"),
        ({"loss_percent": float("nan")}, "loss_percent in the plan must be a number"),
        ({"links": []}, "links must map a destination host to its shaping"),
        ({"links": {PEER: 5}}, f"links['{PEER}'] must be an object, got int"),
        ({"links": {PEER: {"loss": 5}}}, f"unknown field 'loss' in links['{PEER}']"),
    ],
)
def test_bad_plans_are_refused_naming_what_is_wrong(raw: Any, complaint: str) -> None:
    with pytest.raises(FaultPlanError) as caught:
        FaultPlan.from_json(raw)
    assert complaint in str(caught.value)


def test_a_partition_drops_everything_both_ways_and_cuts_every_port() -> None:
    faults = Faults(FaultPlan(frozenset({PEER})), rng=ScriptedRandom())
    assert faults.is_partitioned(f"{PEER}:2377")
    assert faults.is_partitioned(f"{PEER}:7946")
    assert faults.should_drop(f"{PEER}:2377")
    assert faults.transmit_delay(PEER) is None
    assert not faults.should_drop("127.77.189.13:2377")  # not partitioned, no loss: no draw
    assert faults.transmit_delay("127.77.189.13:2377") == 0.0


def test_loss_drops_datagrams_by_chance() -> None:
    rng = ScriptedRandom(draws=[0.05, 0.5, 0.0999, 0.1])
    faults = Faults(FaultPlan(shaping=Shaping(loss=0.1)), rng=rng)
    assert [faults.should_drop(PEER) for _ in range(4)] == [True, False, True, False]


def test_delay_varies_within_the_jitter_and_never_goes_below_zero() -> None:
    rng = ScriptedRandom(uniforms=[0.05, -0.05, -0.3])
    plan = FaultPlan(shaping=Shaping(delay=0.2, jitter=0.05))
    faults = Faults(plan, rng=rng)
    assert faults.delay_for(PEER) == pytest.approx(0.25)
    assert faults.delay_for(PEER) == pytest.approx(0.15)
    faults.install(FaultPlan(shaping=Shaping(delay=0.2, jitter=0.3)))
    assert faults.delay_for(PEER) == 0.0


def test_tcp_turns_loss_into_retransmission_delays_then_gives_up() -> None:
    plan = FaultPlan(shaping=Shaping(delay=0.1, loss=0.5))
    faults = Faults(plan, rng=ScriptedRandom(draws=[0.1, 0.2, 0.9]))
    # two lost attempts (0.2 s, then 0.4 s to wait), the third gets through after the delay
    assert faults.transmit_delay(PEER) == pytest.approx(RETRANSMIT_TIMEOUT * 3 + 0.1)
    every_try_lost = ScriptedRandom(draws=[0.0] * (MAX_RETRANSMITS + 1))
    assert Faults(plan, rng=every_try_lost).transmit_delay(PEER) is None


def test_a_destination_of_its_own_overrides_the_general_shaping() -> None:
    plan = FaultPlan(shaping=Shaping(delay=0.2)).with_shaping(Shaping(delay=1.0), toward=PEER)
    faults = Faults(plan, rng=ScriptedRandom())
    assert faults.delay_for(f"{PEER}:2377") == 1.0
    assert faults.delay_for("127.77.189.13:2377") == 0.2
    # the general shaping changes without touching the destination's own
    plan = plan.with_shaping(Shaping(delay=0.3))
    assert plan.toward(PEER).delay == 1.0 and plan.shaping.delay == 0.3
    # a clean shaping toward a destination removes its entry
    assert plan.with_shaping(Shaping(), toward=f"{PEER}:2377").links == {}


def test_a_new_partition_keeps_the_shaping() -> None:
    plan = FaultPlan(frozenset({PEER}), Shaping(loss=0.2)).with_partition(["127.77.189.13:2377"])
    assert plan.partitioned == {"127.77.189.13"}
    assert plan.shaping == Shaping(loss=0.2)
