"""Host-mode ports in kernel mode on real devices: a task on node 1 publishes 8081 in host
mode; real TCP from a client on the underlay (and from node 1 itself) to node 1's address
reaches the task through the gateway bridge and nftables DNAT, node 2 does not answer, and
after `release` node 1 does not either."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_testing import backends, run, scenario, skip_unless_kernel, underlay, until

from controlplane.datapath.host_ports import HostPortError
from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel.host_ports import TABLE, KernelHostPorts
from controlplane.datapath.program import Endpoint, NetworkView, NodeView, compute
from controlplane.pb.objects_pb2 import PortConfig, Task

pytestmark = pytest.mark.timeout(120)
NET = NetworkView("hostportnet00000", "hpnet", 4321, "10.0.8.0/24", "10.0.8.1")
ENDPOINTS = [Endpoint(NET.network_id, "ep-web1", "web.1", "10.0.8.5", "node-1")]


def host_task(task_id: str, *ports: tuple[int, int]) -> Task:
    task = Task(id=task_id, slot=1)
    task.spec.annotations.name = "web"
    for published, target in ports:
        task.endpoint.ports.append(
            PortConfig(
                protocol="tcp",
                target_port=target,
                published_port=published,
                publish_mode="host",
            )
        )
    return task


async def fetch(netns: str, url: str) -> str | None:
    got = await kcontainers.run(netns, ["timeout", "5", "wget", "-qO-", url])
    return got.stdout.strip() if got.status == 0 else None


def test_host_port_reaches_the_task_only_on_its_node_and_goes_with_it(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()

    async def body() -> None:
        with underlay(2, 42, net="10.202") as ul:
            one, two, client = ul.hosts
            v1, v2 = NodeView("node-1", one.address), NodeView("node-2", two.address)
            async with backends(ul) as (a, _):
                a.apply(compute(v1, [v2], [NET], ENDPOINTS))
                task_ns = a.container_netns(NET.network_id, "web.1")
                (tmp_path / "index.html").write_text("task=web.1\n")
                server = await kcontainers.start(
                    task_ns, ["httpd", "-f", "-p", "80", "-h", str(tmp_path)]
                )
                ports = KernelHostPorts(one.netns)
                try:
                    task = host_task("task1", (8081, 80), (0, 80))
                    published = ports.publish(task, task_ns)
                    assert [(p.published_port, p.target_port) for p in published] == [
                        (8081, 80),
                        (30000, 80),
                    ]
                    assert ports.port_status("task1") == published
                    with pytest.raises(HostPortError, match="port is already allocated"):
                        ports.publish(host_task("task2", (8081, 80)), task_ns)
                    assert ports.tasks() == {"task1"}

                    for source, port in ((client, 8081), (one, 8081), (client, 30000)):
                        url = f"http://{one.address}:{port}/"

                        async def answered(netns: str = source.netns, url: str = url) -> bool:
                            return await fetch(netns, url) == "task=web.1"

                        await until(answered, f"{url} from {source.address}")
                    assert await fetch(client.netns, f"http://{two.address}:8081/") is None

                    ports.release("task1")
                    assert ports.port_status("task1") == []
                    assert await fetch(client.netns, f"http://{one.address}:8081/") is None
                    assert "8081" not in run(one.netns, "nft", "list", "table", "ip", TABLE).stdout
                finally:
                    ports.close()
                    server.kill()
                    await server.wait()
                assert run(one.netns, "nft", "list", "table", "ip", TABLE).returncode != 0
                assert run(one.netns, "ip", "link", "show", "swgwbridge").returncode != 0

    scenario(body)
