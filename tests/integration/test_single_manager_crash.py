"""A one-manager swarm SIGKILLed while a client creates services one after the other keeps
every create it acknowledged (127.77.243.x). Writing alone on a fast disk, the only voter
syncs its WAL on the event loop (`RaftDriver._sync_on_loop`) rather than in a thread: the
write must still come before the answer, or an acknowledged service would be lost with the
process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.lab.engine import EngineClient
from controlplane.lab.swarm_lab import SwarmLab, until
from controlplane.raft.driver import LONE_WRITES_BEFORE_LOOP_SYNC

pytestmark = pytest.mark.integration

LAB = 243
# Acknowledged creates before the kill: well past the lone writes after which the manager
# syncs on its loop.
CREATES_BEFORE_KILL = 4 * LONE_WRITES_BEFORE_LOOP_SYNC


async def create_services(engine: EngineClient, acknowledged: list[str]) -> None:
    """Create services back to back until cancelled or the engine is gone."""
    for seq in range(10_000):
        name = f"crash-{seq}"
        body = {
            "Name": name,
            "TaskTemplate": {"ContainerSpec": {"Image": "nginx:latest"}},
            "Mode": {"Replicated": {"Replicas": 0}},
        }
        try:
            await engine.request("POST", "/services/create", body)
        except Exception:  # the node was killed: this one was not acknowledged
            return
        acknowledged.append(name)


def test_every_acknowledged_create_survives_a_sigkill_of_the_only_manager(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=0, lab=LAB)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            acknowledged: list[str] = []
            async with EngineClient(manager.api, timeout=30) as engine:
                writer = asyncio.create_task(create_services(engine, acknowledged))

                async def enough() -> bool:
                    return len(acknowledged) >= CREATES_BEFORE_KILL

                await until(enough, 120, f"{CREATES_BEFORE_KILL} acknowledged creates", 0.001)
                manager.kill()  # the next create is on its way or being served
                await asyncio.wait_for(writer, 60)

            manager.start()
            await until(lab.all_ready, 120, "the manager back and Ready")
            async with EngineClient(manager.api, timeout=30) as engine:
                names = {s["Spec"]["Name"] for s in await engine.request("GET", "/services")}
            lost = [name for name in acknowledged if name not in names]
            assert not lost, f"acknowledged, then lost in the crash: {lost}"
        finally:
            lab.stop()

    asyncio.run(scenario())
