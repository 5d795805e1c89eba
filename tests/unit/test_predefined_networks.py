"""The node's local networks (`api/predefined_networks.py`) through `/networks`, beside the
swarm's: listed, filtered and inspected as dockerd shows them, refused at removal; and the
`network connect` refusals of `host` and `none` modes (`agent/standalone.py`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controlplane.agent.local_network_ids import LocalNetworkIds
from controlplane.agent.network_modes import (
    HOST_MODE_REFUSAL,
    SHARED_NAMESPACE_REFUSAL,
    local_mode_refusal,
)
from controlplane.api import create_app
from controlplane.api.local import LocalBackend
from controlplane.api.networks import NODE_NETWORKS
from controlplane.api.predefined_networks import local_networks
from tests.unit.swarm_fixture import seed
from tests.unit.test_api import spec

IDS = LocalNetworkIds()


def run(
    *, kernel: bool, test: Callable[[TestClient[Any, Any]], Awaitable[None]], swarm: bool = True
) -> None:
    async def main() -> None:
        backend = LocalBackend()
        await seed(backend, nodes=1, ingress=True)
        app = create_app(backend)
        app[NODE_NETWORKS] = lambda: local_networks(swarm=swarm, kernel=kernel, ids=IDS)
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(main())


async def names(client: TestClient[Any, Any], **filters: str) -> list[str]:
    query = {"filters": json.dumps({k: {v: True} for k, v in filters.items()})}
    resp = await client.get("/v1.41/networks", params=query if filters else None)
    body = await resp.json()
    assert resp.status == 200, body
    spec().validate_response("/networks", "get", 200, body)
    return sorted(n["Name"] for n in body)


def test_which_local_networks_a_node_has() -> None:
    def named(**kw: bool) -> list[str]:
        return [n.name for n in local_networks(ids=IDS, **kw)]

    assert named(swarm=False, kernel=False) == ["bridge", "host", "none"]  # docker0, emulated
    assert named(swarm=True, kernel=False) == ["bridge", "docker_gwbridge", "host", "none"]
    assert named(swarm=False, kernel=True) == ["host", "none"]  # swdocker0 comes with a swarm
    assert named(swarm=True, kernel=True) == ["bridge", "docker_gwbridge", "host", "none"]
    userspace = local_networks(swarm=False, kernel=False, ids=IDS)[0]
    assert userspace.options["com.docker.network.bridge.name"] == "docker0"


def test_list_and_filters_as_dockerd() -> None:
    async def t(client: TestClient[Any, Any]) -> None:
        assert await names(client) == ["bridge", "docker_gwbridge", "host", "ingress", "none"]
        assert await names(client, driver="bridge") == ["bridge", "docker_gwbridge"]
        assert await names(client, driver="host") == ["host"]
        assert await names(client, scope="local") == ["bridge", "docker_gwbridge", "host", "none"]
        assert await names(client, scope="swarm") == ["ingress"]
        assert await names(client, type="builtin") == ["bridge", "host", "none"]
        assert await names(client, type="custom") == ["docker_gwbridge", "ingress"]
        assert await names(client, driver="null") == ["none"]
        assert await names(client, name="gw") == ["docker_gwbridge"]
        dangling = await names(client, dangling="true")
        assert not {"bridge", "docker_gwbridge", "none"} & set(dangling)
        assert "none" in await names(client, dangling="false")
        assert await names(client, label="a") == []
        resp = await client.get(
            "/v1.41/networks", params={"filters": json.dumps({"type": {"bogus": True}})}
        )
        assert (resp.status, (await resp.json())["message"]) == (
            400,
            "invalid filter: 'type'='bogus'",
        )

    run(kernel=True, test=t)


def test_inspect_as_dockerd() -> None:
    async def t(client: TestClient[Any, Any]) -> None:
        bridge_id = IDS.id("bridge")
        for ref in ("bridge", bridge_id, bridge_id[:12]):
            resp = await client.get(f"/v1.41/networks/{ref}")
            body = await resp.json()
            assert resp.status == 200, (ref, body)
            spec().validate_response("/networks/{id}", "get", 200, body)
            assert body["Id"] == bridge_id and body["Scope"] == "local"
            assert body["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]
            assert body["Options"]["com.docker.network.bridge.default_bridge"] == "true"
        none = await (await client.get("/v1.41/networks/none")).json()
        assert none["Driver"] == "null" and none["IPAM"]["Config"] == [] and none["Options"] == {}
        assert (await client.get("/v1.41/networks/none?scope=local")).status == 200
        assert (await client.get("/v1.41/networks/none?scope=swarm")).status == 404
        assert (await client.get("/v1.41/networks/ingress?scope=local")).status == 404
        host = await (await client.get("/v1.41/networks/host")).json()
        spec().validate_response("/networks/{id}", "get", 200, host)
        assert host == {  # dockerd 20.10's, but for the id and time
            "Name": "host",
            "Id": IDS.id("host"),
            "Created": host["Created"],
            "Scope": "local",
            "Driver": "host",
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": []},
            "Internal": False,
            "Attachable": False,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": {},
            "Options": {},
            "Labels": {},
        }
        resp = await client.get("/v1.41/networks/hostile")
        assert (resp.status, (await resp.json())["message"]) == (404, "network hostile not found")

    run(kernel=True, test=t)


@pytest.mark.parametrize("name", ["bridge", "host", "none"])
def test_predefined_networks_cannot_be_removed(name: str) -> None:
    async def t(client: TestClient[Any, Any]) -> None:
        resp = await client.delete(f"/v1.41/networks/{name}")
        assert (resp.status, await resp.json()) == (
            403,
            {"message": f"{name} is a pre-defined network and cannot be removed"},
        )
        resp = await client.delete("/v1.41/networks/docker_gwbridge")
        assert resp.status == 403
        assert "keeps it while the node is in a swarm" in (await resp.json())["message"]

    run(kernel=False, test=t)


def test_connect_refusals_of_host_and_none_modes_in_dockerds_words() -> None:
    assert local_mode_refusal("default", "host") == HOST_MODE_REFUSAL
    assert local_mode_refusal("none", "host") == HOST_MODE_REFUSAL  # host first, as dockerd
    assert local_mode_refusal("host", "host") is None  # on it already (the caller says so)
    for target in ("my-overlay", "bridge", "none"):
        assert local_mode_refusal("host", target) == SHARED_NAMESPACE_REFUSAL
    for mode, target in (("none", "bridge"), ("default", "none"), ("none", "my-overlay")):
        refusal = local_mode_refusal(mode, target)
        assert refusal is not None and refusal.endswith("in private (none) mode")
    assert local_mode_refusal("default", "my-overlay") is None


def test_a_missing_local_network_says_why() -> None:
    """A node out of a swarm has no docker_gwbridge: its 404 says when it has one."""

    async def t(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/v1.41/networks/docker_gwbridge", params={"scope": "local"})
        assert (resp.status, (await resp.json())["message"]) == (
            404,
            "network docker_gwbridge not found: this node has a docker_gwbridge only while it "
            "is in a swarm",
        )
        resp = await client.get("/v1.41/networks/ghost", params={"scope": "swarm"})
        assert (await resp.json())["message"] == "network ghost not found"

    run(kernel=False, test=t, swarm=False)
