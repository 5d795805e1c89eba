"""`docker run -p` in a kernel-mode lab (`SwarmLab(datapath="kernel")`, 1 manager + 1 worker
at 127.77.174.x, data paths on the underlay 10.201.174.0/24, namespaces `swp...`) with the
real docker CLI: a container's TCP and UDP ports are answered on its node's address through
the gateway bridge and nftables DNAT, not on the other node; `-P` picks a port from dockerd's
ephemeral range; a HostIp of the node is matched alone, 127.0.0.1 on the node itself only;
SCTP is DNATed too; a HostIp not on the node and a port already taken fail the start with
dockerd's errors; a container on no overlay answers too (a namespace of its own on the
gateway bridge, Docker's `bridge`); removing the container closes its ports."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from docker_cli import docker
from kernel_testing import kernel_lab, run, skip_unless_kernel, unique_tag

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel import namespaces
from controlplane.datapath.kernel.host_ports import TABLE
from controlplane.lab.swarm_lab import until

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]
LAB = 174
MANAGER, WORKER = "10.201.174.11", "10.201.174.101"
# Debian's busybox has no UDP server: Python answers in the container's namespace instead.
UDP_ECHO = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('172.18.0.2', 53))  # 127.0.0.11:53 is the resolver's\n"
    "while True:\n"
    "    data, peer = s.recvfrom(512)\n"
    "    s.sendto(b'pong:' + data, peer)\n"
)
UDP_ASK = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(3)\n"
    "s.sendto(b'ping', (sys.argv[1], int(sys.argv[2])))\n"
    "print(s.recv(512).decode())\n"
)


def web_namespace(prefix: str) -> str:
    """The namespace of the worker's container holding 172.18.0.2, web's gwbridge address."""
    for netns in namespaces.listed():
        if netns.startswith(f"{prefix}-w1-"):
            shown = run(netns, "ip", "-o", "-4", "addr", "show", "dev", "gwbr0").stdout
            if " 172.18.0.2/16 " in shown:
                return netns
    raise AssertionError("no container namespace holds 172.18.0.2 on gwbr0")


async def fetch(client: str, url: str) -> str | None:
    got = await kcontainers.run(client, ["timeout", "5", "wget", "-qO-", url])
    return got.stdout if got.status == 0 else None


def test_docker_run_ports_in_a_kernel_lab(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    prefix = unique_tag("swp")

    async def scenario() -> None:
        async with kernel_lab(tmp_path, LAB, prefix, workers=1) as lab:
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            client, node_ns = f"{prefix}-m1", f"{prefix}-w1"
            docker(
                manager, "network", "create", "-d", "overlay", "--attachable", "my-net", check=True
            )
            docker(worker, "run", "-d", "-p", "8080:80", "-p", "5353:53/udp", "-p",
                   "8081:80/sctp", "--network", "my-net", "--name", "web", "nginx",
                   check=True)  # fmt: skip

            async def nginx_answers() -> bool | None:
                page = await fetch(client, f"http://{WORKER}:8080/")
                return True if page and "<title>Welcome to nginx!</title>" in page else None

            await until(nginx_answers, 60, "nginx on the worker's 8080")
            assert await fetch(client, f"http://{MANAGER}:8080/") is None
            ports = docker(worker, "port", "web", check=True).stdout.splitlines()
            assert sorted(ports) == [
                "53/udp -> 0.0.0.0:5353",
                "80/sctp -> 0.0.0.0:8081",
                "80/tcp -> 0.0.0.0:8080",
            ]
            table = run(node_ns, "nft", "list", "table", "ip", TABLE).stdout
            assert "sctp dport 8081 dnat to 172.18.0.2:80" in table, table

            echo = subprocess.Popen(
                ["ip", "netns", "exec", web_namespace(prefix), "python3", "-c", UDP_ECHO]
            )
            try:

                async def udp_answered() -> bool | None:
                    got = run(client, "python3", "-c", UDP_ASK, WORKER, "5353")
                    return True if got.stdout.strip() == "pong:ping" else None

                await until(udp_answered, 60, "udp 5353 answered in web's namespace")
            finally:
                echo.kill()
                echo.wait()

            docker(
                worker,
                "run",
                "-d",
                "-P",
                "--network",
                "my-net",
                "--name",
                "all",
                "httpd",
                check=True,
            )
            [line] = docker(worker, "port", "all", check=True).stdout.splitlines()
            picked = int(re.fullmatch(r"80/tcp -> 0\.0\.0\.0:(\d+)", line)[1])  # type: ignore[index]
            assert 32768 <= picked < 61000

            async def httpd_answers() -> bool | None:
                page = await fetch(client, f"http://{WORKER}:{picked}/")
                return True if page and "It works!" in page else None

            await until(httpd_answers, 60, f"httpd on the worker's {picked}")

            taken = docker(worker, "run", "-d", "-p", "8080:80", "--network", "my-net",
                           "--name", "web2", "nginx")  # fmt: skip
            assert taken.returncode != 0
            assert "Bind for 0.0.0.0:8080 failed: port is already allocated" in taken.stderr
            assert "endpoint join on GW Network failed" in taken.stderr
            elsewhere = docker(worker, "run", "-d", "-p", "10.9.9.9:8085:80", "--network",
                               "my-net", "--name", "web3", "nginx")  # fmt: skip
            assert (
                "listen tcp4 10.9.9.9:8085: bind: cannot assign requested address"
                in elsewhere.stderr
            ), elsewhere.stderr
            docker(worker, "run", "-d", "-p", f"{WORKER}:8087:80", "--network", "my-net",
                   "--name", "bound", "traefik/whoami", check=True)  # fmt: skip

            async def whoami_answers() -> bool | None:
                page = await fetch(client, f"http://{WORKER}:8087/")
                return True if page and page.startswith("Hostname: ") else None

            await until(whoami_answers, 60, "whoami on the worker's 8087 (its HostIp)")
            table = run(node_ns, "nft", "list", "table", "ip", TABLE).stdout
            assert f"ip daddr {WORKER} tcp dport 8087 dnat to " in table, table
            # The node's loopback: answered on the node itself only, as on a real host (and
            # a 0.0.0.0 binding there too, as dockerd's proxy answers it)
            docker(worker, "run", "-d", "-p", "127.0.0.1:8088:80", "--network", "my-net",
                   "--name", "local", "traefik/whoami", check=True)  # fmt: skip

            async def loopback_answers() -> bool | None:
                page = await fetch(node_ns, "http://127.0.0.1:8088/")
                return True if page and page.startswith("Hostname: ") else None

            await until(loopback_answers, 60, "whoami on the worker's own 127.0.0.1:8088")
            assert await fetch(client, f"http://{WORKER}:8088/") is None
            page = await fetch(node_ns, "http://127.0.0.1:8080/")
            assert page is not None and "Welcome to nginx!" in page
            # on no overlay: on the node's bridge, as Docker puts it, and answered there
            docker(worker, "run", "-d", "-p", "8086:80", "--name", "lonely", "nginx", check=True)

            async def lonely_answers() -> bool | None:
                page = await fetch(client, f"http://{WORKER}:8086/")
                return True if page and "Welcome to nginx!" in page else None

            await until(lonely_answers, 60, "nginx on no overlay on the worker's 8086")

            docker(worker, "rm", "-f", "web", check=True)

            async def closed() -> bool | None:
                return True if await fetch(client, f"http://{WORKER}:8080/") is None else None

            await until(closed, 60, "8080 closed after rm -f")
            table = run(node_ns, "nft", "list", "table", "ip", TABLE).stdout
            assert "dport 8080" not in table and "dport 8081" not in table

    asyncio.run(scenario())
