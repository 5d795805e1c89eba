"""The lab's poller: a check's False is "not yet" like None (a predicate that passed on its
first False would make the wait check nothing), any other answer ends the wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from controlplane.lab.swarm_lab import until

T = TypeVar("T")


def answering(*answers: T) -> tuple[Callable[[], Awaitable[T]], list[T]]:
    """A check giving `answers` in turn (the last one for ever), and the list of those given."""
    given: list[T] = []

    async def check() -> T:
        given.append(answers[min(len(given), len(answers) - 1)])
        return given[-1]

    return check, given


def test_false_keeps_polling_until_true() -> None:
    check, given = answering(False, False, True)
    assert asyncio.run(until(check, 30, "the predicate", interval=0.01)) is True
    assert given == [False, False, True]


def test_none_keeps_polling_until_an_answer() -> None:
    check, given = answering(None, None, "ready")
    assert asyncio.run(until(check, 30, "an answer", interval=0.01)) == "ready"
    assert given == [None, None, "ready"]


@pytest.mark.parametrize("answer", [[], 0, ""])
def test_other_falsy_answers_are_answers(answer: object) -> None:
    check, given = answering(answer)
    assert asyncio.run(until(check, 30, "an answer", interval=0.01)) == answer
    assert given == [answer]


def test_a_check_that_stays_false_times_out_naming_what() -> None:
    check, given = answering(False)
    with pytest.raises(TimeoutError, match="waiting for the predicate that never holds"):
        asyncio.run(until(check, 0.3, "the predicate that never holds", interval=0.01))
    assert len(given) > 1  # polled again and again, not taken as an answer
