"""`docker run --network host` in the emulated runtime (`agent/host_stack.py`): the container
shares the node's network. Its servers listen on real sockets at the node's address (here
127.77.205.11), its clients connect from it, and `hostname`, `hostname -i`, `ip addr`,
`ifconfig` and /etc/hosts show the node's, as dockerd 20.10 shows its host's (measured side
by side on a dockerd in its own network namespace). Connect and disconnect refusals are
dockerd's, word for word."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable

import pytest
from log_texts import written_lines

from controlplane.agent.host_stack import HostInterface, HostNetwork, HostStack, bridge_port
from controlplane.agent.network_modes import HOST_MODE_REFUSAL, SHARED_NAMESPACE_REFUSAL
from controlplane.agent.runtime import ContainerConfig, ContainerState, Runtime
from controlplane.agent.standalone import (
    AlreadyConnectedError,
    EndpointRequest,
    InvalidConfigError,
    NotConnectedError,
    StandaloneContainers,
)
from controlplane.datapath.host_ports import DEFAULT_BRIDGE, HostPorts
from tests.polling import eventually

NODE = "127.77.205.11"
OTHER = "127.77.205.12"  # another address of the lab: a real server of the test's there
WAIT = 30.0
GWBRIDGE = HostInterface(
    "docker_gwbridge", ipaddress.IPv4Interface("172.18.0.1/16"), "02:42:ac:12:00:01"
)

PORT = bridge_port("docker_gwbridge", "ingress-sbox", 4)  # the ingress sandbox's veth

Test = Callable[[StandaloneContainers], Awaitable[None]]


def run(test: Test) -> None:
    async def main() -> None:
        runtime = Runtime()
        runtime.host = HostNetwork(NODE, "node-a", lambda: [GWBRIDGE], ports=lambda: [PORT])
        registry = StandaloneContainers(runtime)
        try:
            await test(registry)
        finally:
            await registry.close()

    asyncio.run(main())


async def started(registry: StandaloneContainers, *argv: str, network: str = "host") -> str:
    container = registry.create(
        ContainerConfig(image="busybox", command=list(argv)), network=network
    )
    await registry.start(container.id)
    return container.id


async def output(registry: StandaloneContainers, *argv: str) -> list[str]:
    """What a host-mode container running `argv` printed, once it exited with 0."""
    container_id = await started(registry, *argv)
    status = await asyncio.wait_for(registry.runtime.exit_status(container_id), WAIT)
    lines = written_lines(registry.runtime.logs(container_id))
    assert status == 0, lines
    return lines


async def logged(registry: StandaloneContainers, container_id: str, wanted: str) -> None:
    def seen() -> bool:
        return any(wanted in line for line in written_lines(registry.runtime.logs(container_id)))

    await eventually(f"{wanted!r} in the container's logs", seen, WAIT)


def test_servers_listen_on_the_nodes_address_for_real() -> None:
    async def test(registry: StandaloneContainers) -> None:
        listener = await started(registry, "nc", "-l", "-p", "9001")
        http = await started(registry, "httpd", "-f", "-p", "9002")

        async def connected(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            for _ in range(int(WAIT / 0.05)):
                with contextlib.suppress(ConnectionRefusedError):
                    return await asyncio.open_connection(NODE, port)
                await asyncio.sleep(0.05)
            raise AssertionError(f"nothing listens on {NODE}:{port}")

        _, writer = await connected(9001)
        writer.write(b"hello from outside\n")
        writer.close()
        await logged(registry, listener, "hello from outside")
        reader, writer = await connected(9002)
        writer.write(b"GET / HTTP/1.1\r\nHost: node\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 404 Not Found") and b"busybox httpd" in reply
        # The node's port, taken: a second server of the node cannot have it.
        taken = await started(registry, "httpd", "-f", "-p", "9002")
        assert await asyncio.wait_for(registry.runtime.exit_status(taken), WAIT) == 1
        assert written_lines(registry.runtime.logs(taken)) == [
            "httpd: bind to port 9002 failed: Address already in use"
        ]
        await registry.remove(http, force=True)
        with pytest.raises(ConnectionRefusedError):  # its socket closed with it
            await asyncio.open_connection(NODE, 9002)

    run(test)


def test_clients_connect_from_the_nodes_address_and_reach_the_lab_only() -> None:
    async def test(registry: StandaloneContainers) -> None:
        peers: list[str] = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peers.append(writer.get_extra_info("peername")[0])
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n"
            )
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, OTHER, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            assert await output(registry, "wget", "-qO-", f"http://{OTHER}:{port}/") == ["hello"]
        assert peers == [NODE]
        unreachable = await started(registry, "wget", "-qO-", "http://10.0.1.5/")
        assert await registry.runtime.exit_status(unreachable) == 1
        assert written_lines(registry.runtime.logs(unreachable)) == [
            "wget: can't connect to remote host (10.0.1.5): Network is unreachable"
        ]

    run(test)


def test_udp_on_the_nodes_address() -> None:
    async def test(registry: StandaloneContainers) -> None:
        echo = await started(registry, "nc", "-u", "-l", "-p", "9005", "-e", "hostname")
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind((OTHER, 0))
            client.setblocking(False)
            answer = b""
            for _ in range(int(WAIT / 0.2)):  # until its socket is bound
                client.sendto(b"who?\n", (NODE, 9005))
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(loop.sock_recv(client, 100), 0.2)
                    break
            assert answer == b"node-a\n"
        await registry.remove(echo, force=True)

    run(test)


def test_hostname_addresses_and_files_are_the_nodes() -> None:
    async def test(registry: StandaloneContainers) -> None:
        assert await output(registry, "hostname") == ["node-a"]
        assert await output(registry, "hostname", "-i") == [NODE]
        assert await output(registry, "cat", "/etc/hosts") == [
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            f"{NODE}\tnode-a",
        ]
        addresses = await output(registry, "ip", "addr")
        # as busybox's `ip addr` in host mode on a dockerd 20.10 host: IPv6 on lo and a
        # link-local address (EUI-64 of the MAC) on each interface, a container's veth as a
        # port of its bridge, with no IPv4 address
        assert addresses[4:] == [
            "    inet6 ::1/128 scope host ",
            "       valid_lft forever preferred_lft forever",
            "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue qlen 1000",
            "    link/ether 02:42:7f:4d:cd:0b brd ff:ff:ff:ff:ff:ff",
            f"    inet {NODE}/24 brd 127.77.205.255 scope global eth0",
            "       valid_lft forever preferred_lft forever",
            "    inet6 fe80::42:7fff:fe4d:cd0b/64 scope link ",
            "       valid_lft forever preferred_lft forever",
            "3: docker_gwbridge: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue ",
            "    link/ether 02:42:ac:12:00:01 brd ff:ff:ff:ff:ff:ff",
            "    inet 172.18.0.1/16 brd 172.18.255.255 scope global docker_gwbridge",
            "       valid_lft forever preferred_lft forever",
            "    inet6 fe80::42:acff:fe12:1/64 scope link ",
            "       valid_lft forever preferred_lft forever",
            f"4: {PORT.name}@if4: <BROADCAST,MULTICAST,UP,LOWER_UP,M-DOWN> mtu 1500 qdisc "
            "noqueue master docker_gwbridge ",
            f"    link/ether {PORT.mac} brd ff:ff:ff:ff:ff:ff",
            f"    inet6 {PORT.link_local} scope link ",
            "       valid_lft forever preferred_lft forever",
        ]
        only_ipv4 = await output(registry, "ip", "-4", "addr")
        assert [line.split()[1] for line in only_ipv4 if not line.startswith(" ")] == [
            "lo:",
            "eth0:",
            "docker_gwbridge:",
        ]  # the veth has no IPv4 address: not listed
        assert not [line for line in only_ipv4 if "link/" in line or "inet6" in line]
        shown = await output(registry, "ifconfig")
        names = [line.split()[0] for line in shown if line and not line.startswith(" ")]
        # busybox sorts them by name
        assert names == ["docker_gwbridge", "eth0", "lo", PORT.name]
        assert shown[:4] == [
            "docker_gwbridge Link encap:Ethernet  HWaddr 02:42:AC:12:00:01  ",
            "          inet addr:172.18.0.1  Bcast:172.18.255.255  Mask:255.255.0.0",
            "          inet6 addr: fe80::42:acff:fe12:1/64 Scope:Link",
            "          UP BROADCAST RUNNING MULTICAST  MTU:1500  Metric:1",
        ]
        lo = shown.index("lo        Link encap:Local Loopback  ")
        assert shown[lo + 1 : lo + 3] == [
            "          inet addr:127.0.0.1  Mask:255.0.0.0",
            "          inet6 addr: ::1/128 Scope:Host",
        ]
        port = shown.index(f"{PORT.name} Link encap:Ethernet  HWaddr {PORT.mac.upper()}  ")
        assert shown[port + 1 : port + 3] == [
            f"          inet6 addr: {PORT.link_local} Scope:Link",
            "          UP BROADCAST RUNNING MULTICAST  MTU:1500  Metric:1",
        ]
        named = registry.create(
            ContainerConfig(image="busybox", command=["hostname"], hostname="mine"), network="host"
        )
        assert named.hostname == "mine"  # `--hostname` is the container's, as dockerd allows

    run(test)


@pytest.mark.skipif(os.geteuid() != 0, reason="ICMP sockets need root (or ping_group_range)")
def test_ping_from_the_nodes_address() -> None:
    async def test(registry: StandaloneContainers) -> None:
        lines = await output(registry, "ping", "-c", "1", OTHER)
        assert lines[0] == f"PING {OTHER} ({OTHER}): 56 data bytes"
        assert "1 packets transmitted, 1 packets received, 0% packet loss" in lines

    run(test)


def test_connect_and_disconnect_refusals_as_dockerds() -> None:
    async def test(registry: StandaloneContainers) -> None:
        on_host = await started(registry, "sleep", "1000")
        plain = await started(registry, "sleep", "1000", network="default")
        stopped = registry.create(ContainerConfig(image="busybox"), network="host").id
        refusals = [
            ("connect", "host", plain, InvalidConfigError, HOST_MODE_REFUSAL),
            ("connect", "bridge", on_host, InvalidConfigError, SHARED_NAMESPACE_REFUSAL),
            ("connect", "none", on_host, InvalidConfigError, SHARED_NAMESPACE_REFUSAL),
            ("connect", "my-overlay", on_host, InvalidConfigError, SHARED_NAMESPACE_REFUSAL),
            (
                "connect",
                "host",
                on_host,
                AlreadyConnectedError,
                f"endpoint with name {on_host[:12]} already exists in network host",
            ),
            ("disconnect", "host", on_host, InvalidConfigError, HOST_MODE_REFUSAL),
            (
                "disconnect",
                "bridge",
                on_host,
                NotConnectedError,
                f"container {on_host} is not connected to network bridge",
            ),
            (
                "disconnect",
                "host",
                plain,
                NotConnectedError,
                f"container {plain} is not connected to network host",
            ),
            (
                "disconnect",
                "bridge",
                stopped,
                NotConnectedError,
                f"container {stopped} is not connected to the network bridge",
            ),
        ]
        for action, network, container, error, words in refusals:
            with pytest.raises(error) as refused:
                if action == "connect":
                    await registry.connect(container, EndpointRequest(network))
                else:
                    await registry.disconnect(container, network)
            assert str(refused.value) == words, (action, network)
        await registry.connect(stopped, EndpointRequest("host"))  # on it: dockerd says nothing
        assert registry.get(stopped).state is ContainerState.CREATED

    run(test)


def test_a_stopped_host_container_can_leave_host_and_come_back() -> None:
    """dockerd takes a stopped host-mode container's endpoint off `host` (its mode stays:
    started again, it still shares the node's network), says so the second time, and `network
    connect host` puts it back, stopped or running."""

    async def test(registry: StandaloneContainers) -> None:
        config = ContainerConfig(image="busybox", command=["sleep", "1000"])
        container = registry.create(config, network="host")
        assert not registry.left_network_mode(container)
        await registry.disconnect(container.id, "host")
        assert registry.left_network_mode(container)
        assert registry.network_of(container) == "host"  # `HostConfig.NetworkMode`
        with pytest.raises(NotConnectedError) as refused:
            await registry.disconnect(container.id, "host")
        assert str(refused.value) == (
            f"container {container.id} is not connected to the network host"
        )
        await registry.connect(container.id, EndpointRequest("host"))
        assert not registry.left_network_mode(container)
        await registry.disconnect(container.id, "host")
        await registry.start(container.id)
        assert registry.runtime.process(container.id).net.host is registry.runtime.host
        assert registry.left_network_mode(container)  # off it, as dockerd shows it
        with pytest.raises(InvalidConfigError):  # running: dockerd's refusal
            await registry.disconnect(container.id, "host")
        await registry.connect(container.id, EndpointRequest("host"))  # running: back on it
        assert not registry.left_network_mode(container)

    run(test)


def test_a_host_stack_refuses_what_the_node_cannot_do() -> None:
    async def test() -> None:
        stack = HostStack(NODE)
        listener = stack.listen(9006)
        with pytest.raises(OSError, match="in use"):
            stack.listen(9006)
        listener.close()
        stack.listen(9006).close()  # free again once closed
        with pytest.raises(OSError, match="Network is unreachable"):
            await stack.connect("192.0.2.1", 80)
        with pytest.raises(OSError, match="Network is unreachable"):
            stack.udp_socket().sendto(b"x", ("10.0.0.1", 53))
        with pytest.raises(ConnectionRefusedError):
            await stack.connect(OTHER, 9)

    asyncio.run(test())


def test_the_node_reaches_its_bridge_containers_through_docker0() -> None:
    """As a host reaches its containers on docker0: from the bridge's gateway (.1)."""

    async def main() -> None:
        bridge = HostPorts(NODE, DEFAULT_BRIDGE)
        runtime = Runtime()
        runtime.host = HostNetwork(NODE, "node-a", gateways=lambda: [bridge.gateway()])
        registry = StandaloneContainers(runtime, bridge=bridge)
        try:
            config = ContainerConfig(image="traefik/whoami", args=["--port", "8080"])
            web = registry.create(config, network="bridge").id
            await registry.start(web)
            endpoint = registry.bridge_endpoint(registry.get(web))
            assert endpoint is not None and endpoint.ip == "172.17.0.2"
            reply = await output(registry, "wget", "-qO-", "http://172.17.0.2:8080/")
            assert "RemoteAddr: 172.17.0.1:" in "\n".join(reply)  # from the node's docker0
            pinged = await output(registry, "ping", "-c", "1", "172.17.0.2")
            assert "1 packets transmitted, 1 packets received, 0% packet loss" in pinged
            unreachable = await started(registry, "ping", "-c", "1", "10.0.1.2")
            assert await registry.runtime.exit_status(unreachable) == 1
            assert written_lines(registry.runtime.logs(unreachable))[-1] == (
                "ping: sendto: Network is unreachable"
            )
        finally:
            await registry.close()

    asyncio.run(main())


def test_link_local_addresses_and_bridge_ports_as_the_kernel_makes_them() -> None:
    def link_local(mac: str) -> str:
        return str(HostInterface("x", None, mac).link_local)

    # seen on a dockerd 20.10 host: docker0's and a veth's
    assert link_local("02:42:e8:30:2e:54") == "fe80::42:e8ff:fe30:2e54/64"
    assert link_local("36:1b:48:b4:19:f7") == "fe80::341b:48ff:feb4:19f7/64"
    port = bridge_port("docker0", "c0ffee", 2)
    assert port == bridge_port("docker0", "c0ffee", 2)  # the same each time it is listed
    assert port.name.startswith("veth") and len(port.name) == 11
    assert int(port.mac[:2], 16) & 0x03 == 0x02  # a local, unicast MAC
    assert (port.address, port.master, port.peer) == (None, "docker0", 2)
    assert bridge_port("docker_gwbridge", "c0ffee", 4).name != port.name
