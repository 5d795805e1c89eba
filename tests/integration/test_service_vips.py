"""Service VIPs end to end with the real docker CLI, in a lab of 1 manager and 2 workers
(127.77.190.x): a container started with `docker run` on worker-2 resolves a VIP-mode service
to its VIP (shown by `docker service inspect`) and `tasks.<service>` to the task addresses,
pings the VIP (its own sandbox answers), and its requests to the VIP are spread over all the
tasks, as the node's `swarmlab datapath` view lists them; a `--endpoint-mode dnsrr` service has
no VIP and resolves to its tasks."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from docker_cli import needs_docker_cli, ok

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]

LAB = 190
REQUESTS = 6
CLIENT_SCRIPT = "; ".join(
    ["nslookup web", "nslookup tasks.web", "nslookup rr", "ping -c 1 web"]
    + ["wget -qO- http://web"] * REQUESTS
)


def addresses(text: str) -> set[str]:
    """The addresses of one nslookup answer block."""
    return set(re.findall(r"^Address: (\d+\.\d+\.\d+\.\d+)$", text, re.M))


def test_vip_names_ping_and_balancing_from_a_container(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=LAB)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            ok(manager, "network", "create", "-d", "overlay", "--attachable", "my-net")
            ok(manager, "service", "create", "-d", "--name", "web", "--replicas", "3",
                   "--network", "my-net", "traefik/whoami")  # fmt: skip
            ok(manager, "service", "create", "-d", "--name", "rr", "--replicas", "2",
                   "--endpoint-mode", "dnsrr", "--network", "my-net",
                   "traefik/whoami")  # fmt: skip
            web_ips = await until(lambda: _running_ips(lab, "web", 3), 120, "3 web tasks")
            rr_ips = await until(lambda: _running_ips(lab, "rr", 2), 120, "2 rr tasks")

            endpoint = json.loads(
                ok(manager, "service", "inspect", "--format", "{{json .Endpoint}}", "web")
            )
            [vip] = [v["Addr"].split("/")[0] for v in endpoint["VirtualIPs"]]
            # dnsrr: no VIP, so no endpoint allocated (real 20.10 shows {"Spec":{}} too); the
            # mode is in the service's spec.
            rr_endpoint = json.loads(
                ok(manager, "service", "inspect", "--format", "{{json .Endpoint}}", "rr")
            )
            assert rr_endpoint == {"Spec": {}}, rr_endpoint
            rr_mode = ok(
                manager, "service", "inspect", "--format", "{{.Spec.EndpointSpec.Mode}}", "rr"
            )
            assert rr_mode == "dnsrr\n"

            worker = lab.node("worker-2")

            async def client_output() -> str | None:
                out = ok(worker, "run", "--rm", "--network", "my-net", "busybox", "sh",
                             "-c", CLIENT_SCRIPT, timeout=120)  # fmt: skip
                seen = set(re.findall(r"^Hostname: (\S+)$", out, re.M))
                # Names reach every node through gossip: ask again until all three answered.
                return out if len(seen) == 3 else None

            out = await until(client_output, 120, "answers from the 3 web tasks through the VIP")
            blocks = out.split("Server:")
            web_block, tasks_block, rr_block = blocks[1:4]
            assert addresses(web_block) == {vip}, out
            assert addresses(tasks_block) == web_ips, out
            assert addresses(rr_block) == rr_ips, out
            assert f"64 bytes from {vip}: seq=0 ttl=64" in out, out
            assert "1 packets transmitted, 1 packets received, 0% packet loss" in out, out
            hostnames = re.findall(r"^Hostname: (\S+)$", out, re.M)
            assert len(hostnames) == REQUESTS
            # Round robin: each run of 3 requests met the 3 tasks once.
            assert len(set(hostnames[:3])) == 3 and len(set(hostnames[3:])) == 3, hostnames
            remote = set(re.findall(r"^RemoteAddr: (\d+\.\d+\.\d+\.\d+):", out, re.M))
            assert len(remote) == 1 and not remote & web_ips, remote  # the client's own address
            async with lab.engine("worker-2") as engine:
                shown = (await engine.datapath())["text"]
            assert f"my-net: FWM {vip} (web) rr" in shown, shown  # `swarmlab datapath` view
            assert all(f"-> {ip}:0  Masq  1" in shown for ip in web_ips), shown
        finally:
            lab.stop()

    asyncio.run(scenario())


async def _running_ips(lab: SwarmLab, service: str, count: int) -> set[str] | None:
    async with lab.engine("manager-1") as engine:
        tasks: list[dict[str, Any]] = await engine.request(
            "GET", "/tasks", params={"filters": f'{{"service":["{service}"]}}'}
        )
    running = [t for t in tasks if t["Status"]["State"] == "running"]
    if len(running) != count:
        return None
    return {
        str(a["Addresses"][0]).split("/")[0]
        for t in running
        for a in t["NetworksAttachments"]
        if a["Network"]["Spec"]["Name"] == "my-net"
    }
