"""The lab's admin API on 2375: the fault plan (read, replace, bad bodies refused) and a
manager's Raft state (a worker has none)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from controlplane.api import create_app, lab
from controlplane.api.local import LocalBackend
from controlplane.faults import FaultPlan, Faults
from controlplane.pb import raft_pb2


class FakeDriver:
    def status(self) -> raft_pb2.StatusResponse:
        return raft_pb2.StatusResponse(
            node_id=0xA1,
            role="leader",
            term=3,
            leader=0xA1,
            commit=42,
            applied=41,
            members=[raft_pb2.Member(node_id=0xA1, address="127.77.189.11:2377")],
        )


def _serve(
    faults: Faults,
    driver: FakeDriver | None,
    test: Callable[[TestClient[Any, Any]], Awaitable[None]],
) -> None:
    async def run() -> None:
        app = lab.register(create_app(LocalBackend()), lambda: driver, lambda: None, faults)
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(run())


def test_the_plan_is_read_and_replaced() -> None:
    faults = Faults()

    async def test(client: TestClient[Any, Any]) -> None:
        response = await client.get("/swarmlab/faults")
        assert response.status == 200
        assert await response.json() == FaultPlan().to_json()
        plan = {"partitioned": ["127.77.189.12"], "delay_ms": 200, "jitter_ms": 50}
        response = await client.put("/swarmlab/faults", json=plan)
        assert response.status == 200
        installed = await response.json()
        assert installed["partitioned"] == ["127.77.189.12"]
        assert installed["delay_ms"] == 200
        assert faults.is_partitioned("127.77.189.12:2377")
        assert (await (await client.get("/swarmlab/faults")).json()) == installed
        assert (await client.put("/swarmlab/faults", json={})).status == 200
        assert faults.plan.clean

    _serve(faults, None, test)


def test_bad_plans_get_400_with_the_reason_and_change_nothing() -> None:
    faults = Faults(FaultPlan(frozenset({"127.77.189.12"})))

    async def test(client: TestClient[Any, Any]) -> None:
        for body, reason in (
            (b"{not json", "invalid JSON in the request body"),
            (b'{"loss_percent": 150}', "invalid fault plan: loss_percent in the plan must be"),
            (b'{"partition": []}', "invalid fault plan: unknown field 'partition'"),
        ):
            response = await client.put("/swarmlab/faults", data=body)
            assert response.status == 400
            assert reason in (await response.json())["message"]
        assert faults.is_partitioned("127.77.189.12")

    _serve(faults, None, test)


def test_a_manager_shows_its_raft_state() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        response = await client.get("/swarmlab/raft")
        assert response.status == 200
        assert await response.json() == {
            "node_id": "00000000000000a1",
            "role": "leader",
            "term": 3,
            "commit": 42,
            "applied": 41,
            "leader": "00000000000000a1",
            "members": [
                {"node_id": "00000000000000a1", "address": "127.77.189.11:2377", "learner": False}
            ],
        }

    _serve(Faults(), FakeDriver(), test)


def test_a_worker_has_no_raft_state() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        response = await client.get("/swarmlab/raft")
        assert response.status == 404
        assert "this node is not a manager" in (await response.json())["message"]

    _serve(Faults(), None, test)


class FakeGossip:
    def view(self) -> dict[str, Any]:
        return {"name": "n1", "members": [{"name": "n1", "state": "alive"}]}


def test_a_member_shows_its_gossip_view_and_a_node_outside_a_swarm_has_none() -> None:
    async def run() -> None:
        gossip: FakeGossip | None = FakeGossip()
        app = lab.register(create_app(LocalBackend()), lambda: None, lambda: gossip, Faults())
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/swarmlab/gossip")
            assert response.status == 200
            assert (await response.json())["members"] == [{"name": "n1", "state": "alive"}]
            gossip = None
            response = await client.get("/swarmlab/gossip")
            assert response.status == 404
            assert "not in a swarm" in (await response.json())["message"]

    asyncio.run(run())
