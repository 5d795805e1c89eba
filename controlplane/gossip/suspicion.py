"""Lifeguard's dynamic suspicion timeout (LHA-Suspicion).

A suspicion starts with a long timeout (max) and shortens it each time another member
independently reports the same suspicion, down to the min after k confirmations:

    timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))

measured from the start of the suspicion. Independent reports mean the member really looks dead
from several places, while a single slow accuser alone has to wait the long timeout, which gives
a falsely accused member time to hear of it and refute. The formula and the choice of k are
those of the Lifeguard paper and memberlist's suspicion.go; `config.GossipConfig` computes min,
max and k from the cluster size.
"""

from __future__ import annotations

import math


def suspicion_timeout(
    confirmations: int, expected: int, min_timeout: float, max_timeout: float
) -> float:
    """Total suspicion time after `confirmations` of `expected` independent confirmations."""
    if expected < 1:
        return min_timeout
    fraction = math.log(confirmations + 1) / math.log(expected + 1)
    return max(min_timeout, max_timeout - fraction * (max_timeout - min_timeout))


class Suspicion:
    """The timer of one suspected member: when it fires, the member is declared dead."""

    __slots__ = ("_confirmed_by", "confirmations", "deadline", "expected", "max", "min", "start")

    def __init__(
        self, source: str, expected: int, min_timeout: float, max_timeout: float, now: float
    ) -> None:
        self.start = now
        self.expected = expected
        self.min = min_timeout
        self.max = max_timeout
        self.confirmations = 0
        # The first accuser may gossip its own suspicion back to us: it never counts twice.
        self._confirmed_by = {source}
        self.deadline = now + suspicion_timeout(0, expected, min_timeout, max_timeout)

    def confirm(self, source: str) -> bool:
        """Count an independent report from `source`; True when it was new and moved the
        deadline (the caller then re-gossips it so others can count it too)."""
        if self.confirmations >= self.expected or source in self._confirmed_by:
            return False
        self._confirmed_by.add(source)
        self.confirmations += 1
        self.deadline = self.start + suspicion_timeout(
            self.confirmations, self.expected, self.min, self.max
        )
        return True
