"""Which nodes the leader's dispatcher still hears from: one deadline per node.

A node's deadline is pushed back by each heartbeat to `now + period * 3` (Swarm's grace
multiplier). A new leader gives every node it did not hear from yet a first deadline too, so
that nodes get a grace period to reconnect before they are marked down. Pure bookkeeping on
times given by the caller, so it is tested without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

GRACE_MULTIPLIER = 3
HEARTBEAT_FAILURE = "heartbeat failure"
UNKNOWN_HEARTBEAT_FAILURE = 'heartbeat failure for node in "unknown" state'


@dataclass(frozen=True)
class _Deadline:
    at: float
    message: str  # why the node is down if the deadline passes
    registered: bool  # set by a session of the node, not by a leadership change


class Liveness:
    def __init__(self) -> None:
        self._deadlines: dict[str, _Deadline] = {}

    def beat(self, node_id: str, now: float, period: float) -> None:
        """The node registered or sent a heartbeat."""
        self._deadlines[node_id] = _Deadline(
            now + period * GRACE_MULTIPLIER, HEARTBEAT_FAILURE, registered=True
        )

    def expect(self, node_id: str, now: float, period: float) -> bool:
        """A new leader waits for a node it has not heard from; False if it has already."""
        if node_id in self._deadlines:
            return False
        self._deadlines[node_id] = _Deadline(
            now + period * GRACE_MULTIPLIER, UNKNOWN_HEARTBEAT_FAILURE, registered=False
        )
        return True

    def registered(self, node_id: str) -> bool:
        deadline = self._deadlines.get(node_id)
        return deadline is not None and deadline.registered

    def known(self, node_id: str) -> bool:
        return node_id in self._deadlines

    def expired(self, now: float) -> list[tuple[str, str]]:
        """Nodes whose deadline passed, with the reason to give; they are forgotten."""
        late = sorted(
            (node_id, deadline.message)
            for node_id, deadline in self._deadlines.items()
            if deadline.at <= now
        )
        for node_id, _ in late:
            del self._deadlines[node_id]
        return late

    def clear(self) -> None:
        self._deadlines.clear()
