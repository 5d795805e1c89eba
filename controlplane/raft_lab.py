"""`swarmlab manager run`: a Raft-only manager over plain TCP, without the swarm layer (no
CA, no workers): the Raft benchmark, the Raft failover tests and Raft experiments use it to look
at consensus alone. `--join ADDR` joins through any manager; no flag bootstraps a cluster.

Its Engine API (for the docker CLI) listens from the start but is loaded on the first
connection: aiohttp and the API's modules are 15 MB of a manager's RSS that a Raft experiment
never uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from controlplane.manager import cluster as clusters
from controlplane.manager.role import ManagerRole, ManagerSettings, ManagerStartError
from controlplane.process import NodeError, until_signalled
from controlplane.raft.driver import RaftDriver
from controlplane.store import Transaction

if TYPE_CHECKING:
    from aiohttp import web

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


class EngineApiOnDemand:
    """A listening socket that becomes the Engine API when its first client connects.

    The port is bound at start, so a client never sees a refused connection: it waits in the
    listen backlog while aiohttp and the API load (a fraction of a second), then aiohttp
    accepts it on the same socket."""

    def __init__(self, listen: str, make_app: Callable[[], web.Application]) -> None:
        self.listen = listen
        self._make_app = make_app
        self._sock: socket.socket | None = None
        self._loading: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        host, _, port = self.listen.rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
            sock.listen(128)
        except (OSError, ValueError) as err:
            sock.close()
            raise NodeError(f"cannot serve the Engine API on {self.listen}: {err}") from err
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._first_connection)
        log.info("event=api_listening address=%s loaded=on_first_connection", self.listen)

    def _first_connection(self) -> None:
        assert self._sock is not None
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._loading = asyncio.create_task(self._load(self._sock), name="engine-api-load")

    async def _load(self, sock: socket.socket) -> None:
        from aiohttp import web

        try:
            runner = web.AppRunner(self._make_app(), access_log=None)
            await runner.setup()
            self._runner = runner
            await web.SockSite(runner, sock).start()
        except Exception:
            # Clients would otherwise wait in the backlog forever: close the port instead.
            log.exception("event=api_load_failed address=%s", self.listen)
            sock.close()
            return
        log.info("event=api_loaded address=%s", self.listen)

    async def stop(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()


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
        self._api: EngineApiOnDemand | None = None

    async def start(self) -> None:
        opts = self.options

        def first(cluster_id: int) -> Transaction:
            settings = clusters.ClusterSettings(snapshot_interval=opts.snapshot_interval)
            cluster = clusters.new_cluster(f"{cluster_id:x}", settings, root=None)  # no CA
            return Transaction().create(cluster)

        try:
            self.driver = await self.role.start(join=opts.join, first=first)
        except ManagerStartError as err:
            raise NodeError(str(err)) from err
        host = opts.listen.rpartition(":")[0]
        self._api = EngineApiOnDemand(opts.api_listen or f"{host}:2375", self._engine_app)
        self._api.start()

    def _engine_app(self) -> web.Application:
        from controlplane.api.app import create_app
        from controlplane.api.manager_backend import ManagerBackend

        assert self.driver is not None
        backend = ManagerBackend(
            self.driver,
            self.store,
            self.options.advertise.rpartition(":")[0],
            self.options.hostname,
            leader_calls=self.role.leader_calls,
            leadership=self.role.leadership,
        )
        return create_app(backend)

    async def stop(self) -> None:
        if self._api is not None:
            await self._api.stop()
        await self.role.stop()


# glibc's mallopt parameter for the size from which a block gets its own mapping.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial value


def return_large_blocks_to_the_os() -> None:
    """Keep glibc from raising its mmap threshold (it does, up to 32 MB, each time a large
    block is freed): otherwise the megabyte buffers of every snapshot end up in the heap and
    their pages stay with the process after they are freed. Measured with 10,000 objects:
    4-6 MB less RSS. Nothing to do on a C library without mallopt."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        log.info("event=mallopt_unavailable")


def keep_startup_objects_out_of_gc() -> None:
    """Once started, move every object alive now (modules, gRPC, the store so far) to the
    collector's permanent generation: under load Python runs a full collection every couple
    of seconds, and each walked all of them. Measured on a leader with 64 writers: 118-216 ms
    of collections per 5 s, 28-56 ms after this. (A young generation of 50,000 instead of
    700 objects, tried too, made each collection last about 170 ms.)"""
    gc.freeze()


def main(options: ManagerOptions) -> None:
    """The `swarmlab manager run` process. It runs on uvloop: measured with 64 writers,
    12-15% less CPU per write than asyncio's own loop, on the leader and on the followers
    (most of a write's CPU is grpc.aio's callbacks and the loop that runs them)."""
    return_large_blocks_to_the_os()
    uvloop.run(run_manager(options))


async def run_manager(options: ManagerOptions) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly. A failure of the Raft loop (a
    disk error, say) ends the process with that error, for its supervisor to see."""
    node = ManagerNode(options)
    await node.start()
    assert node.driver is not None
    keep_startup_objects_out_of_gc()
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
