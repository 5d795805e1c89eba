"""The Engine API's backend in a manager process: the Raft driver and this replica's store."""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.api.backend import LocalState, ManagerInfo, NodeInfo, RaftMembers
from controlplane.manager.cluster import the_cluster
from controlplane.manager.leader_calls import LeaderCalls
from controlplane.manager.leadership import Leadership
from controlplane.manager.role import WRITE_TIMEOUT
from controlplane.pb.objects_pb2 import Network, NetworkSpec, Node
from controlplane.raft.core import NotLeaderError
from controlplane.raft.driver import RaftDriver
from controlplane.raft.types import Role
from controlplane.store import Store

READ_TIMEOUT = 10.0
ACTIVE_MANAGER = LocalState(local_node_state="active", role="manager")


class ManagerBackend:
    def __init__(
        self,
        driver: RaftDriver,
        store: Store,
        advertise_host: str,
        hostname: str,
        *,
        leader_calls: LeaderCalls,
        leadership: Leadership,
    ) -> None:
        self._driver = driver
        self._store = store
        self._leader_calls = leader_calls
        self._leadership = leadership
        self._host = advertise_host
        self._hostname = hostname

    @property
    def store(self) -> Store:
        return self._store

    async def propose(self, data: bytes) -> bytes:
        _index, result = await self._leader_calls.propose(data, WRITE_TIMEOUT)
        return result

    async def linearizable_read(self) -> None:
        await self._leader_calls.linearizable_read(READ_TIMEOUT)

    async def prepare_write(self) -> None:
        try:
            await self._leadership.settle(READ_TIMEOUT)  # once per term on the leader
        except NotLeaderError:
            await self._leader_calls.linearizable_read(READ_TIMEOUT)

    async def create_network(self, spec: NetworkSpec) -> Network:
        return await self._leader_calls.create_network(spec, WRITE_TIMEOUT)

    def _reachability(self, node: int) -> str:
        """As the leader sees it (it hears from everyone); a follower only knows itself and
        the leader it hears from."""
        core = self._driver.core
        if node in (self._driver.node_id, core.leader):
            return "reachable" if core.leader else "unknown"
        if node not in core.progress_view():
            return "unknown"
        return "reachable" if self._driver.reachable(node) else "unreachable"

    @staticmethod
    def _swarm_ids(nodes: Iterable[Node]) -> dict[int, str]:
        """Raft id -> the manager's swarm node id (a Raft-only lab uses the Raft id in hex)."""
        return {n.manager_status.raft_id: n.id for n in nodes if n.manager_status.raft_id}

    async def raft_members(self) -> RaftMembers:
        status = await self._driver.leader_status(READ_TIMEOUT)
        ids = self._swarm_ids(self._store.list(Node))

        def named(raft_ids: Iterable[int]) -> frozenset[str]:
            return frozenset(ids.get(r, f"{r:016x}") for r in raft_ids)

        return RaftMembers(
            voters=named(m.node_id for m in status.members if not m.learner),
            learners=named(m.node_id for m in status.members if m.learner),
            reachable=named(status.reachable),
        )

    def local_state(self) -> LocalState:
        return ACTIVE_MANAGER

    def node_info(self) -> NodeInfo:
        driver = self._driver
        members = driver.members
        nodes = self._store.list(Node)
        ids = self._swarm_ids(nodes)
        cluster = the_cluster(self._store)
        return NodeInfo(
            node_id=ids.get(driver.node_id, f"{driver.node_id:016x}"),
            hostname=self._hostname,
            addr=self._host,
            role="manager",
            is_leader=driver.core.role is Role.LEADER,
            cluster_id=cluster.id if cluster is not None else f"{driver.cluster_id:016x}",
            managers=tuple(
                ManagerInfo(
                    node_id=ids.get(node, f"{node:016x}"),
                    addr=address,
                    leader=node == driver.core.leader,
                    reachability=self._reachability(node),
                )
                for node, address in sorted(members.items())
            ),
            nodes=len(nodes) or len(members),
        )
