"""The manager role of a node: its Raft replica on 2377, the services sharing that port, and
its own entry in the swarm's Node table.

How the replica starts (as `swarm init` / `swarm join` / a restart):
- a Raft log in `raft_dir`: restart from it (the node keeps its ids and membership);
- `join`: ask that manager to add us (as a learner, promoted once caught up);
- neither: bootstrap a new cluster with this node as its only manager, and commit `first`
  (the Cluster object and this node's Node object) as the first write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from controlplane.manager.cluster import DEFAULT_DATA_PATH_PORT, NodeDescription, node_object
from controlplane.manager.control import ControlService
from controlplane.manager.dispatcher import RaftView, driver_raft_view
from controlplane.manager.followed_cluster import FollowedCluster
from controlplane.manager.leader_calls import LeaderCalls
from controlplane.manager.leadership import Leadership
from controlplane.manager.network_create import NetworkCreator
from controlplane.pb import raft_pb2
from controlplane.pb.objects_pb2 import Cluster, Node
from controlplane.raft.core import RaftError
from controlplane.raft.driver import PROFILES, RaftDriver, bootstrap, new_id
from controlplane.raft.recovery import known_members
from controlplane.raft.storage import RaftStorage
from controlplane.raft.transport import Credentials, call
from controlplane.raft.types import Role
from controlplane.store import Store, Transaction

log = logging.getLogger("controlplane.manager")

Register = Callable[[grpc.aio.Server], None]
WRITE_TIMEOUT = 30.0  # Swarm blocks a write while a new leader is elected
# The WAL's live segment is zero-filled this far ahead of its records, so a write's sync
# changes no file metadata (see raft/storage.py): 1 MiB is about 1,500 service creates.
WAL_PREALLOCATE_BYTES = 1 << 20


class ManagerStartError(Exception):
    """The manager cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class ManagerSettings:
    raft_dir: Path
    listen: str  # host:port to serve 2377 on
    advertise: str  # host:port the other managers dial
    profile: str = "lab"
    snapshot_interval: int = 10_000
    credentials: Credentials | None = None
    hostname: str = ""


class ManagerRole:
    def __init__(self, settings: ManagerSettings, store: Store | None = None) -> None:
        if settings.profile not in PROFILES:
            raise ManagerStartError(
                f"unknown timing profile {settings.profile!r}; use one of {', '.join(PROFILES)}"
            )
        self.settings = settings
        self.store = store or Store()
        self.driver: RaftDriver | None = None
        self._leadership: Leadership | None = None
        self._leader_calls: LeaderCalls | None = None
        self._register_task: asyncio.Task[None] | None = None

    async def start(
        self,
        *,
        join: str | None = None,
        first: Callable[[int], Transaction] | None = None,
        services: Sequence[Register] = (),
        node_id: str | None = None,
        cluster_id: int | None = None,
    ) -> RaftDriver:
        """Start the replica (see the module docstring). `first(raft cluster id)` builds the
        bootstrap write and `cluster_id` the new cluster's Raft id (random by default); `node_id`
        is this node's swarm id, whose Node object gets this
        replica's Raft id and address once it is a member (default: the Raft id in hex, for
        a Raft-only lab without the swarm layer)."""
        s = self.settings
        join_members: list[raft_pb2.Member] = []
        if RaftStorage.exists(s.raft_dir):
            storage, recovered = RaftStorage.open(
                s.raft_dir, preallocate_bytes=WAL_PREALLOCATE_BYTES
            )
            others = [a for a in known_members(recovered).values() if a != s.advertise]
            try:
                await self._check_same_cluster([join] if join else others, recovered.cluster_id)
            except ManagerStartError:
                storage.close()
                raise
            how = "restarted"
        elif join:
            response = await self._join(join)
            join_members = list(response.members)
            storage = RaftStorage.create(
                s.raft_dir, cluster_id=response.cluster_id, node_id=response.node_id
            )
            storage.close()
            storage, recovered = RaftStorage.open(
                s.raft_dir, preallocate_bytes=WAL_PREALLOCATE_BYTES
            )
            how = "joined"
        else:
            raft_id = new_id()
            storage = RaftStorage.create(
                s.raft_dir, cluster_id=cluster_id or new_id(), node_id=raft_id
            )
            bootstrap(storage, raft_id, s.advertise)
            storage.close()
            storage, recovered = RaftStorage.open(
                s.raft_dir, preallocate_bytes=WAL_PREALLOCATE_BYTES
            )
            how = "initialized"
        driver = RaftDriver(
            storage=storage,
            recovered=recovered,
            state_machine=self.store,
            listen=s.listen,
            profile=PROFILES[s.profile],
            snapshot_interval=FollowedCluster(self.store, self._snapshot_interval).current,
            credentials=s.credentials,
        )
        driver.members.update({m.node_id: m.address for m in join_members})
        self.driver = driver
        self._leadership = Leadership(driver)
        networks = NetworkCreator(self.store, self._leadership)
        self._leader_calls = LeaderCalls(driver, networks, self._channel_credentials())
        await driver.start([ControlService(driver, self.store, networks).register, *services])
        log.info(
            "event=manager_%s node=%016x cluster=%016x", how, driver.node_id, driver.cluster_id
        )
        initial = first(driver.cluster_id) if first is not None and how == "initialized" else None
        self._register_task = asyncio.create_task(
            self._register(driver, initial, node_id or f"{driver.node_id:016x}")
        )
        return driver

    async def _register(
        self, driver: RaftDriver, initial: Transaction | None, node_id: str
    ) -> None:
        """Commit the bootstrap write (once this node leads its one-member cluster), then make
        sure this node's Node object exists and names its Raft id and address; retried until
        done, since a write may meet an election."""
        while initial is not None:
            if driver.core.role is Role.LEADER:
                with contextlib.suppress(RaftError):
                    await driver.propose(initial.encode(), 10.0)
                    break
            await asyncio.sleep(0.05)
        while True:
            node = self.store.get(Node, node_id)
            if node is not None and node.manager_status.raft_id == driver.node_id:
                return
            txn = Transaction()
            if node is None:
                txn.create(self._manager_node(node_id, driver.node_id))
            else:
                updated = Node()
                updated.CopyFrom(node)
                updated.manager_status.raft_id = driver.node_id
                updated.manager_status.addr = self.settings.advertise
                updated.role = updated.spec.desired_role = "manager"
                txn.update(updated)
            with contextlib.suppress(RaftError):
                await driver.propose(txn.encode(), 10.0)
            await asyncio.sleep(0.2)

    def _manager_node(self, node_id: str, raft_id: int) -> Node:
        desc = NodeDescription(
            hostname=self.settings.hostname or node_id, advertise_addr=self.settings.advertise
        )
        node = node_object(node_id, "manager", desc, DEFAULT_DATA_PATH_PORT)
        node.status.state = "ready"
        node.manager_status.raft_id = raft_id
        return node

    @property
    def leader_calls(self) -> LeaderCalls:
        """This manager's way to the calls its leader serves (once started)."""
        if self._leader_calls is None:
            raise RuntimeError("the manager role has not started: no leader calls yet")
        return self._leader_calls

    @property
    def leadership(self) -> Leadership:
        """This manager's standing as the leader (once started)."""
        if self._leadership is None:
            raise RuntimeError("the manager role has not started: no leadership yet")
        return self._leadership

    def _started(self) -> RaftDriver:
        if self.driver is None:
            raise RaftError("this manager's Raft replica has not started")
        return self.driver

    async def propose(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        """Commit through Raft from this manager (forwarded to the leader on a kept-open
        channel as needed); usable by the services registered on 2377 before the replica
        starts."""
        self._started()
        return await self.leader_calls.propose(data, timeout)

    async def write(self, data: bytes) -> bytes:
        """`propose` for the leader's loops and the CA: the store's result, Swarm's write
        timeout."""
        _index, result = await self.propose(data, WRITE_TIMEOUT)
        return result

    def raft_view(self) -> RaftView:
        return driver_raft_view(self._started())()

    def cluster(self) -> Cluster | None:
        clusters = self.store.list(Cluster)
        return clusters[0] if clusters else None

    async def _join(self, address: str) -> raft_pb2.JoinResponse:
        request = raft_pb2.JoinRequest(address=self.settings.advertise)
        try:
            response: raft_pb2.JoinResponse = await call(
                address, "Join", request, 30.0, self._channel_credentials()
            )
        except Exception as err:
            raise ManagerStartError(f"could not join the cluster through {address}: {err}") from err
        return response

    def _channel_credentials(self) -> grpc.ChannelCredentials | None:
        creds = self.settings.credentials
        return creds.channel if creds is not None else None

    async def _check_same_cluster(self, addresses: list[str], cluster_id: int) -> None:
        """Refuse to run a replica whose cluster moved on: a member that answers with another
        Raft cluster id was forced into a new cluster (`--force-new-cluster`) or is not of our
        cluster at all. Members that do not answer decide nothing."""

        async def status(address: str) -> raft_pb2.StatusResponse | None:
            try:
                answer: raft_pb2.StatusResponse = await call(
                    address, "Status", raft_pb2.StatusRequest(), 3.0, self._channel_credentials()
                )
                return answer
            except Exception:
                return None

        answers = await asyncio.gather(*(status(a) for a in addresses))
        for address, answer in zip(addresses, answers, strict=True):
            if answer is not None and answer.cluster_id != cluster_id:
                raise ManagerStartError(
                    f"{self.settings.raft_dir} holds Raft cluster {cluster_id:016x}, but {address} "
                    f"now belongs to cluster {answer.cluster_id:016x} (a new cluster was forced "
                    "from this one, or this is another swarm's data); this manager was left "
                    "behind: leave the swarm (`docker swarm leave --force`) and join again, or use "
                    "a fresh --data-dir"
                )

    def _snapshot_interval(self, cluster: Cluster | None) -> int:
        """The swarm's `--snapshot-interval` (`swarm init`/`update`), applied as soon as it is
        committed; the settings' until `swarm init` wrote the Cluster (a Raft-only lab)."""
        if cluster is not None and cluster.spec.raft.snapshot_interval > 0:
            return cluster.spec.raft.snapshot_interval
        return self.settings.snapshot_interval

    async def stop(self) -> None:
        if self._register_task is not None:
            self._register_task.cancel()
        if self._leader_calls is not None:
            await self._leader_calls.close()
        if self.driver is not None:
            await self.driver.stop()
