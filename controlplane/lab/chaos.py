"""What `swarmlab partition / delay / loss` mean, before anything is sent: their arguments
parsed and checked, and the partition turned into each node's own fault plan.

A partition `A,B / C,D,E` splits the named nodes into groups that cannot talk across, in both
directions; nodes not named stay connected to everyone. More than two groups work the same way
(`A / B / C` isolates all three from each other).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from controlplane.faults import MAX_DELAY_MS


class ChaosError(ValueError):
    """An argument of a chaos command is wrong; the message says which and how to write it."""


_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>ms|s)")


def parse_duration(text: str) -> float:
    """'200ms' -> 0.2, '1.5s' -> 1.5, '0' -> 0.0 (seconds)."""
    value = text.strip()
    if value == "0":
        return 0.0
    match = _DURATION.fullmatch(value)
    if match is None:
        raise ChaosError(f"{text!r} is not a duration; write it with a unit, e.g. 200ms or 1.5s")
    seconds = float(match["number"]) / (1000 if match["unit"] == "ms" else 1)
    if seconds * 1000 > MAX_DELAY_MS:
        raise ChaosError(f"{text} is too long; a delay is at most {MAX_DELAY_MS // 1000}s")
    return seconds


_SPAN = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>s|m|)")


def parse_run_duration(text: str) -> float:
    """How long a `swarmlab chaos run` lasts: '90s' or '90' -> 90.0, '2m' -> 120.0."""
    match = _SPAN.fullmatch(text.strip())
    if match is None:
        raise ChaosError(f"{text!r} is not a duration; write it as e.g. 60s or 2m")
    seconds = float(match["number"]) * (60 if match["unit"] == "m" else 1)
    if not seconds > 0:
        raise ChaosError(f"{text!r}: a chaos run needs a positive duration, e.g. 60s")
    return seconds


def parse_percent(text: str) -> float:
    """'10%' (or '10') -> 0.1; from 0 to 100 percent."""
    value = text.strip().removesuffix("%")
    try:
        percent = float(value)
    except ValueError:
        raise ChaosError(f"{text!r} is not a percentage; write it as e.g. 10%") from None
    if not 0 <= percent <= 100:
        raise ChaosError(f"{text} is not between 0% and 100%")
    return percent / 100


def parse_groups(words: Sequence[str], names: Sequence[str]) -> list[list[str]]:
    """The groups of `swarmlab partition manager-1,worker-1 / manager-2,manager-3`, whether
    the shell split the words at the spaces or not."""
    text = " ".join(words)
    groups = [[n.strip() for n in side.split(",") if n.strip()] for side in text.split("/")]
    if len(groups) < 2:
        raise ChaosError(
            f"{text!r} names one group; separate the groups with '/', "
            "e.g. manager-1,worker-1 / manager-2,manager-3"
        )
    for i, group in enumerate(groups, 1):
        if not group:
            raise ChaosError(f"group {i} of {text!r} names no node")
    seen: dict[str, int] = {}
    for i, group in enumerate(groups, 1):
        for name in group:
            if name not in names:
                raise ChaosError(
                    f"no node named {name!r} in this lab; its nodes are {', '.join(names)}"
                )
            if name in seen and seen[name] != i:
                raise ChaosError(
                    f"{name} is in group {seen[name]} and in group {i}; "
                    "a node can be on one side only"
                )
            seen[name] = i
    return groups


def partition_cuts(
    groups: Sequence[Sequence[str]], hosts: Mapping[str, str]
) -> dict[str, set[str]]:
    """For every node of the lab (`hosts`: name -> host address), the hosts it must be cut
    from: those of every other group; none for a node no group names."""
    cuts: dict[str, set[str]] = {name: set() for name in hosts}
    for i, group in enumerate(groups):
        others = {hosts[n] for j, g in enumerate(groups) if j != i for n in g}
        for name in group:
            cuts[name] |= others
    return cuts
