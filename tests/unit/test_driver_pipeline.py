"""The leader's driver holds new proposals back while an entry replicates, then proposes them
as one entry; a held proposal still fails at its deadline; where the WAL is synced (the event
loop or a worker thread) follows the role, the voters and how the writes come. The driver runs
here over the leader of an in-memory core cluster (`test_raft_core.Cluster`), its Raft loop not
started, so each step is taken by the test, or as a real one-manager cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from raft_testing import one_manager
from test_raft_core import Cluster

from controlplane.raft import driver as driver_module
from controlplane.raft.codec import encode_conf_change
from controlplane.raft.driver import LONE_WRITES_BEFORE_LOOP_SYNC, RaftDriver, bootstrap
from controlplane.raft.errors import ProposalTimeoutError
from controlplane.raft.storage import RaftStorage
from controlplane.raft.types import ConfChange, ConfChangeType, EntryType, Ready
from controlplane.store import Store

ADDRESS = "127.77.151.1:2377"  # never listened on: the driver is not started
ALONE = "127.77.242.2:2377"  # a one-manager driver that does listen
T = TypeVar("T")


def driver_over_leader(
    directory: Path, ids: tuple[int, ...] = (1, 2, 3)
) -> tuple[RaftDriver, Cluster]:
    storage = RaftStorage.create(directory, cluster_id=3, node_id=1)
    bootstrap(storage, 1, ADDRESS)
    storage.close()
    storage, recovered = RaftStorage.open(directory)
    driver = RaftDriver(storage=storage, recovered=recovered, state_machine=Store(), listen=ADDRESS)
    cluster = Cluster(list(ids))
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


def test_the_only_voter_syncs_on_its_loop_while_it_writes_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone writer's entries are synced on the loop (no thread hand-offs); writes that come
    together go back to the thread, where those arriving during its sync share an entry
    (always on the loop, 64 writers got 0.59 of the writes/s), until the writes come one by
    one again. Every acknowledged write is on disk either way. (The disk here may be slow
    under load: the syncs' time limit is lifted for this test; see the next one.)"""
    monkeypatch.setattr(driver_module, "LOOP_SYNC_LIMIT_SECONDS", 3600.0)

    async def scenario() -> None:
        threads = ThreadCalls(monkeypatch)
        manager = await one_manager(tmp_path, ALONE, node_id=5, cluster_id=6)
        driver = manager.driver

        async def one_by_one(count: int, tag: str) -> int:
            """Thread syncs these writes, made one after the other, cost."""
            before = threads.names.count("_persist")
            for i in range(count):
                await driver.propose(f"{tag}{i}".encode(), timeout=10)
            return threads.names.count("_persist") - before

        try:
            assert await one_by_one(LONE_WRITES_BEFORE_LOOP_SYNC, "w") > 0
            assert await one_by_one(3, "x") == 0, "a lone writer's syncs stay on the loop"
            before = threads.names.count("_persist")
            together = [driver.propose(f"t{i}".encode(), timeout=10) for i in range(20)]
            await asyncio.gather(*together)
            assert threads.names.count("_persist") > before, "a batch is synced in a thread"
            assert await one_by_one(3, "y") == 3, "the thread again, until writes are alone"
        finally:
            await driver.stop()
        _, recovered = RaftStorage.open(tmp_path)
        data = {e.data for e in recovered.entries}
        for tag, count in (("w", LONE_WRITES_BEFORE_LOOP_SYNC), ("x", 3), ("y", 3)):
            assert {f"{tag}{i}".encode() for i in range(count)} <= data
        assert any(e.type is EntryType.BATCH for e in recovered.entries)

    asyncio.run(scenario())


def test_the_only_voter_syncs_in_a_thread_while_its_syncs_are_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Syncs slower than the limit (here: any) would stall the loop: they stay in the thread,
    however alone the writer."""
    monkeypatch.setattr(driver_module, "LOOP_SYNC_LIMIT_SECONDS", 0.0)

    async def scenario() -> None:
        threads = ThreadCalls(monkeypatch)
        manager = await one_manager(tmp_path, ALONE, node_id=5, cluster_id=6)
        try:
            writes = LONE_WRITES_BEFORE_LOOP_SYNC + 3
            for i in range(writes):
                await manager.driver.propose(f"w{i}".encode(), timeout=10)
        finally:
            await manager.driver.stop()
        assert threads.names.count("_persist") >= writes
        _, recovered = RaftStorage.open(tmp_path)
        assert [e.data for e in recovered.entries][-writes:] == [
            f"w{i}".encode() for i in range(writes)
        ]

    asyncio.run(scenario())


def test_a_manager_joining_or_leaving_the_voters_switches_the_leaders_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only voter syncs a lone write on its loop; once a second voter is promoted, in a
    thread (its sync overlaps the follower's); demoted or removed, on the loop again. A
    learner is no voter: nothing changes while one catches up."""
    monkeypatch.setattr(driver_module, "LOOP_SYNC_LIMIT_SECONDS", 3600.0)

    async def scenario() -> None:
        driver, cluster = driver_over_leader(tmp_path, ids=(1,))
        leader = driver.core
        on_loop: list[bool] = []  # where the leader syncs, for each Ready holding entries
        ready = leader.ready

        def recorded_ready() -> Ready:
            rd = ready()
            if rd.entries:
                on_loop.append(driver._sync_on_loop())
            return rd

        leader.ready = recorded_ready  # type: ignore[method-assign]
        waiting: list[asyncio.Task[tuple[int, bytes]]] = []

        async def write() -> bool:
            """Whether the leader synced one more lone write on its loop."""
            waiting.extend(await proposed(driver, [b"w"]))
            driver._step_inbox()
            on_loop.clear()
            cluster.settle()
            assert leader.log.committed == leader.log.last_index(), "the write committed"
            return on_loop[0]

        def change(kind: ConfChangeType) -> None:
            conf = ConfChange(kind, 2, "127.77.242.3:2377")
            leader.propose_conf_change(conf, encode_conf_change(conf))
            cluster.settle()

        try:
            alone = [await write() for _ in range(LONE_WRITES_BEFORE_LOOP_SYNC)]
            assert alone == [False] * (LONE_WRITES_BEFORE_LOOP_SYNC - 1) + [True]
            cluster.add(2)
            change(ConfChangeType.ADD_LEARNER)
            assert await write(), "a learner does not count"
            change(ConfChangeType.PROMOTE)
            assert leader.voters == {1, 2}
            assert not await write(), "two voters: the sync overlaps the follower's"
            change(ConfChangeType.DEMOTE)
            assert leader.voters == {1}
            assert await write(), "demoted: the only voter again"
            change(ConfChangeType.PROMOTE)
            assert not await write()
            change(ConfChangeType.REMOVE)
            assert leader.voters == {1}
            assert await write(), "removed: the only voter again"
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)

    asyncio.run(scenario())
