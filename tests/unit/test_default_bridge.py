"""The default `bridge` network in userspace mode (`StandaloneContainers` with the node's
emulated docker0, `datapath/host_ports.py` on 172.17.0.0/16): a container run without
`--network` gets the next address there (.2, .3, ... as dockerd's), reaches the node's other
bridge containers, publishes its `-p` ports on the node's address (here 127.77.207.11) from
there, with or without a swarm, and leaves it at its exit or `network disconnect`. What
dockerd 20.10 shows side by side: the same addresses, MACs, gateway and refusals."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import pytest
from log_texts import written_lines

from controlplane.agent.host_stack import HostNetwork
from controlplane.agent.runtime import ContainerConfig, ContainerState, Runtime
from controlplane.agent.standalone import (
    AlreadyConnectedError,
    EndpointRequest,
    PortRequest,
    PortsNotPublishedError,
    StandaloneContainers,
)
from controlplane.datapath.host_ports import DEFAULT_BRIDGE, HostBinding, HostPorts

NODE = "127.77.207.11"
OTHER = "127.77.177.12"  # another node of the lab: a real server of the test's there
WAIT = 30.0

Test = Callable[[StandaloneContainers], Awaitable[None]]


def run(test: Test) -> None:
    async def main() -> None:
        runtime = Runtime()
        runtime.host = HostNetwork(NODE, "node-a")  # the node's network, where docker0 leads
        registry = StandaloneContainers(runtime, bridge=HostPorts(NODE, DEFAULT_BRIDGE))
        try:
            await test(registry)
        finally:
            await registry.close()

    asyncio.run(main())


async def started(
    registry: StandaloneContainers,
    *argv: str,
    image: str = "busybox",
    network: str = "",
    ports: PortRequest | None = None,
) -> str:
    config = ContainerConfig(image=image, command=list(argv))
    container = registry.create(config, network=network, ports=ports)
    await registry.start(container.id)
    return container.id


async def output(registry: StandaloneContainers, *argv: str) -> tuple[int, list[str]]:
    container_id = await started(registry, *argv)
    status = await asyncio.wait_for(registry.runtime.exit_status(container_id), WAIT)
    return status, written_lines(registry.runtime.logs(container_id))


def test_bridge_containers_get_addresses_in_order_and_reach_each_other() -> None:
    async def test(registry: StandaloneContainers) -> None:
        web = await started(registry, "httpd", "-f", "-p", "80")
        endpoint = registry.bridge_endpoint(registry.get(web))
        assert endpoint is not None
        assert (endpoint.ip, endpoint.prefixlen, endpoint.gateway, endpoint.mac) == (
            "172.17.0.2",
            16,
            "172.17.0.1",
            "02:42:ac:11:00:02",  # dockerd's: 02:42 and the address
        )
        status, lines = await output(registry, "wget", "-q", "-O", "-", "http://172.17.0.2/")
        assert (status, lines) == (8, ["wget: server returned error: HTTP/1.1 404 Not Found"])
        status, lines = await output(registry, "ping", "-c", "1", "172.17.0.2")
        assert status == 0 and "1 packets received" in " ".join(lines)
        status, lines = await output(registry, "hostname", "-i")
        assert (status, lines) == (0, ["172.17.0.3"])  # freed by the exits: reused, as dockerd
        status, lines = await output(registry, "ping", "-c", "1", "web")
        assert (status, lines) == (1, ["ping: bad address 'web'"])  # no names on docker0

    run(test)


def test_none_and_host_modes_stay_off_the_bridge() -> None:
    async def test(registry: StandaloneContainers) -> None:
        for network in ("none", "host"):
            container_id = await started(registry, "sleep", "100", network=network)
            assert registry.bridge_endpoint(registry.get(container_id)) is None

    run(test)


def test_ports_are_published_from_the_bridge_and_released_at_the_exit() -> None:
    async def test(registry: StandaloneContainers) -> None:
        ports = PortRequest(bindings=(("80/tcp", (HostBinding("tcp", 80, 9080),)),))
        web = await started(registry, image="nginx", ports=ports)
        assert registry.published_ports(registry.get(web)) == [HostBinding("tcp", 80, 9080)]

        reader, writer = await asyncio.open_connection(NODE, 9080)  # bound before the start ends
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        assert b"Welcome to nginx!" in answer
        taken = registry.create(ContainerConfig(image="nginx"), ports=ports)
        with pytest.raises(PortsNotPublishedError) as refused:
            await registry.start(taken.id)
        assert re.fullmatch(  # dockerd's words, its endpoint on the bridge named
            rf"driver failed programming external connectivity on endpoint {taken.name} "
            r"\([0-9a-f]{64}\): Bind for 0\.0\.0\.0:9080 failed: port is already allocated",
            str(refused.value),
        )
        assert (taken.state, taken.exit_code) == (ContainerState.CREATED, 128)
        await registry.stop(web, 10)
        for _ in range(int(WAIT / 0.02)):  # the exit releases them (its supervisor, at once)
            if registry.bridge.stack_of(web) is None:
                break
            await asyncio.sleep(0.02)
        await registry.start(taken.id)  # its port and address are free again
        assert registry.published_ports(taken) == [HostBinding("tcp", 80, 9080)]
        endpoint = registry.bridge_endpoint(taken)
        assert endpoint is not None and endpoint.ip == "172.17.0.2"

    run(test)


def test_connect_and_disconnect_of_the_bridge() -> None:
    async def test(registry: StandaloneContainers) -> None:
        box = await started(registry, "sleep", "100")
        with pytest.raises(AlreadyConnectedError, match="already exists in network bridge"):
            await registry.connect(box, EndpointRequest("bridge"))
        await registry.disconnect(box, "bridge")
        assert registry.bridge_endpoint(registry.get(box)) is None
        assert registry.runtime.process(box).net.stacks == ()  # its eth0 went at once
        await registry.stop(box, 10)
        await registry.start(box)
        assert registry.bridge_endpoint(registry.get(box)) is None  # it stays off it

    run(test)


def test_the_default_route_leads_out_of_the_bridge_from_the_nodes_address() -> None:
    """As dockerd masquerades docker0: a bridge container reaches the lab (a real server on
    another lab address) from the node's address; past the lab nothing answers, and a
    container with no interface on the node's bridge has no route out."""

    async def test(registry: StandaloneContainers) -> None:
        seen: list[str] = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("peername")[0])
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, OTHER, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            url = f"http://{OTHER}:{port}/"
            status, lines = await output(registry, "wget", "-qO-", url)
            assert (status, lines, seen) == (0, ["hello"], [NODE])  # from the node's address
            status, lines = await output(registry, "wget", "-qO-", "-T", "2", "http://10.9.9.9/")
            assert status == 1
            assert lines == [
                "wget: can't connect to remote host (10.9.9.9): Network is unreachable"
            ]
            alone = registry.create(
                ContainerConfig(image="busybox", command=["wget", "-qO-", url]), network="none"
            )
            await registry.start(alone.id)
            assert await asyncio.wait_for(registry.runtime.exit_status(alone.id), WAIT) == 1
            assert seen == [NODE]  # never reached
        finally:
            server.close()

    run(test)
