"""The node's local networks with the real docker CLI on a userspace lab of one manager
(127.77.158.x): `docker network ls` lists `host`, `none` and `docker_gwbridge` beside the
swarm's, filters them as dockerd does, refuses to remove the predefined ones in dockerd's
words, and `network connect` refuses what dockerd refuses with `host` and `none`; a container
in host mode serves on the node's address, one on no network is on the node's docker0."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from docker_cli import docker, needs_docker_cli, ok
from tcp_probes import http_answer

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

LAB = 158
DEADLINE = 90.0


def test_local_networks_with_the_docker_cli(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=0, lab=LAB)
        try:
            await lab.up()
            node = lab.node("manager-1")
            await until(lab.all_ready, DEADLINE, "the manager ready")

            def listed(*filters: str) -> list[str]:
                args = [arg for f in filters for arg in ("--filter", f)]
                out = ok(
                    node, "network", "ls", *args, "--format", "{{.Name}} {{.Driver}} {{.Scope}}"
                )
                return sorted(out.splitlines())

            assert listed() == [  # a dockerd 20.10 swarm node's five
                "bridge bridge local",
                "docker_gwbridge bridge local",
                "host host local",
                "ingress overlay swarm",
                "none null local",
            ]
            assert listed("type=builtin") == [
                "bridge bridge local",
                "host host local",
                "none null local",
            ]
            assert listed("scope=local", "driver=bridge") == [
                "bridge bridge local",
                "docker_gwbridge bridge local",
            ]
            ids = ok(node, "network", "ls", "-q", "--no-trunc", "--filter", "name=none").split()
            assert ok(node, "network", "inspect", "-f", "{{.Id}}", "none").split() == ids
            for name in ("bridge", "host", "none"):
                refused = docker(node, "network", "rm", name)
                assert refused.returncode == 1
                assert f"{name} is a pre-defined network and cannot be removed" in refused.stderr

            ok(node, "run", "-d", "--name", "plain", "busybox", "sleep", "1d")
            ok(node, "run", "-d", "--name", "alone", "--network", "none", "busybox", "sleep", "1d")
            ok(node, "run", "-d", "--name", "onhost", "--network", "host", "busybox", "sleep", "1d")
            for network, container, words in (
                ("host", "plain", "connected to host network"),
                ("none", "plain", "in private (none) mode"),
                ("bridge", "alone", "in private (none) mode"),
                ("bridge", "onhost", "sharing network namespace with another container or host"),
            ):
                refused = docker(node, "network", "connect", network, container)
                assert refused.returncode == 1 and words in refused.stderr, refused.stderr
            # `plain` is on the node's docker0, as dockerd's: reached there, listed there.
            shown = "{{.NetworkSettings.IPAddress}} {{.NetworkSettings.Gateway}}"
            assert ok(node, "inspect", "-f", shown, "plain").split() == ["172.17.0.2", "172.17.0.1"]
            pinged = ok(node, "run", "--rm", "busybox", "ping", "-c", "1", "172.17.0.2")
            assert "1 packets received" in pinged
            members = ok(node, "network", "inspect", "-f", "{{json .Containers}}", "bridge")
            assert '"Name":"plain"' in members and '"IPv4Address":"172.17.0.2/16"' in members
            ok(node, "network", "create", "-d", "overlay", "--attachable", "lan")
            ok(node, "network", "connect", "lan", "plain")
            interfaces = ok(node, "exec", "plain", "ip", "-4", "addr")
            inet = [line.split()[1] for line in interfaces.splitlines() if "inet " in line]
            assert inet[1] == "172.17.0.2/16" and inet[2].startswith("10.0.")  # eth0, eth1
            # On an overlay only: eth1 on docker_gwbridge, listed there as dockerd lists it.
            onlan = ok(
                node, "run", "-d", "--name", "onlan", "--network", "lan", "busybox", "sleep", "1d"
            )
            interfaces = ok(node, "exec", "onlan", "ip", "-4", "addr")
            inet = [line.split()[1] for line in interfaces.splitlines() if "inet " in line]
            assert inet[1].startswith("10.0.") and inet[2] == "172.18.0.3/16"
            gateways = json.loads(
                ok(node, "network", "inspect", "-f", "{{json .Containers}}", "docker_gwbridge")
            )
            assert gateways["ingress-sbox"]["Name"] == "gateway_ingress-sbox"
            assert gateways["ingress-sbox"]["IPv4Address"] == "172.18.0.2/16"
            assert gateways[onlan.strip()]["Name"] == f"gateway_{onlan.strip()[:12]}"
            addresses = ok(node, "exec", "alone", "ip", "addr")
            assert "127.0.0.1/8" in addresses and "eth0" not in addresses  # none: loopback only
            assert ok(node, "exec", "onhost", "hostname", "-i").split() == [node.address]
            served = docker(node, "run", "-d", "--network", "host", "-p", "9:9", "nginx")
            assert served.returncode == 0
            assert "Published ports are discarded when using host network mode" in served.stderr

            async def served_page() -> bool:  # on the node's address: port 80 needs root
                answer = await http_answer(node.address, 80)
                return answer is not None and "Welcome to nginx!" in answer

            await until(served_page, DEADLINE, "nginx in host mode on the node's port 80")
        finally:
            lab.stop()

    asyncio.run(scenario())
