"""manager/keymanager.py: the managers' data path and gossip keys and their rotation."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from controlplane.api.local import LocalBackend
from controlplane.manager.keymanager import KEYS_KEPT, KeyManager, keys_of, primary, rotated
from controlplane.pb.objects_pb2 import Cluster, EncryptionKey
from controlplane.store import Transaction

HOUR = 3600 * 10**9


def counter_keys() -> Callable[[], bytes]:
    numbers = itertools.count(1)
    return lambda: next(numbers).to_bytes(16, "big")


def test_three_keys_at_once_then_one_more_per_interval_and_never_more_than_three() -> None:
    new_key = counter_keys()
    cluster = rotated(Cluster(id="c"), 0, 12 * HOUR, new_key)
    assert cluster is not None
    for subsystem in ("networking:ipsec", "networking:gossip"):
        assert len(keys_of(cluster.network_bootstrap_keys, subsystem)) == KEYS_KEPT
    assert rotated(cluster, 11 * HOUR, 12 * HOUR, new_key) is None
    primaries = []
    for hour in (12, 24, 36, 48):
        before = {k.key for k in keys_of(cluster.network_bootstrap_keys, "networking:gossip")}
        updated = rotated(cluster, hour * HOUR, 12 * HOUR, new_key)
        assert updated is not None
        cluster = updated
        gossip = keys_of(cluster.network_bootstrap_keys, "networking:gossip")
        # The new primary was already live before this rotation: nobody seals with a key
        # that some node may not hold yet.
        assert gossip[0].key in before
        primaries.append(gossip[0].key)
    assert len(set(primaries)) == 4  # each rotation moves the primary on
    ipsec = [k for k in cluster.network_bootstrap_keys if k.subsystem == "networking:ipsec"]
    assert len(ipsec) == KEYS_KEPT
    clocks = [k.lamport_time for k in ipsec]
    assert clocks == sorted(clocks) and clocks[-1] == cluster.encryption_key_lamport_clock - 1


def test_the_primary_is_the_second_newest_so_the_newest_is_everywhere_first() -> None:
    keys = [
        EncryptionKey(subsystem="networking:ipsec", key=b"k", lamport_time=t) for t in (1, 3, 5)
    ]
    assert primary(keys[:1]).lamport_time == 1
    assert primary(keys[:2]).lamport_time == 1
    assert primary(keys).lamport_time == 3
    gossip = EncryptionKey(subsystem="networking:gossip", key=b"g", lamport_time=2)
    assert [k.lamport_time for k in keys_of([*keys, gossip], "networking:ipsec")] == [3, 5, 1]
    assert keys_of([gossip], "networking:ipsec") == []


def test_the_key_manager_commits_rotations_through_the_store() -> None:
    async def scenario() -> None:
        backend = LocalBackend()
        await backend.propose(Transaction().create(Cluster(id="c")).encode())
        now = [0]
        manager = KeyManager(backend.store, backend.propose, interval=3600.0, clock=lambda: now[0])
        assert await manager.step() is True
        assert await manager.step() is False
        now[0] = 2 * HOUR
        assert await manager.step() is True
        [cluster] = backend.store.list(Cluster)
        assert len(cluster.network_bootstrap_keys) == 2 * KEYS_KEPT  # the oldest ones dropped

    asyncio.run(scenario())


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        KeyManager(LocalBackend().store, LocalBackend().propose, interval=0)
