"""What the API needs from the node it runs in.

The manager process implements `EngineBackend` around its Raft driver and store:

    class ManagerBackend:
        def __init__(self, driver: RaftDriver, store: Store, ...) -> None: ...
        store = ...
        async def propose(self, data: bytes) -> bytes:
            _index, result = await driver.propose(data, timeout)
            return result
        async def linearizable_read(self) -> None:
            await driver.linearizable_read(timeout)
        async def prepare_write(self) -> None:
            nothing on a leader whose store holds every acknowledged write (see
            `manager/leadership.py`), a linearizable read elsewhere
        async def create_network(self, spec: NetworkSpec) -> Network:
            on the leader, whichever manager this is (`manager/leader_calls.py`)
        def node_info(self) -> NodeInfo: ...
        def local_state(self) -> LocalState: ...  # node_info()'s state and role, cheaply
        async def raft_members(self) -> RaftMembers:
            the leader's driver.status() (voters, learners, reachable), by swarm node id

Raft errors (`NoLeaderError`, `ProposalTimeoutError`, ...) propagate out of `propose`,
`linearizable_read`, `prepare_write` and `create_network` unchanged, and so do the creator's
refusals (`StoreError`, `AllocatorError`): the API turns them into Docker's statuses (see
`errors.py`).
A worker's backend raises nothing special: the API refuses swarm-scope writes on a worker by
itself, from `local_state().role`, before it calls `propose`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from controlplane.pb.objects_pb2 import Network, NetworkSpec
from controlplane.raft.core import keeps_quorum
from controlplane.store import Store


@dataclass(frozen=True)
class ManagerInfo:
    """One manager as `/info` lists it in Swarm.RemoteManagers."""

    node_id: str
    addr: str  # "host:2377"
    leader: bool = False
    reachability: str = "reachable"  # "reachable" | "unreachable" | "unknown"


@dataclass(frozen=True)
class LocalState:
    """This node's place in a swarm, as `NodeInfo` gives it: what every swarm-scope request
    checks first, so a backend answers it without reading the store (`node_info()` lists the
    nodes and the managers)."""

    local_node_state: str = "active"  # "inactive" | "pending" | "active" | "error" | "locked"
    role: str = "manager"  # "manager" | "worker" | "" outside a swarm
    error: str = ""


@dataclass(frozen=True)
class NodeInfo:
    """This node as `/_ping`, `/version` and `/info` describe it."""

    node_id: str
    hostname: str
    addr: str  # the advertise address, without port (Swarm.NodeAddr)
    engine_id: str = ""  # `docker info`'s ID (a Raft-only lab's manager has none: its node id)
    role: str = "manager"  # "manager" | "worker"
    is_leader: bool = False
    local_node_state: str = "active"  # "inactive" | "pending" | "active" | "error" | "locked"
    error: str = ""
    cluster_id: str = ""
    managers: tuple[ManagerInfo, ...] = ()
    nodes: int = 0  # node count (a manager knows it; a worker reports 0 as Docker does)
    engine_version: str = "20.10.24-swarmlab"
    os: str = "linux"
    architecture: str = "x86_64"
    kernel_version: str = ""
    ncpu: int = 1
    mem_total: int = 0
    labels: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())  # `docker info` prints them at the end

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"


@dataclass(frozen=True)
class RaftMembers:
    """The managers' Raft configuration as the leader sees it, by swarm node id: the voters,
    the learners (managers still catching up) and the members the leader heard from lately.
    The API judges a demotion on it, as swarmkit's UpdateNode asks its Raft node."""

    voters: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()
    reachable: frozenset[str] = frozenset()

    def is_member(self, node_id: str) -> bool:
        return node_id in self.voters or node_id in self.learners

    def can_remove(self, node_id: str) -> bool:
        """The managers left without `node_id` still have a reachable majority."""
        return keeps_quorum(self.voters, self.reachable, node_id)


class EngineBackend(Protocol):
    """The node behind the API. `store` is this replica's store (a worker may give an empty
    one); `propose` commits a `controlplane.store.Transaction`'s bytes through Raft and returns
    the store's `StoreTransactionResult` bytes (decode with `StoreError.from_result`)."""

    @property
    def store(self) -> Store: ...

    async def propose(self, data: bytes) -> bytes: ...

    async def linearizable_read(self) -> None: ...

    async def prepare_write(self) -> None:
        """Make `store` hold every acknowledged write before a write checked against it (and
        guarded at apply time): on a leader past its term's first commit, at once; elsewhere
        with a linearizable read."""
        ...

    async def create_network(self, spec: NetworkSpec) -> Network:
        """Allocate and commit an overlay network on the leader; the network as committed,
        already in `store`."""
        ...

    def node_info(self) -> NodeInfo: ...

    def local_state(self) -> LocalState:
        """`node_info()`'s local_node_state, role and error, without reading the store."""
        ...

    async def raft_members(self) -> RaftMembers:
        """The leader's view of the Raft membership (Raft errors propagate, as `propose`)."""
        ...


@dataclass(frozen=True)
class SwarmInit:
    """`POST /swarm/init` as the API receives it (Docker's field names, Python's case)."""

    listen_addr: str = ""
    advertise_addr: str = ""
    data_path_addr: str = ""
    data_path_port: int = 0
    default_addr_pool: tuple[str, ...] = ()
    subnet_size: int = 0
    force_new_cluster: bool = False
    availability: str = ""
    election_tick: int = 0
    heartbeat_tick: int = 0
    snapshot_interval: int = 0
    heartbeat_period_ns: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    task_history_limit: int | None = None  # None: Swarm's default
    node_cert_expiry_ns: int = 0  # 0: Swarm's default


@dataclass(frozen=True)
class SwarmJoin:
    """`POST /swarm/join`."""

    remote_addrs: tuple[str, ...]
    join_token: str
    listen_addr: str = ""
    advertise_addr: str = ""
    data_path_addr: str = ""
    availability: str = ""


class SwarmControl(Protocol):
    """What makes a node enter or leave a swarm. Errors are `ApiError`s with Docker's words."""

    async def swarm_init(self, request: SwarmInit) -> str: ...

    async def swarm_join(self, request: SwarmJoin) -> None: ...

    async def swarm_leave(self, force: bool) -> None: ...
