"""The leader's network creator: `docker network create` allocates here, on the leader only.

A network's subnets and VNI are allocated from the store, so two managers allocating from their
own replicas at once could hand out the same block; guarding each create with the Cluster
object's version made them refuse each other ("update out of sequence"), and a follower lost
that race to the leader nearly every time. As swarmkit's control API, creation is therefore
served by the leader alone (followers forward the call, see `leader_calls.py`), one create at a
time: it allocates from the leader's store and proposes under one lock, and takes the lock
again only once the store has applied the create, so the next create sees it. No two creates
can allocate from the same state, and no version guard is needed. The allocator is not rebuilt
from every network per create: it is kept equal to the store's networks by their change events
(`store_allocation.py`), and restored from the store after a refused create or a new term.

Across a leader change the store of the new leader may still lack creates an old leader
proposed (they commit with the new leader's first entry, and apply after it): `Leadership.settle`
waits for them once per term before the first allocation. A deposed leader that does not know
it yet cannot commit what it allocates (its term has lost its majority), so its creates fail
instead of colliding. A create whose wait ended without an answer (a timeout, a cancelled
request) may still commit later in the same term: its allocation stays counted (`_in_flight`)
until the store has it or the term is over. The store still refuses a second network of the
same name at apply time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from controlplane.ids import new_object_id
from controlplane.manager.allocator import IPAMRequest
from controlplane.manager.store_allocation import StoreAllocation
from controlplane.pb.objects_pb2 import IPAMConfig, Network, NetworkSpec
from controlplane.raft.errors import ProposalTimeoutError
from controlplane.store import ErrorKind, Store, StoreError, Transaction

log = logging.getLogger("controlplane.manager.networks")


class LeaderWrites(Protocol):
    """What the creator needs from Raft (`Leadership` on a manager)."""

    @property
    def settled_term(self) -> int: ...

    async def settle(self, timeout: float) -> None: ...

    async def propose_local(self, data: bytes, timeout: float) -> tuple[int, bytes]: ...


class NetworkCreator:
    def __init__(
        self, store: Store, raft: LeaderWrites, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self._store = store
        self._raft = raft
        self._clock = clock
        self._lock = asyncio.Lock()
        # Networks proposed whose outcome is not known yet (no answer came), by id, with the term
        # they were proposed in: still counted as allocated until the store has them, or until
        # a new term's settle has applied every entry of older terms that will ever commit.
        self._in_flight: dict[str, tuple[int, Network]] = {}
        self._allocation = StoreAllocation(store, kinds=(Network,))
        self._term = 0

    async def create(self, spec: NetworkSpec, timeout: float) -> tuple[int, Network]:
        """Allocate and commit a network of `spec` (spec.ipam: the subnets asked for, if any);
        returns (its Raft index, the network as committed). Raises `StoreError` (a name taken:
        EXISTS), `AllocatorError` (a bad or overlapping subnet, nothing left) or a Raft error
        (not the leader, no quorum, `ProposalTimeoutError` after `timeout` seconds)."""
        try:
            async with asyncio.timeout(timeout), self._lock:
                await self._raft.settle(timeout)
                network = self._allocate(spec)
                # Until the proposal returns, its outcome is unknown (a timeout, a cancelled
                # request, a lost leadership): the allocation stays counted till we know.
                self._in_flight[network.id] = (self._raft.settled_term, network)
                index, result = await self._raft.propose_local(
                    Transaction().create(network).encode(), timeout
                )
        except TimeoutError:
            raise ProposalTimeoutError() from None
        del self._in_flight[network.id]  # applied, or refused by the store
        err = StoreError.from_result(result)
        if err is not None:
            self._allocation.forget()  # it holds the refused network's subnet and VNI
            raise err
        log.debug(
            "event=network_created id=%s name=%s vni=%d index=%d",
            network.id,
            network.spec.annotations.name,
            network.vni,
            index,
        )
        return index, network

    def _allocate(self, spec: NetworkSpec) -> Network:
        store = self._store
        name = spec.annotations.name
        if store.get_by_name(Network, name) is not None:
            raise StoreError(ErrorKind.EXISTS, f"network with name {name} already exists")
        if spec.ingress and any(n.spec.ingress for n in store.list(Network)):
            raise StoreError(ErrorKind.EXISTS, "an ingress network already exists; remove it first")
        term = self._raft.settled_term
        if term != self._term:
            # A new term's settle applied every older entry that will ever commit: what is
            # still in flight from an older term never will, and the allocator forgets it.
            self._in_flight = {nid: v for nid, v in self._in_flight.items() if v[0] == term}
            self._allocation.forget()
            self._term = term
        allocator, _problems = self._allocation.current()
        for nid, (_term, net) in list(self._in_flight.items()):
            if store.get(Network, nid) is not None:
                del self._in_flight[nid]
            else:
                allocator.claim_network(net)  # a no-op unless the allocator was restored
        network = Network(id=new_object_id())
        network.meta.created_at_ns = network.meta.updated_at_ns = self._clock()
        network.spec.CopyFrom(spec)
        requests = [IPAMRequest(c.subnet, c.gateway, c.range) for c in spec.ipam]
        allocation = allocator.allocate_network(network.id, name, requests)
        network.vni = allocation.vni
        for pool in allocation.pools:
            network.ipam.append(
                IPAMConfig(subnet=pool.subnet, range=pool.ip_range, gateway=pool.gateway)
            )
        return network
