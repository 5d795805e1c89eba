"""Start, stop and SIGKILL real manager processes on loopback addresses.

Each manager gets its own address in 127.77.0.0/24 (manager-1 is 127.77.0.11) and the real
port 2377, and its own state directory. Used by the demo, the integration tests and benches.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from controlplane.client import ManagerClient
from controlplane.gossip.keyring import Keyring
from controlplane.gossip.node import query_view
from controlplane.pb import raft_pb2
from controlplane.raft.errors import TransportError


def gossip_address(n: int, lab: int = 0) -> str:
    """node-1 -> 127.77.0.11:7946: gossip uses Swarm's real port, each node its own address."""
    return manager_address(n, lab, 7946)


def manager_address(n: int, lab: int = 0, port: int = 2377) -> str:
    """manager-1 -> 127.77.0.11:2377, manager-2 -> 127.77.0.12:2377, ...; labs running side
    by side (parallel tests) use 127.77.<lab>.x."""
    return f"127.77.{lab}.{10 + n}:{port}"


class LabProcess:
    """One `swarmlab` child process with its own state directory and log files."""

    def __init__(self, name: str, address: str, data_dir: Path) -> None:
        self.name = name
        self.address = address
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "events.log"

    def spawn(self, arguments: list[str]) -> None:
        """Start `swarmlab ARGUMENTS` with this interpreter."""
        self.spawn_command([sys.executable, "-m", "controlplane.cli", *arguments])

    def spawn_command(self, command: list[str]) -> None:
        """Start any program as this lab process (benchmarks run their references so)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stderr = open(self.data_dir / "stderr.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
        stderr.close()

    def startup_error(self) -> str:
        err = (self.data_dir / "stderr.log").read_text(errors="replace").strip()
        return err.splitlines()[-1] if err else "?"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush or say goodbye."""
        if self.alive():
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class ManagerProcess(LabProcess):
    def __init__(
        self,
        name: str,
        address: str,
        data_dir: Path,
        profile: str = "lab",
        snapshot_interval: int = 10_000,
    ) -> None:
        super().__init__(name, address, data_dir)
        self.profile = profile
        self.snapshot_interval = snapshot_interval

    def start(self, join: str | None = None) -> None:
        arguments = [
            "manager",
            "run",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.address,
            "--profile",
            self.profile,
            "--snapshot-interval",
            str(self.snapshot_interval),
            "--log-file",
            str(self.log_file),
            "--hostname",
            self.name,
        ]
        self.spawn([*arguments, "--join", join] if join else arguments)

    async def status(self, timeout: float = 1.0) -> raft_pb2.StatusResponse:
        async with ManagerClient(self.address) as client:
            return await client.status(timeout)

    async def wait_ready(self, timeout: float = 30.0) -> raft_pb2.StatusResponse:
        """Wait until the process answers on 2377 (it exits early on a startup error)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited: {self.startup_error()}")
            try:
                return await self.status()
            except (TransportError, Exception):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


class ManagerLab:
    """A cluster of manager processes: the first initializes, the others join it."""

    def __init__(
        self,
        root: Path,
        count: int,
        *,
        lab: int = 0,
        profile: str = "lab",
        snapshot_interval: int = 10_000,
    ) -> None:
        self.root = root
        self.lab = lab
        self.profile = profile
        self.snapshot_interval = snapshot_interval
        self.managers = [
            ManagerProcess(
                f"manager-{n}",
                manager_address(n, lab),
                root / f"manager-{n}",
                profile,
                snapshot_interval,
            )
            for n in range(1, count + 1)
        ]

    async def start(self) -> None:
        first, *others = self.managers
        first.start()
        await first.wait_ready()
        await self.wait_leader()
        for manager in others:
            manager.start(join=first.address)
            await manager.wait_ready()
        await self.wait_voters(len(self.managers))

    def stop(self) -> None:
        for manager in self.managers:
            manager.stop()

    def add_manager(self) -> ManagerProcess:
        """A new (not yet started) manager with the next address."""
        n = len(self.managers) + 1
        manager = ManagerProcess(
            f"manager-{n}",
            manager_address(n, self.lab),
            self.root / f"manager-{n}",
            self.profile,
            self.snapshot_interval,
        )
        self.managers.append(manager)
        return manager

    async def statuses(self) -> dict[str, raft_pb2.StatusResponse]:
        found: dict[str, raft_pb2.StatusResponse] = {}
        for manager in self.managers:
            if manager.alive():
                try:
                    found[manager.name] = await manager.status()
                except Exception:
                    continue
        return found

    async def wait_leader(
        self, timeout: float = 30.0, exclude: int = 0
    ) -> tuple[ManagerProcess, raft_pb2.StatusResponse]:
        """Wait until a live manager (other than node `exclude`) says it is the leader and no
        live manager has seen a later term: a deposed leader that has not heard of the next
        election yet still says "leader" for a while."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answers: list[tuple[ManagerProcess, raft_pb2.StatusResponse]] = []
            for manager in self.managers:
                if not manager.alive():
                    continue
                try:
                    answers.append((manager, await manager.status(0.5)))
                except Exception:
                    continue
            latest_term = max((status.term for _, status in answers), default=0)
            for manager, status in answers:
                if (
                    status.role == "leader"
                    and status.node_id != exclude
                    and status.term == latest_term
                ):
                    return manager, status
            await asyncio.sleep(0.05)
        raise TimeoutError("no leader was elected in time")

    async def wait_voters(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, status = await self.wait_leader(timeout)
            if sum(1 for m in status.members if not m.learner) == count:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"the cluster did not reach {count} voting managers")


class GossipProcess(LabProcess):
    """A standalone gossip node (`swarmlab gossip run`) on its own loopback address."""

    def __init__(
        self,
        name: str,
        address: str,
        data_dir: Path,
        *,
        profile: str = "lab",
        keys: tuple[bytes, ...] = (),
        networks: tuple[str, ...] = (),
        entries: tuple[str, ...] = (),
    ) -> None:
        super().__init__(name, address, data_dir)
        self.profile = profile
        self.keys = keys
        self.networks = networks
        self.entries = entries

    def start(self, join: list[str] | tuple[str, ...] = ()) -> None:
        arguments = ["gossip", "run", "--name", self.name, "--listen", self.address]
        arguments += ["--profile", self.profile, "--log-file", str(self.log_file)]
        for seed in join:
            arguments += ["--join", seed]
        for key in self.keys:
            arguments += ["--key", key.hex()]
        for network in self.networks:
            arguments += ["--network", network]
        for entry in self.entries:
            arguments += ["--entry", entry]
        self.spawn(arguments)

    async def view(self) -> dict[str, Any]:
        host, _, port = self.address.rpartition(":")
        keyring = Keyring(self.keys[0], self.keys[1:]) if self.keys else None
        return await query_view((host, int(port)), keyring)

    async def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited: {self.startup_error()}")
            try:
                return await self.view()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


class NodeProcess(LabProcess):
    """A `swarmlab node run` engine; `address` is its host address (2375 and 2377 on it)."""

    def __init__(
        self,
        name: str,
        address: str,
        data_dir: Path,
        profile: str = "lab",
        *,
        platform: str = "linux",
        key_rotation_interval: float | None = None,
        api_socket: bool = False,
        extra: list[str] | None = None,
    ) -> None:
        """`api_socket`: serve the Engine API on `DATA_DIR/docker.sock` too; `extra`: more
        `node run` arguments (the kernel data path's)."""
        super().__init__(name, address, data_dir)
        self.profile = profile
        self.platform = platform
        self.key_rotation_interval = key_rotation_interval
        self.api_socket = data_dir / "docker.sock" if api_socket else None
        self.extra = list(extra or [])

    @property
    def api(self) -> str:
        return f"{self.address}:2375"

    def arguments(self) -> list[str]:
        """The `swarmlab` arguments this node runs with: everything a restart must repeat."""
        return [
            "node",
            "run",
            "--data-dir",
            str(self.data_dir),
            "--address",
            self.address,
            "--hostname",
            self.name,
            "--profile",
            self.profile,
            "--log-file",
            str(self.log_file),
            # A lab is self-contained: names no swarm holds get NXDOMAIN, nothing leaves
            # the machine (`swarmlab node run` alone uses the host's resolvers, as Docker).
            "--dns-upstream",
            "none",
            "--platform",
            self.platform,
            *(
                ["--key-rotation-interval", str(self.key_rotation_interval)]
                if self.key_rotation_interval is not None
                else []
            ),
            *(["--api-socket", str(self.api_socket)] if self.api_socket is not None else []),
            *self.extra,
        ]

    def start(self) -> None:
        self.spawn(self.arguments())
