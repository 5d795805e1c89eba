"""The leader's driver holds new proposals back while an entry replicates, then proposes them
as one entry; a held proposal still fails at its deadline. The driver runs here over the
leader of an in-memory three-node core cluster (`test_raft_core.Cluster`), its Raft loop not
started, so each step is taken by the test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from raft_testing import one_manager
from test_raft_core import Cluster

from controlplane.raft.driver import RaftDriver, bootstrap
from controlplane.raft.errors import ProposalTimeoutError
from controlplane.raft.storage import RaftStorage
from controlplane.raft.types import EntryType
from controlplane.store import Store

ADDRESS = "127.77.151.1:2377"  # never listened on: the driver is not started
ALONE = "127.77.238.1:2377"  # a one-manager driver that does listen
T = TypeVar("T")


def driver_over_leader(directory: Path) -> tuple[RaftDriver, Cluster]:
    storage = RaftStorage.create(directory, cluster_id=3, node_id=1)
    bootstrap(storage, 1, ADDRESS)
    storage.close()
    storage, recovered = RaftStorage.open(directory)
    driver = RaftDriver(storage=storage, recovered=recovered, state_machine=Store(), listen=ADDRESS)
    cluster = Cluster([1, 2, 3])
    leader = cluster.elect()
    cluster.settle()
    driver.core = cluster.nodes[leader]
    return driver, cluster


async def proposed(
    driver: RaftDriver, payloads: list[bytes], timeout: float = 10.0
) -> list[asyncio.Task[tuple[int, bytes]]]:
    tasks = [asyncio.create_task(driver.propose_local(p, timeout)) for p in payloads]
    await asyncio.sleep(0)  # each task runs up to its wait
    return tasks


def test_proposals_wait_for_the_entry_in_flight_then_share_one_entry(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver, cluster = driver_over_leader(tmp_path)
        log = driver.core.log
        first = await proposed(driver, [b"a"])
        driver._step_inbox()
        in_flight = log.last_index()
        assert in_flight == log.committed + 1

        driver._wake.clear()
        later = await proposed(driver, [b"b", b"c", b"d"])
        assert not driver._wake.is_set(), "a held proposal does not wake the Raft loop"
        driver._step_inbox()
        assert log.last_index() == in_flight, "held while the entry in flight is uncommitted"

        cluster.settle()  # the followers store it and answer: it commits
        assert log.committed == in_flight
        driver._step_inbox()
        assert log.last_index() == in_flight + 1
        entry = log.slice(in_flight + 1, in_flight + 2, 1 << 20)[0]
        assert entry.type is EntryType.BATCH
        for task in first + later:
            task.cancel()
        await asyncio.gather(*first, *later, return_exceptions=True)

    asyncio.run(scenario())


def test_a_held_proposal_fails_at_its_deadline(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver, _ = driver_over_leader(tmp_path)
        first = await proposed(driver, [b"a"])
        driver._step_inbox()
        (held,) = await proposed(driver, [b"b"], timeout=0.1)
        driver._step_inbox()
        with pytest.raises(ProposalTimeoutError):
            await asyncio.wait_for(held, 10.0)
        assert driver._batch == [], "the sweep forgets held proposals that ended"
        first[0].cancel()
        await asyncio.gather(*first, return_exceptions=True)

    asyncio.run(scenario())


def test_a_waiting_proposal_is_answered_when_the_driver_stops(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver, _ = driver_over_leader(tmp_path)
        (first,) = await proposed(driver, [b"a"])
        driver._step_inbox()
        (held,) = await proposed(driver, [b"b"])
        await driver.stop()
        for waiting in (first, held):
            with pytest.raises(ProposalTimeoutError, match="stopped"):
                await asyncio.wait_for(waiting, 10.0)

    asyncio.run(scenario())


def mirror_log(driver: RaftDriver) -> None:
    """Put the core's log so far on the driver's disk, as if the driver had run all along."""
    log = driver.core.log
    driver._storage.save(log.slice(log.first_index(), log.last_index() + 1, 1 << 30), None)


class ThreadCalls:
    """Records what the driver hands to a worker thread (`asyncio.to_thread`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        real = asyncio.to_thread

        async def recorded(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
            self.names.append(func.__name__)
            return await real(func, *args, **kwargs)

        monkeypatch.setattr(asyncio, "to_thread", recorded)


def test_a_replicating_leader_syncs_in_a_thread_a_follower_on_its_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's sync overlaps with its followers'; a follower has nothing to overlap."""

    async def scenario() -> None:
        threads = ThreadCalls(monkeypatch)
        driver, cluster = driver_over_leader(tmp_path / "leader")
        leader = driver.core
        mirror_log(driver)
        tasks = await proposed(driver, [b"a"])
        driver._step_inbox()
        rd = leader.ready()
        appends = [m for m in rd.messages if m.entries]
        await driver._handle_ready(rd)
        assert threads.names == ["_persist"]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await driver.stop()

        follower_driver, _ = driver_over_leader(tmp_path / "follower")
        follower = cluster.nodes[appends[0].to]
        follower_driver.core = follower
        mirror_log(follower_driver)
        follower.step(appends[0])
        rd = follower.ready()
        assert rd.entries and rd.messages, "the follower stores the entry and acknowledges it"
        await follower_driver._handle_ready(rd)
        assert threads.names == ["_persist"], "no worker thread for the follower's sync"
        await follower_driver.stop()
        _, recovered = RaftStorage.open(tmp_path / "follower")
        assert recovered.entries[-1] == rd.entries[-1], "the entry is on the follower's disk"

    asyncio.run(scenario())


def test_a_leader_alone_still_syncs_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its loop takes new writes while an entry syncs: they make the next entry (syncing on
    the loop cost a one-manager swarm two thirds of its writes/s with 64 writers)."""

    async def scenario() -> None:
        threads = ThreadCalls(monkeypatch)
        manager = await one_manager(tmp_path, ALONE, node_id=5, cluster_id=6)
        try:
            for i in range(3):
                await manager.driver.propose(f"w{i}".encode(), timeout=10)
        finally:
            await manager.driver.stop()
        assert threads.names.count("_persist") >= 3
        _, recovered = RaftStorage.open(tmp_path)
        assert [e.data for e in recovered.entries][-3:] == [b"w0", b"w1", b"w2"]

    asyncio.run(scenario())
