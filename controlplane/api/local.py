"""A single-node backend without Raft: proposals are applied to a local store at once, and
networks are created by a `NetworkCreator` over that store (this node is its own leader).

Used by the tests and handy for trying the API alone; the manager process uses its Raft driver
instead. `role` and `no_quorum` let a test play a worker or a manager that lost quorum;
`raft` is the Raft membership it reports (by default: this node, the only voter).
"""

from __future__ import annotations

from dataclasses import replace

from controlplane.api.backend import LocalState, ManagerInfo, NodeInfo, RaftMembers
from controlplane.manager.network_create import NetworkCreator
from controlplane.pb.objects_pb2 import Cluster, Network, NetworkSpec
from controlplane.raft.errors import NoLeaderError
from controlplane.store import Store, Transaction


class LocalBackend:
    def __init__(self, info: NodeInfo | None = None, *, with_cluster: bool = True) -> None:
        self._store = Store()
        self._index = 0
        self.no_quorum = False
        self.proposals = 0
        self._info = info or NodeInfo(
            node_id="localnode0000000000000000",
            hostname="swarmlab-local",
            addr="127.0.0.1",
            role="manager",
            is_leader=True,
            cluster_id="localcluster0000000000000",
            managers=(ManagerInfo("localnode0000000000000000", "127.0.0.1:2377"),),
            nodes=1,
        )
        self._networks = NetworkCreator(self._store, self)
        me = frozenset({self._info.node_id})
        self.raft = RaftMembers(voters=me, reachable=me)
        if with_cluster:
            cluster = Cluster(id=self._info.cluster_id)
            cluster.spec.annotations.name = "default"
            cluster.subnet_size = 24
            self._apply(Transaction().create(cluster).encode())

    @property
    def store(self) -> Store:
        return self._store

    def set_role(self, role: str) -> None:
        self._info = replace(self._info, role=role)

    def _apply(self, data: bytes) -> bytes:
        self._index += 1
        return self._store.apply(self._index, data)

    async def propose(self, data: bytes) -> bytes:
        if self.no_quorum:
            raise NoLeaderError()
        self.proposals += 1
        return self._apply(data)

    async def linearizable_read(self) -> None:
        if self.no_quorum:
            raise NoLeaderError()

    async def prepare_write(self) -> None:
        await self.linearizable_read()

    async def create_network(self, spec: NetworkSpec) -> Network:
        _index, network = await self._networks.create(spec, timeout=10.0)
        return network

    # ---- the creator's view of Raft: one term, always settled ------------------------------

    @property
    def settled_term(self) -> int:
        return 1

    async def settle(self, timeout: float) -> None:
        await self.linearizable_read()

    async def propose_local(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        result = await self.propose(data)
        return self._index, result

    def node_info(self) -> NodeInfo:
        return self._info

    def local_state(self) -> LocalState:
        info = self._info
        return LocalState(info.local_node_state, info.role, info.error)

    async def raft_members(self) -> RaftMembers:
        if self.no_quorum:
            raise NoLeaderError()
        return self.raft
