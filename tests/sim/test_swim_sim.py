"""SWIM with Lifeguard in deterministic simulation: convergence, detection, false positives.

Every test runs the real `SwimNode` cores over the simulated network, in the `lab` profile
(protocol periods ten times shorter than memberlist's LAN defaults; the figures in probe
intervals are the same). A failure names its seed; replay figures with
`python -m controlplane.sim.swim_cluster --members N --seed S`. The 1000-member run is opt-in:
`SWARMLAB_SIM_LARGE=1`.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from controlplane.gossip.config import LAB, GossipConfig
from controlplane.gossip.types import EventKind, Member, MemberState
from controlplane.sim.swim_cluster import (
    SimMember,
    SwimCluster,
    build_cluster,
    measure_failure,
    measure_join,
    measure_leave,
    measure_slow_node,
    pick_worker,
    run_scenarios,
)

PERIOD = LAB.probe_interval
SEEDS = (1, 2, 3, 4, 5)


def converged(
    members: int, seed: int, *, loss: float = 0.0, config: GossipConfig = LAB
) -> SwimCluster:
    cluster, known = build_cluster(members, config, seed=seed, loss=loss)
    assert known is not None, f"seed {seed}: {members} members never all met"
    assert cluster.run_until(cluster.view_converged, timeout=100 * PERIOD), (
        f"seed {seed}: the views never agreed"
    )
    return cluster


def view(observer: SimMember, name: str) -> Member:
    assert observer.node is not None
    member = observer.node.member(name)
    assert member is not None, f"{observer.name} does not know {name}"
    return member


@pytest.mark.parametrize("seed", SEEDS)
def test_members_converge_after_joining(seed: int) -> None:
    cluster, known = build_cluster(100, LAB, seed=seed)
    assert known is not None and known < 30 * PERIOD, f"seed {seed}: all met after {known}"
    assert cluster.run_until(cluster.view_converged, timeout=50 * PERIOD), f"seed {seed}"
    assert cluster.false_positives.deaths.total() == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_a_join_reaches_everyone_quickly(seed: int) -> None:
    cluster = converged(100, seed)
    join = measure_join(cluster)
    assert join.complete, f"seed {seed}: {len(join.seen)}/{join.expected} learned of the join"
    took = join.quantile_time(1.0)
    assert took is not None and took < 5 * PERIOD, f"seed {seed}: {took}"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_crashed_member_is_declared_dead_by_all_within_the_bounds(seed: int) -> None:
    n = 100
    cluster = converged(n, seed)
    suspect, dead = measure_failure(cluster, pick_worker(cluster))
    assert dead.complete, f"seed {seed}: {len(dead.seen)}/{dead.expected} saw the death"
    first = min(suspect.seen.values()) - suspect.start
    # Someone probes it within a few intervals (each of n members probes one per interval).
    assert first < 6 * PERIOD, f"seed {seed}: first suspicion after {first}"
    # Death: the suspicion timeout, between its Lifeguard min and max, then gossip.
    everyone = dead.quantile_time(1.0)
    assert everyone is not None
    assert LAB.suspicion_min_timeout(n) <= everyone, f"seed {seed}: dead too early, {everyone}"
    bound = first + LAB.suspicion_max_timeout(n) + 5 * PERIOD
    assert everyone < bound, f"seed {seed}: dead for all after {everyone}, bound {bound}"
    assert cluster.false_positives.deaths.total() == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_no_false_positives_with_ten_percent_loss(seed: int) -> None:
    cluster = converged(100, seed, loss=0.1)
    cluster.sim.run_for(200 * PERIOD)
    fp = cluster.false_positives
    assert fp.deaths.total() == 0, f"seed {seed}: live members declared dead: {fp.deaths}"
    # Detection still works through the loss.
    _, dead = measure_failure(cluster, pick_worker(cluster))
    assert dead.complete, f"seed {seed}: {len(dead.seen)}/{dead.expected} saw the death"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_restarted_member_rejoins_with_a_higher_incarnation(seed: int) -> None:
    cluster = converged(50, seed)
    victim = pick_worker(cluster)
    assert victim.node is not None
    old = victim.node.incarnation
    _, dead = measure_failure(cluster, victim)
    assert dead.complete
    back = cluster.watch(victim.name, EventKind.ALIVE_AGAIN)
    cluster.restart(victim.name)
    assert cluster.run_until(lambda: back.complete, timeout=50 * PERIOD), f"seed {seed}"
    assert victim.node is not None and victim.node.incarnation > old
    for m in cluster.up_members():
        seen = view(m, victim.name)
        assert seen.state is MemberState.ALIVE
        assert seen.incarnation == victim.node.incarnation


@pytest.mark.parametrize("seed", SEEDS)
def test_a_graceful_leave_is_seen_as_left_then_reaped(seed: int) -> None:
    cluster = converged(50, seed)
    leaver = pick_worker(cluster)
    left = measure_leave(cluster, leaver)
    assert left.complete, f"seed {seed}: {len(left.seen)}/{left.expected} saw the leave"
    assert cluster.false_positives.deaths.total() == 0  # left, never dead
    assert cluster.run_until(lambda: leaver.node is None, timeout=50 * PERIOD)  # it stopped
    reaped = cluster.watch(leaver.name, EventKind.REAPED)
    # Reaping happens at the end of a probe round after GossipToTheDeadTime.
    limit = LAB.gossip_to_the_dead_time + 2 * len(cluster.members) * PERIOD
    assert cluster.run_until(lambda: reaped.complete, timeout=limit), f"seed {seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_lifeguard_keeps_a_slow_node_from_killing_healthy_members(seed: int) -> None:
    lag = 10 * PERIOD
    results = {}
    for lifeguard in (True, False):
        config = LAB if lifeguard else LAB.without_lifeguard()
        cluster = converged(100, seed, config=config)
        results[lifeguard] = measure_slow_node(cluster, pick_worker(cluster), lag)
    (sus_on, deaths_on, _), (sus_off, _, _) = results[True], results[False]
    assert deaths_on == 0, f"seed {seed}: healthy members declared dead: {results}"
    assert sus_on * 3 < sus_off, f"seed {seed}: Lifeguard should cut false suspicions: {results}"


def test_metadata_updates_reach_everyone() -> None:
    cluster = converged(30, 1)
    member = pick_worker(cluster)
    assert member.node is not None
    updated = cluster.watch(member.name, EventKind.UPDATE)
    new_meta = replace(member.meta, role="manager")
    member.node.update_meta(cluster.sim.now, new_meta)
    cluster.run_until(lambda: updated.complete, timeout=20 * PERIOD)
    assert updated.complete
    assert all(view(m, member.name).meta == new_meta for m in cluster.up_members())


def test_a_replay_is_deterministic() -> None:
    first = run_scenarios(40, seed=5)
    second = run_scenarios(40, seed=5)
    first.wall_seconds = second.wall_seconds = 0.0
    assert first == second


def test_three_hundred_members_converge() -> None:
    cluster, known = build_cluster(300, LAB, seed=1)
    assert known is not None and known < 30 * PERIOD, known
    join = measure_join(cluster)
    took = join.quantile_time()
    assert took is not None and took < 5 * PERIOD, took


@pytest.mark.skipif(
    not os.environ.get("SWARMLAB_SIM_LARGE"), reason="set SWARMLAB_SIM_LARGE=1 (about a minute)"
)
def test_thousand_members_converge_and_detect() -> None:
    report = run_scenarios(1000, seed=1)
    assert report.build_known is not None
    assert report.join is not None and report.join < 5 * PERIOD
    assert report.failure_dead is not None
    assert report.false_deaths == 0
