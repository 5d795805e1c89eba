"""Engine API requests a user can get wrong: numbers out of their protobuf field's range and
"digits" that `int()` refuses ('²' passes `str.isdigit()`). Each is a 400 naming what was
wrong, never a 500 "internal error", and nothing is written."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controlplane.agent.runtime import Runtime
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api import containers, create_app
from controlplane.api.common import by_id_prefix
from controlplane.api.errors import ApiError
from controlplane.api.local import LocalBackend
from controlplane.manager import cluster as clusters
from tests.unit.swarm_fixture import seed

HOST = "127.77.226.1"
Client = TestClient[Any, Any]
NODE_ID = "node100000000000000000000"
TOO_BIG = 2**70


def serve(test: Callable[[Client, LocalBackend], Awaitable[None]]) -> None:
    async def main() -> None:
        backend = LocalBackend()
        await seed(backend, nodes=1)
        registry = StandaloneContainers(Runtime())
        app = containers.register(create_app(backend), registry)
        try:
            async with TestClient(TestServer(app, host=HOST)) as client:
                await test(client, backend)
        finally:
            await registry.close()

    asyncio.run(main())


async def refused(response: Any, *words: str) -> str:
    """The 400's message, which names what was wrong."""
    body = await response.json()
    assert response.status == 400, body
    for word in words:
        assert word in body["message"], body["message"]
    return str(body["message"])


def cluster_version(backend: LocalBackend) -> int:
    cluster = clusters.the_cluster(backend.store)
    assert cluster is not None
    return cluster.meta.version.index


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"Raft": {"SnapshotInterval": TOO_BIG}}, "Raft.SnapshotInterval"),
        ({"Raft": {"SnapshotInterval": -1}}, "Raft.SnapshotInterval"),
        ({"Raft": {"SnapshotInterval": "10000"}}, "Raft.SnapshotInterval"),
        ({"Dispatcher": {"HeartbeatPeriod": TOO_BIG}}, "Dispatcher.HeartbeatPeriod"),
        ({"Orchestration": {"TaskHistoryRetentionLimit": TOO_BIG}}, "TaskHistoryRetentionLimit"),
        ({"Orchestration": {"TaskHistoryRetentionLimit": -TOO_BIG}}, "TaskHistoryRetentionLimit"),
        ({"CAConfig": {"NodeCertExpiry": TOO_BIG}}, "CAConfig.NodeCertExpiry"),
    ],
)
def test_swarm_update_refuses_numbers_its_fields_cannot_hold(
    spec: dict[str, Any], named: str
) -> None:
    async def t(client: Client, backend: LocalBackend) -> None:
        before = cluster_version(backend)
        response = await client.post(f"/v1.41/swarm/update?version={before}", json=spec)
        await refused(response, named)
        assert cluster_version(backend) == before

    serve(t)


@pytest.mark.parametrize("version", ["²", str(2**64), "-1", ""])
def test_swarm_update_refuses_a_version_that_is_not_a_uint64(version: str) -> None:
    async def t(client: Client, backend: LocalBackend) -> None:
        before = cluster_version(backend)
        response = await client.post("/v1.41/swarm/update", params={"version": version}, json={})
        await refused(response, "invalid swarm version")
        assert cluster_version(backend) == before

    serve(t)


def test_swarm_update_still_takes_a_snapshot_interval() -> None:
    async def t(client: Client, backend: LocalBackend) -> None:
        version = cluster_version(backend)
        spec = {"Raft": {"SnapshotInterval": 5000}, "Dispatcher": {"HeartbeatPeriod": 10**9}}
        response = await client.post(f"/v1.41/swarm/update?version={version}", json=spec)
        assert response.status == 200, await response.text()
        cluster = clusters.the_cluster(backend.store)
        assert cluster is not None
        assert cluster.spec.raft.snapshot_interval == 5000
        assert cluster.spec.dispatcher_heartbeat_period_ns == 10**9

    serve(t)


def test_node_and_secret_updates_refuse_a_superscript_version() -> None:
    async def t(client: Client, backend: LocalBackend) -> None:
        response = await client.post(
            f"/v1.41/nodes/{NODE_ID}/update", params={"version": "²"}, json={"Role": "worker"}
        )
        await refused(response, "invalid node version")
        created = await client.post("/v1.41/secrets/create", json={"Name": "s", "Data": "c2VjcmV0"})
        assert created.status == 201, await created.text()
        secret = (await created.json())["ID"]
        response = await client.post(
            f"/v1.41/secrets/{secret}/update", params={"version": "²"}, json={"Name": "s"}
        )
        await refused(response, "invalid secret version")

    serve(t)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"ExposedPorts": {"²/tcp": {}}}, "invalid containerPort"),
        (
            {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "8²"}]}}},
            "invalid hostPort",
        ),
        (
            {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "80-8²"}]}}},
            "invalid hostPort",
        ),
    ],
)
def test_container_create_refuses_superscript_ports(body: dict[str, Any], named: str) -> None:
    async def t(client: Client, backend: LocalBackend) -> None:
        response = await client.post(
            "/v1.41/containers/create", json={"Image": "busybox", "Cmd": ["true"], **body}
        )
        await refused(response, named)
        listed = await client.get("/v1.41/containers/json", params={"all": "1"})
        assert await listed.json() == []

    serve(t)


@dataclass
class Named:
    id: str


def test_an_id_prefix_resolves_one_object_and_refuses_several_or_none() -> None:
    objects = [Named("abc123"), Named("abd456"), Named("xyz789")]
    assert by_id_prefix(objects, "abc", "service") == Named("abc123")
    with pytest.raises(ApiError) as several:
        by_id_prefix(objects, "ab", "task")
    assert (several.value.status, several.value.message) == (
        400,
        "task ab is ambiguous (2 matches found)",
    )
    for ref in ("q", ""):
        with pytest.raises(ApiError) as none:
            by_id_prefix(objects, ref, "secret")
        assert (none.value.status, none.value.message) == (404, f"secret {ref} not found")


@pytest.mark.parametrize("path", ["services", "tasks", "secrets", "configs"])
def test_an_unknown_reference_is_dockers_404(path: str) -> None:
    async def t(client: Client, backend: LocalBackend) -> None:
        response = await client.get(f"/v1.41/{path}/nosuch")
        body = await response.json()
        assert response.status == 404, body
        assert body["message"] == f"{path[:-1]} nosuch not found"

    serve(t)


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"[" * 5000 + b"]" * 5000, "invalid JSON in the request body: nested too deeply"),
        (b'["Name", "n"]', "invalid JSON in the request body: expected an object, got list"),
        (b'"n"', "expected an object, got str"),
        (b'{"Name": "n"', "invalid JSON in the request body: Expecting"),
        (b'{"Name": "\xff"}', "invalid JSON in the request body: 'utf-8' codec"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(raw: bytes, said: str) -> None:
    async def t(client: Client, backend: LocalBackend) -> None:
        response = await client.post(
            "/v1.41/networks/create", data=raw, headers={"Content-Type": "application/json"}
        )
        await refused(response, said)
        listed = await client.get("/v1.41/networks")
        assert [n["Name"] for n in await listed.json()] == ["ingress"]

    serve(t)


@pytest.mark.parametrize(
    ("filters", "said"),
    [
        ("[" * 1200 + "]" * 1200, "invalid JSON in the filters: nested too deeply"),
        ('{"name": "web"}', "values of 'name' must be a map"),
        ('["name"]', "expected a JSON object"),
        ('{"name": {"web": true}', "invalid filters"),
        ('{"colour": {"red": true}}', "Invalid filter 'colour'"),
    ],
)
def test_malformed_filters_are_a_400(filters: str, said: str) -> None:
    async def t(client: Client, backend: LocalBackend) -> None:
        await refused(await client.get("/v1.41/networks", params={"filters": filters}), said)

    serve(t)


@pytest.mark.parametrize(
    ("method", "path", "status", "said"),
    [
        ("GET", "/nosuch", 404, "page not found: Swarmlab does not emulate GET /nosuch"),
        ("GET", "/v1.41/nosuch", 404, "page not found: Swarmlab does not emulate GET /nosuch"),
        ("PUT", "/v1.41/_ping", 404, "page not found: Swarmlab does not emulate PUT /_ping"),
        ("GET", "/v1.99/_ping", 400, "client version 1.99 is too new. Maximum supported"),
        ("GET", "/v1.11/_ping", 400, "client version 1.11 is too old. Minimum supported"),
    ],
)
def test_unknown_routes_and_versions_answer_in_json(
    method: str, path: str, status: int, said: str
) -> None:
    async def t(client: Client, backend: LocalBackend) -> None:
        response = await client.request(method, path)
        assert response.status == status
        assert said in (await response.json())["message"]

    serve(t)


def test_a_body_over_the_size_limit_is_a_413_in_json() -> None:
    async def t(client: Client, backend: LocalBackend) -> None:
        response = await client.post(
            "/v1.41/networks/create",
            data=b" " * (17 * 1024 * 1024),
            headers={"Content-Type": "application/json"},
        )
        assert response.status == 413
        assert "Maximum request body size" in (await response.json())["message"]

    serve(t)
