"""Host-mode ports in kernel mode on real devices: a task on node 1 publishes 8081 in host
mode; real TCP from a client on the underlay (and from node 1 itself) to node 1's address
reaches the task through the gateway bridge and nftables DNAT, node 2 does not answer, and
after `release` node 1 does not either."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from datapath_testing import FakeGossip, network
from datapath_testing import task as datapath_task
from kernel_testing import backends, run, scenario, skip_unless_kernel, underlay, until

from controlplane.datapath.host_ports import HostPortError
from controlplane.datapath.kernel import KernelBackend, namespaces
from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel.host_ports import TABLE, KernelHostPorts
from controlplane.datapath.node_datapath import NodeDataPath
from controlplane.datapath.program import Endpoint, NetworkView, NodeView, compute
from controlplane.pb.objects_pb2 import PortConfig, Task, TaskStatus
from controlplane.store.kinds import name_of

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
                    assert ports.owners() == {"task1"}

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


def test_node_datapath_publishes_host_ports_of_kernel_tasks_on_a_network_or_none(
    tmp_path: Path,
) -> None:
    """Through `NodeDataPath` in kernel mode: a running task's status carries its host port,
    real TCP reaches it, a stopped task's port goes; a host-mode task on no network gets a
    namespace of its own on the gateway bridge (Docker's `bridge`), reached alike, gone with
    the task."""
    skip_unless_kernel()
    kcontainers.busybox()

    async def body() -> None:
        with underlay(1, 43, net="10.202") as ul:
            host, client = ul.hosts
            backend = KernelBackend(host.address, node_netns=host.netns, prefix=f"{ul.tag}-1-")
            datapath = NodeDataPath(
                NodeView("n1", host.address), FakeGossip(), upstreams=[], backend=backend
            )
            await datapath.start()
            servers: list[asyncio.subprocess.Process] = []
            try:
                web = datapath_task("t1", "10.0.1.2")
                web.endpoint.ports.append(
                    PortConfig(
                        protocol="tcp", target_port=80, published_port=8082, publish_mode="host"
                    )
                )
                lonely = host_task("t2", (8083, 80))
                lonely.node_id = "n1"
                datapath.assignments({"t1": web, "t2": lonely}, {"net1": network()})
                datapath.task_status("t1", TaskStatus(state="starting"))
                assert await datapath.attach(name_of(web), ["net1"]) == []
                datapath.task_status("t2", TaskStatus(state="starting"))
                assert await datapath.attach(name_of(lonely), []) == []
                lonely_ns = datapath.kernel_netns(name_of(lonely), [])
                assert lonely_ns is not None and namespaces.exists(lonely_ns)
                (tmp_path / "lonely").mkdir()
                (tmp_path / "lonely" / "index.html").write_text("task=t2\n")
                servers.append(
                    await kcontainers.start(
                        lonely_ns, ["httpd", "-f", "-p", "80", "-h", str(tmp_path / "lonely")]
                    )
                )
                lonely_url = f"http://{host.address}:8083/"

                async def lonely_answered() -> bool:
                    return await fetch(client.netns, lonely_url) == "task=t2"

                await until(lonely_answered, f"{lonely_url} answered by the task on no network")
                datapath.task_status("t2", TaskStatus(state="complete"))
                assert not namespaces.exists(lonely_ns)

                netns = datapath.kernel_netns(name_of(web), ["net1"])
                assert netns is not None
                (tmp_path / "index.html").write_text("task=t1\n")
                servers.append(
                    await kcontainers.start(netns, ["httpd", "-f", "-p", "80", "-h", str(tmp_path)])
                )
                running = TaskStatus(state="running")
                datapath.task_status("t1", running)
                assert [(p.published_port, p.target_port) for p in running.port_status] == [
                    (8082, 80)
                ]
                url = f"http://{host.address}:8082/"

                async def answered() -> bool:
                    return await fetch(client.netns, url) == "task=t1"

                await until(answered, f"{url} answered by the task")
                assert "tcp dport 8082 dnat to 172.18.0.2:80" in datapath.kernel_view()
                datapath.task_status("t1", TaskStatus(state="complete"))
                assert await fetch(client.netns, url) is None
            finally:
                for server in servers:
                    server.kill()
                    await server.wait()
                datapath.stop()

    scenario(body)
