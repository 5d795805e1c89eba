"""A network removed while a service create that uses it is in flight: one of the two must
lose (the remove answers "in use", or the create "network not found"), never both win and
leave a service whose network is gone. Through the Engine API of an in-process manager."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from controlplane.lab.engine import EngineClient, EngineError
from tests.unit.in_process_node import run_manager

ADDRESS = "127.77.249.30"  # this file's node
ROUNDS = 8


def service_spec(name: str, network: str) -> dict[str, Any]:
    return {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Args": ["sleep", "86400"]},
            "Networks": [{"Target": network}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }


async def answer(call: Any) -> tuple[str, str]:
    try:
        await call
    except EngineError as err:
        return f"{err.status}", str(err)
    return "ok", ""


def test_a_network_removed_during_a_service_create_that_uses_it(tmp_path: Path) -> None:
    run_manager(tmp_path, ADDRESS, race)


async def race(api: str) -> None:
    async with (
        EngineClient(api, timeout=60) as create_side,
        EngineClient(api, timeout=60) as rm_side,
    ):
        for n in range(ROUNDS):
            network = await create_side.create_network(f"race-net-{n}")
            created, removed = await asyncio.gather(
                answer(
                    create_side.request(
                        "POST", "/services/create", service_spec(f"race-svc-{n}", network)
                    )
                ),
                answer(rm_side.request("DELETE", f"/networks/{network}")),
            )
            assert (created[0], removed[0]) != ("ok", "ok"), f"round {n}: both won"
            if created[0] == "ok":
                assert (
                    removed[0] == "400" and f"network {network} is in use by service" in removed[1]
                )
            else:
                assert created == ("404", f"network {network} not found"), created
        networks = {n["Id"] for n in await create_side.networks()}
        for service in await create_side.request("GET", "/services"):
            targets = [t["Target"] for t in service["Spec"]["TaskTemplate"]["Networks"]]
            assert set(targets) <= networks, f"{service['Spec']['Name']} lost its network"
