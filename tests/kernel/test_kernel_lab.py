"""The seed scenario on a kernel-mode lab (`SwarmLab(datapath="kernel")`, 1 manager + 1
worker at 127.77.172.x, data paths on the underlay 10.201.172.0/24) with the real docker CLI:
containers on the two nodes talk by name over kernel VXLAN, an encrypted network is refused
with the kernel's reason, and a published port is answered on both nodes by both tasks
through the nftables mesh."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from kernel_testing import run, skip_unless_kernel, unique_tag

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel import namespaces
from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]
LAB = 172
SERVE = (
    'while true; do echo -e "HTTP/1.0 200 OK\\r\\n\\r\\nhello from $HOSTNAME" | nc -l -p 80; done'
)


def docker(node: NodeProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["docker", "-H", f"tcp://{node.api}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def test_seed_scenario_and_mesh_on_a_kernel_lab(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    prefix = unique_tag()

    async def scenario() -> None:
        lab = SwarmLab(
            tmp_path, managers=1, workers=1, lab=LAB, datapath="kernel", kernel_prefix=prefix
        )
        try:
            await lab.up()
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            docker(manager, "network", "create", "-d", "overlay", "--attachable", "plainnet")
            docker(
                manager,
                "run",
                "-d",
                "--name",
                "web",
                "--network",
                "plainnet",
                "busybox",
                "sh",
                "-c",
                SERVE,
            )

            # The web node learns a new client's endpoint by gossip, a moment after the client
            # starts (as in Docker): a client's first echo may go unanswered, so ask again.
            async def pinged() -> str | None:
                done = docker(
                    worker,
                    "run",
                    "--rm",
                    "--network",
                    "plainnet",
                    "busybox",
                    "ping",
                    "-c",
                    "2",
                    "web",
                    check=False,
                )
                return done.stdout if "2 packets received, 0% packet loss" in done.stdout else None

            await until(pinged, 60, "ping -c 2 web from worker-1 answered twice")
            looked = docker(
                worker, "run", "--rm", "--network", "plainnet", "busybox", "nslookup", "web"
            )
            assert "Server:\t\t127.0.0.11" in looked.stdout and "Name:\tweb" in looked.stdout
            got = docker(
                worker,
                "run",
                "--rm",
                "--network",
                "plainnet",
                "busybox",
                "wget",
                "-qO-",
                "http://web",
            )
            assert got.stdout.startswith("hello from ")

            shown = run(f"{prefix}-m1", "ip", "-d", "link").stdout
            assert "local 10.201.172.11" not in shown  # vxlan0 lives in the network's namespace
            sandboxes = [n for n in namespaces.listed() if n.startswith(f"{prefix}-m1-1-")]
            links = "".join(run(n, "ip", "-d", "link", "show", "vxlan0").stdout for n in sandboxes)
            assert "local 10.201.172.11 srcport 0 0 dstport 4789 nolearning proxy" in links

            async with lab.engine(manager) as engine:
                view = (await engine.datapath())["text"]
            assert "# kernel: network plainnet, namespace " in view
            assert "vxlan id 4097 local 10.201.172.11" in view  # `swarmlab datapath` shows it

            docker(
                manager,
                "network",
                "create",
                "-d",
                "overlay",
                "--attachable",
                "--opt",
                "encrypted",
                "my-net",
            )
            refused = docker(
                worker, "run", "--rm", "--network", "my-net", "busybox", "true", check=False
            )
            assert refused.returncode != 0
            assert "encrypted network 'my-net'" in refused.stderr
            assert "--datapath userspace" in refused.stderr

            docker(
                manager,
                "service",
                "create",
                "-d",
                "--name",
                "whoami",
                "--replicas",
                "2",
                "-p",
                "8080:80",
                "busybox",
                "sh",
                "-c",
                SERVE,
            )
            for source, target in (
                (f"{prefix}-w1", "10.201.172.11"),
                (f"{prefix}-m1", "10.201.172.101"),
            ):
                seen: set[str] = set()

                async def both_tasks(
                    source: str = source, target: str = target, seen: set[str] = seen
                ) -> bool | None:
                    answer = await kcontainers.run(
                        source, ["timeout", "5", "wget", "-qO-", f"http://{target}:8080/"]
                    )
                    if answer.status == 0:
                        seen.add(answer.stdout.strip())
                    return True if len(seen) == 2 else None

                await until(both_tasks, 90, f"both tasks answering {target}:8080")
        finally:
            lab.stop()
        assert not [n for n in namespaces.listed() if n.startswith(f"{prefix}-")]

    asyncio.run(scenario())
