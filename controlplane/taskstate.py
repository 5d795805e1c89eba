"""Swarm's task states, in the order a task moves through them.

A task only ever moves forward: the orchestrator and scheduler take it from new to assigned,
the agent from accepted to a terminal state. Both the dispatcher (which ignores stale or
backwards reports) and the agent (which reports each step) rely on this one order, as
swarmkit's `api.TaskState` numbering does.
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    NEW = "new"
    PENDING = "pending"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    PREPARING = "preparing"
    READY = "ready"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETE = "complete"
    SHUTDOWN = "shutdown"
    FAILED = "failed"
    REJECTED = "rejected"
    REMOVE = "remove"
    ORPHANED = "orphaned"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def terminal(self) -> bool:
        """The task has stopped for good (or never started): nothing runs any more."""
        return self.rank > TaskState.RUNNING.rank


_RANK = {state: rank for rank, state in enumerate(TaskState)}


def parse_state(text: str) -> TaskState:
    """The state named `text`; ValueError naming the known states otherwise."""
    try:
        return TaskState(text)
    except ValueError:
        raise ValueError(
            f"unknown task state {text!r}; expected one of {', '.join(TaskState)}"
        ) from None


def advances(current: str, reported: str) -> bool:
    """Whether moving from `current` to `reported` goes forward (an unknown or empty current
    state counts as `new`)."""
    try:
        before = TaskState(current) if current else TaskState.NEW
    except ValueError:
        before = TaskState.NEW
    return parse_state(reported).rank > before.rank
