"""Lifeguard's local health awareness (LHA): a node that misses its own acks trusts itself less.

The score counts recent evidence that this node, not its peers, is slow (missed acks and nacks,
having to refute accusations). Timeouts and the probe interval are multiplied by `score + 1`, so
an overloaded node probes less often and waits longer before accusing anyone, instead of
flooding the cluster with false suspicions. Same bounds as memberlist's awareness.go:
0 <= score < AwarenessMaxMultiplier.
"""

from __future__ import annotations


class Awareness:
    __slots__ = ("_max", "score")

    def __init__(self, max_multiplier: int) -> None:
        self._max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        """Add `delta`, clamped to [0, max_multiplier - 1]."""
        self.score = min(self._max - 1, max(0, self.score + delta))

    def scale(self, duration: float) -> float:
        return duration * (self.score + 1)
