"""`/secrets` and `/configs` through the Engine API over a local store: every response is
validated against the v1.41 spec, the refusals carry swarmkit's words, and services refer to
them by id and name."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from controlplane.api.configs import MAX_CONFIG_SIZE
from controlplane.api.local import LocalBackend
from controlplane.api.secrets import MAX_SECRET_SIZE
from controlplane.pb.objects_pb2 import Cluster, Config, Secret, Service
from controlplane.store import Store, StoreError, Transaction
from tests.unit.test_api import Api, run
from tests.unit.test_services_api import create_net

INVALID = "rpc error: code = InvalidArgument desc = "
KINDS = ("secrets", "configs")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def create(
    api: Api, kind: str, name: str, data: bytes = b"s3cr3t\n", **labels: str
) -> tuple[int, Any]:
    return await api.call(
        "POST",
        f"/v1.41/{kind}/create",
        f"/{kind}/create",
        body={"Name": name, "Labels": labels, "Data": b64(data)},
    )


async def inspect(api: Api, kind: str, ref: str) -> tuple[int, Any]:
    return await api.call("GET", f"/v1.41/{kind}/{ref}", f"/{kind}/{{id}}")


async def names(api: Api, kind: str, **filters: list[str]) -> list[str]:
    query = {"filters": json.dumps({k: {v: True for v in vs} for k, vs in filters.items()})}
    status, body = await api.call("GET", f"/v1.41/{kind}", f"/{kind}", params=query)
    assert status == 200, body
    return sorted(o["Spec"]["Name"] for o in body)


def service_body(secret: tuple[str, str], config: tuple[str, str]) -> dict[str, Any]:
    """What `docker service create --secret src=db_pass,target=pw --config app_conf` sends."""
    return {
        "Name": "web",
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "nginx:alpine",
                "Secrets": [
                    {
                        "File": {"Name": "pw", "UID": "0", "GID": "0", "Mode": 0o444},
                        "SecretID": secret[0],
                        "SecretName": secret[1],
                    }
                ],
                "Configs": [
                    {
                        "File": {"Name": "/app.conf", "UID": "0", "GID": "0", "Mode": 0o444},
                        "ConfigID": config[0],
                        "ConfigName": config[1],
                    }
                ],
            }
        },
    }


@pytest.mark.parametrize("kind", KINDS)
def test_create_inspect_list_update_delete(kind: str) -> None:
    async def t(api: Api) -> None:
        status, body = await create(api, kind, "db_pass", env="dev")
        assert status == 201 and set(body) == {"ID"}, body
        object_id = body["ID"]

        status, shown = await inspect(api, kind, "db_pass")
        assert status == 200 and shown["ID"] == object_id
        assert shown["Spec"]["Name"] == "db_pass" and shown["Spec"]["Labels"] == {"env": "dev"}
        # a secret's data never leaves the managers; a config's is shown
        if kind == "secrets":
            assert "Data" not in shown["Spec"]
        else:
            assert base64.b64decode(shown["Spec"]["Data"]) == b"s3cr3t\n"
        assert (await inspect(api, kind, object_id[:5]))[1]["ID"] == object_id

        status, body = await create(api, kind, "DB_PASS")
        label = kind[:-1]
        assert (status, body["message"]) == (
            409,
            f"rpc error: code = AlreadyExists desc = {label} DB_PASS already exists",
        )

        version = shown["Version"]["Index"]
        url = f"/v1.41/{kind}/{object_id}/update"
        update_body = {"Name": "db_pass", "Labels": {"env": "prod"}}
        status, _ = await api.call(
            "POST", url, f"/{kind}/{{id}}/update", body=update_body, params={"version": "0"}
        )
        assert status == 500  # the version moved on: "update out of sequence"
        status, _ = await api.call(
            "POST",
            url,
            f"/{kind}/{{id}}/update",
            body=update_body,
            params={"version": str(version)},
        )
        assert status == 200
        status, shown = await inspect(api, kind, object_id)
        assert shown["Spec"]["Labels"] == {"env": "prod"}
        for refused in ({"Name": "other"}, {"Name": "db_pass", "Data": b64(b"new data")}):
            status, body = await api.call(
                "POST",
                url,
                f"/{kind}/{{id}}/update",
                body=refused,
                params={"version": str(shown["Version"]["Index"])},
            )
            assert (status, body["message"]) == (
                400,
                INVALID + "only updates to Labels are allowed",
            )

        status, _ = await api.call("DELETE", f"/v1.41/{kind}/db_pass", f"/{kind}/{{id}}")
        assert status == 204
        status, body = await inspect(api, kind, "db_pass")
        assert (status, body["message"]) == (404, f"{label} db_pass not found")

    run(t)


@pytest.mark.parametrize("kind", KINDS)
def test_list_filters(kind: str) -> None:
    async def t(api: Api) -> None:
        ids = {}
        for name, labels in (("app_key", {"tier": "web"}), ("app_crt", {}), ("db", {"tier": "db"})):
            _, body = await create(api, kind, name, **labels)
            ids[name] = body["ID"]
        assert await names(api, kind) == ["app_crt", "app_key", "db"]
        assert await names(api, kind, names=["db"]) == ["db"]
        assert await names(api, kind, names=["app"]) == []  # names: exact
        assert await names(api, kind, name=["app"]) == ["app_crt", "app_key"]  # name: prefix
        assert await names(api, kind, id=[ids["db"][:6]]) == ["db"]
        assert await names(api, kind, label=["tier"]) == ["app_key", "db"]
        assert await names(api, kind, label=["tier=db"]) == ["db"]
        assert await names(api, kind, name=["app"], label=["tier"]) == ["app_key"]
        status, body = await api.call(
            "GET", f"/v1.41/{kind}", f"/{kind}", params={"filters": '{"nope":{"x":true}}'}
        )
        assert (status, body["message"]) == (400, "Invalid filter 'nope'")

    run(t)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_specs_are_refused_with_swarmkits_words(kind: str) -> None:
    label = kind[:-1]
    limit = MAX_SECRET_SIZE if kind == "secrets" else MAX_CONFIG_SIZE

    async def t(api: Api) -> None:
        bad_name = (
            INVALID + "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start "
            "and end character must be [a-zA-Z0-9]"
        )
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"Data": b64(b"x")}, 400, INVALID + "name must be provided"),
            ({"Name": "-lead", "Data": b64(b"x")}, 400, bad_name),
            ({"Name": "a" * 65, "Data": b64(b"x")}, 400, bad_name),
            ({"Name": "has space", "Data": b64(b"x")}, 400, bad_name),
            (
                {"Name": "empty"},
                400,
                INVALID + f"{label} data must be larger than 0 and less than {limit} bytes",
            ),
            (
                {"Name": "big", "Data": b64(b"x" * limit)},
                400,
                INVALID + f"{label} data must be larger than 0 and less than {limit} bytes",
            ),
            ({"Name": "b64", "Data": "not base64!"}, 400, "invalid Data: not standard base64"),
            ({"Name": "lbl", "Data": b64(b"x"), "Labels": ["a"]}, 400, "invalid Labels"),
            (
                {"Name": "drv", "Data": b64(b"x"), "Templating": {"Name": "golang"}},
                400,
                f"{label} templatings are not supported by Swarmlab",
            ),
        ]
        for body, status, message in cases:
            got, answer = await api.call(
                "POST", f"/v1.41/{kind}/create", f"/{kind}/create", body=body
            )
            assert got == status and answer["message"].startswith(message), (body, answer)
        # the largest data allowed is one byte short of the limit, and any bytes go
        status, _ = await create(api, kind, "largest", b"\x00\xff" + b"x" * (limit - 3))
        assert status == 201
        # blank data is data (dockerd 20.10 takes `printf '\n' | docker secret create`)
        status, _ = await create(api, kind, "blank", b" \n\t")
        assert status == 201

    run(t)


def test_services_refer_to_existing_secrets_and_configs_and_keep_them() -> None:
    async def t(api: Api) -> None:
        _, secret = await create(api, "secrets", "db_pass")
        _, config = await create(api, "configs", "app_conf", b"listen 80;\n")
        await create_net(api)
        body = service_body((secret["ID"], "db_pass"), (config["ID"], "app_conf"))

        missing = service_body(("nosuchid", "ghost"), (config["ID"], "app_conf"))
        status, answer = await api.call(
            "POST", "/v1.41/services/create", "/services/create", body=missing
        )
        assert (status, answer["message"]) == (400, INVALID + "secret not found: ghost")
        wrong_name = service_body((secret["ID"], "db_pass"), (config["ID"], "other"))
        status, answer = await api.call(
            "POST", "/v1.41/services/create", "/services/create", body=wrong_name
        )
        assert (status, answer["message"]) == (400, INVALID + "config not found: other")

        status, answer = await api.call(
            "POST", "/v1.41/services/create", "/services/create", body=body
        )
        assert status == 201, answer
        status, shown = await api.call("GET", "/v1.41/services/web", "/services/{id}")
        container = shown["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert container["Secrets"] == body["TaskTemplate"]["ContainerSpec"]["Secrets"]
        assert container["Configs"] == body["TaskTemplate"]["ContainerSpec"]["Configs"]

        for kind, name in (("secrets", "db_pass"), ("configs", "app_conf")):
            status, answer = await api.call("DELETE", f"/v1.41/{kind}/{name}", f"/{kind}/{{id}}")
            assert (status, answer["message"]) == (
                400,
                INVALID + f"{kind[:-1]} '{name}' is in use by the following service: web",
            )
        status, _ = await api.call("DELETE", "/v1.41/services/web", "/services/{id}")
        assert status == 200
        status, _ = await api.call("DELETE", "/v1.41/secrets/db_pass", "/secrets/{id}")
        assert status == 204

    run(t)


@pytest.mark.parametrize("kind", ["Secret", "Config"])
def test_malformed_references_are_refused_with_swarmkits_words(kind: str) -> None:
    """A reference needs an id and a name and a File target with a name, and two references
    may not write the same file (swarmkit's validateSecretRefsSpec / validateConfigRefsSpec)."""
    what = kind.lower()

    async def t(api: Api) -> None:
        _, first = await create(api, f"{what}s", "first")
        _, second = await create(api, f"{what}s", "second")

        def ref(obj: dict[str, Any], name: str, target: str | None) -> dict[str, Any]:
            out: dict[str, Any] = {f"{kind}ID": obj["ID"], f"{kind}Name": name}
            if target is not None:
                out["File"] = {"Name": target, "UID": "0", "GID": "0", "Mode": 0o444}
            return out

        cases = [
            ([{f"{kind}Name": "first", "File": {"Name": "x"}}], f"malformed {what} reference"),
            ([ref(first, "first", None)], f"malformed {what} reference, no target provided"),
            (
                [ref(first, "first", "")],
                f"malformed file {what} reference, invalid target file name provided",
            ),
            (
                [ref(first, "first", "/same"), ref(second, "second", "/same")],
                f"{what} references 'first' and 'second' have a conflicting target: '/same'",
            ),
        ]
        for refs, message in cases:
            body = {
                "Name": "web",
                "TaskTemplate": {"ContainerSpec": {"Image": "nginx", f"{kind}s": refs}},
            }
            status, answer = await api.call(
                "POST", "/v1.41/services/create", "/services/create", body=body
            )
            assert (status, answer["message"]) == (400, INVALID + message), refs
        ok = {
            "Name": "web",
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "nginx",
                    f"{kind}s": [ref(first, "first", "/a"), ref(second, "second", "/b")],
                }
            },
        }
        status, answer = await api.call(
            "POST", "/v1.41/services/create", "/services/create", body=ok
        )
        assert status == 201, answer

    run(t)


@pytest.mark.parametrize(
    ("kind", "target", "uid", "problem"),
    [
        ("Config", "/", "0", "is the directory / of the container"),
        ("Config", "/etc", "0", "is the directory /etc of the container"),
        ("Config", "/etc/", "0", "is the directory /etc of the container"),
        ("Config", "..", "0", "is the directory / of the container"),
        ("Secret", ".", "0", "is the directory /run/secrets of the container"),
        ("Secret", "sub/dir/", "0", "is the directory /run/secrets/sub/dir of the container"),
        ("Secret", "../x", "0", "has a '..' (dockerd 20.10 writes it at /run/x"),
        ("Secret", "../../etc/passwd", "0", "writes it at /etc/passwd, over whatever"),
        ("Secret", "/etc/../x", "0", "has a '..'"),
        ("Secret", "pw", "", "File.UID '' is not a number"),
        ("Config", "/app.conf", "nobody", "File.UID 'nobody' is not a number"),
    ],
)
def test_targets_dockerd_fails_at_task_start_are_refused_at_create_and_update(
    kind: str, target: str, uid: str, problem: str
) -> None:
    """Targets dockerd 20.10 accepts and then fails every task of (or writes out of
    /run/secrets) are refused when the service is created or updated, never at task start."""
    what = kind.lower()

    async def t(api: Api) -> None:
        _, obj = await create(api, f"{what}s", "first")

        def body(name: str, uid: str) -> dict[str, Any]:
            ref = {
                f"{kind}ID": obj["ID"],
                f"{kind}Name": "first",
                "File": {"Name": name, "UID": uid, "GID": "0", "Mode": 0o444},
            }
            spec = {"Image": "nginx", f"{kind}s": [ref]}
            return {"Name": "web", "TaskTemplate": {"ContainerSpec": spec}}

        status, answer = await api.call(
            "POST", "/v1.41/services/create", "/services/create", body=body(target, uid)
        )
        assert status == 400 and answer["message"].startswith(INVALID), answer
        assert f"{what} reference 'first'" in answer["message"]
        assert problem in answer["message"], answer["message"]
        status, answer = await api.call(
            "POST", "/v1.41/services/create", "/services/create", body=body("ok.conf", "1000")
        )
        assert status == 201, answer
        _, service = await api.call("GET", "/v1.41/services/web", "/services/{id}")
        status, answer = await api.call(
            "POST",
            "/v1.41/services/web/update",
            "/services/{id}/update",
            body=body(target, uid),
            params={"version": str(service["Version"]["Index"])},
        )
        assert status == 400 and problem in answer["message"], answer

    run(t)


def test_the_store_keeps_secret_data_and_a_worker_is_refused() -> None:
    backend = LocalBackend()

    async def t(api: Api) -> None:
        _, secret = await create(api, "secrets", "tls_key", b"-----BEGIN KEY-----\n")
        stored = api.backend.store.get(Secret, secret["ID"])
        assert stored is not None and stored.spec.data == b"-----BEGIN KEY-----\n"
        assert api.backend.store.list(Config) == [] and api.backend.store.list(Service) == []
        api.backend.set_role("worker")
        status, body = await api.call("GET", "/v1.41/secrets", "/secrets")
        assert status == 503 and "not a swarm manager" in body["message"]

    run(t, backend)


class RacingBackend(LocalBackend):
    """A manager whose first removal of a secret loses a race: another manager's service
    create, referring to that secret, commits just before it."""

    def __init__(self) -> None:
        super().__init__()
        self.racer: bytes | None = None

    async def propose(self, data: bytes) -> bytes:
        if self.racer is not None:  # set once the secret exists: this is its removal
            racer, self.racer = self.racer, None
            await super().propose(racer)
        return await super().propose(data)


def test_a_removal_racing_a_service_that_starts_using_it_is_refused() -> None:
    backend = RacingBackend()

    async def t(api: Api) -> None:
        _, secret = await create(api, "secrets", "db_pass")
        service = Service(id="racer0000000000000000000")
        service.spec.annotations.name = "web"
        service.spec.container.image = "nginx"
        service.spec.container.secrets.add(secret_id=secret["ID"], secret_name="db_pass")
        cluster = api.backend.store.list(Cluster)[0]
        backend.racer = Transaction().create(service).update(cluster).encode()
        status, answer = await api.call("DELETE", "/v1.41/secrets/db_pass", "/secrets/{id}")
        assert (status, answer["message"]) == (
            400,
            INVALID + "secret 'db_pass' is in use by the following service: web",
        )
        assert api.backend.store.get(Secret, secret["ID"]) is not None

    run(t, backend)


def test_the_store_refuses_a_second_name_at_apply_time_and_snapshots_keep_both_kinds() -> None:
    store = Store()
    first, racing = Secret(id="a" * 25), Secret(id="b" * 25)
    first.spec.annotations.name = "db_pass"
    racing.spec.annotations.name = "DB_Pass"  # two managers checked, neither saw the other
    first.spec.data = racing.spec.data = b"x"
    config = Config(id="c" * 25)
    config.spec.annotations.name = "db_pass"  # another kind: no conflict
    assert StoreError.from_result(store.apply(1, Transaction().create(first).encode())) is None
    refused = StoreError.from_result(store.apply(2, Transaction().create(racing).encode()))
    assert refused is not None and refused.message == "secret DB_Pass already exists"
    assert StoreError.from_result(store.apply(3, Transaction().create(config).encode())) is None

    copy = Store()
    copy.restore(store.snapshot(), store.applied_index)
    restored = copy.get_by_name(Secret, "DB_PASS")
    assert restored is not None and restored.spec.data == b"x"
    assert [c.id for c in copy.list(Config)] == [config.id]
