"""A one-manager Raft cluster in the test's own process, on a real socket: what tests of the
parts around Raft (driver, leader loops, dispatcher) start from."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from controlplane.raft.driver import PROFILES, RaftDriver, bootstrap
from controlplane.raft.storage import RaftStorage
from controlplane.store import Store


@dataclass
class OneManager:
    driver: RaftDriver
    store: Store
    storage: RaftStorage


async def one_manager(
    directory: Path,
    address: str,
    *,
    node_id: int = 1,
    cluster_id: int = 1,
    services: Sequence[Callable[[grpc.aio.Server], None]] = (),
    store: Store | None = None,
    snapshot_interval: int = 10_000,
    keep_entries: int = 500,
    timeout: float = 30.0,
) -> OneManager:
    """Bootstrap `directory` (or restart from it) and wait until this manager leads."""
    if not RaftStorage.exists(directory):
        storage = RaftStorage.create(directory, cluster_id=cluster_id, node_id=node_id)
        bootstrap(storage, node_id, address)
        storage.close()
    storage, recovered = RaftStorage.open(directory)
    store = store if store is not None else Store()
    driver = RaftDriver(
        storage=storage,
        recovered=recovered,
        state_machine=store,
        listen=address,
        profile=PROFILES["lab"],
        snapshot_interval=snapshot_interval,
        keep_entries=keep_entries,
    )
    await driver.start(services)
    deadline = time.monotonic() + timeout
    while driver.core.leader != node_id:
        assert time.monotonic() < deadline, f"{address} did not become leader in {timeout} s"
        await asyncio.sleep(0.05)
    return OneManager(driver, store, storage)
