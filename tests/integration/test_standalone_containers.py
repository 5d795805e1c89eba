"""Standalone containers with the real docker CLI, on any node of a lab of 1 manager and 2
workers (127.77.230.x plain, 127.77.231.x encrypted): the seed's scenario (`docker run -d
--name web --network my-net nginx` on worker-1; `docker run --rm --network my-net busybox ...`
pinging, resolving and fetching it from worker-2), the container commands, and a
non-attachable overlay refused with Docker's words."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

import pytest
from docker_cli import docker, needs_docker_cli, ok

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]


@pytest.mark.parametrize(("lab_number", "options"), [(230, []), (231, ["--opt", "encrypted"])])
def test_seed_scenario_with_standalone_containers(
    tmp_path: Path, lab_number: int, options: list[str]
) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=lab_number)
        try:
            await lab.up()
            manager, w1, w2 = (lab.node(n) for n in ("manager-1", "worker-1", "worker-2"))
            ok(manager, "network", "create", "-d", "overlay", "--attachable", *options, "my-net")
            ok(manager, "network", "create", "-d", "overlay", "noattach")
            web_id = ok(w1, "run", "-d", "--name", "web", "--network", "my-net", "nginx").strip()

            [inspected] = json.loads(ok(w1, "inspect", "web"))
            assert (inspected["Id"], inspected["State"]["Status"]) == (web_id, "running")
            web_ip = inspected["NetworkSettings"]["Networks"]["my-net"]["IPAddress"]
            assert ipaddress.ip_address(web_ip) in ipaddress.ip_network("10.0.1.0/24")

            async def pinged() -> str | None:
                run = docker(w2, "run", "--rm", "--network", "my-net", "busybox",
                             "ping", "-c", "2", "web")  # fmt: skip
                return run.stdout if run.returncode == 0 else None

            out = await until(pinged, 60, "web answering pings from worker-2")
            assert f"PING web ({web_ip})" in out and "2 packets received" in out
            page = ok(w2, "run", "--rm", "--network", "my-net", "busybox", "wget", "-qO-",
                      "http://web")  # fmt: skip
            assert "Welcome to nginx!" in page
            names = ok(w2, "run", "--rm", "--network", "my-net", "busybox", "nslookup", "web")
            assert f"Address: {web_ip}" in names
            failing = docker(w2, "run", "--rm", "busybox", "sh", "-c", "echo bye; exit 3")
            assert (failing.returncode, failing.stdout) == (3, "bye\n")

            refused = docker(w2, "run", "--rm", "--network", "noattach", "busybox", "true")
            assert refused.returncode == 125
            assert (
                "docker: Error response from daemon: Could not attach to network noattach: rpc "
                "error: code = PermissionDenied desc = network noattach not manually attachable"
            ) in refused.stderr

            assert "GET / HTTP/1.1" in ok(w1, "logs", "web")
            assert ok(w1, "ps", "--format", "{{.Names}} {{.Image}}") == "web nginx\n"
            assert ok(w1, "stop", "web") == "web\n"
            assert ok(w1, "ps", "-a", "--format", "{{.Names}} {{.Status}}").startswith(
                "web Exited (0)"
            )
            ok(w1, "rm", "web")
            assert ok(w1, "ps", "-a", "-q") == ""
            # Addresses are handed out serially, as swarmkit's: the next container on the
            # network gets the next one, not web's freed address; web's endpoint is gone.
            again = ok(w1, "run", "-d", "--name", "web2", "--network", "my-net", "nginx").strip()
            [inspected] = json.loads(ok(w1, "inspect", again))
            web2_ip = inspected["NetworkSettings"]["Networks"]["my-net"]["IPAddress"]
            assert ipaddress.ip_address(web2_ip) > ipaddress.ip_address(web_ip)
            [net] = json.loads(ok(w1, "network", "inspect", "my-net"))
            held = {c["IPv4Address"].split("/")[0] for c in net["Containers"].values()}
            assert web_ip not in held and web2_ip in held
            ok(w1, "rm", "-f", "web2")
        finally:
            lab.stop()

    asyncio.run(scenario())
