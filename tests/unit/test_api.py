"""Engine API: system endpoints and the network lifecycle, every response checked against the
v1.41 spec. Runs the app in aiohttp's test server inside asyncio.run (no pytest plugin)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controlplane.api import create_app
from controlplane.api.errors import NOT_A_MANAGER_MESSAGE
from controlplane.api.local import LocalBackend
from controlplane.api.spec import SPEC_PATH, Spec
from controlplane.pb.objects_pb2 import Network, Node, Service
from controlplane.raft.errors import NO_LEADER_MESSAGE
from controlplane.store import StoreError, Transaction

_spec: Spec | None = None


def spec() -> Spec:
    global _spec
    if _spec is None:
        if not SPEC_PATH.exists():
            pytest.skip(f"the Engine API spec is not at {SPEC_PATH}")
        _spec = Spec.load(SPEC_PATH)
    return _spec


class Api:
    """A test client that validates every response against the spec."""

    def __init__(self, client: TestClient[Any, Any], backend: LocalBackend) -> None:
        self.client = client
        self.backend = backend

    async def call(
        self,
        method: str,
        url: str,
        template: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        resp = await self.client.request(method, url, data=data, params=params, headers=headers)
        text = await resp.read()
        payload = json.loads(text) if text and resp.content_type == "application/json" else None
        assert resp.headers["Api-Version"] == "1.41"
        spec().validate_response(template, method, resp.status, payload)
        return resp.status, payload


def run(test: Callable[[Api], Awaitable[None]], backend: LocalBackend | None = None) -> None:
    async def main() -> None:
        b = backend or LocalBackend()
        async with TestClient(TestServer(create_app(b))) as client:
            await test(Api(client, b))

    asyncio.run(main())


# ---- system -----------------------------------------------------------------------------


def test_ping_headers_get_and_head() -> None:
    async def t(api: Api) -> None:
        for method in ("GET", "HEAD"):
            resp = await api.client.request(method, "/_ping")
            assert resp.status == 200
            h = resp.headers
            assert h["Api-Version"] == "1.41"
            assert h["Docker-Experimental"] == "false"
            assert h["Ostype"] == "linux"
            assert h["Swarm"] == "active/manager"
            assert h["Cache-Control"] == "no-cache, no-store, must-revalidate"
            assert h["Pragma"] == "no-cache"
            assert h["Content-Type"].startswith("text/plain")
            if method == "GET":
                assert await resp.text() == "OK"
        resp = await api.client.get("/v1.24/_ping")
        assert resp.status == 200

    run(t)


def test_version_negotiation() -> None:
    async def t(api: Api) -> None:
        for url in ("/version", "/v1.41/version", "/v1.40/version"):
            status, body = await api.call("GET", url, "/version")
            assert status == 200
            assert body["ApiVersion"] == "1.41" and body["MinAPIVersion"] == "1.12"
            assert body["Components"][0]["Name"] == "Engine"
        status, body = await api.call("GET", "/v1.50/version", "/version")
        assert status == 400
        assert body["message"] == (
            "client version 1.50 is too new. Maximum supported API version is 1.41"
        )
        resp = await api.client.get("/v1.11/version")
        assert resp.status == 400
        assert "too old" in (await resp.json())["message"]
        resp = await api.client.get("/v1.41/nothing-here")
        assert resp.status == 404
        assert await resp.json() == {
            "message": "page not found: Swarmlab does not emulate GET /nothing-here"
        }

    run(t)


def test_info_swarm_section() -> None:
    async def t(api: Api) -> None:
        status, body = await api.call("GET", "/v1.41/info", "/info")
        assert status == 200
        swarm = body["Swarm"]
        assert swarm["NodeID"] == "localnode0000000000000000"
        assert swarm["NodeAddr"] == "127.0.0.1"
        assert swarm["LocalNodeState"] == "active"
        assert swarm["ControlAvailable"] is True
        assert swarm["Error"] == ""
        assert swarm["RemoteManagers"] == [
            {"NodeID": "localnode0000000000000000", "Addr": "127.0.0.1:2377"}
        ]
        assert swarm["Nodes"] == 1 and swarm["Managers"] == 1
        cluster = swarm["Cluster"]
        assert cluster["ID"] == "localcluster0000000000000"
        assert cluster["DefaultAddrPool"] is None  # real 20.10 without --default-addr-pool
        assert cluster["SubnetSize"] == 24 and cluster["DataPathPort"] == 4789
        assert cluster["Spec"]["Raft"]["ElectionTick"] == 10

    run(t)


def test_info_on_a_worker_has_no_cluster() -> None:
    backend = LocalBackend()
    backend.set_role("worker")

    async def t(api: Api) -> None:
        status, body = await api.call("GET", "/info", "/info")
        assert status == 200
        assert body["Swarm"]["ControlAvailable"] is False
        assert "Cluster" not in body["Swarm"]
        resp = await api.client.head("/_ping")
        assert resp.headers["Swarm"] == "active/worker"

    run(t, backend)


# ---- networks -----------------------------------------------------------------------------


def create_body(name: str, **extra: Any) -> dict[str, Any]:
    """What docker CLI 28 sends for `docker network create -d overlay NAME`."""
    body: dict[str, Any] = {
        "Driver": "overlay",
        "Scope": "",
        "IPAM": {"Driver": "default", "Options": {}, "Config": []},
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "ConfigOnly": False,
        "ConfigFrom": None,
        "Options": {},
        "Labels": {},
        "Name": name,
        "CheckDuplicate": True,
    }
    body.update(extra)
    return body


async def create(api: Api, name: str, **extra: Any) -> tuple[int, Any]:
    return await api.call(
        "POST", "/v1.41/networks/create", "/networks/create", body=create_body(name, **extra)
    )


def test_network_lifecycle() -> None:
    async def t(api: Api) -> None:
        status, ingress = await create(api, "ingress", Ingress=True)
        assert status == 201
        status, created = await create(
            api, "labnet", Attachable=True, Options={"encrypted": ""}, Labels={"team": "a"}
        )
        assert status == 201
        assert len(created["Id"]) == 25 and created["Warning"] == ""

        status, net = await api.call("GET", "/v1.41/networks/labnet", "/networks/{id}")
        assert status == 200
        assert net["Id"] == created["Id"] and net["Name"] == "labnet"
        assert net["Scope"] == "swarm" and net["Driver"] == "overlay"
        assert net["Attachable"] is True and net["Ingress"] is False
        assert net["IPAM"] == {
            "Driver": "default",
            "Options": None,
            "Config": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}],
        }
        assert net["Options"] == {
            "com.docker.network.driver.overlay.vxlanid_list": "4097",
            "encrypted": "",
        }
        assert net["Labels"] == {"team": "a"}
        assert net["Containers"] is None and net["ConfigFrom"] == {"Network": ""}
        assert net["Created"].endswith("Z")

        # by id and unique id prefix; the unversioned path too
        for ref in (created["Id"], created["Id"][:12]):
            status, same = await api.call("GET", f"/networks/{ref}", "/networks/{id}")
            assert status == 200 and same["Id"] == created["Id"]

        status, listed = await api.call("GET", "/v1.41/networks", "/networks")
        assert status == 200
        assert sorted(n["Name"] for n in listed) == ["ingress", "labnet"]
        by_name = {n["Name"]: n for n in listed}
        assert (
            by_name["ingress"]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
            == "4096"
        )
        assert by_name["ingress"]["IPAM"]["Config"][0]["Subnet"] == "10.0.0.0/24"
        assert ingress["Id"] == by_name["ingress"]["Id"]

        status, _ = await api.call("DELETE", "/v1.41/networks/labnet", "/networks/{id}")
        assert status == 204
        status, err = await api.call("GET", "/v1.41/networks/labnet", "/networks/{id}")
        assert status == 404 and err == {"message": "network labnet not found"}
        status, err = await api.call("DELETE", "/v1.41/networks/labnet", "/networks/{id}")
        assert status == 404 and err == {"message": "network labnet not found"}

        # the freed subnet and VNI come back (lowest free)
        status, _ = await create(api, "again")
        _, again = await api.call("GET", "/networks/again", "/networks/{id}")
        assert again["IPAM"]["Config"][0]["Subnet"] == "10.0.1.0/24"
        assert again["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4097"

    run(t)


def test_create_with_ipam_and_internal() -> None:
    async def t(api: Api) -> None:
        ipam = {
            "Driver": "default",
            "Options": {},
            "Config": [
                {"Subnet": "10.20.0.0/16", "Gateway": "10.20.0.254", "IPRange": "10.20.1.0/24"}
            ],
        }
        status, _ = await create(api, "custom", IPAM=ipam, Internal=True)
        assert status == 201
        _, net = await api.call("GET", "/networks/custom", "/networks/{id}")
        assert net["Internal"] is True
        assert net["IPAM"]["Config"] == [
            {"Subnet": "10.20.0.0/16", "IPRange": "10.20.1.0/24", "Gateway": "10.20.0.254"}
        ]
        # an overlapping subnet is refused up front
        ipam2 = {"Config": [{"Subnet": "10.20.5.0/24"}]}
        status, err = await create(api, "overlap", IPAM=ipam2)
        assert status == 400
        assert "overlaps subnet 10.20.0.0/16 of network custom" in err["message"]
        status, err = await create(
            api, "gw", IPAM={"Config": [{"Subnet": "10.30.0.0/24", "Gateway": "10.31.0.1"}]}
        )
        assert status == 400 and "does not contain gateway" in err["message"]

    run(t)


def test_exact_name_wins_over_id_prefix() -> None:
    async def t(api: Api) -> None:
        _, first = await create(api, "first")
        prefix = first["Id"][:3]
        _, second = await create(api, prefix)
        status, net = await api.call("GET", f"/networks/{prefix}", "/networks/{id}")
        assert status == 200 and net["Id"] == second["Id"]
        status, net = await api.call("GET", f"/networks/{first['Id'][:5]}", "/networks/{id}")
        assert status == 200 and net["Id"] == first["Id"]

    run(t)


def test_list_filters() -> None:
    async def t(api: Api) -> None:
        await create(api, "front", Labels={"tier": "web", "env": "prod"})
        await create(api, "back", Labels={"tier": "db"})
        _, plain = await create(api, "plain")

        async def names(filters: dict[str, Any]) -> list[str]:
            status, body = await api.call(
                "GET", "/networks", "/networks", params={"filters": json.dumps(filters)}
            )
            assert status == 200, body
            return sorted(n["Name"] for n in body)

        assert await names({"name": {"front": True}}) == ["front"]
        assert await names({"name": ["a"]}) == ["back", "plain"]  # old list form, substring
        assert await names({"id": {plain["Id"][:6]: True}}) == ["plain"]
        assert await names({"driver": {"overlay": True}}) == ["back", "front", "plain"]
        assert await names({"driver": {"bridge": True}}) == []
        assert await names({"label": {"tier": True}}) == ["back", "front"]
        assert await names({"label": {"tier=web": True}}) == ["front"]
        assert await names({"label": {"tier=web": True, "env=dev": True}}) == []
        assert await names({"scope": {"swarm": True}}) == ["back", "front", "plain"]
        assert await names({"scope": {"local": True}}) == []
        assert await names({"type": {"custom": True}}) == ["back", "front", "plain"]
        assert await names({"type": {"builtin": True}}) == []
        assert await names({"dangling": {"true": True}}) == ["back", "front", "plain"]

        status, err = await api.call(
            "GET", "/networks", "/networks", params={"filters": '{"colour": {"red": true}}'}
        )
        assert status == 400 and err["message"] == "Invalid filter 'colour'"
        status, err = await api.call(
            "GET", "/networks", "/networks", params={"filters": '{"type": {"odd": true}}'}
        )
        assert status == 400 and err["message"] == "invalid filter: 'type'='odd'"

    run(t)


def test_create_errors() -> None:
    async def t(api: Api) -> None:
        status, err = await api.call(
            "POST", "/networks/create", "/networks/create", raw=b'{"Name": "x",'
        )
        assert status == 400 and err["message"].startswith("invalid JSON in the request body")
        status, err = await api.call(
            "POST", "/networks/create", "/networks/create", body={"Driver": "overlay"}
        )
        assert status == 400 and "network name must not be empty" in err["message"]
        status, err = await create(api, "x", Driver="weird")
        assert status == 404 and err["message"] == 'plugin "weird" not found'
        status, err = await create(api, "x", Driver="bridge")
        assert status == 400 and "use -d overlay" in err["message"]
        status, err = await create(api, "bridge")
        assert status == 403
        status, err = await create(api, "bad name!")
        assert status == 400 and "DNS name component" in err["message"]

        assert (await create(api, "labnet"))[0] == 201
        status, err = await create(api, "labnet", Attachable=True)
        assert status == 409 and err == {"message": "network with name labnet already exists"}

        ipam = {"Driver": "default", "Options": {}, "Config": [{"Subnet": "notacidr"}]}
        status, err = await create(api, "badnet2", IPAM=ipam)
        assert status == 500
        assert err == {"message": "Invalid subnet notacidr : invalid CIDR address: notacidr"}

    run(t)


def test_worker_refuses_writes_and_answers_reads() -> None:
    backend = LocalBackend()
    backend.set_role("worker")

    async def t(api: Api) -> None:
        status, err = await create(api, "x")
        assert status == 503 and err == {"message": NOT_A_MANAGER_MESSAGE}
        for method, url, template in (
            ("DELETE", "/networks/x", "/networks/{id}"),
            ("POST", "/networks/prune", "/networks/prune"),
        ):
            resp = await api.client.request(method, url)
            assert resp.status == 503, template
            assert (await resp.json())["message"] == NOT_A_MANAGER_MESSAGE
        status, body = await api.call("GET", "/networks", "/networks")
        assert status == 200 and body == []
        assert backend.proposals == 0

    run(t, backend)


def test_no_quorum_writes_fail_reads_answer() -> None:
    backend = LocalBackend()

    async def t(api: Api) -> None:
        assert (await create(api, "kept"))[0] == 201
        backend.no_quorum = True
        status, err = await create(api, "lost")
        assert status == 500 and err == {"message": NO_LEADER_MESSAGE}
        status, err = await api.call("DELETE", "/networks/kept", "/networks/{id}")
        assert status == 500 and err == {"message": NO_LEADER_MESSAGE}
        status, body = await api.call("GET", "/networks", "/networks")
        assert status == 200 and [n["Name"] for n in body] == ["kept"]

    run(t, backend)


def test_delete_in_use_and_prune() -> None:
    backend = LocalBackend()

    async def t(api: Api) -> None:
        await create(api, "ingress", Ingress=True)
        _, used = await create(api, "used")
        await create(api, "idle", Labels={"keep": "yes"})
        await create(api, "idle2")
        svc = Service(id="svc000000000000000000000a")
        svc.spec.annotations.name = "web"
        svc.spec.networks.add(target=used["Id"])
        await backend.propose(Transaction().create(svc).encode())

        status, err = await api.call("DELETE", "/networks/used", "/networks/{id}")
        assert status == 400
        assert err["message"] == (
            f"rpc error: code = FailedPrecondition desc = network {used['Id']} is in use by "
            f"service {svc.id}"
        )
        status, body = await api.call(
            "POST",
            "/networks/prune",
            "/networks/prune",
            params={"filters": json.dumps({"label!": {"keep": True}})},
        )
        assert status == 200 and body == {"NetworksDeleted": ["idle2"]}
        status, body = await api.call("POST", "/v1.41/networks/prune", "/networks/prune")
        assert status == 200 and body == {"NetworksDeleted": ["idle"]}
        names = sorted(n.spec.annotations.name for n in backend.store.list(Network))
        assert names == ["ingress", "used"]

    run(t, backend)


def test_concurrent_creates_never_share_subnet_or_vni() -> None:
    backend = LocalBackend()

    async def t(api: Api) -> None:
        results = await asyncio.gather(*(create(api, f"n{i}") for i in range(20)))
        assert all(status == 201 for status, _ in results)
        nets = backend.store.list(Network)
        assert len({n.vni for n in nets}) == 20
        assert len({n.ipam[0].subnet for n in nets}) == 20

    run(t, backend)


# ---- nodes ------------------------------------------------------------------------------


def add_node(backend: LocalBackend, node_id: str, hostname: str, role: str = "manager") -> None:
    node = Node(id=node_id, role=role)
    node.spec.desired_role = role
    node.spec.availability = "active"
    node.description.hostname = hostname
    node.status.state = "ready"
    node.status.addr = "127.0.0.1"
    err = StoreError.from_result(asyncio.run(backend.propose(Transaction().create(node).encode())))
    assert err is None


def test_nodes_list_inspect_filters_and_manager_status() -> None:
    backend = LocalBackend()
    add_node(backend, "localnode0000000000000000", "m1")
    add_node(backend, "worker00000000000000000000", "w1", role="worker")

    async def t(api: Api) -> None:
        status, nodes = await api.call("GET", "/v1.41/nodes", "/nodes")
        assert status == 200
        by_host = {n["Description"]["Hostname"]: n for n in nodes}
        assert by_host["m1"]["ManagerStatus"] == {
            "Leader": False,
            "Reachability": "reachable",
            "Addr": "127.0.0.1:2377",
        }
        assert "ManagerStatus" not in by_host["w1"]
        assert by_host["w1"]["Spec"]["Role"] == "worker"
        _, workers = await api.call(
            "GET", "/v1.41/nodes", "/nodes", params={"filters": '{"role":{"worker":true}}'}
        )
        assert [n["Description"]["Hostname"] for n in workers] == ["w1"]
        status, node = await api.call("GET", "/v1.41/nodes/w1", "/nodes/{id}")
        assert status == 200 and node["ID"] == "worker00000000000000000000"
        status, node = await api.call("GET", "/v1.41/nodes/worker0", "/nodes/{id}")
        assert status == 200 and node["Description"]["Hostname"] == "w1"
        status, err = await api.call("GET", "/v1.41/nodes/nope", "/nodes/{id}")
        assert status == 404 and err == {"message": "node nope not found"}
        status, err = await api.call(
            "GET", "/v1.41/nodes", "/nodes", params={"filters": '{"bogus":{"x":true}}'}
        )
        assert status == 400 and err == {"message": "Invalid filter 'bogus'"}

    run(t, backend)
