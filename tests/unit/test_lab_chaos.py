"""The chaos commands' arguments (durations, percentages, partition groups) and what a
partition means for each node, and how `swarmlab status` describes a plan."""

from __future__ import annotations

import pytest

from controlplane.faults import FaultPlan, Shaping
from controlplane.lab.chaos import (
    ChaosError,
    parse_duration,
    parse_groups,
    parse_percent,
    partition_cuts,
)
from controlplane.lab.control import describe_plan

NAMES = ["manager-1", "manager-2", "manager-3", "worker-1", "worker-2"]
HOSTS = {
    "manager-1": "127.77.189.11",
    "manager-2": "127.77.189.12",
    "manager-3": "127.77.189.13",
    "worker-1": "127.77.189.101",
    "worker-2": "127.77.189.102",
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("200ms", 0.2), ("1.5s", 1.5), ("0", 0.0), ("0ms", 0.0), (".5s", 0.5), (" 50ms ", 0.05)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("200", "'200' is not a duration; write it with a unit, e.g. 200ms or 1.5s"),
        ("1s2", "'1s2' is not a duration"),
        ("-5ms", "'-5ms' is not a duration"),
        ("2m", "'2m' is not a duration"),
        ("61s", "61s is too long; a delay is at most 60s"),
    ],
)
def test_bad_durations(text: str, complaint: str) -> None:
    with pytest.raises(ChaosError) as caught:
        parse_duration(text)
    assert complaint in str(caught.value)


@pytest.mark.parametrize(("text", "share"), [("10%", 0.1), ("10", 0.1), ("0%", 0.0), ("100%", 1.0)])
def test_percentages(text: str, share: float) -> None:
    assert parse_percent(text) == pytest.approx(share)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("ten%", "'ten%' is not a percentage; write it as e.g. 10%"),
        ("120%", "120% is not between 0% and 100%"),
        ("-1%", "-1% is not between 0% and 100%"),
    ],
)
def test_bad_percentages(text: str, complaint: str) -> None:
    with pytest.raises(ChaosError) as caught:
        parse_percent(text)
    assert complaint in str(caught.value)


@pytest.mark.parametrize(
    "words",
    [
        ["manager-1,worker-1", "/", "manager-2,manager-3"],
        ["manager-1,worker-1 / manager-2,manager-3"],
        ["manager-1,", "worker-1/manager-2,", "manager-3"],
    ],
)
def test_groups_however_the_shell_split_them(words: list[str]) -> None:
    assert parse_groups(words, NAMES) == [["manager-1", "worker-1"], ["manager-2", "manager-3"]]


@pytest.mark.parametrize(
    ("words", "complaint"),
    [
        (["manager-1,worker-1"], "names one group; separate the groups with '/'"),
        (["manager-1", "/"], "group 2 of 'manager-1 /' names no node"),
        (["manager-1 / manager-9"], "no node named 'manager-9' in this lab; its nodes are"),
        (
            ["manager-1,worker-1 / manager-2,worker-1"],
            "worker-1 is in group 1 and in group 2; a node can be on one side only",
        ),
    ],
)
def test_bad_groups(words: list[str], complaint: str) -> None:
    with pytest.raises(ChaosError) as caught:
        parse_groups(words, NAMES)
    assert complaint in str(caught.value)


def test_each_side_is_cut_from_the_other_and_unnamed_nodes_from_nobody() -> None:
    cuts = partition_cuts([["manager-1", "worker-1"], ["manager-2", "manager-3"]], HOSTS)
    assert cuts["manager-1"] == cuts["worker-1"] == {"127.77.189.12", "127.77.189.13"}
    assert cuts["manager-2"] == cuts["manager-3"] == {"127.77.189.11", "127.77.189.101"}
    assert cuts["worker-2"] == set()


def test_three_groups_isolate_each_from_both_others() -> None:
    cuts = partition_cuts([["manager-1"], ["manager-2"], ["manager-3"]], HOSTS)
    assert cuts["manager-1"] == {"127.77.189.12", "127.77.189.13"}
    assert cuts["manager-3"] == {"127.77.189.11", "127.77.189.12"}


def test_status_describes_a_plan_with_node_names() -> None:
    names = {host: name for name, host in HOSTS.items()}
    plan = FaultPlan(
        frozenset({"127.77.189.12", "127.77.189.13"}),
        Shaping(delay=0.2, jitter=0.05),
        {"127.77.189.101": Shaping(loss=0.1)},
    )
    assert describe_plan(plan, names) == (
        "cut from manager-2,manager-3; delay 200ms±50ms; loss to worker-1 10%"
    )
    assert describe_plan(FaultPlan(), names) == ""
