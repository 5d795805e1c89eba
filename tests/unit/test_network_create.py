"""The leader's network creator (`manager/network_create.py`) over a modelled Raft log shared by
two replicas: allocation order, refusals, concurrent creates, and the leader-change cases (an
old leader's create that the new leader's store has not applied yet; a create whose answer
never came, in the same term and after a term change)."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.manager.ipam import AllocatorError
from controlplane.manager.network_create import NetworkCreator
from controlplane.pb.objects_pb2 import Cluster, IPAMConfig, Network, NetworkSpec
from controlplane.raft.core import NotLeaderError
from controlplane.raft.errors import ProposalTimeoutError
from controlplane.store import ErrorKind, Store, StoreError, Transaction

TIMEOUT = 10.0


class Log:
    """The committed entries of the swarm, in order (entry i is at index i + 1)."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []


class Replica:
    """A manager's store, applying the shared log up to where it is told."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.store = Store()

    def catch_up(self, upto: int) -> bytes:
        result = b""
        for index in range(self.store.applied_index + 1, upto + 1):
            result = self.store.apply(index, self.log.entries[index - 1])
        return result


class ModelLeadership:
    """`Leadership` for `replica` leading in `term`. Settling, once per term, applies every
    entry of the log (a new leader commits them all with its first entry). A proposal is
    committed and applied at once, or, while `stall` is set, appended to the log and never
    answered (the wait runs out): it commits with the next one."""

    def __init__(self, replica: Replica, term: int) -> None:
        self.replica = replica
        self.term = term
        self.leading = True
        self.settled_term = 0
        self.stall = False
        self.yield_before_apply = False

    async def settle(self, timeout: float) -> None:
        if not self.leading:
            raise NotLeaderError(0)
        if self.settled_term != self.term:
            self.replica.catch_up(len(self.replica.log.entries))
            self.settled_term = self.term

    async def propose_local(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        if not self.leading:
            raise NotLeaderError(0)
        self.replica.log.entries.append(data)
        index = len(self.replica.log.entries)
        if self.stall:
            await asyncio.Event().wait()
        if self.yield_before_apply:
            await asyncio.sleep(0)  # let other creates run while this one is "in Raft"
        return index, self.replica.catch_up(index)


def spec(name: str, *subnets: str, ingress: bool = False) -> NetworkSpec:
    s = NetworkSpec(driver="overlay", ingress=ingress)
    s.annotations.name = name
    s.ipam.extend(IPAMConfig(subnet=subnet) for subnet in subnets)
    return s


def subnets(store: Store) -> list[str]:
    return sorted(cfg.subnet for n in store.list(Network) for cfg in n.ipam)


def leader() -> tuple[Replica, ModelLeadership, NetworkCreator]:
    replica = Replica(Log())
    raft = ModelLeadership(replica, term=1)
    return replica, raft, NetworkCreator(replica.store, raft)


def test_networks_get_the_next_block_and_vni_in_order() -> None:
    async def scenario() -> None:
        replica, _raft, creator = leader()
        _, first = await creator.create(spec("first"), TIMEOUT)
        _, second = await creator.create(spec("second"), TIMEOUT)
        index, mine = await creator.create(spec("mine", "192.168.7.0/24"), TIMEOUT)
        assert [first.vni, second.vni, mine.vni] == [4096, 4097, 4098]
        assert [c.subnet for c in first.ipam] == ["10.0.0.0/24"]
        assert [c.gateway for c in second.ipam] == ["10.0.1.1"]
        assert [c.subnet for c in mine.ipam] == ["192.168.7.0/24"]
        assert first.id and first.meta.created_at_ns > 0
        stored = replica.store.get(Network, mine.id)
        assert index == 3 and stored is not None and stored.spec == mine.spec
        assert (stored.vni, list(stored.ipam)) == (mine.vni, list(mine.ipam))

    asyncio.run(scenario())


def test_refusals_keep_dockers_words() -> None:
    async def scenario() -> None:
        _replica, _raft, creator = leader()
        await creator.create(spec("taken", "10.10.0.0/16"), TIMEOUT)
        await creator.create(spec("ingress", ingress=True), TIMEOUT)
        with pytest.raises(StoreError) as name:
            await creator.create(spec("TAKEN"), TIMEOUT)  # names compare without case
        assert name.value.kind == ErrorKind.EXISTS
        assert name.value.message == "network with name TAKEN already exists"
        with pytest.raises(StoreError, match="an ingress network already exists"):
            await creator.create(spec("second-ingress", ingress=True), TIMEOUT)
        with pytest.raises(AllocatorError, match=r"overlaps subnet 10\.10\.0\.0/16") as overlap:
            await creator.create(spec("overlap", "10.10.3.0/24"), TIMEOUT)
        assert overlap.value.kind == "conflict"
        with pytest.raises(AllocatorError, match=r"Invalid subnet 10\.1\.2\.0/33"):
            await creator.create(spec("bad", "10.1.2.0/33"), TIMEOUT)

    asyncio.run(scenario())


def test_an_exhausted_pool_is_refused() -> None:
    async def scenario() -> None:
        replica, _raft, creator = leader()
        cluster = Cluster(id="cluster", subnet_size=24)
        cluster.spec.annotations.name = "default"
        cluster.default_address_pool.append("10.9.0.0/23")  # two /24 blocks
        replica.log.entries.append(Transaction().create(cluster).encode())
        replica.catch_up(1)
        for n in range(2):
            await creator.create(spec(f"n{n}"), TIMEOUT)
        with pytest.raises(AllocatorError, match="could not find an available") as err:
            await creator.create(spec("third"), TIMEOUT)
        assert err.value.kind == "exhausted"
        assert subnets(replica.store) == ["10.9.0.0/24", "10.9.1.0/24"]

    asyncio.run(scenario())


def test_concurrent_creates_never_share_a_subnet_or_a_vni() -> None:
    async def scenario() -> None:
        replica, raft, creator = leader()
        raft.yield_before_apply = True
        created = await asyncio.gather(
            *(creator.create(spec(f"net-{n}"), TIMEOUT) for n in range(20))
        )
        vnis = {net.vni for _, net in created}
        assert len(vnis) == 20 and len(set(subnets(replica.store))) == 20

    asyncio.run(scenario())


def test_a_new_leader_allocates_after_what_the_old_leader_committed() -> None:
    async def scenario() -> None:
        log = Log()
        old, new = Replica(log), Replica(log)
        old_raft = ModelLeadership(old, term=1)
        old_creator = NetworkCreator(old.store, old_raft)
        await old_creator.create(spec("before"), TIMEOUT)
        new.catch_up(len(log.entries))  # the new leader had seen this one
        await old_creator.create(spec("in-flight"), TIMEOUT)  # committed, not applied by `new`
        old_raft.leading = False
        with pytest.raises(NotLeaderError):
            await old_creator.create(spec("too-late"), TIMEOUT)

        assert subnets(new.store) == ["10.0.0.0/24"]  # lagging: allocating now would collide
        new_creator = NetworkCreator(new.store, ModelLeadership(new, term=2))
        _, after = await new_creator.create(spec("after"), TIMEOUT)
        assert [c.subnet for c in after.ipam] == ["10.0.2.0/24"] and after.vni == 4098
        assert subnets(new.store) == ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]

    asyncio.run(scenario())


def test_a_create_without_an_answer_stays_allocated_until_its_term_ends() -> None:
    async def scenario() -> None:
        replica, raft, creator = leader()
        raft.stall = True
        with pytest.raises(ProposalTimeoutError):
            await creator.create(spec("unanswered"), timeout=0.2)
        raft.stall = False
        # Same term: the entry is in this leader's log, not applied, and may still commit.
        assert subnets(replica.store) == []
        _, next_one = await creator.create(spec("next"), TIMEOUT)
        assert [c.subnet for c in next_one.ipam] == ["10.0.1.0/24"]
        assert next_one.vni == 4097
        # Committing `next` committed the unanswered entry before it: nothing was given twice.
        assert subnets(replica.store) == ["10.0.0.0/24", "10.0.1.0/24"]

    asyncio.run(scenario())


def test_an_unanswered_create_that_a_new_term_dropped_frees_its_block() -> None:
    async def scenario() -> None:
        replica, raft, creator = leader()
        raft.stall = True
        with pytest.raises(ProposalTimeoutError):
            await creator.create(spec("dropped"), timeout=0.2)
        raft.stall = False
        replica.log.entries.pop()  # never committed: a new leader's entries replaced it
        raft.term = 2  # this manager leads again, in a new term
        _, net = await creator.create(spec("reuses"), TIMEOUT)
        assert [c.subnet for c in net.ipam] == ["10.0.0.0/24"] and net.vni == 4096

    asyncio.run(scenario())
