"""`/containers` and `/images` over a standalone registry (no swarm, or a scripted one): the
lifecycle the CLI drives, Docker's errors for bad bodies, unknown images, name conflicts and a
network the managers refuse, and the output framing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controlplane.agent.network_attach import NetworkAttachError
from controlplane.agent.runtime import Runtime
from controlplane.agent.standalone import StandaloneContainers, Swarm
from controlplane.api import containers, create_app
from controlplane.api.local import LocalBackend
from controlplane.api.logs import unframe
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.dispatcher_pb2 import AttachNetworkResponse
from controlplane.pb.objects_pb2 import Network

REFUSAL = (
    "Could not attach to network noattach: rpc error: code = PermissionDenied desc = "
    "network noattach not manually attachable"
)


class RefusingManagers:
    """The managers' answer to a non-attachable network."""

    async def attach(
        self, container_id: str, name: str, target: str, aliases: list[str], ipv4: str = ""
    ) -> AttachNetworkResponse:
        raise NetworkAttachError(REFUSAL)

    async def detach(self, attachment_id: str) -> bool:
        raise AssertionError("nothing was attached")


class NoEndpoints:
    def container_attached(self, key: str, network: Network, record: EndpointRecord) -> None:
        raise AssertionError("nothing was attached")

    def container_detached(self, key: str) -> None:
        raise AssertionError("nothing was attached")


Test = Callable[[TestClient[Any, Any]], Awaitable[None]]


def run(test: Test) -> None:
    """`test` against a fresh engine without a swarm, in its own event loop."""

    async def main() -> None:
        app = containers.register(create_app(LocalBackend()), StandaloneContainers(Runtime()))
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(main())


async def create(c: TestClient[Any, Any], body: dict[str, Any], name: str = "") -> Any:
    response = await c.post("/v1.41/containers/create", json=body, params={"name": name})
    return response.status, await response.json()


def test_run_wait_logs_and_remove() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        script = {"Image": "busybox", "Cmd": ["sh", "-c", "echo hi; exit 3"]}
        status, body = await create(client, script)
        assert status == 201
        cid = body["Id"]
        assert (await client.post(f"/containers/{cid}/start")).status == 204
        waited = await client.post(f"/containers/{cid}/wait", params={"condition": "next-exit"})
        assert await waited.json() == {"Error": None, "StatusCode": 3}
        # dockerd 20.10 reads a condition it does not know as not-running: answered at once
        bogus = await client.post(f"/containers/{cid}/wait", params={"condition": "bogus"})
        assert (bogus.status, await bogus.json()) == (200, {"Error": None, "StatusCode": 3})
        logs = await client.get(f"/containers/{cid}/logs", params={"stdout": "1", "stderr": "1"})
        assert unframe(await logs.read()) == [(1, b"hi\n")]
        listed = await (await client.get("/containers/json", params={"all": "1"})).json()
        assert [(c["Id"], c["State"], c["Status"].split(" ")[:2]) for c in listed] == [
            (cid, "exited", ["Exited", "(3)"])
        ]
        assert await (await client.get("/containers/json")).json() == []
        assert (await client.delete(f"/containers/{cid}")).status == 204
        gone = await client.get(f"/containers/{cid}/json")
        assert (gone.status, await gone.json()) == (404, {"message": f"No such container: {cid}"})

    run(test)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "Config cannot be empty in order to create a container"),
        ({"Image": "nosuch"}, 404, "No such image: nosuch:latest"),
        ({"Image": "busybox", "Env": [1]}, 400, "Env must be a list of strings, got [1]"),
        ({"Image": "busybox", "HostConfig": {"NetworkMode": "my-net"}}, 404, "network my-net"),
        ({"Image": "busybox", "Healthcheck": {"Test": ["CMD", "true"], "Retries": -2}}, 400,
         "Retries in Healthcheck cannot be negative"),
    ],
)  # fmt: skip
def test_bad_creates(body: dict[str, Any], status: int, message: str) -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        got_status, got = await create(client, body)
        assert got_status == status
        assert got["message"].startswith(message)

    run(test)


def test_name_conflict_and_bad_name() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        _, first = await create(client, {"Image": "nginx"}, name="web")
        status, body = await create(client, {"Image": "busybox"}, name="web")
        assert (status, body["message"]) == (
            409,
            f'Conflict. The container name "/web" is already in use by container "{first["Id"]}". '
            "You have to remove (or rename) that container to be able to reuse that name.",
        )
        status, body = await create(client, {"Image": "busybox"}, name="-bad name")
        assert (status, body["message"]) == (
            400,
            "Invalid container name (-bad name), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
        )

    run(test)


def test_a_refused_network_fails_the_start_and_exits_128() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        registry = client.app[containers.CONTAINERS]
        registry.swarm = Swarm("node1", RefusingManagers(), NoEndpoints())
        host = {"NetworkMode": "noattach", "AutoRemove": True}
        _, body = await create(client, {"Image": "busybox", "Cmd": ["true"], "HostConfig": host})
        cid = body["Id"]
        removed = {"condition": "removed"}
        waited = await client.post(f"/containers/{cid}/wait", params=removed)  # headers only
        started = await client.post(f"/containers/{cid}/start")
        assert (started.status, await started.json()) == (500, {"message": REFUSAL})
        assert await waited.json() == {"Error": None, "StatusCode": 128}
        assert registry.containers() == []  # --rm removed it

    run(test)


def test_stop_kill_and_not_running() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        sleeper = {"Image": "busybox", "Cmd": ["sleep", "1000"]}
        _, body = await create(client, sleeper, name="sleeper")
        assert (await client.post("/containers/sleeper/start")).status == 204
        assert (await client.post("/containers/sleeper/start")).status == 304
        assert (await client.post("/containers/sleeper/kill")).status == 204
        inspected = await (await client.get("/containers/sleeper/json")).json()
        assert (inspected["State"]["Status"], inspected["State"]["ExitCode"]) == ("exited", 137)
        again = await client.post("/containers/sleeper/kill")
        assert (again.status, (await again.json())["message"]) == (
            409,
            f"Cannot kill container: sleeper: Container {body['Id']} is not running",
        )
        assert (await client.post("/containers/sleeper/stop")).status == 304
        bad = await client.post("/containers/sleeper/stop", params={"t": "soon"})
        assert bad.status == 400

    run(test)


def test_images() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        images = await (await client.get("/images/json")).json()
        assert "busybox:latest" in [tag for image in images for tag in image["RepoTags"]]
        busybox = {"fromImage": "busybox", "tag": "latest"}
        pulled = await client.post("/images/create", params=busybox)
        assert pulled.status == 200
        assert "Status: Image is up to date for busybox:latest" in await pulled.text()
        nosuch = {"fromImage": "nosuch", "tag": "latest"}
        refused = await client.post("/images/create", params=nosuch)
        assert (refused.status, (await refused.json())["message"]) == (
            404,
            "pull access denied for nosuch, repository does not exist or may require 'docker "
            "login': denied: requested access to the resource is denied",
        )

    run(test)


def test_inspect_has_the_fields_dockerd_shows_for_settings_never_set() -> None:
    """Side by side with a real dockerd 20.10 (a raw create body, raw `docker inspect`): the
    fields of settings an emulated container never has are there, zero (the lists the body
    left out null, as dockerd shows them; the CLI sends them empty)."""

    async def test(client: TestClient[Any, Any]) -> None:
        _, body = await create(client, {"Image": "busybox", "Cmd": ["sleep", "1000"]})
        inspected = await (await client.get(f"/containers/{body['Id']}/json")).json()
        host = inspected["HostConfig"]
        assert {"CapAdd", "Dns", "Devices", "Ulimits", "CpuShares", "PidsLimit"} <= set(host)
        assert host["LogConfig"] == {"Type": "json-file", "Config": {}}
        assert (host["Privileged"], host["Dns"], host["CpuQuota"]) == (False, None, 0)
        assert {"Domainname", "User", "WorkingDir", "StdinOnce"} <= set(inspected["Config"])
        settings = inspected["NetworkSettings"]
        assert (settings["SandboxID"], settings["IPAddress"], settings["Gateway"]) == ("", "", "")
        assert inspected["AppArmorProfile"] == ""

    run(test)


def test_a_host_mode_container_is_in_the_hosts_sandbox_until_it_leaves_host() -> None:
    """dockerd 20.10: a host-mode container's SandboxKey is the host's namespace
    (`/var/run/docker/netns/default`, running or not); `network disconnect host` of a stopped
    one empties its Networks, keeps its NetworkMode and that SandboxKey."""

    async def test(client: TestClient[Any, Any]) -> None:
        config = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "host"}}
        _, body = await create(client, config)

        async def settings() -> Any:
            inspected = await (await client.get(f"/containers/{body['Id']}/json")).json()
            assert inspected["HostConfig"]["NetworkMode"] == "host"
            return inspected["NetworkSettings"]

        shown = await settings()
        assert shown["SandboxKey"] == "/var/run/docker/netns/default"
        assert list(shown["Networks"]) == ["host"]
        left = await client.post("/v1.41/networks/host/disconnect", json={"Container": body["Id"]})
        assert left.status == 200, await left.text()
        shown = await settings()
        assert (shown["SandboxKey"], shown["Networks"]) == ("/var/run/docker/netns/default", {})
        again = await client.post("/v1.41/networks/host/disconnect", json={"Container": body["Id"]})
        assert (again.status, (await again.json())["message"]) == (
            500,  # dockerd's status for it
            f"container {body['Id']} is not connected to the network host",
        )
        _, plain = await create(client, {"Image": "busybox", "Cmd": ["true"]})
        inspected = await (await client.get(f"/containers/{plain['Id']}/json")).json()
        assert inspected["NetworkSettings"]["SandboxKey"] == ""  # no sandbox before a start

    run(test)
