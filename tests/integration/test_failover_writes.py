"""Writes during a leader failover (issue 4, acceptance): several clients create networks
through the Engine APIs of the managers that will survive while the leader is SIGKILLed.
Afterwards every acknowledged network exists on every manager (the killed one restarted and
caught up), and no name, subnet or VNI was given twice."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controlplane.lab.engine import EngineClient
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = pytest.mark.integration

CLIENTS = 4
# Acknowledged writes, all clients together, before and after the kill (a client's share depends
# on the survivor it writes through and on when the new leader is elected).
WRITES_BEFORE_KILL = 12
WRITES_AFTER_KILL = 12
VXLAN_ID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"


class NetworkWriter:
    """One client: creates networks named `c<client>-<seq>` back to back, a fresh name for
    every attempt (so an unacknowledged attempt that did commit never collides with a later
    one), and remembers what the engine acknowledged."""

    def __init__(self, client: int, engine: EngineClient) -> None:
        self.client = client
        self.engine = engine
        self.acknowledged: dict[str, str] = {}  # name -> id
        self.after_kill = 0
        self.failures = 0
        self.last_error = ""
        self.killed = False

    async def run(self, stop: asyncio.Event) -> None:
        for seq in range(10_000):
            if stop.is_set():
                return
            name = f"c{self.client}-{seq}"
            body = {"Name": name, "CheckDuplicate": True, "Driver": "overlay"}
            try:
                created = await self.engine.request("POST", "/networks/create", body)
            except Exception as err:  # no leader yet, or the request was cut: not acknowledged
                self.failures += 1
                self.last_error = f"{type(err).__name__}: {err}"
                await asyncio.sleep(0.05)
                continue
            self.acknowledged[name] = created["Id"]
            if self.killed:
                self.after_kill += 1


async def networks_seen_by(engine: EngineClient) -> list[dict[str, Any]]:
    """Every network as `inspect` shows it, for every entry of the list."""
    listed = await engine.networks()
    return [await engine.request("GET", f"/networks/{n['Id']}") for n in listed]


def test_acknowledged_networks_survive_a_leader_kill(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=2, lab=193)
        engines: list[EngineClient] = []
        try:
            await lab.up()
            leader = await until(lab.all_ready, 60, "a ready lab with a leader")
            survivors = [m for m in lab.managers if m is not leader]
            engines = [EngineClient(m.api, timeout=10) for m in survivors]
            writers = [NetworkWriter(c, engines[c % len(engines)]) for c in range(CLIENTS)]
            stop = asyncio.Event()
            running = [asyncio.create_task(w.run(stop)) for w in writers]

            async def wrote(count: Callable[[NetworkWriter], int], n: int) -> bool | None:
                if any(task.done() for task in running):
                    raise AssertionError("a writer stopped early")
                return True if sum(count(w) for w in writers) >= n else None

            try:
                await until(
                    lambda: wrote(lambda w: len(w.acknowledged), WRITES_BEFORE_KILL),
                    60,
                    "acknowledged writes before the kill",
                )
                for writer in writers:
                    writer.killed = True
                leader.kill()
                try:
                    await until(
                        lambda: wrote(lambda w: w.after_kill, WRITES_AFTER_KILL),
                        90,
                        "acknowledged writes after the kill",
                    )
                except TimeoutError as err:
                    stats = [
                        (w.engine.address, w.after_kill, w.failures, w.last_error) for w in writers
                    ]
                    raise AssertionError(f"{err}; per client: {stats}") from err
            finally:
                stop.set()
                await asyncio.gather(*running)
            acknowledged = {
                name: net_id for w in writers for name, net_id in w.acknowledged.items()
            }

            leader.start()
            await until(lab.all_ready, 90, f"{leader.name} back, reachable")
            views: dict[str, list[dict[str, Any]]] = {}
            for manager in lab.managers:
                async with lab.engine(manager) as engine:

                    async def caught_up(e: EngineClient = engine) -> list[dict[str, Any]] | None:
                        seen = await networks_seen_by(e)
                        names = {n["Name"] for n in seen}
                        return seen if names >= acknowledged.keys() else None

                    views[manager.name] = await until(
                        caught_up, 60, f"{manager.name} to list every acknowledged network"
                    )

            for name, seen in views.items():
                by_name = collections.Counter(n["Name"] for n in seen)
                assert [n for n, c in by_name.items() if c > 1] == [], f"{name}: a name twice"
                ids = {n["Name"]: n["Id"] for n in seen}
                assert {k: ids[k] for k in acknowledged} == acknowledged, name
                subnets = collections.Counter(
                    cfg["Subnet"] for n in seen for cfg in n["IPAM"]["Config"]
                )
                assert [s for s, c in subnets.items() if c > 1] == [], f"{name}: a subnet twice"
                vnis = collections.Counter(n["Options"][VXLAN_ID_OPTION] for n in seen)
                assert [v for v, c in vnis.items() if c > 1] == [], f"{name}: a VNI twice"
                assert len(seen) == len(subnets) == len(vnis)  # one subnet and VNI each
            # Every manager holds the same networks, allocated alike.
            shapes = {
                name: sorted(
                    (
                        n["Name"],
                        n["Id"],
                        n["IPAM"]["Config"][0]["Subnet"],
                        n["Options"][VXLAN_ID_OPTION],
                    )
                    for n in seen
                )
                for name, seen in views.items()
            }
            first, *others = shapes.values()
            assert all(other == first for other in others), shapes
        finally:
            for engine in engines:
                with contextlib.suppress(Exception):
                    await engine.close()
            lab.stop()

    asyncio.run(scenario())
