"""A new leader's check that the swarm has swarmkit's predefined `host` and `bridge` networks
(`node_local_networks.py`), as swarmkit's allocator makes sure of when it starts: `swarm init`
writes them, and a swarm whose store was made without them (by an older Swarmlab) gets them
from its next leader, so `docker service create --network host` works there too."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from controlplane.node_local_networks import NODE_LOCAL_DRIVERS, is_predefined, predefined_networks
from controlplane.pb.objects_pb2 import Cluster, Network
from controlplane.raft.core import RaftError
from controlplane.store import ErrorKind, Store, StoreError, Transaction

log = logging.getLogger("controlplane.manager.predefined_networks")

Propose = Callable[[bytes], Awaitable[bytes]]
Settle = Callable[[float], Awaitable[None]]
SETTLE_TIMEOUT = 10.0


def missing_predefined(store: Store) -> Transaction | None:
    """The creation of the predefined networks a swarm's store lacks (None: it has them all,
    or it holds no swarm: no Cluster object)."""
    if not store.list(Cluster):
        return None
    held = {n.spec.annotations.name for n in store.list(Network) if is_predefined(n)}
    if held >= set(NODE_LOCAL_DRIVERS):
        return None
    txn = Transaction()
    for network in predefined_networks(time.time_ns()):
        if network.spec.annotations.name not in held:
            txn.create(network)
    return txn


async def ensure_predefined(
    store: Store, propose: Propose, settle: Settle, retry_delay: float = 1.0
) -> None:
    """Once this leader's store is settled, write the predefined networks it lacks; retried
    while the write cannot commit (no quorum), done once they are there."""
    while True:
        try:
            await settle(SETTLE_TIMEOUT)
            txn = missing_predefined(store)
            if txn is None:
                return
            err = StoreError.from_result(await propose(txn.encode()))
        except RaftError as exc:
            log.warning("event=predefined_networks_failed error=%r", str(exc))
            await asyncio.sleep(retry_delay)
            continue
        if err is None or err.kind is ErrorKind.EXISTS:
            log.info("event=predefined_networks_created")
            return
        log.warning("event=predefined_networks_refused error=%r", err.message)
        await asyncio.sleep(retry_delay)
