"""The asyncio Raft driver with real storage and a real gRPC listener, one manager."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from raft_testing import one_manager

from controlplane.client import network_object
from controlplane.pb import raft_pb2
from controlplane.pb.objects_pb2 import Network
from controlplane.raft.driver import RaftDriver
from controlplane.raft.errors import ProposalTimeoutError
from controlplane.raft.storage import RaftStorage
from controlplane.store import Store, StoreError, Transaction

ADDRESS = "127.77.200.1:2377"


async def single_manager(directory: Path) -> tuple[RaftDriver, Store, RaftStorage]:
    m = await one_manager(
        directory, ADDRESS, node_id=9, cluster_id=7, snapshot_interval=5, keep_entries=2
    )
    return m.driver, m.store, m.storage


def create(name: str) -> bytes:
    return Transaction().create(network_object(name)).encode()


def test_writes_survive_a_restart_through_snapshots_and_wal(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver, _, _ = await single_manager(tmp_path)
        for i in range(12):  # crosses two snapshots (interval 5)
            _, result = await driver.propose(create(f"net-{i}"), timeout=5)
            assert StoreError.from_result(result) is None
        _, result = await driver.propose(create("net-3"), timeout=5)
        error = StoreError.from_result(result)
        assert error is not None and "already exists" in str(error)
        await driver.linearizable_read(timeout=5)
        await driver.stop()

        again, store_again, _ = await single_manager(tmp_path)
        try:
            assert again.status().snapshot_index >= 10
            await again.linearizable_read(timeout=5)
            names = sorted(
                n.spec.annotations.name for n in store_again.list(type(network_object("x")))
            )
            assert names == sorted(f"net-{i}" for i in range(12))
        finally:
            await again.stop()

    asyncio.run(scenario())


def test_snapshot_data_stays_on_disk_and_is_read_back_for_followers(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver, _, _ = await single_manager(tmp_path)
        for i in range(6):  # one snapshot (interval 5)
            await driver.propose(create(f"net-{i}"), timeout=5)
        await driver.stop()

        again, store_again, _ = await single_manager(tmp_path)

        async def check_snapshot(newer_than: int) -> int:
            for _ in range(200):  # the core lets go of the data once it is saved, in a thread
                saved = again.status().snapshot_index
                if saved > newer_than and saved == again.core.log.snapshot.meta.index:
                    break
                await asyncio.sleep(0.05)
            held = again.core.log.snapshot
            assert held.meta.index > newer_than and held.data == b"", "only metadata in memory"
            sent = again.transport.load_snapshot(held)
            assert sent.meta == held.meta
            copy = Store()
            copy.restore(raft_pb2.SnapshotPayload.FromString(sent.data).state, sent.meta.index)
            names = {n.spec.annotations.name for n in copy.list(Network)}
            assert len(names) >= 3 and names == {f"net-{i}" for i in range(len(names))}
            return held.meta.index

        try:
            recovered = await check_snapshot(newer_than=0)
            for i in range(6, 12):
                await again.propose(create(f"net-{i}"), timeout=5)
            await check_snapshot(newer_than=recovered)  # one taken by this run
            assert len(store_again.list(Network)) == 12
        finally:
            await again.stop()

    asyncio.run(scenario())


def test_a_disk_failure_stops_the_loop_and_is_reported(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver, _, storage = await single_manager(tmp_path)
        try:

            def broken(*_args: object, **_kwargs: object) -> None:
                raise OSError(5, "Input/output error")

            storage.save = broken  # type: ignore[method-assign]
            with pytest.raises(ProposalTimeoutError):
                await driver.propose(create("never"), timeout=1.0)
            error = await asyncio.wait_for(driver.wait_failed(), 5)
            assert isinstance(error, OSError)
        finally:
            await driver.stop()

    asyncio.run(scenario())


def test_concurrent_writes_each_get_their_own_result(tmp_path: Path) -> None:
    """Writes proposed in the same turn of the event loop share an entry (and fsyncs), and
    entries already on disk are applied while the next fsync runs; each caller must still get
    its own result, in the order proposed, and the index of the entry that holds it."""

    async def scenario() -> None:
        driver, store, _ = await single_manager(tmp_path)
        try:
            names = [f"net-{i}" for i in range(40)] + ["net-7"]  # the last one is a duplicate
            outcomes = await asyncio.gather(
                *(driver.propose(create(name), timeout=10) for name in names)
            )
            indexes = {index for index, _ in outcomes}
            assert len(indexes) < len(names), "proposals of one turn share an entry"
            assert max(indexes) <= driver.status().applied
            errors = [StoreError.from_result(result) for _, result in outcomes]
            assert errors[:40] == [None] * 40
            assert errors[40] is not None and "already exists" in str(errors[40])
            created = {n.spec.annotations.name for n in store.list(type(network_object("x")))}
            assert created == set(names)
        finally:
            await driver.stop()

    asyncio.run(scenario())
