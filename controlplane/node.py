"""One manager process: its data directory, the Raft driver, the store and the 2377 services.

How a manager starts depends on its data directory and flags, as `swarm init` / `swarm join`:
- a data directory with a Raft log: restart from it (the node keeps its ids and membership);
- `--join ADDR` and no log yet: ask ADDR to add us (as a learner, promoted once caught up);
- neither: bootstrap a new cluster with this node as its only manager.

Besides 2377 (Raft, Control), a manager serves the Docker Engine API on 2375.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from controlplane.api.app import create_app
from controlplane.api.manager_backend import ManagerBackend
from controlplane.manager.control import ControlService
from controlplane.pb import raft_pb2
from controlplane.pb.objects_pb2 import Cluster, Node
from controlplane.raft.core import RaftError
from controlplane.raft.driver import PROFILES, RaftDriver, bootstrap, new_id
from controlplane.raft.storage import RaftStorage
from controlplane.raft.transport import call
from controlplane.raft.types import Role
from controlplane.store import Store, Transaction

log = logging.getLogger("controlplane.node")


class NodeError(Exception):
    """The node cannot start, or cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class ManagerOptions:
    data_dir: Path
    listen: str
    advertise: str
    join: str | None = None
    profile: str = "lab"
    snapshot_interval: int = 10_000
    api_listen: str | None = None  # the Docker Engine API; default: the listen host, port 2375
    hostname: str = field(default_factory=socket.gethostname)  # as `docker node ls` shows it


class ManagerNode:
    def __init__(self, options: ManagerOptions) -> None:
        if options.profile not in PROFILES:
            raise NodeError(
                f"unknown timing profile {options.profile!r}; use one of {', '.join(PROFILES)}"
            )
        self.options = options
        self.store = Store()
        self.driver: RaftDriver | None = None
        self._join_members: list[raft_pb2.Member] = []
        self._api_runner: web.AppRunner | None = None
        self._cluster_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        opts = self.options
        raft_dir = opts.data_dir / "raft"
        if RaftStorage.exists(raft_dir):
            storage, recovered = RaftStorage.open(raft_dir)
            if opts.join:
                await self._check_same_cluster(opts.join, recovered.cluster_id)
            how = "restarted"
        elif opts.join:
            response = await self._join(opts.join)
            storage = RaftStorage.create(
                raft_dir, cluster_id=response.cluster_id, node_id=response.node_id
            )
            storage.close()
            storage, recovered = RaftStorage.open(raft_dir)
            how = "joined"
        else:
            node_id = new_id()
            storage = RaftStorage.create(raft_dir, cluster_id=new_id(), node_id=node_id)
            bootstrap(storage, node_id, opts.advertise)
            storage.close()
            storage, recovered = RaftStorage.open(raft_dir)
            how = "initialized"
        driver = RaftDriver(
            storage=storage,
            recovered=recovered,
            state_machine=self.store,
            listen=opts.listen,
            profile=PROFILES[opts.profile],
            snapshot_interval=opts.snapshot_interval,
        )
        if how == "joined":
            driver.members.update({m.node_id: m.address for m in self._join_members})
        self.driver = driver
        await driver.start([ControlService(driver, self.store).register])
        log.info("event=manager_%s node=%x cluster=%x", how, driver.node_id, driver.cluster_id)
        await self._start_api(driver)
        self._cluster_task = asyncio.create_task(self._register(driver))

    async def _start_api(self, driver: RaftDriver) -> None:
        host = self.options.listen.rpartition(":")[0]
        api_host, _, api_port = (self.options.api_listen or f"{host}:2375").rpartition(":")
        advertise_host = self.options.advertise.rpartition(":")[0]
        app = create_app(ManagerBackend(driver, self.store, advertise_host))
        self._api_runner = web.AppRunner(app, access_log=None)
        await self._api_runner.setup()
        try:
            await web.TCPSite(self._api_runner, api_host, int(api_port)).start()
        except OSError as err:
            raise NodeError(f"cannot serve the Engine API on {api_host}:{api_port}: {err}") from err
        log.info("event=api_listening address=%s:%s", api_host, api_port)

    async def _register(self, driver: RaftDriver) -> None:
        """Write what the swarm must know about this manager, retrying until it is committed:
        the swarm's Cluster object (default address pool, Raft settings), written once by the
        first leader (its unique name makes racing leaders harmless), and this node's Node
        object, written by each manager through whichever manager leads."""
        node_id = f"{driver.node_id:x}"
        while not self.store.list(Cluster) or self.store.get(Node, node_id) is None:
            txn = Transaction()
            if not self.store.list(Cluster) and driver.core.role is Role.LEADER:
                txn.create(self._cluster_object(driver))
            if self.store.get(Node, node_id) is None:
                txn.create(self._node_object(node_id, driver))
            with contextlib.suppress(RaftError):
                await driver.propose(txn.encode(), 10.0)
            await asyncio.sleep(0.2)

    def _cluster_object(self, driver: RaftDriver) -> Cluster:
        cluster = Cluster(id=f"{driver.cluster_id:x}", subnet_size=24)
        cluster.spec.annotations.name = "default"
        cluster.default_address_pool.append("10.0.0.0/8")
        cluster.spec.raft.snapshot_interval = self.options.snapshot_interval
        return cluster

    def _node_object(self, node_id: str, driver: RaftDriver) -> Node:
        now = time.time_ns()
        node = Node(id=node_id, role="manager")
        node.meta.created_at_ns = node.meta.updated_at_ns = now
        node.spec.desired_role = "manager"
        node.spec.availability = "active"
        node.description.hostname = self.options.hostname
        node.description.os = "linux"
        node.description.architecture = "x86_64"
        node.description.engine_version = "20.10.24-swarmlab"
        node.status.state = "ready"
        node.status.addr = self.options.advertise.rpartition(":")[0]
        node.manager_status.raft_id = driver.node_id
        node.manager_status.addr = self.options.advertise
        return node

    async def _join(self, address: str) -> raft_pb2.JoinResponse:
        request = raft_pb2.JoinRequest(address=self.options.advertise)
        try:
            response: raft_pb2.JoinResponse = await call(address, "Join", request, 30.0)
        except Exception as err:
            raise NodeError(f"could not join the cluster through {address}: {err}") from err
        self._join_members = list(response.members)
        return response

    async def _check_same_cluster(self, address: str, cluster_id: int) -> None:
        try:
            status: raft_pb2.StatusResponse = await call(
                address, "Status", raft_pb2.StatusRequest(), 5.0
            )
        except Exception:
            return  # the other manager is down: our own state decides
        if status.cluster_id != cluster_id:
            raise NodeError(
                f"{self.options.data_dir} holds cluster {cluster_id:x}, but {address} belongs "
                f"to cluster {status.cluster_id:x}; use a fresh --data-dir to join it"
            )

    async def stop(self) -> None:
        if self._cluster_task is not None:
            self._cluster_task.cancel()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        if self.driver is not None:
            await self.driver.stop()


async def run_manager(options: ManagerOptions) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly. A failure of the Raft loop (a
    disk error, say) ends the process with that error, for its supervisor to see."""
    node = ManagerNode(options)
    await node.start()
    assert node.driver is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(node.driver.wait_failed())
    await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    if failed.done():
        error = failed.result()
        log.critical("event=raft_loop_failed error=%r", error)
        await node.stop()
        raise NodeError(f"the Raft loop failed: {error}") from error
    failed.cancel()
    log.info("event=manager_stopping")
    await node.stop()
