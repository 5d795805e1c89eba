"""The Engine API app over a LocalBackend, served from a background thread on a real socket,
for tests that drive it with the real docker CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest
from aiohttp import web

from controlplane.agent.runtime import Runtime
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api import containers, create_app
from controlplane.api.local import LocalBackend
from controlplane.datapath.host_ports import HostPorts

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


def worker_port(base: int = 2375) -> int:
    """A port of this pytest-xdist worker's own (`base` + its number): tests of one module run
    on both workers at once, and each serves its API at the module's one address."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return base + int(worker.removeprefix("gw") or 0)


def _can_bind(host: str, port: int) -> bool:
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def _nothing(_backend: LocalBackend) -> AsyncIterator[None]:
    yield


@contextlib.contextmanager
def served(
    host: str,
    port: int = 2375,
    around: Callable[[LocalBackend], AbstractAsyncContextManager[object]] = _nothing,
    routes: Callable[[web.Application], object] = lambda app: app,
) -> Iterator[LocalBackend]:
    """Serve a fresh LocalBackend on host:port (skipping the test without the docker CLI or
    the address); `around` runs in the server's loop for the whole test (leader loops...),
    `routes` adds the resources a node adds to the app (its containers...)."""
    if not os.access(DOCKER, os.X_OK):
        pytest.skip("the docker CLI is not installed (/usr/local/bin/docker or docker on PATH)")
    if not _can_bind(host, port):
        pytest.skip(f"cannot listen on {host}:{port} (no 127/8 route, or the port is taken)")
    backend = LocalBackend()
    loop = asyncio.new_event_loop()
    app = create_app(backend)
    routes(app)
    runner = web.AppRunner(app)
    extra = around(backend)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, host, port).start())
    loop.run_until_complete(extra.__aenter__())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        asyncio.run_coroutine_threadsafe(extra.__aexit__(None, None, None), loop).result(10)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def docker_at(
    host: str, port: int, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DOCKER_HOST": f"tcp://{host}:{port}",
    }
    return subprocess.run(
        [DOCKER, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass(frozen=True)
class DockerAt:
    """The docker CLI pointed at one served API, as a test module uses it: calling it runs a
    command; `ok` wants it to succeed (its stdout), `refused` to fail (its stderr)."""

    host: str
    port: int

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return docker_at(self.host, self.port, *args)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def refused(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode != 0, (args, result.stdout)
        return result.stderr


@contextlib.contextmanager
def served_containers(
    host: str, port: int, bridge: HostPorts | None = None
) -> Iterator[StandaloneContainers]:
    """`served` with a node's containers (`docker run`, `ps`, ...) on a runtime of their own,
    every container killed when the test ends; `bridge`: the node's userspace docker0 (none:
    no default bridge)."""
    registry = StandaloneContainers(Runtime(), bridge=bridge)

    @contextlib.asynccontextmanager
    async def closing(_backend: LocalBackend) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await registry.close()

    with served(host, port, closing, lambda app: containers.register(app, registry)):
        yield registry
