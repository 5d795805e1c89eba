"""Standalone containers' published ports below the CLI: the create body read into a
`PortRequest` (Docker's shapes, bad input refused naming what is wrong), `-P` over the image's
exposed ports, `HostPorts` for a container owner (a range, a HostIp, SCTP refused, Docker's
words for a taken port), and `NodeDataPath` publishing a container's ports at its attach,
keeping them across assignment changes and closing them on release (127.77.171.x)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from datapath_testing import FakeGossip

from controlplane.agent.runtime import Runtime
from controlplane.agent.standalone import PortRequest, StandaloneContainers
from controlplane.api import containers, create_app
from controlplane.api.local import LocalBackend
from controlplane.api.spec import SPEC_PATH, Spec
from controlplane.datapath.host_ports import HostBinding, HostPortError, HostPorts
from controlplane.datapath.node_datapath import NodeDataPath
from controlplane.datapath.program import NodeView

HOST = "127.77.171.1"
OTHER = "127.77.171.2"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):
            await scenario()

    asyncio.run(bounded())


# ---- the create body -----------------------------------------------------------------------

Test = Callable[[TestClient[Any, Any], StandaloneContainers], Awaitable[None]]


def api(test: Test) -> None:
    """`test` against a fresh engine without a swarm."""

    async def main() -> None:
        registry = StandaloneContainers(Runtime())
        app = containers.register(create_app(LocalBackend()), registry)
        async with TestClient(TestServer(app)) as client:
            await test(client, registry)

    run(main)


async def create(client: TestClient[Any, Any], body: dict[str, Any]) -> tuple[int, Any]:
    response = await client.post("/v1.41/containers/create", json=body)
    return response.status, await response.json()


def test_port_bindings_are_read_as_docker_sends_them() -> None:
    async def test(client: TestClient[Any, Any], registry: StandaloneContainers) -> None:
        status, made = await create(
            client,
            {
                "Image": "nginx",
                "ExposedPorts": {"53/udp": {}},
                "HostConfig": {
                    "PortBindings": {
                        "80/tcp": [
                            {"HostIp": "", "HostPort": "8080-8081"},
                            {"HostIp": "127.77.171.1", "HostPort": ""},
                        ],
                        "53/udp": [{"HostIp": "", "HostPort": "5353"}],
                        "81": None,
                    },
                    "PublishAllPorts": True,
                },
            },
        )
        assert status == 201, made
        request = registry.port_request(registry.get(made["Id"]))
        assert request.to_publish() == [
            HostBinding("tcp", 80, 8080, 8081),
            HostBinding("tcp", 80, 0, 0, "127.77.171.1"),
            HostBinding("udp", 53, 5353),
        ]  # -P adds nothing: nginx's 80/tcp and the 53/udp exposed are bound already
        response = await client.get(f"/v1.41/containers/{made['Id']}/json")
        shown = await response.json()
        assert shown["HostConfig"]["PortBindings"] == {
            "80/tcp": [
                {"HostIp": "", "HostPort": "8080-8081"},
                {"HostIp": "127.77.171.1", "HostPort": ""},
            ],
            "53/udp": [{"HostIp": "", "HostPort": "5353"}],
        }
        assert shown["HostConfig"]["PublishAllPorts"] is True
        assert shown["Config"]["ExposedPorts"] == {"53/udp": {}, "80/tcp": {}}
        assert shown["NetworkSettings"]["Ports"] == {}  # not running: nothing bound

    api(test)


def test_a_running_container_s_unbound_exposed_ports_are_shown_as_dockerd_does() -> None:
    """nginx without `-p`: `80/tcp` in `docker ps`, `"80/tcp": null` in inspect; both valid
    against the v1.41 spec."""

    async def test(client: TestClient[Any, Any], registry: StandaloneContainers) -> None:
        status, made = await create(client, {"Image": "nginx"})
        assert status == 201
        assert (await client.post(f"/v1.41/containers/{made['Id']}/start")).status == 204
        listed = await (await client.get("/v1.41/containers/json")).json()
        inspected = await (await client.get(f"/v1.41/containers/{made['Id']}/json")).json()
        assert listed[0]["Ports"] == [{"PrivatePort": 80, "Type": "tcp"}]
        assert inspected["NetworkSettings"]["Ports"] == {"80/tcp": None}
        assert inspected["HostConfig"]["PortBindings"] == {}
        if SPEC_PATH.exists():
            spec = Spec.load(SPEC_PATH)
            spec.validate_response("/containers/json", "GET", 200, listed)
            spec.validate_response("/containers/{id}/json", "GET", 200, inspected)
        await client.delete(f"/v1.41/containers/{made['Id']}", params={"force": "1"})

    api(test)


def test_publish_all_publishes_the_exposed_ports_on_ports_the_node_picks() -> None:
    request = PortRequest(
        bindings=(("80/tcp", (HostBinding("tcp", 80, 8080),)),),
        publish_all=True,
        exposed=("80/tcp", "443/tcp", "53/udp"),
    )
    assert request.to_publish() == [
        HostBinding("tcp", 80, 8080),
        HostBinding("tcp", 443),
        HostBinding("udp", 53),
    ]
    assert PortRequest(exposed=("80/tcp",)).to_publish() == []  # exposed only, without -P


@pytest.mark.parametrize(
    ("bindings", "message"),
    [
        ({"80/foo": [{"HostPort": "1"}]}, "invalid proto: foo"),
        ({"http/tcp": [{"HostPort": "1"}]}, "invalid containerPort: http"),
        ({"70000/tcp": [{"HostPort": "1"}]}, "invalid containerPort: 70000"),
        ({"80/tcp": [{"HostPort": "web"}]}, "invalid hostPort: web"),
        ({"80/tcp": [{"HostPort": "9000-8000"}]}, "invalid hostPort: 9000-8000"),
        ({"80/tcp": [{"HostIp": "nowhere", "HostPort": "1"}]}, "invalid IP address: nowhere"),
        ({"80/tcp": [{"HostIp": "::", "HostPort": "1"}]}, "publishes on IPv4 only"),
        ({"80/tcp": [{"HostIp": "::1", "HostPort": "1"}]}, "invalid HostIp ::1: a Swarmlab"),
        (
            {"80/tcp": [{"HostPort": 8080}]},
            "cannot unmarshal number into Go struct field PortBinding.HostConfig.PortBindings"
            ".HostPort of type string",
        ),
        ({"80/tcp": [{"HostIp": ["0.0.0.0"]}]}, "cannot unmarshal array into"),
        ({"80/tcp": {"HostPort": "1"}}, "must be a list of bindings"),
        ([["80/tcp", "1"]], "PortBindings must be an object"),
    ],
)
def test_bad_port_bindings_are_refused_naming_what_is_wrong(bindings: Any, message: str) -> None:
    async def test(client: TestClient[Any, Any], registry: StandaloneContainers) -> None:
        status, body = await create(
            client, {"Image": "nginx", "HostConfig": {"PortBindings": bindings}}
        )
        assert status == 400 and message in body["message"], body
        assert registry.containers() == []

    api(test)


def test_ports_in_host_mode_are_discarded_and_without_a_swarm_refused() -> None:
    async def test(client: TestClient[Any, Any], registry: StandaloneContainers) -> None:
        ports = {"80/tcp": [{"HostPort": "8080"}]}
        status, body = await create(
            client, {"Image": "nginx", "HostConfig": {"NetworkMode": "host", "PortBindings": ports}}
        )
        assert (status, body["Warnings"]) == (
            201,
            ["Published ports are discarded when using host network mode"],  # dockerd's
        )
        host_mode = body["Id"]
        assert (await client.post(f"/v1.41/containers/{host_mode}/start")).status == 204
        shown = await (await client.get(f"/v1.41/containers/{host_mode}/json")).json()
        assert shown["HostConfig"]["PortBindings"] == {
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}]
        }
        assert shown["NetworkSettings"]["Ports"] == {}  # kept as asked, published nowhere
        listed = await (await client.get("/v1.41/containers/json")).json()
        assert [c["Ports"] for c in listed] == [[]]
        status, body = await create(
            client,
            {"Image": "nginx", "HostConfig": {"NetworkMode": "host", "PublishAllPorts": True}},
        )
        assert (status, body["Warnings"]) == (201, [])  # dockerd warns of bindings only
        status, made = await create(
            client, {"Image": "nginx", "HostConfig": {"PortBindings": ports}}
        )
        assert status == 201
        response = await client.post(f"/v1.41/containers/{made['Id']}/start")
        assert response.status == 500
        assert "docker swarm init or join" in (await response.json())["message"]
        container = registry.get(made["Id"])
        # As dockerd leaves a failed start: created, with the exit code.
        assert (container.state.value, container.exit_code) == ("created", 128)

    api(test)


# ---- HostPorts for a container -------------------------------------------------------------

ENDPOINT = "gateway_0123456789ab (feed)"


async def answer(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    got = await reader.read()
    writer.close()
    return got


def serve_tcp(stack: Any, port: int) -> asyncio.Task[None]:
    listener = stack.listen(port)

    async def accept() -> None:
        while True:
            conn = await listener.accept()
            await conn.send(f"{stack.name} on {port}".encode())
            conn.close()

    return asyncio.get_running_loop().create_task(accept())


def test_a_container_s_range_and_host_ip_and_docker_s_refusals() -> None:
    async def scenario() -> None:
        ports = HostPorts(HOST)
        try:
            first = await ports.publish_endpoint(
                "c1", "web", ENDPOINT, [HostBinding("tcp", 80, 18180, 18181)]
            )
            second = await ports.publish_endpoint(
                "c2", "web2", ENDPOINT, [HostBinding("tcp", 80, 18180, 18181)]
            )
            assert [b.published_port for b in ports.bound("c1")] == [18180]
            assert [b.published_port for b in ports.bound("c2")] == [18181]
            servers = [serve_tcp(first, 80), serve_tcp(second, 80)]
            assert await answer(HOST, 18181) == b"web2 on 80"

            with pytest.raises(HostPortError) as refused:
                await ports.publish_endpoint(
                    "c3", "web3", ENDPOINT, [HostBinding("tcp", 80, 18180, 18181)]
                )
            assert str(refused.value) == (
                f"driver failed programming external connectivity on endpoint {ENDPOINT}: "
                "Bind for 0.0.0.0:18180-18181 failed: port is already allocated"
            )
            # The node's loopback is its address: another port for the allocator, the same
            # socket for the node, refused as the userland proxy's listen is under dockerd.
            with pytest.raises(HostPortError) as refused:
                await ports.publish_endpoint(
                    "c3", "web3", ENDPOINT, [HostBinding("tcp", 80, 18180, host_ip="127.0.0.1")]
                )
            assert str(refused.value).endswith(
                "Error starting userland proxy: listen tcp4 127.0.0.1:18180: bind: address "
                "already in use"
            )
            third = await ports.publish_endpoint(
                "c3", "web3", ENDPOINT, [HostBinding("tcp", 80, 18182, host_ip="127.0.0.1")]
            )
            servers.append(serve_tcp(third, 80))
            assert await answer(HOST, 18182) == b"web3 on 80"
            assert [b.shown_ip for b in ports.bound("c3")] == ["127.0.0.1"]  # as asked

            with pytest.raises(HostPortError) as refused:  # no address of this node
                await ports.publish_endpoint(
                    "c4", "web4", ENDPOINT, [HostBinding("tcp", 80, 18183, host_ip="10.9.9.9")]
                )
            assert str(refused.value).endswith(
                "Error starting userland proxy: listen tcp4 10.9.9.9:18183: bind: cannot "
                "assign requested address"
            )
            with pytest.raises(HostPortError, match=r"port 80/sctp: .* TCP and UDP only"):
                await ports.publish_endpoint("c4", "web4", ENDPOINT, [HostBinding("sctp", 80)])
            assert ports.owners() == {"c1", "c2", "c3"}

            ports.release("c2")
            with pytest.raises(ConnectionRefusedError):
                await answer(HOST, 18181)
            for server in servers:
                server.cancel()
        finally:
            ports.close()

    run(scenario)


def test_two_nodes_publish_the_same_loopback_port_each_on_its_own_address() -> None:
    """`-p 127.0.0.1:18184:80` on two emulated hosts: each listens on its own address (the
    machine's 127.0.0.1 is every node's), where they would collide on the shared loopback."""

    async def scenario() -> None:
        nodes = [HostPorts(HOST), HostPorts(OTHER)]
        try:
            servers = []
            for name, ports in zip(("one", "two"), nodes, strict=True):
                stack = await ports.publish_endpoint(
                    name, name, ENDPOINT, [HostBinding("tcp", 80, 18184, host_ip="127.0.0.1")]
                )
                servers.append(serve_tcp(stack, 80))
            assert await answer(HOST, 18184) == b"one on 80"
            assert await answer(OTHER, 18184) == b"two on 80"
            for server in servers:
                server.cancel()
        finally:
            for ports in nodes:
                ports.close()

    run(scenario)


def test_node_datapath_publishes_a_container_s_ports_at_attach_until_released() -> None:
    async def scenario() -> None:
        datapath = NodeDataPath(
            NodeView("n1", "127.77.171.3"), FakeGossip(), upstreams=[], publish_address=HOST
        )
        await datapath.start()
        try:
            datapath.expect_ports("c1", "web", ENDPOINT, [HostBinding("tcp", 80, 18182)])
            [stack] = await datapath.attach("web", [])  # on no overlay: the gwbridge only
            assert stack.ip == "172.18.0.3"  # .2 is the ingress sandbox's, as dockerd's
            sandbox = datapath.gateway_endpoint("ingress-sbox")
            assert sandbox is not None and sandbox.ip == "172.18.0.2"
            server = serve_tcp(stack, 80)
            datapath.assignments({}, {})  # the agent's tasks changed: the container's stay
            assert await answer(HOST, 18182) == b"web on 80"
            assert [b.published_port for b in datapath.published_ports("c1")] == [18182]
            datapath.release_ports("c1")
            assert datapath.published_ports("c1") == []
            with pytest.raises(ConnectionRefusedError):
                await answer(HOST, 18182)
            assert await datapath.attach("web", []) == []  # forgotten: nothing published again
            server.cancel()
        finally:
            datapath.stop()

    run(scenario)
