"""The real docker CLI against the API served on 127.77.203.1:2375 (skipped without docker)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from served_api import docker_at, served, worker_port

from controlplane.api.local import LocalBackend

HOST, PORT = "127.77.203.1", worker_port()


@pytest.fixture
def served_app() -> Iterator[LocalBackend]:
    with served(HOST, PORT) as backend:
        yield backend


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return docker_at(HOST, PORT, *args, timeout=30)


def test_docker_cli_network_lifecycle(served_app: LocalBackend) -> None:
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
