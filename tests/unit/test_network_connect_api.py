"""`POST /networks/{id}/connect` answering as a real dockerd 20.10 swarm node did for the same
docker CLI commands (side by side): a container already on the network is a 409 `C is
already attached to network N`, a network the managers do not know the whole 500 `Could not
attach to network N: rpc error: code = NotFound ...`."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from aiohttp.test_utils import TestClient, TestServer

from controlplane.agent.network_attach import NetworkAttachError
from controlplane.agent.runtime import Runtime
from controlplane.agent.standalone import StandaloneContainers, Swarm
from controlplane.api import containers, create_app
from controlplane.api.local import LocalBackend
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.dispatcher_pb2 import AttachNetworkResponse
from controlplane.pb.objects_pb2 import Network

UNKNOWN = (
    "Could not attach to network nonet: rpc error: code = NotFound desc = network nonet not found"
)


class ManagersWithoutTheNetwork:
    """The managers' answer to a network no one created; `asked` what they were asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []  # (network, address asked for)

    async def attach(
        self, container_id: str, name: str, target: str, aliases: list[str], ipv4: str = ""
    ) -> AttachNetworkResponse:
        self.asked.append((target, ipv4))
        raise NetworkAttachError(UNKNOWN, grpc.StatusCode.NOT_FOUND)

    async def detach(self, attachment_id: str) -> bool:
        raise AssertionError("nothing was attached")


class NoEndpoints:
    """A node none of whose containers is on a swarm network."""

    def container_attached(self, key: str, network: Network, record: EndpointRecord) -> None:
        raise AssertionError("nothing was attached")

    def container_detached(self, key: str) -> None:
        raise AssertionError("nothing was attached")

    def networks(self) -> list[Network]:
        return []


async def connect(client: TestClient[Any, Any], network: str, container: str, ip: str = "") -> Any:
    config = {"IPAMConfig": {"IPv4Address": ip}} if ip else None
    response = await client.post(
        f"/v1.41/networks/{network}/connect",
        json={"Container": container, "EndpointConfig": config},
    )
    return response.status, await response.json() if response.status != 200 else None


def test_connect_errors_in_dockerds_words_and_statuses() -> None:
    async def main() -> None:
        registry = StandaloneContainers(Runtime())
        managers = ManagersWithoutTheNetwork()
        registry.swarm = Swarm("node1", managers, NoEndpoints())
        app = containers.register(create_app(LocalBackend()), registry)
        async with TestClient(TestServer(app)) as client:
            created = await client.post(
                "/v1.41/containers/create",
                json={"Image": "busybox", "Cmd": ["sleep", "1000"]},
                params={"name": "c1"},
            )
            assert created.status == 201
            # Not running: the network is only noted for its start, then noted twice.
            assert await connect(client, "my-net", "c1") == (200, None)
            assert await connect(client, "my-net", "c1") == (
                409,
                {"message": "c1 is already attached to network my-net"},
            )
            assert (await client.post("/v1.41/containers/create", params={"name": "c2"}, json={
                "Image": "busybox", "Cmd": ["sleep", "1000"]})).status == 201  # fmt: skip
            assert (await client.post("/v1.41/containers/c2/start")).status == 204
            assert await connect(client, "nonet", "c2", ip="10.0.1.77") == (
                500,
                {"message": UNKNOWN},
            )
            assert managers.asked == [("nonet", "10.0.1.77")]  # `--ip` reaches the managers
            disconnected = await client.post(
                "/v1.41/networks/nonet/disconnect", json={"Container": "c2"}
            )
            assert (disconnected.status, await disconnected.json()) == (
                404,
                {"message": "network nonet not found"},
            )
            assert await connect(client, "nonet", "c2", ip="bogus") == (
                400,
                {"message": "invalid IPv4 address: bogus"},
            )
            bad_ip = await client.post(
                "/v1.41/containers/create",
                json={
                    "Image": "busybox",
                    "NetworkingConfig": {
                        "EndpointsConfig": {"my-net": {"IPAMConfig": {"IPv4Address": "bogus"}}}
                    },
                },
            )
            assert (bad_ip.status, await bad_ip.json()) == (
                400,
                {"message": "invalid IPv4 address: bogus"},
            )
        await registry.close()

    asyncio.run(main())


def test_an_address_without_a_swarm_network_fails_the_start_as_in_dockerd() -> None:
    """Side by side: `docker run --network none --ip X` is created, its start refused (400)
    in dockerd's words, the container left created with exit code 128."""

    async def main() -> None:
        registry = StandaloneContainers(Runtime())
        app = containers.register(create_app(LocalBackend()), registry)
        async with TestClient(TestServer(app)) as client:
            endpoints = {"none": {"IPAMConfig": {"IPv4Address": "10.0.1.50"}}}
            created = await client.post(
                "/v1.41/containers/create",
                json={
                    "Image": "busybox",
                    "Cmd": ["sleep", "1000"],
                    "HostConfig": {"NetworkMode": "none"},
                    "NetworkingConfig": {"EndpointsConfig": endpoints},
                },
            )
            assert created.status == 201
            cid = (await created.json())["Id"]
            started = await client.post(f"/v1.41/containers/{cid}/start")
            words = "user specified IP address is supported on user defined networks only"
            assert (started.status, await started.json()) == (400, {"message": words})
            state = (await (await client.get(f"/v1.41/containers/{cid}/json")).json())["State"]
            assert (state["Status"], state["ExitCode"], state["Error"]) == ("created", 128, words)
        await registry.close()

    asyncio.run(main())
