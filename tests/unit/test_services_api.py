"""`/services` and `/tasks` through the Engine API with the leader's loops running in-process:
every response validated against the v1.41 spec, and the shapes compared with what a real
Docker 20.10 swarm answered the docker CLI (real-swarm/api-transcripts)."""

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
from controlplane.api.spec import shared_path
from controlplane.pb.objects_pb2 import Service, Task
from controlplane.raft.errors import NO_LEADER_MESSAGE
from controlplane.store import Transaction
from tests.unit.swarm_fixture import running_swarm, seed, wait_for
from tests.unit.test_api import Api

INVALID = "rpc error: code = InvalidArgument desc = "
UNIMPLEMENTED = "rpc error: code = Unimplemented desc = "
TRANSCRIPTS = shared_path("reference/real-swarm/api-transcripts")


def transcript(name: str) -> list[dict[str, Any]]:
    path = TRANSCRIPTS / name
    if not path.exists():
        pytest.skip(f"the real-swarm transcripts are not at {TRANSCRIPTS}")
    exchanges: list[dict[str, Any]] = json.loads(path.read_text())["exchanges"]
    return exchanges


def exchange(name: str, method: str, path_end: str) -> dict[str, Any]:
    return next(
        e
        for e in transcript(name)
        if e["method"] == method
        and e["path"].endswith(path_end)
        and not isinstance(e["response_body"], str)
    )


def run(
    test: Callable[[Api], Awaitable[None]], *, ingress: bool = True, agent: bool = True
) -> None:
    async def main() -> None:
        backend = LocalBackend()
        await seed(backend, nodes=3, ingress=ingress)
        async with (
            running_swarm(backend, agent=agent),
            TestClient(TestServer(create_app(backend))) as client,
        ):
            await test(Api(client, backend))

    asyncio.run(main())


async def create_net(api: Api, name: str = "labnet28", **options: str) -> str:
    status, body = await api.call(
        "POST",
        "/v1.41/networks/create",
        "/networks/create",
        body={"Name": name, "Driver": "overlay", "Attachable": True, "Options": options},
    )
    assert status == 201, body
    net_id: str = body["Id"]
    return net_id


def cli_body(net_id: str) -> dict[str, Any]:
    """What `docker service create` (CLI 28) sent the real swarm, on our network."""
    body: dict[str, Any] = json.loads(
        json.dumps(
            exchange("service-create-cli28.json", "POST", "/services/create")["request_body"]
        )
    )
    body["TaskTemplate"]["Networks"] = [{"Target": net_id}]
    return body


async def create(api: Api, body: dict[str, Any]) -> tuple[int, Any]:
    return await api.call("POST", "/v1.41/services/create", "/services/create", body=body)


async def inspect(api: Api, ref: str, defaults: bool = False) -> dict[str, Any]:
    status, body = await api.call(
        "GET",
        f"/v1.41/services/{ref}",
        "/services/{id}",
        params={"insertDefaults": "true" if defaults else "false"},
    )
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def list_tasks(api: Api, **filters: list[str]) -> list[dict[str, Any]]:
    query = {
        k.replace("_", "-") if k != "_up_to_date" else "_up-to-date": {v: True for v in vs}
        for k, vs in filters.items()
    }
    status, body = await api.call(
        "GET", "/v1.41/tasks", "/tasks", params={"filters": json.dumps(query)} if filters else None
    )
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def swap_ids(value: Any, mapping: dict[str, str]) -> Any:
    text = json.dumps(value)
    for old, new in mapping.items():
        text = text.replace(old, new)
    return json.loads(text)


def shape(value: Any) -> Any:
    """Keys and types, not values: what must match Docker regardless of ids and times."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


# ---- create / inspect ------------------------------------------------------------------


def test_create_and_inspect_as_the_real_swarm_answers() -> None:
    async def t(api: Api) -> None:
        net_id = await create_net(api, encrypted="")
        status, body = await create(api, cli_body(net_id))
        assert status == 201 and set(body) == {"ID"}
        service_id = body["ID"]
        await wait_for(lambda: len(api.backend.store.list(Task)) == 3)
        ours = await inspect(api, service_id)
        real = exchange("service-create-cli28.json", "GET", "/services/mhgmpike1w9upsdckmehe287n")
        theirs = swap_ids(real["response_body"], {"dg0wu6j9dqqp570x55g8v54z2": net_id})
        assert ours["Spec"] == theirs["Spec"]
        assert shape(ours) == shape(theirs)
        assert ours["Endpoint"]["Spec"] == theirs["Endpoint"]["Spec"]
        assert ours["Endpoint"]["Ports"] == theirs["Endpoint"]["Ports"]
        assert [v["NetworkID"] for v in ours["Endpoint"]["VirtualIPs"]][1:] == [net_id]

        with_defaults = await inspect(api, "whoami28", defaults=True)
        real_defaults = exchange("service-inspect-cli28.json", "GET", "/services/whoami28")
        theirs = swap_ids(real_defaults["response_body"], {"dg0wu6j9dqqp570x55g8v54z2": net_id})
        assert with_defaults["Spec"] == theirs["Spec"]

        by_prefix = await inspect(api, service_id[:6])
        assert by_prefix["ID"] == service_id

    run(t)


def test_tasks_as_the_real_swarm_answers() -> None:
    async def t(api: Api) -> None:
        net_id = await create_net(api, encrypted="")
        _, body = await create(api, cli_body(net_id))
        service_id = body["ID"]
        await wait_for(
            lambda: sum(t.status.state == "running" for t in api.backend.store.list(Task)) == 3
        )
        ours = await list_tasks(api, service=[service_id])
        real = next(
            e
            for e in reversed(transcript("service-ps-cli28.json"))
            if e["path"].endswith("/tasks") and not isinstance(e["response_body"], str)
        )["response_body"]
        theirs = swap_ids(real, {"dg0wu6j9dqqp570x55g8v54z2": net_id})
        assert shape(ours[0]) == shape(theirs[0])
        assert ours[0]["Spec"] == theirs[0]["Spec"]
        assert sorted(t["Slot"] for t in ours) == [1, 2, 3]
        assert {t["Status"]["State"] for t in ours} == {"running"}
        ours_net = ours[0]["NetworksAttachments"][1]["Network"]
        theirs_net = theirs[0]["NetworksAttachments"][1]["Network"]
        assert ours_net["Spec"] == theirs_net["Spec"] | {"Name": "labnet28"}
        assert ours_net["DriverState"] == {
            "Name": "overlay",
            "Options": {
                "com.docker.network.driver.overlay.vxlanid_list": "4097",
                "encrypted": "",
            },
        }
        ingress = ours[0]["NetworksAttachments"][0]["Network"]
        assert ingress["Spec"] == theirs[0]["NetworksAttachments"][0]["Network"]["Spec"]

        one = ours[0]["ID"]
        status, task = await api.call("GET", f"/v1.41/tasks/{one[:8]}", "/tasks/{id}")
        assert status == 200 and task["ID"] == one
        status, err = await api.call("GET", "/v1.41/tasks/nope", "/tasks/{id}")
        assert (status, err) == (404, {"message": "task nope not found"})

    run(t)


# ---- update / scale / rollback / delete ------------------------------------------------


def test_scale_update_rollback_and_remove() -> None:
    async def t(api: Api) -> None:
        net_id = await create_net(api)
        _, body = await create(api, cli_body(net_id))
        sid = body["ID"]
        current = await inspect(api, sid)
        spec, version = current["Spec"], current["Version"]["Index"]
        spec["Mode"]["Replicated"]["Replicas"] = 1
        url = f"/v1.41/services/{sid}/update"
        status, body = await api.call(
            "POST", url, "/services/{id}/update", body=spec, params={"version": str(version)}
        )
        assert (status, body) == (200, {"Warnings": None})
        status, body = await api.call(
            "POST", url, "/services/{id}/update", body=spec, params={"version": str(version)}
        )
        assert (status, body) == (
            500,
            {"message": "rpc error: code = Unknown desc = update out of sequence"},
        )
        status, body = await api.call("POST", url, "/services/{id}/update", body=spec)
        assert status == 400 and body["message"].startswith("invalid service version")

        def live() -> list[Task]:
            return [t for t in api.backend.store.list(Task) if t.desired_state == "running"]

        await wait_for(lambda: len(live()) == 1 and live()[0].status.state == "running")
        scaled = await inspect(api, sid)
        assert "UpdateStatus" not in scaled  # scaling is not an update of the tasks
        assert scaled["PreviousSpec"]["Mode"]["Replicated"]["Replicas"] == 3

        def spec_versions() -> tuple[int, int]:
            stored = api.backend.store.get(Service, sid)
            assert stored is not None
            return stored.spec_version, stored.previous_spec_version

        assert spec_versions() == (version, 0)  # swarmkit's: Meta.Version before the update

        spec = scaled["Spec"]
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = "busybox:1.36"
        status, _ = await api.call(
            "POST",
            url,
            "/services/{id}/update",
            body=spec,
            params={"version": str(scaled["Version"]["Index"])},
        )
        assert status == 200
        assert spec_versions() == (scaled["Version"]["Index"], version)
        updating = await inspect(api, sid)
        assert updating["UpdateStatus"]["State"] == "updating"
        assert updating["UpdateStatus"]["Message"] == "update in progress"
        await wait_for(lambda: [t.spec.container.image for t in live()] == ["busybox:1.36"])
        fresh = await list_tasks(api, service=[sid], _up_to_date=["true"])
        assert [t["Spec"]["ContainerSpec"]["Image"] for t in fresh] == ["busybox:1.36"]

        current = await inspect(api, sid)
        status, _ = await api.call(
            "POST",
            url,
            "/services/{id}/update",
            body=current["Spec"],
            params={"version": str(current["Version"]["Index"]), "rollback": "previous"},
        )
        assert status == 200
        assert spec_versions() == (version, scaled["Version"]["Index"])  # traded places
        rolled = await inspect(api, sid)
        assert rolled["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox:latest"
        assert rolled["UpdateStatus"]["State"] == "rollback_started"
        assert rolled["UpdateStatus"]["Message"] == "manually requested rollback"
        await wait_for(lambda: [t.spec.container.image for t in live()] == ["busybox:latest"])

        status, body = await api.call("DELETE", f"/v1.41/services/{sid}", "/services/{id}")
        assert (status, body) == (200, None)
        status, body = await api.call("DELETE", f"/v1.41/services/{sid}", "/services/{id}")
        assert (status, body) == (404, {"message": f"service {sid} not found"})
        await wait_for(lambda: not api.backend.store.list(Task))
        status, _ = await api.call("DELETE", f"/v1.41/networks/{net_id}", "/networks/{id}")
        assert status == 204  # no longer in use

    run(t)


def test_update_refusals() -> None:
    async def t(api: Api) -> None:
        status, body = await create(
            api,
            {
                "Name": "g",
                "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
                "Mode": {"Global": {}},
            },
        )
        assert status == 201
        current = await inspect(api, "g")
        v = {"version": str(current["Version"]["Index"])}
        url = f"/v1.41/services/{current['ID']}/update"
        spec = current["Spec"] | {"Mode": {"Replicated": {"Replicas": 2}}}
        status, body = await api.call("POST", url, "/services/{id}/update", body=spec, params=v)
        assert (status, body["message"]) == (
            501,
            "rpc error: code = Unimplemented desc = service mode change is not allowed",
        )
        spec = current["Spec"] | {"Name": "h"}
        status, body = await api.call("POST", url, "/services/{id}/update", body=spec, params=v)
        assert (status, body["message"]) == (
            501,
            "rpc error: code = Unimplemented desc = renaming services is not supported",
        )
        status, body = await api.call(
            "POST",
            url,
            "/services/{id}/update",
            body=current["Spec"],
            params=v | {"rollback": "previous"},
        )
        assert (status, body["message"]) == (
            400,
            f"rpc error: code = FailedPrecondition desc = service {current['ID']} does not "
            "have a previous spec",
        )
        status, body = await api.call(
            "POST", "/v1.41/services/nope/update", "/services/{id}/update", body={}, params=v
        )
        assert (status, body) == (404, {"message": "service nope not found"})

    run(t)


# ---- create errors ---------------------------------------------------------------------


def test_create_errors_with_dockers_wording() -> None:
    async def t(api: Api) -> None:
        net_id = await create_net(api, "n1")
        ok = {"Name": "a", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}}}
        assert (await create(api, ok))[0] == 201
        cases: list[tuple[dict[str, Any], int, str]] = [
            (
                ok,
                409,
                "rpc error: code = AlreadyExists desc = name conflicts with an existing object: "
                "service a already exists",
            ),
            (
                {"Name": "b"},
                400,
                INVALID + "ContainerSpec: image reference must be provided",
            ),
            (
                ok | {"Name": "bad name"},
                400,
                INVALID + "name must be valid as a DNS name component",
            ),
            (
                {
                    "Name": "c",
                    "TaskTemplate": {
                        "ContainerSpec": {
                            "Image": "nginx",
                            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5},
                        }
                    },
                },
                400,
                INVALID + "ContainerSpec: Interval in HealthConfig cannot be less than 1ms",
            ),
            (
                ok | {"Name": "c", "Mode": {"Replicated": {"Replicas": 1}, "Global": {}}},
                400,
                "must specify only one service mode (got Replicated and Global)",
            ),
            (
                ok | {"Name": "c", "Mode": {"GlobalJob": {}}, "UpdateConfig": {"Parallelism": 1}},
                400,
                INVALID + "Jobs may not have an update config",
            ),
            (
                ok | {"Name": "c", "Mode": {"Replicated": {}, "ReplicatedJob": {}}},
                400,
                "must specify only one service mode (got Replicated and ReplicatedJob)",
            ),
            (
                ok | {"Name": "c", "Mode": {"Replicated": {"Replicas": -1}}},
                400,
                INVALID + "Number of replicas must be non-negative",
            ),
            (
                ok | {"Name": "c", "Mode": {"Replicated": {"Replicas": "3"}}},
                400,
                "invalid Mode.Replicated.Replicas: expected an integer, got a string",
            ),
            (
                {
                    "Name": "c",
                    "TaskTemplate": {
                        "ContainerSpec": {"Image": "nginx"},
                        "Networks": [{"Target": "nope"}],
                    },
                },
                404,
                "network nope not found",
            ),
            (
                {
                    "Name": "c",
                    "TaskTemplate": {
                        "ContainerSpec": {"Image": "nginx"},
                        "Networks": [{"Target": "ingress"}],
                    },
                },
                400,
                INVALID + 'Service cannot be explicitly attached to the ingress network "ingress"',
            ),
            (
                {
                    "Name": "c",
                    "TaskTemplate": {
                        "ContainerSpec": {"Image": "nginx"},
                        "Placement": {"Constraints": ["node.role"]},
                    },
                },
                500,
                "rpc error: code = Unknown desc = constraint expected one operator from ==, !=",
            ),
            (
                ok
                | {"Name": "c", "EndpointSpec": {"Mode": "dnsrr", "Ports": [{"TargetPort": 80}]}},
                400,
                INVALID
                + "EndpointSpec: port published with ingress mode can't be used with dnsrr mode",
            ),
            (
                ok
                | {
                    "Name": "c",
                    "EndpointSpec": {
                        "Ports": [
                            {"TargetPort": 80, "PublishedPort": 9},
                            {"TargetPort": 81, "PublishedPort": 9},
                        ]
                    },
                },
                400,
                INVALID + "EndpointSpec: duplicate published ports provided",
            ),
            (
                ok
                | {"Name": "c", "EndpointSpec": {"Ports": [{"TargetPort": 80, "Protocol": "foo"}]}},
                400,
                "invalid protocol value foo: use one of tcp, udp, sctp",
            ),
            (
                ok
                | {
                    "Name": "c",
                    "TaskTemplate": {
                        "ContainerSpec": {"Image": "nginx"},
                        "RestartPolicy": {"Condition": "sometimes"},
                    },
                },
                400,
                'invalid RestartCondition: "sometimes"',
            ),
            (
                ok | {"Name": "c", "UpdateConfig": {"Delay": -1}},
                400,
                INVALID + "TaskSpec: update-delay cannot be negative",
            ),
            (
                ok
                | {
                    "Name": "c",
                    "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}, "Runtime": "plugin"},
                },
                501,
                UNIMPLEMENTED + "RuntimeSpec: unimplemented runtime in service spec",
            ),
            (
                ok | {"Name": "c", "TaskTemplate": "x"},
                400,
                "invalid TaskTemplate: expected an object, got a string",
            ),
        ]
        for body, want_status, want_message in cases:
            status, answer = await create(api, body)
            assert (status, answer["message"]) == (want_status, want_message), body
        status, answer = await api.call(
            "POST", "/v1.41/services/create", "/services/create", raw=b"{nope"
        )
        assert status == 400 and answer["message"].startswith("invalid JSON")

        published = ok | {
            "Name": "whoami",
            "EndpointSpec": {
                "Mode": "vip",
                "Ports": [
                    {
                        "Protocol": "tcp",
                        "TargetPort": 80,
                        "PublishedPort": 8080,
                        "PublishMode": "ingress",
                    }
                ],
            },
        }
        status, body = await create(api, published)
        assert status == 201
        real = exchange("bad-publish-dup-cli20.json", "POST", "/services/create")
        status, answer = await create(api, real["request_body"])
        assert status == real["status"] == 400
        assert answer["message"] == real["response_body"]["message"].replace(
            "4aoqszlye0i1ea8emq9wyhdbl", body["ID"]
        )
        unnamed = await create(
            api,
            {
                "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
                "Networks": [{"Target": net_id}],
            },
        )
        assert unnamed[0] == 201
        named = await inspect(api, unnamed[1]["ID"])
        assert "_" in named["Spec"]["Name"]
        assert named["Spec"]["TaskTemplate"]["Networks"] == [{"Target": net_id}]

    run(t)


def test_published_port_needs_the_ingress_network() -> None:
    async def t(api: Api) -> None:
        body = {
            "Name": "p",
            "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
            "EndpointSpec": {"Ports": [{"TargetPort": 80}]},
        }
        status, answer = await create(api, body)
        assert (status, answer["message"]) == (
            400,
            "rpc error: code = FailedPrecondition desc = service needs ingress network, but no "
            "ingress network is present",
        )
        host = {
            "Name": "h",
            "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
            "EndpointSpec": {
                "Ports": [{"TargetPort": 80, "PublishedPort": 81, "PublishMode": "host"}]
            },
        }
        assert (await create(api, host))[0] == 201

    run(t, ingress=False)


def test_worker_and_no_quorum() -> None:
    async def t(api: Api) -> None:
        body = {"Name": "a", "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}}}
        assert (await create(api, body))[0] == 201
        api.backend.no_quorum = True
        status, answer = await create(api, body | {"Name": "b"})
        assert (status, answer["message"]) == (500, NO_LEADER_MESSAGE)
        status, listed = await api.call("GET", "/v1.41/services", "/services")
        assert status == 200 and [s["Spec"]["Name"] for s in listed] == ["a"]
        api.backend.no_quorum = False
        api.backend.set_role("worker")
        for method, url, template in (
            ("GET", "/v1.41/services", "/services"),
            ("GET", "/v1.41/tasks", "/tasks"),
            ("POST", "/v1.41/services/create", "/services/create"),
        ):
            status, answer = await api.call(
                method, url, template, body=body if method == "POST" else None
            )
            assert (status, answer["message"]) == (503, NOT_A_MANAGER_MESSAGE)

    run(t)


# ---- list filters ----------------------------------------------------------------------


def test_list_filters_and_status() -> None:
    async def t(api: Api) -> None:
        for name, mode, labels in (
            ("web", "Replicated", {"tier": "front"}),
            ("webapi", "Replicated", {}),
            ("mon", "Global", {"tier": "ops"}),
        ):
            spec: dict[str, Any] = {
                "Name": name,
                "Labels": labels,
                "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
                "Mode": {mode: {"Replicas": 2} if mode == "Replicated" else {}},
            }
            assert (await create(api, spec))[0] == 201
        await wait_for(
            lambda: sum(t.status.state == "running" for t in api.backend.store.list(Task)) == 7
        )

        async def names(**filters: list[str]) -> list[str]:
            query = json.dumps({k: {v: True for v in vs} for k, vs in filters.items()})
            status, body = await api.call(
                "GET", "/v1.41/services", "/services", params={"filters": query}
            )
            assert status == 200, body
            return sorted(s["Spec"]["Name"] for s in body)

        assert await names(name=["web"]) == ["web", "webapi"]  # a prefix, as dockerd
        assert await names(mode=["global"]) == ["mon"]
        assert await names(label=["tier"]) == ["mon", "web"]
        assert await names(label=["tier=front"]) == ["web"]
        status, body = await api.call(
            "GET", "/v1.41/services", "/services", params={"filters": '{"mode":{"jobs":true}}'}
        )
        assert (status, body["message"]) == (400, "Invalid filter: 'mode'='jobs'")
        status, body = await api.call(
            "GET", "/v1.41/services", "/services", params={"filters": '{"color":{"x":true}}'}
        )
        assert (status, body["message"]) == (400, "Invalid filter 'color'")
        status, body = await api.call(
            "GET", "/v1.41/services", "/services", params={"status": "true"}
        )
        by_name = {s["Spec"]["Name"]: s["ServiceStatus"] for s in body}
        assert by_name["web"] == {"RunningTasks": 2, "DesiredTasks": 2, "CompletedTasks": 0}
        assert by_name["mon"] == {"RunningTasks": 3, "DesiredTasks": 3, "CompletedTasks": 0}

        assert len(await list_tasks(api, service=["web"])) == 2  # by name
        assert len(await list_tasks(api, node=["host-1"])) >= 1  # by hostname
        assert len(await list_tasks(api, name=["web."])) == 2
        assert len(await list_tasks(api, desired_state=["running"])) == 7
        assert await list_tasks(api, desired_state=["shutdown"]) == []
        status, body = await api.call(
            "GET",
            "/v1.41/tasks",
            "/tasks",
            params={"filters": '{"desired-state":{"sleeping":true}}'},
        )
        assert status == 400 and "sleeping" in body["message"]

    run(t)


def test_task_attachment_shows_the_users_subnet_request() -> None:
    async def t(api: Api) -> None:
        status, _ = await api.call(
            "POST",
            "/v1.41/networks/create",
            "/networks/create",
            body={
                "Name": "sub",
                "Driver": "overlay",
                "IPAM": {"Config": [{"Subnet": "10.5.0.0/24"}]},
            },
        )
        assert status == 201
        body = {
            "Name": "s",
            "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}, "Networks": [{"Target": "sub"}]},
        }
        assert (await create(api, body))[0] == 201
        await wait_for(
            lambda: [t.status.state for t in api.backend.store.list(Task)] == ["running"]
        )
        [task] = await list_tasks(api)
        [attachment] = task["NetworksAttachments"]
        assert attachment["Addresses"] == ["10.5.0.3/24"]  # .2 is the service's VIP
        network = attachment["Network"]
        assert network["Spec"]["IPAMOptions"] == {
            "Driver": {"Name": "default"},
            "Configs": [{"Subnet": "10.5.0.0/24"}],
        }
        assert network["IPAMOptions"]["Configs"] == [
            {"Subnet": "10.5.0.0/24", "Gateway": "10.5.0.1"}
        ]
        assert network["Spec"]["DriverConfiguration"] == {"Name": "overlay"}

    run(t)


def test_a_paused_update_resumes_with_any_update() -> None:
    async def t(api: Api) -> None:
        spec: dict[str, Any] = {
            "Name": "p",
            "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
            "Mode": {"Replicated": {"Replicas": 2}},
            "UpdateConfig": {"Parallelism": 1, "Delay": 60_000_000_000, "Monitor": 60_000_000_000},
        }
        status, body = await create(api, spec)
        assert status == 201
        store = api.backend.store

        def running(image: str) -> list[Task]:
            return [
                t
                for t in store.list(Task)
                if t.spec.container.image == image and t.status.state == "running"
            ]

        await wait_for(lambda: len(running("nginx")) == 2)
        current = await inspect(api, body["ID"])
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = "nginx:2"
        url = f"/v1.41/services/{body['ID']}/update"
        version = {"version": str(current["Version"]["Index"])}
        assert (await api.call("POST", url, "/services/{id}/update", body=spec, params=version))[
            0
        ] == 200
        await wait_for(lambda: len(running("nginx:2")) == 1)
        [fresh] = running("nginx:2")
        fresh.status.state = "failed"
        fresh.status.timestamp_ns = fresh.status.timestamp_ns + 1
        await api.backend.propose(Transaction().update(fresh).encode())
        await wait_for(lambda: store.get_by_name(Service, "p").update_status.state == "paused")  # type: ignore[union-attr]
        paused = await inspect(api, "p")
        assert paused["UpdateStatus"]["Message"] == (
            f"update paused due to failure or early termination of task {fresh.id}"
        )
        version = {"version": str(paused["Version"]["Index"])}
        assert (await api.call("POST", url, "/services/{id}/update", body=spec, params=version))[
            0
        ] == 200
        assert (await inspect(api, "p"))["UpdateStatus"]["State"] == "updating"

    run(t)


def test_ports_the_mesh_does_not_carry_are_warned_about_at_create_and_update() -> None:
    async def t(api: Api) -> None:
        body = {
            "Name": "sig",
            "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
            "EndpointSpec": {
                "Ports": [
                    {"Protocol": "sctp", "TargetPort": 9000, "PublishedPort": 9000},
                    {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080},
                ]
            },
        }
        status, created = await create(api, body)
        assert status == 201
        [warning] = created["Warnings"]  # a list, as dockerd sends and the docker CLI prints
        assert warning.startswith("port 9000/sctp is allocated, but swarmlab's userspace data")
        # The leader's allocation pass fills the endpoint in after the create.
        await wait_for(lambda: api.backend.store.get(Service, created["ID"]).endpoint.ports)
        [port] = [p for p in (await inspect(api, created["ID"]))["Endpoint"]["Ports"]
                  if p["Protocol"] == "sctp"]  # fmt: skip
        assert port["PublishedPort"] == 9000  # allocated and shown all the same
        service = await inspect(api, created["ID"])
        body["EndpointSpec"] = {
            "Ports": [
                {"TargetPort": 22, "PublishedPort": 2222, "PublishMode": "host"},
                {"Protocol": "sctp", "TargetPort": 7, "PublishedPort": 7, "PublishMode": "host"},
            ]
        }
        status, updated = await api.call(
            "POST",
            f"/services/{created['ID']}/update",
            "/services/{id}/update",
            body=body,
            params={"version": str(service["Version"]["Index"])},
        )
        assert status == 200
        [warning] = updated["Warnings"]  # host-mode TCP is served; SCTP in any mode is not
        assert warning.startswith("port 7/sctp is allocated, but swarmlab's userspace data")

    run(t)


def test_a_finished_task_that_will_not_restart_is_desired_shutdown() -> None:
    """Real 20.10 (`--restart-condition none`, a task that completed): DesiredState
    "shutdown" at once, the desired-state=running filter leaves it out, and `service ls`
    counts no running task."""

    async def t(api: Api) -> None:
        body = cli_body(await create_net(api))
        body["TaskTemplate"]["RestartPolicy"] = {"Condition": "none"}
        await create(api, body)
        await wait_for(lambda: len(api.backend.store.list(Task)) == 3)
        await wait_for(
            lambda: all(t.status.state == "running" for t in api.backend.store.list(Task))
        )
        finished = api.backend.store.list(Task)[0]
        finished.status.state, finished.status.message = "complete", "finished"
        await api.backend.propose(Transaction().update(finished).encode())
        [shown] = [t for t in await list_tasks(api) if t["ID"] == finished.id]
        assert (shown["DesiredState"], shown["Status"]["State"]) == ("shutdown", "complete")
        running = await list_tasks(api, desired_state=["running"])
        assert finished.id not in {t["ID"] for t in running} and len(running) == 2
        shutdown = await list_tasks(api, desired_state=["shutdown"])
        assert [t["ID"] for t in shutdown] == [finished.id]
        status, services = await api.call(
            "GET", "/v1.41/services", "/services", params={"status": "true"}
        )
        assert status == 200
        assert services[0]["ServiceStatus"]["RunningTasks"] == 2

    run(t)


def test_jobs_as_dockerd_shows_them() -> None:
    async def t(api: Api) -> None:
        template = {"TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "9"]}}}
        for name, mode in (
            ("one", {"ReplicatedJob": {}}),
            ("batch", {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}}),
            ("setup", {"GlobalJob": {}}),
        ):
            assert (await create(api, template | {"Name": name, "Mode": mode}))[0] == 201
        one = await inspect(api, "one")
        # dockerd's defaults: one at a time, TotalCompletions = MaxConcurrent
        assert one["Spec"]["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
        assert one["JobStatus"]["JobIteration"] == {}
        assert one["JobStatus"]["LastExecution"] == one["CreatedAt"]
        assert "UpdateStatus" not in one
        await wait_for(
            lambda: sum(t.status.state == "running" for t in api.backend.store.list(Task)) == 6
        )
        status, body = await api.call(
            "GET", "/v1.41/services", "/services", params={"status": "true"}
        )
        by_name = {s["Spec"]["Name"]: s["ServiceStatus"] for s in body}
        assert by_name["batch"] == {"RunningTasks": 2, "DesiredTasks": 2, "CompletedTasks": 0}
        assert by_name["setup"] == {"RunningTasks": 3, "DesiredTasks": 3, "CompletedTasks": 0}
        tasks = await list_tasks(api, service=["batch"])
        assert {t["DesiredState"] for t in tasks} == {"complete"}
        assert all(t["JobIteration"] == {} for t in tasks)
        assert len(await list_tasks(api, service=["batch"], desired_state=["complete"])) == 2
        assert sorted(t.get("Slot", 0) for t in tasks) == [0, 1]  # slot 0 has no Slot
        assert len(await list_tasks(api, service=["setup"])) == 3

        async def names(mode: str) -> list[str]:
            query = json.dumps({"mode": {mode: True}})
            status, body = await api.call(
                "GET", "/v1.41/services", "/services", params={"filters": query}
            )
            assert status == 200, body
            return sorted(s["Spec"]["Name"] for s in body)

        assert await names("replicated-job") == ["batch", "one"]
        assert await names("global-job") == ["setup"]
        assert await names("replicated") == []

        # Every update runs the job again; its mode stays a job's.
        batch = await inspect(api, "batch")
        url = f"/v1.41/services/{batch['ID']}/update"
        v = {"version": str(batch["Version"]["Index"])}
        status, body = await api.call(
            "POST", url, "/services/{id}/update", body=batch["Spec"], params=v
        )
        assert status == 200, body
        batch = await inspect(api, "batch")
        assert batch["JobStatus"]["JobIteration"] == {"Index": 1}
        assert "UpdateStatus" not in batch
        v = {"version": str(batch["Version"]["Index"])}
        for spec, message in (
            (batch["Spec"] | {"Mode": {"Replicated": {"Replicas": 2}}}, UNIMPLEMENTED
             + "service mode change is not allowed"),
            (batch["Spec"] | {"UpdateConfig": {"Parallelism": 2}}, INVALID
             + "Jobs may not have an update config"),
        ):  # fmt: skip
            status, body = await api.call("POST", url, "/services/{id}/update", body=spec, params=v)
            assert body["message"] == message

        def iteration_one_runs() -> bool:
            batch_tasks = [t for t in api.backend.store.list(Task) if t.service_id == batch["ID"]]
            return sorted((t.job_iteration, t.status.state) for t in batch_tasks) == [
                (1, "running"),
                (1, "running"),
            ]

        await wait_for(iteration_one_runs)  # the first iteration's tasks stopped and deleted

    run(t)
