"""Service VIPs in kernel mode on real devices: a client container on node 1 reaches a
service's VIP, answered by its tasks on both nodes in turn (nftables `numgen` in the client's
namespace, the overlay in kernel VXLAN), pings the VIP (answered by its own loopback), and is
refused by a VIP without tasks; UDP flows to the VIP are balanced too (one flow, one task);
a task leaving the table leaves the rules."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from kernel_testing import backends, run, scenario, skip_unless_kernel, underlay, until

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel.vips import TABLE, KernelVips, container_ruleset
from controlplane.datapath.program import Endpoint, NetworkView, NodeView, compute
from controlplane.datapath.vips import VipService

pytestmark = pytest.mark.timeout(120)
NET = NetworkView("vipnetwork000000", "vipnet", 4311, "10.0.9.0/24", "10.0.9.1")
ENDPOINTS = [
    Endpoint(NET.network_id, "ep-client", "client", "10.0.9.3", "node-1"),
    Endpoint(NET.network_id, "ep-web1", "web.1", "10.0.9.5", "node-1"),
    Endpoint(NET.network_id, "ep-web2", "web.2", "10.0.9.6", "node-2"),
]
WEB = VipService("svcweb", "web", "10.0.9.2", ("10.0.9.5", "10.0.9.6"))
IDLE = VipService("svcidle", "idle", "10.0.9.4", ())
UDP_ECHO = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', 5300))\n"
    "while True:\n"
    "    data, peer = s.recvfrom(100)\n"
    "    s.sendto(sys.argv[1].encode(), peer)\n"
)
UDP_ASK = (  # one flow: a fresh socket (source port), two datagrams; prints both answers
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(3)\n"
    "for _ in range(2):\n"
    "    s.sendto(b'who', (sys.argv[1], 5300))\n"
    "    print(s.recvfrom(100)[0].decode())\n"
)


def test_ruleset_balances_each_vip_over_its_tasks_and_masquerades_it() -> None:
    script = container_ruleset({WEB.vip: WEB, IDLE.vip: IDLE})
    assert (
        "ip daddr 10.0.9.2 meta l4proto { tcp, udp } numgen inc mod 2 vmap "
        "{ 0 : jump vip_10_0_9_2_0, 1 : jump vip_10_0_9_2_1 }"
    ) in script
    assert "dnat to 10.0.9.5" in script and "dnat to 10.0.9.6" in script
    assert "10.0.9.4" not in script  # no task: no rule, no masquerade
    assert "ct original ip daddr { 10.0.9.2 } masquerade" in script


def test_vip_spreads_over_tasks_on_two_nodes_answers_ping_and_refuses_without_task(
    tmp_path: Path,
) -> None:
    skip_unless_kernel()
    kcontainers.busybox()

    async def body() -> None:
        with underlay(2, 41, net="10.202") as ul:
            v1 = NodeView("node-1", ul.hosts[0].address)
            v2 = NodeView("node-2", ul.hosts[1].address)
            async with backends(ul) as (a, b):
                a.apply(compute(v1, [v2], [NET], ENDPOINTS))
                b.apply(compute(v2, [v1], [NET], ENDPOINTS))
                servers = []
                for backend, task in ((a, "web.1"), (b, "web.2")):
                    www = tmp_path / task
                    www.mkdir()
                    (www / "index.html").write_text(f"task={task}\n")
                    netns = backend.container_netns(NET.network_id, task)
                    servers.append(
                        await kcontainers.start(netns, ["httpd", "-f", "-p", "80", "-h", str(www)])
                    )
                    servers.append(  # ip netns exec execs it: killing the process ends it
                        await asyncio.create_subprocess_exec(
                            "ip", "netns", "exec", netns, sys.executable, "-c", UDP_ECHO, task
                        )
                    )
                client = a.container_netns(NET.network_id, "client")
                vips = KernelVips()
                try:
                    assert vips.update({client: {WEB.vip: WEB, IDLE.vip: IDLE}}) == [client]
                    assert vips.update({client: {WEB.vip: WEB, IDLE.vip: IDLE}}) == []
                    seen: set[str] = set()

                    async def both_answered() -> bool:
                        got = await kcontainers.run(
                            client, ["timeout", "5", "wget", "-qO-", f"http://{WEB.vip}/"]
                        )
                        if got.status == 0:
                            seen.add(got.stdout.strip())
                        return seen == {"task=web.1", "task=web.2"}

                    await until(both_answered, "both tasks answering the VIP")
                    ping = await kcontainers.run(client, ["ping", "-c", "1", "-W", "5", WEB.vip])
                    assert ping.status == 0, ping.stdout
                    refused = await kcontainers.run(
                        client, ["timeout", "5", "wget", "-qO-", f"http://{IDLE.vip}/"]
                    )
                    assert refused.status != 0
                    assert "refused" in refused.stdout + refused.stderr

                    flows: set[tuple[str, ...]] = set()

                    async def udp_flows_on_both() -> bool:
                        got = run(client, sys.executable, "-c", UDP_ASK, WEB.vip)
                        if got.returncode == 0:
                            flows.add(tuple(got.stdout.split()))
                        return flows == {("web.1", "web.1"), ("web.2", "web.2")}

                    await until(udp_flows_on_both, "UDP flows to the VIP on both tasks")

                    # web.2 leaves: its rule goes, every connection reaches web.1.
                    one_left = VipService(WEB.service_id, WEB.name, WEB.vip, ("10.0.9.5",))
                    assert vips.update({client: {WEB.vip: one_left}}) == [client]
                    listed = run(client, "nft", "list", "table", "ip", TABLE).stdout
                    assert "10.0.9.6" not in listed and "dnat to 10.0.9.5" in listed
                    for _ in range(3):
                        got = await kcontainers.run(
                            client, ["timeout", "5", "wget", "-qO-", f"http://{WEB.vip}/"]
                        )
                        assert got.stdout.strip() == "task=web.1"
                    addresses = run(client, "ip", "-4", "addr", "show", "dev", "lo").stdout
                    assert IDLE.vip not in addresses and f"{WEB.vip}/32" in addresses
                finally:
                    vips.close()
                    for server in servers:
                        server.kill()
                        await server.wait()
                assert run(client, "nft", "list", "table", "ip", TABLE).returncode != 0

    scenario(body)
