"""`swarmlab manager run`: a Raft-only manager over plain TCP, without the swarm layer (no
CA, no workers): the Raft benchmark, the Raft failover tests and Raft experiments use it to look
at consensus alone. `--join ADDR` joins through any manager; no flag bootstraps a cluster."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from controlplane.api.app import create_app
from controlplane.api.manager_backend import ManagerBackend
from controlplane.manager import ca
from controlplane.manager import cluster as clusters
from controlplane.manager.role import ManagerRole, ManagerSettings, ManagerStartError
from controlplane.process import NodeError, serve_api, until_signalled
from controlplane.raft.driver import RaftDriver
from controlplane.store import Transaction

log = logging.getLogger("controlplane.node")


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
        self.options = options
        settings = ManagerSettings(
            raft_dir=options.data_dir / "raft",
            listen=options.listen,
            advertise=options.advertise,
            profile=options.profile,
            snapshot_interval=options.snapshot_interval,
            hostname=options.hostname,
        )
        try:
            self.role = ManagerRole(settings)
        except ManagerStartError as err:
            raise NodeError(str(err)) from err
        self.store = self.role.store
        self.driver: RaftDriver | None = None
        self._api_runner: web.AppRunner | None = None

    async def start(self) -> None:
        opts = self.options

        def first(cluster_id: int) -> Transaction:
            settings = clusters.ClusterSettings(snapshot_interval=opts.snapshot_interval)
            cluster = clusters.new_cluster(f"{cluster_id:x}", settings, ca.RootCA.create())
            return Transaction().create(cluster)

        try:
            self.driver = await self.role.start(join=opts.join, first=first)
        except ManagerStartError as err:
            raise NodeError(str(err)) from err
        host = opts.listen.rpartition(":")[0]
        backend = ManagerBackend(
            self.driver,
            self.store,
            opts.advertise.rpartition(":")[0],
            opts.hostname,
            leader_calls=self.role.leader_calls,
            leadership=self.role.leadership,
        )
        self._api_runner = await serve_api(create_app(backend), opts.api_listen or f"{host}:2375")

    async def stop(self) -> None:
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        await self.role.stop()


async def run_manager(options: ManagerOptions) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly. A failure of the Raft loop (a
    disk error, say) ends the process with that error, for its supervisor to see."""
    node = ManagerNode(options)
    await node.start()
    assert node.driver is not None
    failed = asyncio.ensure_future(node.driver.wait_failed())
    await until_signalled(failed)
    if failed.done():
        error = failed.result()
        log.critical("event=raft_loop_failed error=%r", error)
        await node.stop()
        raise NodeError(f"the Raft loop failed: {error}") from error
    failed.cancel()
    log.info("event=manager_stopping")
    await node.stop()
