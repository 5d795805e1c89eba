"""The real docker CLI against the API served on 127.77.203.1:2375 (skipped without docker)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from controlplane.api import create_app
from controlplane.api.local import LocalBackend

HOST, PORT = "127.77.203.1", 2375
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"


def _can_bind() -> bool:
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((HOST, PORT))
        return True
    except OSError:
        return False


@pytest.fixture
def served() -> Iterator[LocalBackend]:
    if not os.access(DOCKER, os.X_OK):
        pytest.skip("the docker CLI is not installed (/usr/local/bin/docker or docker on PATH)")
    if not _can_bind():
        pytest.skip(f"cannot listen on {HOST}:{PORT} (no 127/8 route, or the port is taken)")
    backend = LocalBackend()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(backend))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, HOST, PORT).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DOCKER_HOST": f"tcp://{HOST}:{PORT}",
    }
    return subprocess.run(
        [DOCKER, *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_docker_cli_network_lifecycle(served: LocalBackend) -> None:
    created = docker("network", "create", "-d", "overlay", "x")
    assert created.returncode == 0, created.stderr
    net_id = created.stdout.strip()
    assert len(net_id) == 25

    listed = docker("network", "ls")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [net_id[:12], "x", "overlay", "swarm"] in [line.split() for line in lines[1:]]

    inspected = docker("network", "inspect", "x")
    assert inspected.returncode == 0, inspected.stderr
    [net] = json.loads(inspected.stdout)
    assert net["Id"] == net_id and net["Scope"] == "swarm"
    assert net["IPAM"]["Config"] == [{"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.1"}]
    assert net["Options"] == {"com.docker.network.driver.overlay.vxlanid_list": "4096"}

    dup = docker("network", "create", "-d", "overlay", "x")
    assert dup.returncode == 1
    assert dup.stderr == "Error response from daemon: network with name x already exists\n"

    removed = docker("network", "rm", "x")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "x\n"

    gone = docker("network", "inspect", "x")
    assert gone.returncode == 1
    assert "network x not found" in gone.stderr
