"""Network creates through every manager at once (127.77.224.x): the leader allocates them all
(followers forward the call), so creates through a follower complete while clients keep the
leader busy, nothing is given twice, and a follower answers refusals with Docker's status and
words, as the leader would."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from pathlib import Path
from typing import Any

import pytest

from controlplane.lab.engine import EngineClient, EngineError
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = pytest.mark.integration

LAB = 224
LEADER_CLIENTS = 6  # back-to-back writers through the leader, for the whole test
FOLLOWER_CREATES = 8  # sequential creates through each follower, every one must succeed
VXLAN_ID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"


def body(name: str, subnet: str = "") -> dict[str, Any]:
    config = [{"Subnet": subnet}] if subnet else []
    return {"Name": name, "Driver": "overlay", "IPAM": {"Driver": "default", "Config": config}}


async def load(engine: EngineClient, client: int, stop: asyncio.Event, acked: list[str]) -> None:
    """Create networks through `engine` until `stop`; remember the acknowledged names."""
    for seq in range(100_000):
        if stop.is_set():
            return
        name = f"load{client}-{seq}"
        await engine.request("POST", "/networks/create", body(name))
        acked.append(name)


async def through_follower(engine: EngineClient, tag: str, acked: list[str]) -> None:
    """Sequential creates; each must succeed and be visible on this follower at once."""
    for seq in range(FOLLOWER_CREATES):
        name = f"{tag}-{seq}"
        created = await engine.request("POST", "/networks/create", body(name))
        seen = await engine.request("GET", f"/networks/{created['Id']}")
        assert seen["Name"] == name and seen["IPAM"]["Config"], seen
        acked.append(name)


def test_creates_through_followers_complete_while_the_leader_is_loaded(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=0, lab=LAB)
        engines: list[EngineClient] = []
        try:
            await lab.up()
            leader = await until(lab.all_ready, 60, "a ready lab with a leader")
            followers = [m for m in lab.managers if m is not leader]
            leader_engine = EngineClient(leader.api, timeout=60)
            follower_engines = [EngineClient(f.api, timeout=60) for f in followers]
            engines = [leader_engine, *follower_engines]

            stop = asyncio.Event()
            leader_acked: list[str] = []
            loaders = [
                asyncio.create_task(load(leader_engine, c, stop, leader_acked))
                for c in range(LEADER_CLIENTS)
            ]
            try:

                async def leader_busy() -> bool | None:
                    return True if len(leader_acked) >= 20 else None

                # The leader is busy before the followers start, and stays busy throughout.
                await until(leader_busy, 60, "the leader's first creates")
                follower_acked: list[str] = []
                await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            through_follower(e, f"f{i}", follower_acked)
                            for i, e in enumerate(follower_engines)
                        )
                    ),
                    180,  # a deadline against a hang, not a speed requirement
                )
                assert not any(task.done() for task in loaders), "a leader client failed"
            finally:
                stop.set()
                await asyncio.gather(*loaders)
            assert len(follower_acked) == len(followers) * FOLLOWER_CREATES

            # Refusals through a follower: Docker's status codes and words.
            first, second = follower_engines
            await first.request("POST", "/networks/create", body("ranged", "10.200.0.0/16"))
            with pytest.raises(EngineError) as taken:
                await second.request("POST", "/networks/create", body("ranged"))
            assert (taken.value.status, str(taken.value)) == (
                409,
                "network with name ranged already exists",
            )
            with pytest.raises(EngineError) as overlap:
                await second.request("POST", "/networks/create", body("inside", "10.200.1.0/24"))
            assert overlap.value.status == 400
            assert "overlaps subnet 10.200.0.0/16 of network ranged" in str(overlap.value)

            listed = await leader_engine.networks()
            names = collections.Counter(n["Name"] for n in listed)
            assert [n for n, c in names.items() if c > 1] == []
            assert set(leader_acked) | set(follower_acked) | {"ranged"} <= set(names)
            nets = [await leader_engine.request("GET", f"/networks/{n['Id']}") for n in listed]
            subnets = collections.Counter(c["Subnet"] for n in nets for c in n["IPAM"]["Config"])
            assert [s for s, c in subnets.items() if c > 1] == []
            vnis = collections.Counter(n["Options"][VXLAN_ID_OPTION] for n in nets)
            assert [v for v, c in vnis.items() if c > 1] == []
            assert len(nets) == len(subnets) == len(vnis)
        finally:
            for engine in engines:
                with contextlib.suppress(Exception):
                    await engine.close()
            lab.stop()

    asyncio.run(scenario())
