"""A network removed (or pruned) while a service create that uses it is in flight: one of the
two must lose (the remove answers "in use" or the prune keeps it, or the create "network not
found"), never both win and leave a service whose network is gone. Through the Engine API of
an in-process manager."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from controlplane.lab.engine import EngineClient, EngineError
from tests.unit.in_process_node import run_manager

ADDRESS = "127.77.249.30"  # this file's nodes (its tests may run at the same time)
PRUNE_ADDRESS = "127.77.249.31"
RUN_ADDRESS = "127.77.249.32"
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
        await assert_no_service_lost_its_network(create_side)


async def assert_no_service_lost_its_network(client: EngineClient) -> None:
    networks = {n["Id"] for n in await client.networks()}
    for service in await client.request("GET", "/services"):
        targets = [t["Target"] for t in service["Spec"]["TaskTemplate"]["Networks"]]
        assert set(targets) <= networks, f"{service['Spec']['Name']} lost its network"


def test_a_prune_during_a_service_create_keeps_the_network_or_the_create_fails(
    tmp_path: Path,
) -> None:
    run_manager(tmp_path, PRUNE_ADDRESS, prune_race)


async def prune_race(api: str) -> None:
    """The prune's "unused" check and its delete are two steps: a service that takes the
    network in between makes the delete refused, and the prune goes on without it."""
    async with (
        EngineClient(api, timeout=60) as create_side,
        EngineClient(api, timeout=60) as prune_side,
    ):
        for n in range(ROUNDS):
            name = f"prune-net-{n}"
            network = await create_side.create_network(name)
            created, pruned = await asyncio.gather(
                answer(
                    create_side.request(
                        "POST", "/services/create", service_spec(f"prune-svc-{n}", network)
                    )
                ),
                prune_side.request("POST", "/networks/prune"),
            )
            deleted = pruned["NetworksDeleted"] or []
            if created[0] == "ok":
                assert name not in deleted, f"round {n}: pruned a network a service uses"
            else:
                assert created == ("404", f"network {network} not found"), created
                assert name in deleted
        await assert_no_service_lost_its_network(create_side)


def test_a_network_removed_during_a_docker_run_on_it(tmp_path: Path) -> None:
    run_manager(tmp_path, RUN_ADDRESS, run_race)


async def run_container(client: EngineClient, name: str, network: str) -> None:
    body = {
        "Image": "busybox",
        "Cmd": ["sleep", "86400"],
        "HostConfig": {"NetworkMode": network},
    }
    created = await client.request("POST", "/containers/create", body, params={"name": name})
    await client.request("POST", f"/containers/{created['Id']}/start")


async def run_race(api: str) -> None:
    """`docker run --network N` and `docker network rm N` together: the container starts and
    the remove is refused (in use by its attachment task), or the run fails with "not found"
    and the remove goes through; never both."""
    async with (
        EngineClient(api, timeout=60) as run_side,
        EngineClient(api, timeout=60) as rm_side,
    ):
        for n in range(ROUNDS):
            name = f"run-net-{n}"
            created = await run_side.request(
                "POST", "/networks/create", {"Name": name, "Driver": "overlay", "Attachable": True}
            )
            network = created["Id"]
            ran, removed = await asyncio.gather(
                answer(run_container(run_side, f"run-box-{n}", name)),
                answer(rm_side.request("DELETE", f"/networks/{network}")),
            )
            assert (ran[0], removed[0]) != ("ok", "ok"), f"round {n}: both won"
            if ran[0] == "ok":
                assert removed[0] == "400" and "is in use by task" in removed[1], removed
            else:
                # Gone before the create: 404; during the start: the start's 500 that names
                # the manager's NotFound, as dockerd words a failed attach.
                assert ran[0] in ("404", "500") and "not found" in ran[1], ran
        names = {n["Name"] for n in await run_side.networks()}
        for container in await run_side.request("GET", "/containers/json"):
            on = set(container["NetworkSettings"]["Networks"])
            assert on <= names, f"{container['Names']} lost its network"
