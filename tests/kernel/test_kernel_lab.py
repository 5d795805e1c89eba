"""The seed scenario on a kernel-mode lab (`SwarmLab(datapath="kernel")`, 1 manager + 1
worker at 127.77.172.x, data paths on the underlay 10.201.172.0/24) with the real docker CLI:
containers on the two nodes talk by name over kernel VXLAN, an encrypted network is refused
with the kernel's reason, a service in the default endpoint mode (VIP) is reached by name
from a container and balanced over its tasks on both nodes (nftables in the container), a
published port is answered on both nodes by both tasks through the nftables mesh, and a port
published in host mode is answered by the node running its task only."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from docker_cli import docker
from kernel_testing import kernel_lab, run, skip_unless_kernel, unique_tag

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel import namespaces
from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import until

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]
LAB = 172
SERVE = (
    'while true; do echo -e "HTTP/1.0 200 OK\\r\\n\\r\\nhello from $HOSTNAME" | nc -l -p 80; done'
)


def test_seed_scenario_and_mesh_on_a_kernel_lab(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    prefix = unique_tag("swi")

    async def scenario() -> None:
        async with kernel_lab(tmp_path, LAB, prefix, workers=1) as lab:
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            docker(
                manager,
                "network",
                "create",
                "-d",
                "overlay",
                "--attachable",
                "plainnet",
                check=True,
            )
            docker(
                manager,
                "run",
                "-d",
                "--name",
                "web",
                "--network",
                "plainnet",
                "nginx",  # the seed's web: the built-in image as a real process, check=True
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
                )
                return done.stdout if "2 packets received, 0% packet loss" in done.stdout else None

            await until(pinged, 60, "ping -c 2 web from worker-1 answered twice")
            looked = docker(
                worker,
                "run",
                "--rm",
                "--network",
                "plainnet",
                "busybox",
                "nslookup",
                "web",
                check=True,
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
                check=True,
            )
            assert "<title>Welcome to nginx!</title>" in got.stdout
            logged = docker(manager, "logs", "web", check=True)
            assert '"GET / HTTP/1.1" 200 615 "-" "Wget" "-"' in logged.stdout
            await exec_in_web(manager)

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
                check=True,
            )
            refused = docker(worker, "run", "--rm", "--network", "my-net", "busybox", "true")
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
                check=True,
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

            await vip_service_balanced(manager, worker)
            await host_port_on_its_node_only(manager, prefix)

    asyncio.run(scenario())


async def exec_in_web(manager: NodeProcess) -> None:
    """`docker exec` runs busybox inside web's namespace: its output and exit status come
    back; a missing program is refused with a clear message."""
    page = docker(manager, "exec", "web", "wget", "-qO-", "http://127.0.0.1/", check=True)
    assert "<title>Welcome to nginx!</title>" in page.stdout
    eth0 = docker(manager, "exec", "web", "ip", "-4", "addr", "show", "eth0", check=True)
    assert "inet 10.0." in eth0.stdout
    failed = docker(manager, "exec", "web", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (failed.returncode, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
    missing = docker(manager, "exec", "web", "nosuch")
    assert missing.returncode == 126 and "busybox applets" in missing.stdout + missing.stderr


async def vip_service_balanced(manager: NodeProcess, worker: NodeProcess) -> None:
    """`vipweb` (endpoint mode VIP, Docker's default) on plainnet: its name is its VIP, a
    ping to it is answered, and wget by name reaches both tasks in turn (round robin per
    container, as IPVS in each sandbox: one container's successive connections alternate)."""
    docker(
        manager,
        "service",
        "create",
        "-d",
        "--name",
        "vipweb",
        "--replicas",
        "2",
        "--network",
        "plainnet",
        "busybox",
        "sh",
        "-c",
        SERVE,
        check=True,
    )

    async def vip_allocated() -> bool | None:
        # The leader's allocator gives the VIP after the create commits, as swarmkit's does.
        got = docker(
            manager, "service", "inspect", "vipweb", "--format", "{{json .Endpoint}}", check=True
        )
        return True if '"Mode":"vip"' in got.stdout and '"VirtualIPs"' in got.stdout else None

    await until(vip_allocated, 30, "vipweb's VIP allocated")
    seen: set[str] = set()

    async def both_tasks() -> bool | None:
        got = docker(
            worker,
            "run",
            "--rm",
            "--network",
            "plainnet",
            "busybox",
            "sh",
            "-c",
            "ping -c 1 -W 5 vipweb && for i in 1 2 3 4; do wget -qO- http://vipweb; sleep 1; done",
        )
        if got.returncode == 0:
            seen.update(line for line in got.stdout.splitlines() if line.startswith("hello from"))
        return True if len(seen) == 2 else None

    await until(both_tasks, 90, "both vipweb tasks answering its VIP")


async def host_port_on_its_node_only(manager: NodeProcess, prefix: str) -> None:
    """`hostweb` publishes 8090 in host mode: the node running its task answers there, the
    other does not; removing the service takes the port away."""
    docker(
        manager,
        "service",
        "create",
        "-d",
        "--name",
        "hostweb",
        "--network",
        "plainnet",
        "--publish",
        "mode=host,published=8090,target=80",
        "busybox",
        "sh",
        "-c",
        SERVE,
        check=True,
    )
    addresses = {"manager-1": "10.201.172.11", "worker-1": "10.201.172.101"}
    client = f"{prefix}-w1"

    async def running_on() -> str | None:
        ps = docker(
            manager,
            "service",
            "ps",
            "hostweb",
            "--format",
            "{{.Node}} {{.CurrentState}}",
            check=True,
        )
        running = [line.split()[0] for line in ps.stdout.splitlines() if " Running" in line]
        return running[0] if running else None

    node = await until(running_on, 60, "hostweb running")
    hostname = node  # lab nodes are named by their hostnames
    other = next(name for name in addresses if name != hostname)

    async def answered() -> bool | None:
        got = await kcontainers.run(
            client, ["timeout", "5", "wget", "-qO-", f"http://{addresses[hostname]}:8090/"]
        )
        return True if got.status == 0 and got.stdout.startswith("hello from ") else None

    await until(answered, 60, f"hostweb answering on {hostname}:8090")
    elsewhere = await kcontainers.run(
        client, ["timeout", "5", "wget", "-qO-", f"http://{addresses[other]}:8090/"]
    )
    assert elsewhere.status != 0
    docker(manager, "service", "rm", "hostweb", check=True)

    async def gone() -> bool | None:
        got = await kcontainers.run(
            client, ["timeout", "5", "wget", "-qO-", f"http://{addresses[hostname]}:8090/"]
        )
        return True if got.status != 0 else None

    await until(gone, 60, f"hostweb's port closed on {hostname}")
