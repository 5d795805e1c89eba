"""The managers' key manager (swarmkit's `manager/keymanager`): the leader keeps, in the
Cluster object, the keys nodes use to encrypt overlay traffic ("networking:ipsec") and to seal
gossip ("networking:gossip"). A new swarm gets three keys per subsystem at once (as
swarmkit); then every rotation interval (Swarm's 12 hours; minutes in the lab profile, any
period with `swarmlab node run --key-rotation-interval`) one fresh key per subsystem is added
and the oldest dropped, so three are always live: the newest, the primary, the oldest. The
dispatcher hands them to every node, which accepts all three and sends with the primary, the
second newest (see `primary`), so a rotation never drops traffic: every node has held a key for
a whole interval before anyone sends with it, and stops accepting a key a whole interval after
everyone stopped sending with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence

from controlplane.pb.objects_pb2 import Cluster, EncryptionKey
from controlplane.store import Store, StoreError, Transaction

log = logging.getLogger("controlplane.keymanager")

SUBSYSTEMS = ("networking:ipsec", "networking:gossip")
KEYS_KEPT = 3
KEY_BYTES = 16  # AES-128-GCM
ROTATION_INTERVALS = {"swarm": 12 * 3600.0, "lab": 120.0}  # seconds

Propose = Callable[[bytes], Awaitable[bytes]]


def rotated(
    cluster: Cluster, now_ns: int, interval_ns: int, new_key: Callable[[], bytes]
) -> Cluster | None:
    """The Cluster with KEYS_KEPT keys per subsystem if it has none yet, or with one new key
    per subsystem (the oldest dropped) once the interval has passed since the last rotation;
    None if nothing is due."""
    due = not cluster.network_bootstrap_keys or now_ns - cluster.keys_rotated_at_ns >= interval_ns
    if not due:
        return None
    updated = Cluster()
    updated.CopyFrom(cluster)
    clock = cluster.encryption_key_lamport_clock
    keys = list(cluster.network_bootstrap_keys)
    fresh = 1 if keys else KEYS_KEPT
    for _ in range(fresh):
        for subsystem in SUBSYSTEMS:
            clock += 1
            keys.append(EncryptionKey(subsystem=subsystem, key=new_key(), lamport_time=clock))
    kept: list[EncryptionKey] = []
    for subsystem in SUBSYSTEMS:
        mine = sorted((k for k in keys if k.subsystem == subsystem), key=lambda k: k.lamport_time)
        kept += mine[-KEYS_KEPT:]
    del updated.network_bootstrap_keys[:]
    updated.network_bootstrap_keys.extend(kept)
    updated.encryption_key_lamport_clock = clock
    updated.keys_rotated_at_ns = now_ns
    updated.meta.updated_at_ns = now_ns
    return updated


def keys_of(keys: Sequence[EncryptionKey], subsystem: str) -> list[EncryptionKey]:
    """One subsystem's keys, primary first, then the others newest first (what a node
    installs: it sends with the first and accepts them all)."""
    mine = sorted((k for k in keys if k.subsystem == subsystem), key=lambda k: k.lamport_time)
    if not mine:
        return []
    first = primary(mine)
    return [first, *sorted((k for k in mine if k is not first), key=lambda k: -k.lamport_time)]


def primary(ordered: Sequence[EncryptionKey]) -> EncryptionKey:
    """The key to send with, from keys oldest first: the second newest once there are two or
    more, so the newest is installed everywhere before anyone sends with it. With the three
    live keys this is libnetwork's choice (`getPrimaryKeyTag`: the second of the keys sorted
    by Lamport time); with two (never distributed here) libnetwork would take the newest."""
    return ordered[-2] if len(ordered) >= 2 else ordered[-1]


class KeyManager:
    """Runs on the leader (started and cancelled with the leadership, as the other loops)."""

    def __init__(
        self,
        store: Store,
        propose: Propose,
        interval: float,
        *,
        clock: Callable[[], int] = time.time_ns,
        new_key: Callable[[], bytes] = lambda: os.urandom(KEY_BYTES),
    ) -> None:
        if interval <= 0:
            raise ValueError(f"the key rotation interval must be positive, got {interval}")
        self._store = store
        self._propose = propose
        self._interval_ns = int(interval * 1e9)
        self._clock = clock
        self._new_key = new_key

    async def step(self) -> bool:
        """Rotate if due; True when a rotation was committed."""
        clusters = self._store.list(Cluster)
        if not clusters:
            return False
        update = rotated(clusters[0], self._clock(), self._interval_ns, self._new_key)
        if update is None:
            return False
        error = StoreError.from_result(await self._propose(Transaction().update(update).encode()))
        if error is not None:
            log.info("event=key_rotation_retry error=%s", error)  # a concurrent update: next pass
            return False
        log.info("event=keys_rotated clock=%d", update.encryption_key_lamport_clock)
        return True

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception as err:  # no quorum, a timeout: try again next pass
                log.warning("event=key_rotation_failed error=%r", err)
            clusters = self._store.list(Cluster)
            waiting = not clusters or not clusters[0].network_bootstrap_keys
            # A new swarm gets its first keys at once; then a look every tenth of the interval.
            await asyncio.sleep(0.2 if waiting else min(self._interval_ns / 1e9 / 10, 5.0))
