"""Emulated containers on two userspace backends (127.77.251.x), each node with its own
runtime and embedded resolver: busybox's ping, nslookup, wget and nc reach nginx, whoami and
`nc -l` on the other node by name, plain and encrypted; bad input gets busybox's errors.

The nodes here are in-process (no gossip): the programs come from `program.compute` and the
names from `names.NameTable`, as `datapath.node_datapath` builds them from NetworkDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from log_texts import texts

from controlplane.agent.runtime import ContainerConfig, NetworkAttachment, Runtime
from controlplane.datapath.dns import Resolver
from controlplane.datapath.names import NameRecord, NameTable, ServiceRef
from controlplane.datapath.program import DataPathKey, Endpoint, NetworkView, NodeView, compute
from controlplane.datapath.userspace import IPv4Stack, UserspaceBackend

pytestmark = pytest.mark.integration

PLAIN = NetworkView("plainnet0001", "my-net", 4201, "10.0.20.0/24", "10.0.20.1")
SECRET = NetworkView("secretnet001", "my-secret", 4202, "10.0.21.0/24", "10.0.21.1", True)
KEY = DataPathKey(7, bytes(range(16)))
DEADLINE = 60.0


@dataclass
class Node:
    """One emulated host: backend, resolver, and the runtime whose containers use them."""

    backend: UserspaceBackend
    resolver: Resolver

    async def attach(self, endpoint_name: str, network_ids: Sequence[str]) -> list[IPv4Stack]:
        return [self.backend.endpoint(n, endpoint_name) for n in network_ids]

    async def resolve(self, query: bytes, network_ids: Sequence[str]) -> bytes | None:
        return await self.resolver.handle(query, network_ids)


@asynccontextmanager
async def two_nodes(net: NetworkView, octet: int) -> AsyncIterator[tuple[Runtime, Runtime]]:
    a, b = NodeView("node-a", f"127.77.251.{octet}"), NodeView("node-b", f"127.77.251.{octet + 1}")
    prefix = net.subnet.rsplit(".", 1)[0]
    eps = [
        Endpoint(net.network_id, "e1", "client.1.t1", f"{prefix}.3", "node-a"),
        Endpoint(net.network_id, "e2", "web.1.t2", f"{prefix}.2", "node-b"),
        Endpoint(net.network_id, "e3", "who.1.t3", f"{prefix}.4", "node-b"),
        Endpoint(net.network_id, "e4", "listener.1.t4", f"{prefix}.5", "node-b"),
    ]
    names = NameTable.build(
        [NameRecord(ep, ServiceRef(ep.name.split(".")[0])) for ep in eps],
        {net.network_id: net.name},
    )
    nodes = []
    for local in (a, b):
        backend = UserspaceBackend(local.vtep, local.port)
        await backend.start()
        backend.apply(compute(local, [a, b], [net], eps, [KEY]))
        nodes.append(Node(backend, Resolver(names, upstreams=[])))
    try:
        yield Runtime(networking=nodes[0]), Runtime(networking=nodes[1])
    finally:
        for node in nodes:
            node.backend.close()


async def start(runtime: Runtime, net: NetworkView, name: str, image: str, *args: str) -> str:
    config = ContainerConfig(
        image=image, args=list(args), name=name, networks=[NetworkAttachment(net.network_id)]
    )
    container = runtime.create(config)
    await runtime.start(container.id)
    return container.id


async def output(runtime: Runtime, container_id: str) -> tuple[int, list[str]]:
    code = await asyncio.wait_for(runtime.wait(container_id), DEADLINE)
    return code, texts(runtime.get(container_id).logs)


@pytest.mark.parametrize(("net", "octet"), [(PLAIN, 10), (SECRET, 20)])
def test_client_reaches_servers_by_name(net: NetworkView, octet: int) -> None:
    async def scenario() -> None:
        async with two_nodes(net, octet) as (client_node, server_node):
            await start(server_node, net, "web.1.t2", "nginx")
            await start(server_node, net, "who.1.t3", "traefik/whoami")
            await start(server_node, net, "listener.1.t4", "busybox", "nc", "-l", "-p", "7000")
            script = (
                "ping -c 2 web; nslookup web; wget -qO- http://web; wget -qO- http://who; "
                "nc -z listener 7000"
            )
            client = await start(client_node, net, "client.1.t1", "busybox", "sh", "-c", script)
            code, lines = await output(client_node, client)
            ip = net.subnet.rsplit(".", 1)[0] + ".2"
            assert code == 0, lines
            assert lines[0] == f"PING web ({ip}): 56 data bytes"
            assert [line.split(" time=")[0] for line in lines[1:3]] == [
                f"64 bytes from {ip}: seq=0 ttl=64",
                f"64 bytes from {ip}: seq=1 ttl=64",
            ]
            assert "2 packets transmitted, 2 packets received, 0% packet loss" in lines
            assert "Non-authoritative answer:" in lines
            assert f"Address: {ip}" in lines
            assert "*** Can't find web: No answer" in lines  # AAAA: the overlay is IPv4-only
            assert "<h1>Welcome to nginx!</h1>" in lines
            assert "Hostname: who.1.t3"[:10] in "\n".join(lines)
            assert f"IP: {net.subnet.rsplit('.', 1)[0]}.4" in lines
            assert "User-Agent: Wget" in lines
            nginx_log = texts(server_node.get("web.1.t2").logs)
            assert any('"GET / HTTP/1.1" 200 615 "-" "Wget"' in line for line in nginx_log)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["ping", "-c", "1", "nowhere"], 1, "ping: bad address 'nowhere'"),
        (["ping", "-c", "1", "192.168.1.1"], 1, "ping: sendto: Network is unreachable"),
        (["ping", "-c", "x", "web"], 1, "ping: invalid number 'x'"),
        (["wget", "-qO-", "http://nowhere"], 1, "wget: bad address 'nowhere'"),
        (["wget", "-q", "http://web"], 1, "wget: can't open 'index.html'"),
        (["wget", "-qO-", "http://web/missing"], 8, "wget: server returned error: HTTP/1.1 404"),
        (["wget", "-qO-", "http://web:8080/"], 1, "Connection refused"),
        (["wget", "-qO-", "https://web/"], 1, "wget: not an http or ftp url"),
        (["nslookup", "nowhere"], 1, "** server can't find nowhere: NXDOMAIN"),
        (["nc", "web"], 1, "nc: HOST and PORT are required"),
        (["nc", "-l"], 1, "nc: listening needs a port: -l -p PORT"),
    ],
)
def test_bad_input_gets_busybox_errors(args: list[str], code: int, expected: str) -> None:
    async def scenario() -> None:
        async with two_nodes(PLAIN, 30) as (client_node, server_node):
            await start(server_node, PLAIN, "web.1.t2", "nginx")
            client = await start(client_node, PLAIN, "client.1.t1", "busybox", *args)
            status, lines = await output(client_node, client)
            assert status == code, lines
            assert any(expected in line for line in lines), lines

    asyncio.run(scenario())
