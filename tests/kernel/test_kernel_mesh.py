"""The routing mesh in kernel mode: nftables DNAT balanced with `numgen`, real TCP from a
client on the underlay to a published port of either node, answered by tasks on both nodes
through the ingress overlay (kernel VXLAN)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from kernel_testing import backends, run, scenario, skip_unless_kernel, underlay, until

from controlplane.datapath.attachments import INGRESS_SANDBOX
from controlplane.datapath.ingress import Backend, MeshService, PublishedPort
from controlplane.datapath.kernel import KernelError
from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel.mesh import KernelMesh
from controlplane.datapath.program import Endpoint, NetworkView, NodeView, compute

pytestmark = pytest.mark.timeout(120)
INGRESS = NetworkView("ingressnetwork00", "ingress", 4096, "10.0.0.0/24", "10.0.0.1")
ENDPOINTS = [
    Endpoint(INGRESS.network_id, "sbox-1", INGRESS_SANDBOX, "10.0.0.2", "node-1"),
    Endpoint(INGRESS.network_id, "sbox-2", INGRESS_SANDBOX, "10.0.0.3", "node-2"),
    Endpoint(INGRESS.network_id, "task-a", "whoami.1", "10.0.0.5", "node-1"),
    Endpoint(INGRESS.network_id, "task-b", "whoami.2", "10.0.0.6", "node-2"),
]
TABLE = {
    PublishedPort("tcp", 8080): MeshService(
        "svc1",
        "whoami",
        "10.0.0.9",  # the VIP: the kernel mesh balances over the tasks themselves
        80,
        (Backend("10.0.0.5", 80, "task-a"), Backend("10.0.0.6", 80, "task-b")),
    )
}


@pytest.fixture(autouse=True)
def _kernel() -> None:
    skip_unless_kernel()
    kcontainers.busybox()


async def both_tasks_answer(client_netns: str, url: str, seen: set[str]) -> bool:
    """Ask `url` until both tasks have answered (numgen sends each new connection to the next
    task; other helpers' traffic never shares our namespaces, so two asks normally do)."""
    got = await kcontainers.run(client_netns, ["timeout", "5", "wget", "-qO-", url])
    if got.status == 0:
        seen.add(got.stdout.strip())
    return seen == {"task=whoami.1", "task=whoami.2"}


def test_published_port_answered_on_every_node_by_tasks_on_both(tmp_path: Path) -> None:
    async def body() -> None:
        with underlay(2, 35) as ul:
            one, two = ul.hosts[0], ul.hosts[1]
            client = ul.hosts[2]
            v1, v2 = NodeView("node-1", one.address), NodeView("node-2", two.address)
            async with backends(ul) as (a, b):
                a.apply(compute(v1, [v2], [INGRESS], ENDPOINTS))
                b.apply(compute(v2, [v1], [INGRESS], ENDPOINTS))
                servers = []
                for backend, task in ((a, "whoami.1"), (b, "whoami.2")):
                    www = tmp_path / task
                    www.mkdir()
                    (www / "index.html").write_text(f"task={task}\n")
                    netns = backend.container_netns(INGRESS.network_id, task)
                    servers.append(
                        await kcontainers.start(netns, ["httpd", "-f", "-p", "80", "-h", str(www)])
                    )
                meshes = [
                    KernelMesh(host.netns, be.container_netns(INGRESS.network_id, INGRESS_SANDBOX))
                    for host, be in ((one, a), (two, b))
                ]
                try:
                    for mesh in meshes:
                        mesh.start()
                        assert mesh.update(TABLE)
                        assert not mesh.update(TABLE)  # unchanged: nothing reloaded
                    # From a client on the underlay to either node, and from a node to itself.
                    for source, host in ((client, one), (client, two), (one, one)):
                        await until(
                            partial(
                                both_tasks_answer,
                                source.netns,
                                f"http://{host.address}:8080/",
                                set(),
                            ),
                            f"both tasks answering {source.address} on {host.address}:8080",
                        )
                    listed = run(one.netns, "nft", "list", "table", "ip", "swarmlab_ingress")
                    assert "dnat to 169.254.77.2" in listed.stdout
                finally:
                    for mesh in meshes:
                        mesh.close()
                    for server in servers:
                        server.kill()
                        await server.wait()
                refused = await kcontainers.run(
                    client.netns, ["timeout", "5", "wget", "-qO-", f"http://{one.address}:8080/"]
                )
                assert refused.status != 0  # the mesh is gone: nothing answers 8080

    scenario(body)


def test_mesh_needs_the_ingress_sandbox() -> None:
    mesh = KernelMesh(None, "swk-no-such-sandbox")
    with pytest.raises(KernelError, match="no endpoint on the ingress network"):
        mesh.start()
