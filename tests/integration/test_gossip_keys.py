"""Gossip sealed with the managers' keys in a live lab: rotations every few seconds lose no
packet and fail no member, and a gossip process with other keys is refused, logged once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.gossip.keyring import generate_key
from controlplane.lab.processes import GossipProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = pytest.mark.integration

LAB = 148
ROTATION = 3.0  # seconds between key rotations (Swarm's is 12 hours)
ROTATIONS = 4
REFUSALS = ("unknown_key", "auth_failed", "encryption_mismatch", "tcp_unknown_key")
INTRUDER = f"127.77.{LAB}.250"


async def views(lab: SwarmLab) -> dict[str, dict[str, Any]]:
    async def one(name: str) -> dict[str, Any]:
        async with lab.engine(name) as engine:
            return await engine.gossip()

    names = [n.name for n in lab.nodes]
    return dict(zip(names, await asyncio.gather(*(one(n) for n in names)), strict=True))


def test_rotations_lose_nothing_and_a_node_with_other_keys_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=LAB, key_rotation_interval=ROTATION)
        intruder = GossipProcess(
            "intruder", f"{INTRUDER}:7946", tmp_path / "intruder", keys=(generate_key(),)
        )
        try:
            await lab.up()

            async def all_alive() -> dict[str, dict[str, Any]] | None:
                seen = await views(lab)
                ok = all(
                    len(v["members"]) == 3 and {m["state"] for m in v["members"]} == {"alive"}
                    for v in seen.values()
                )
                return seen if ok else None

            first = await until(all_alive, 60, "every node alive in every gossip view")
            assert all(v["encrypted"] and len(v["keys"]) == 3 for v in first.values()), first

            # Watch several rotations: every view must show every member alive at every look,
            # and no node may refuse a packet (one sealed with a key it lacks would be).
            primaries: dict[str, set[str]] = {name: set() for name in first}
            deadline = time.monotonic() + 120
            while min(len(p) for p in primaries.values()) < ROTATIONS + 1:
                assert time.monotonic() < deadline, f"rotations not seen: {primaries}"
                for name, view in (await views(lab)).items():
                    states = {m["name"]: m["state"] for m in view["members"]}
                    assert set(states.values()) == {"alive"}, (name, states)
                    assert len(states) == 3, (name, states)
                    refused = {r: n for r, n in view["drops"].items() if r in REFUSALS}
                    assert not refused, (name, refused)
                    primaries[name].add(view["keys"][0])
                await asyncio.sleep(0.3)
            print("primary gossip keys seen per node:", {n: len(p) for n, p in primaries.items()})

            # A gossip process with other keys tries to join manager-1: refused, logged once.
            manager = lab.node("manager-1")
            intruder.start(join=[f"{manager.address}:7946"])

            async def refused_enough() -> int | None:
                async with lab.engine(manager) as engine:
                    drops = (await engine.gossip())["drops"]
                count = sum(drops.get(r, 0) for r in REFUSALS)
                return count if count >= 3 else None

            print("refused packets at manager-1:", await until(refused_enough, 60, "refusals"))
            assert intruder.alive(), intruder.startup_error()
            assert [m["name"] for m in (await intruder.view())["members"]] == ["intruder"]
            for name, view in (await views(lab)).items():
                assert "intruder" not in {m["name"] for m in view["members"]}, name
            logged = [
                line
                for line in manager.log_file.read_text().splitlines()
                if "event=gossip_refused" in line and f"peer={INTRUDER} " in line
            ]
            print("\n".join(logged))
            assert len(logged) == 1 and "reason=unknown_key" in logged[0], logged
            assert manager.alive()
        finally:
            intruder.stop()
            lab.stop()

    asyncio.run(scenario())
