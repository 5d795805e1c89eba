"""API writes through a follower go to the leader on the follower's kept-open channel
(`LeaderCalls.propose`, `linearizable_read`) and answer once the follower has applied them:
each write is visible on that follower at once (3 managers on 127.77.165.x)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.lab.engine import EngineError
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = pytest.mark.integration

TIMEOUT = 90.0


def test_writes_through_a_follower_are_read_back_there_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=0, lab=165)
        try:
            await lab.up()
            leader = await until(lab.all_ready, TIMEOUT, "the lab to be ready")
            follower = next(m for m in lab.managers if m is not leader)
            async with lab.engine(follower) as engine:
                for n in range(5):
                    spec = {
                        "Name": f"web-{n}",
                        "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
                        "Mode": {"Replicated": {"Replicas": 0}},
                    }
                    created = await engine.request("POST", "/services/create", spec)
                    service = await engine.request("GET", f"/services/{created['ID']}")
                    assert service["Spec"]["Name"] == f"web-{n}"
                    spec["Labels"] = {"round": str(n)}
                    version = service["Version"]["Index"]
                    await engine.request(
                        "POST",
                        f"/services/{created['ID']}/update",
                        spec,
                        params={"version": str(version)},
                    )
                    updated = await engine.request("GET", f"/services/{created['ID']}")
                    assert updated["Spec"]["Labels"] == {"round": str(n)}
                    await engine.request("DELETE", f"/services/{created['ID']}")
                    with pytest.raises(EngineError) as gone:
                        await engine.request("GET", f"/services/{created['ID']}")
                    assert gone.value.status == 404
                # The follower's store has the first twin already: the second is refused there.
                await engine.request("POST", "/services/create", _named("twin"))
                with pytest.raises(EngineError) as twice:
                    await engine.request("POST", "/services/create", _named("twin"))
                assert twice.value.status == 409
        finally:
            lab.stop()

    asyncio.run(scenario())


def _named(name: str) -> dict[str, object]:
    return {
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
        "Mode": {"Replicated": {"Replicas": 0}},
    }
