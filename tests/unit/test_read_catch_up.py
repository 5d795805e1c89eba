"""Reads of swarm objects on a manager first catch its store up with the leader
(`api.common.caught_up`), and still answer from the manager's own store when no leader
answers: without a quorum, or cut off from the leader, or when the leader is slow."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.api import common
from controlplane.api.local import LocalBackend
from controlplane.raft.errors import NoLeaderError, TransportError


class CountingBackend(LocalBackend):
    def __init__(self, failure: BaseException | None = None, hang: bool = False) -> None:
        super().__init__()
        self.catch_ups = 0
        self._failure = failure
        self._hang = hang

    async def prepare_write(self) -> None:
        self.catch_ups += 1
        if self._hang:
            await asyncio.Event().wait()
        if self._failure is not None:
            raise self._failure


def test_a_read_catches_up_first() -> None:
    backend = CountingBackend()
    assert asyncio.run(common.caught_up(backend)) is backend
    assert backend.catch_ups == 1


@pytest.mark.parametrize(
    "failure", [NoLeaderError(), TransportError("127.77.225.12:2377 unreachable")]
)
def test_without_a_leader_the_read_answers_from_the_own_store(failure: Exception) -> None:
    backend = CountingBackend(failure)
    assert asyncio.run(common.caught_up(backend)) is backend
    assert backend.catch_ups == 1


def test_a_leader_that_does_not_answer_in_time_leaves_the_own_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(common, "READ_CATCH_UP_TIMEOUT", 0.01)
    backend = CountingBackend(hang=True)
    assert asyncio.run(common.caught_up(backend)) is backend


def test_a_failure_that_is_no_missing_leader_is_not_hidden() -> None:
    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(common.caught_up(CountingBackend(ValueError("a bug"))))
