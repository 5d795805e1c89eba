"""Kernel mode's `bridge` network with the real docker CLI (one manager at 127.77.156.x, data
path on 10.201.156.0/24, namespaces `swf4...`): listed beside `host` and `none` as a builtin
network, its inspect lists the container that really is on the node's bridge at the address
the container has, and connecting that container again is refused in dockerd's words."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from docker_cli import docker, ok
from kernel_testing import kernel_lab, skip_unless_kernel, unique_tag

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.lab.swarm_lab import until

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]
LAB = 156


def test_bridge_network_in_kernel_mode(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()

    async def scenario() -> None:
        async with kernel_lab(tmp_path, LAB, unique_tag("swf4")) as lab:
            node = lab.node("manager-1")
            builtin = ok(node, "network", "ls", "--filter", "type=builtin", "--format", "{{.Name}}")
            assert builtin.split() == ["bridge", "host", "none"]
            container_id = ok(node, "run", "-d", "--name", "onbridge", "busybox", "sleep", "1d")

            async def on_bridge() -> dict[str, str] | None:
                members = json.loads(
                    ok(node, "network", "inspect", "-f", "{{json .Containers}}", "bridge")
                )
                entry: dict[str, str] | None = members.get(container_id.strip())
                return entry

            entry = await until(on_bridge, 60, "onbridge in the bridge's Containers")
            assert entry["Name"] == "onbridge"
            assert entry["IPv4Address"].endswith("/16")
            ip = entry["IPv4Address"].split("/")[0]
            assert f"inet {ip}/16" in ok(node, "exec", "onbridge", "ip", "addr")
            again = docker(node, "network", "connect", "bridge", "onbridge")
            assert again.returncode == 1
            assert "endpoint with name onbridge already exists in network bridge" in again.stderr

    asyncio.run(scenario())
