"""`docker events`: the store watcher's swarm-scope events (what changed, Docker's attribute
names), the event filter's matching rules, and `GET /events` over a real socket
(127.77.163.1): kept events for `since`/`until`, the live stream ending at `until`, the
container lifecycle and exec events in dockerd's order, and bad times and filters refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controlplane.agent.runtime import Runtime
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api import containers, create_app, events, execs
from controlplane.api.events import EventFilter, parse_time
from controlplane.api.local import LocalBackend
from controlplane.api.spec import SPEC_PATH, Spec
from controlplane.event_hub import EngineEvent, EventHub
from controlplane.manager.store_events import StoreEvents
from controlplane.pb.objects_pb2 import Config, Network, Node, Secret, Service
from controlplane.store import Store, StoreError, Transaction

HOST = "127.77.163.1"
DEADLINE = 30.0
Client = TestClient[Any, Any]


# ---- the store's changes as swarm-scope events -------------------------------------------


def test_store_changes_become_swarm_events_with_what_changed() -> None:
    async def scenario() -> None:
        store, hub = Store(), EventHub()
        index = 0

        def apply(txn: Transaction) -> None:
            nonlocal index
            index += 1
            assert StoreError.from_result(store.apply(index, txn.encode())) is None

        node = Node(id="n1", role="worker")
        node.meta.created_at_ns = 5_000_000_000
        node.description.hostname = "worker-1"
        node.status.state = "unknown"
        node.spec.availability = "active"
        apply(Transaction().create(node))  # before the watcher: no event, but remembered
        watcher = asyncio.create_task(StoreEvents(store, hub).run())
        await asyncio.sleep(0)
        subscription = hub.subscribe()

        async def next_event() -> dict[str, Any]:
            event = await asyncio.wait_for(subscription.next(), DEADLINE)
            return {
                "kind": (event.type, event.action, event.actor_id, event.scope),
                "attributes": dict(event.attributes),
                "time": event.time_ns,
            }

        service = Service(id="s1")
        service.meta.created_at_ns = 7_000_000_001
        service.spec.annotations.name = "web"
        service.spec.container.image = "nginx"
        service.spec.replicas = 1
        apply(Transaction().create(service))
        assert await next_event() == {
            "kind": ("service", "create", "s1", "swarm"),
            "attributes": {"name": "web"},
            "time": 7_000_000_001,
        }

        ready = store.get(Node, "n1")
        assert ready is not None
        ready.status.state = "ready"
        ready.spec.availability = "drain"
        ready.meta.updated_at_ns = 9_000_000_000
        apply(Transaction().update(ready))
        assert await next_event() == {
            "kind": ("node", "update", "n1", "swarm"),
            "attributes": {
                "name": "worker-1",
                "state.old": "unknown",
                "state.new": "ready",
                "availability.old": "active",
                "availability.new": "drain",
            },
            "time": 9_000_000_000,
        }

        scaled = store.get(Service, "s1")
        assert scaled is not None
        scaled.spec.replicas = 3
        scaled.spec.container.image = "nginx:alpine"
        apply(Transaction().update(scaled))
        # The new spec (the API's write), then the rolling update's state (the orchestrator's).
        assert (await next_event())["attributes"] == {
            "name": "web",
            "image.old": "nginx",
            "image.new": "nginx:alpine",
            "replicas.old": "1",
            "replicas.new": "3",
        }
        scaled = store.get(Service, "s1")
        assert scaled is not None
        scaled.update_status.state = "updating"
        apply(Transaction().update(scaled))
        assert (await next_event())["attributes"] == {
            "name": "web",
            "updatestate.new": "updating",
        }
        scaled = store.get(Service, "s1")
        assert scaled is not None
        scaled.update_status.state = "completed"
        apply(Transaction().update(scaled))
        assert (await next_event())["attributes"] == {
            "name": "web",
            "updatestate.old": "updating",
            "updatestate.new": "completed",
        }

        network = Network(id="w1")
        network.spec.annotations.name = "my-net"
        apply(Transaction().create(network))
        assert (await next_event())["kind"] == ("network", "create", "w1", "swarm")
        allocated = await next_event()  # swarmkit's allocator writes it again
        assert allocated["kind"] == ("network", "update", "w1", "swarm")
        assert allocated["attributes"] == {"name": "my-net"}
        before = time.time_ns()
        apply(Transaction().delete(Service, "s1"))
        removed = await next_event()
        assert removed["kind"] == ("service", "remove", "s1", "swarm")
        assert removed["attributes"] == {"name": "web"} and removed["time"] >= before

        secret = Secret(id="x1")
        secret.spec.annotations.name = "db_password"
        secret.spec.data = b"hunter2"
        apply(Transaction().create(secret))
        created = await next_event()
        assert created["kind"] == ("secret", "create", "x1", "swarm")
        assert created["attributes"] == {"name": "db_password"}  # the data never goes out
        config = Config(id="c1")
        config.spec.annotations.name = "site"
        apply(Transaction().create(config))
        apply(Transaction().delete(Config, "c1"))
        assert (await next_event())["kind"] == ("config", "create", "c1", "swarm")
        assert (await next_event())["kind"] == ("config", "remove", "c1", "swarm")
        watcher.cancel()

    asyncio.run(scenario())


def test_a_restarted_managers_own_log_applied_again_gives_no_events() -> None:
    async def scenario() -> None:
        store, hub = Store(), EventHub()
        watcher = asyncio.create_task(StoreEvents(store, hub, replayed_until=2).run())
        await asyncio.sleep(0)
        subscription = hub.subscribe()
        service = Service(id="s1")
        service.spec.annotations.name = "web"
        service.spec.replicas = 1
        txn = Transaction().create(service)
        for index, replicas in ((1, 0), (2, 2), (3, 5)):  # the first two are replayed
            if replicas:
                current = store.get(Service, "s1")
                assert current is not None
                current.spec.replicas = replicas
                txn = Transaction().update(current)
            assert StoreError.from_result(store.apply(index, txn.encode())) is None
        event = await asyncio.wait_for(subscription.next(), DEADLINE)
        assert (event.action, dict(event.attributes)) == (
            "update",
            {"name": "web", "replicas.old": "2", "replicas.new": "5"},
        )
        assert [e.action for e in hub.kept()] == ["update"]
        watcher.cancel()

    asyncio.run(scenario())


# ---- the filter ----------------------------------------------------------------------------


def event(type_: str, action: str, actor: str, **attributes: str) -> EngineEvent:
    return EngineEvent(type_, action, actor, attributes, "local", 1)


CONTAINER = event("container", "start", "abc123", name="web", image="nginx:latest", tier="db")
EXEC = event("container", "exec_start: sh -c ls", "abc123", name="web", image="nginx:latest")
CONNECT = event("network", "connect", "net999", name="my-net", type="overlay", container="abc123")


@pytest.mark.parametrize(
    ("filters", "matching"),
    [
        ({}, {"start", "exec", "connect"}),
        ({"type": ["container"]}, {"start", "exec"}),
        ({"event": ["start"]}, {"start"}),
        ({"event": ["exec_start"]}, {"exec"}),  # dockerd's prefix rule for exec events
        ({"container": ["abc"]}, {"start", "exec"}),  # by id prefix
        ({"container": ["we"]}, {"start", "exec"}),  # by name prefix
        ({"network": ["my-net"]}, {"connect"}),
        ({"network": ["my-net"], "container": ["web"]}, set()),  # every key must match
        ({"image": ["nginx"]}, {"start", "exec"}),  # the name without its tag
        ({"image": ["nginx:latest"]}, {"start", "exec"}),
        ({"label": ["tier"]}, {"start"}),
        ({"label": ["tier=db"]}, {"start"}),
        ({"label": ["tier=web"]}, set()),
        ({"scope": ["swarm"]}, set()),
        ({"type": ["network", "container"], "event": ["connect", "start"]}, {"start", "connect"}),
    ],
)
def test_filters_match_as_dockerd(filters: dict[str, list[str]], matching: set[str]) -> None:
    accept = EventFilter.parse(filters).accepts
    named = {"start": CONTAINER, "exec": EXEC, "connect": CONNECT}
    assert {name for name, e in named.items() if accept(e)} == matching


def test_times_are_unix_seconds_with_optional_nanoseconds() -> None:
    assert parse_time("since", "") is None
    assert parse_time("since", "1700000000") == 1_700_000_000_000_000_000
    assert parse_time("since", "1700000000.5") == 1_700_000_000_500_000_000
    assert parse_time("until", "-5") == -5_000_000_000


# ---- GET /events ---------------------------------------------------------------------------


def run(test: Callable[[Client, StandaloneContainers], Awaitable[None]]) -> None:
    async def main() -> None:
        registry = StandaloneContainers(Runtime())
        app = containers.register(create_app(LocalBackend()), registry)
        events.register(execs.register(app, registry), registry.runtime.events)
        async with TestClient(TestServer(app, host=HOST)) as client:
            try:
                await test(client, registry)
            finally:
                await registry.close()

    asyncio.run(main())


def lines(body: bytes) -> list[dict[str, Any]]:
    """The messages of an events stream, each checked against the v1.41 spec's EventMessage
    (without the deprecated `status`, `id` and `from` that dockerd still adds and the spec no
    longer lists)."""
    assert body.endswith(b"\n"), body
    messages = [json.loads(line) for line in body.decode().splitlines()]
    if SPEC_PATH.exists():
        spec = Spec.load(SPEC_PATH)
        for message in messages:
            current = {k: v for k, v in message.items() if k not in ("status", "id", "from")}
            spec.validate_response("/events", "GET", 200, current)
    return messages


def stamp(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return f"{seconds}.{nanos:09d}"


async def run_container(client: Client, name: str, cmd: list[str]) -> str:
    made = await client.post(
        "/v1.41/containers/create", json={"Image": "busybox", "Cmd": cmd}, params={"name": name}
    )
    assert made.status == 201, await made.text()
    cid = str((await made.json())["Id"])
    assert (await client.post(f"/v1.41/containers/{cid}/start")).status == 204
    return cid


def test_kept_events_between_since_and_until_in_dockerds_order() -> None:
    async def test(client: Client, _registry: StandaloneContainers) -> None:
        since = time.time_ns()
        cid = await run_container(client, "box", ["sleep", "100"])
        made = await client.post(f"/v1.41/containers/{cid}/exec", json={"Cmd": ["echo", "hi"]})
        exec_id = (await made.json())["Id"]
        started = await client.post(f"/v1.41/exec/{exec_id}/start", json={"Detach": True})
        assert started.status == 200

        async def exec_died() -> bool:
            inspected = await (await client.get(f"/v1.41/exec/{exec_id}/json")).json()
            return inspected["ExitCode"] is not None

        deadline = time.monotonic() + DEADLINE
        while not await exec_died():
            assert time.monotonic() < deadline, "the exec never ended"
            await asyncio.sleep(0.05)
        assert (await client.delete(f"/v1.41/containers/{cid}", params={"force": "1"})).status
        until = time.time_ns()

        got = await client.get(
            "/v1.41/events", params={"since": stamp(since), "until": stamp(until)}
        )
        assert got.status == 200 and got.content_type == "application/json"
        messages = lines(await got.read())
        assert [m["Action"] for m in messages] == [
            "create",
            "start",
            "exec_create: echo hi",
            "exec_start: echo hi",
            "exec_die",
            "kill",
            "die",
            "destroy",
        ]
        first = messages[0]
        assert first == {
            "status": "create",
            "id": cid,
            "from": "busybox",
            "Type": "container",
            "Action": "create",
            "Actor": {"ID": cid, "Attributes": {"image": "busybox", "name": "box"}},
            "scope": "local",
            "time": first["timeNano"] // 1_000_000_000,
            "timeNano": first["timeNano"],
        }
        assert since <= first["timeNano"] <= until
        assert messages[4]["Actor"]["Attributes"] == {
            "execID": exec_id,
            "exitCode": "0",
            "image": "busybox",
            "name": "box",
        }
        assert messages[5]["Actor"]["Attributes"]["signal"] == "9"
        assert messages[6]["Actor"]["Attributes"]["exitCode"] == "137"

        only_exec = await client.get(
            "/v1.41/events",
            params={
                "since": stamp(since),
                "until": stamp(until),
                "filters": json.dumps({"event": {"exec_create": True}, "container": ["box"]}),
            },
        )
        assert [m["Action"] for m in lines(await only_exec.read())] == ["exec_create: echo hi"]
        # Without since or until nothing kept is replayed; an until already past ends at once.
        past = await client.get("/v1.41/events", params={"until": stamp(since)})
        assert await past.read() == b""

    run(test)


def test_the_live_stream_carries_new_events_and_ends_at_until() -> None:
    async def test(client: Client, _registry: StandaloneContainers) -> None:
        until = time.time_ns() + 3_000_000_000
        stream = await client.get(
            "/v1.41/events",
            params={"until": stamp(until), "filters": json.dumps({"type": ["container"]})},
        )
        assert stream.status == 200
        cid = await run_container(client, "quick", ["true"])
        seen: list[str] = []
        while len(seen) < 3:
            line = await asyncio.wait_for(stream.content.readline(), DEADLINE)
            assert line, f"the stream ended early after {seen}"
            message = json.loads(line)
            assert message["id"] == cid
            seen.append(message["Action"])
        assert seen == ["create", "start", "die"]
        rest = await asyncio.wait_for(stream.content.read(), DEADLINE)  # ends at `until`
        assert rest == b"" and time.time_ns() >= until

    run(test)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "abc"}, 'strconv.ParseInt: parsing "abc": invalid syntax'),
        ({"until": "12.x"}, 'strconv.ParseInt: parsing "x": invalid syntax'),
        ({"since": "--5"}, 'strconv.ParseInt: parsing "--5": invalid syntax'),
        ({"since": "5.-1"}, 'strconv.ParseInt: parsing "-1": invalid syntax'),
        ({"since": "100", "until": "50"}, "`since` time (100) cannot be after `until` time (50)"),
        ({"filters": '{"colour": ["red"]}'}, "Invalid filter 'colour'"),
        ({"filters": '{"type": ["bogus"]}'}, "Invalid filter 'type=bogus': use one of builder,"),
        ({"filters": '{"scope": ["global"]}'}, "Invalid filter 'scope=global': use one of local"),
        ({"filters": "not json"}, "invalid filters 'not json'"),
    ],
)
def test_bad_times_and_filters_are_refused(params: dict[str, str], message: str) -> None:
    async def test(client: Client, _registry: StandaloneContainers) -> None:
        refused = await client.get("/v1.41/events", params=params)
        assert refused.status == 400
        assert (await refused.json())["message"].startswith(message)

    run(test)
