"""Real gossip node processes on 7946, each on its own loopback address, AES-GCM sealed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.lab.processes import GossipProcess, gossip_address

pytestmark = pytest.mark.integration

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def states(view: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {m["name"]: (m["state"], m["incarnation"]) for m in view["members"]}


def live_entries(view: dict[str, Any], network: str) -> dict[str, str]:
    info = view["networks"].get(network, {"entries": []})
    return {e["key"]: e["value"] for e in info["entries"] if not (e["deleted"] or e["hidden"])}


async def eventually(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def test_five_nodes_membership_failure_rejoin_and_networkdb(tmp_path: Path) -> None:
    lab = 111
    spec = {
        "node-1": ("blue",),
        "node-2": ("blue",),
        "node-3": ("blue",),
        "node-4": ("red",),
        "node-5": ("red",),
    }
    nodes = {
        name: GossipProcess(
            name,
            gossip_address(i, lab),
            tmp_path / name,
            keys=(KEY,),
            networks=networks,
            entries=("blue/endpoints/c1=10.0.1.2",) if name == "node-1" else (),
        )
        for i, (name, networks) in enumerate(spec.items(), start=1)
    }
    seed = nodes["node-1"].address

    async def scenario() -> None:
        nodes["node-1"].start()
        await nodes["node-1"].wait_ready()
        for name, node in nodes.items():
            if name != "node-1":
                node.start(join=[seed])
        for node in nodes.values():
            await node.wait_ready()

        async def all_alive() -> bool:
            for node in nodes.values():
                seen = states(await node.view())
                if len(seen) != 5 or any(s != "alive" for s, _ in seen.values()):
                    return False
            return True

        await eventually(all_alive)

        # NetworkDB: the entry reaches the members of "blue", and only them.
        async def entry_on_blue() -> bool:
            for name in ("node-2", "node-3"):
                if live_entries(await nodes[name].view(), "blue") != {"c1": "10.0.1.2"}:
                    return False
            return True

        await eventually(entry_on_blue)
        for name in ("node-4", "node-5"):
            assert live_entries(await nodes[name].view(), "blue") == {}

        # SIGKILL node-5: suspect, then dead, everywhere.
        old_incarnation = states(await nodes["node-1"].view())["node-5"][1]
        nodes["node-5"].kill()
        killed_at = time.monotonic()
        seen_suspect = False

        async def all_dead() -> bool:
            nonlocal seen_suspect
            verdicts = []
            for name, node in nodes.items():
                if name != "node-5":
                    verdicts.append(states(await node.view())["node-5"][0])
            seen_suspect = seen_suspect or "suspect" in verdicts
            return all(v == "dead" for v in verdicts)

        await eventually(all_dead, timeout=20.0)
        detection = time.monotonic() - killed_at
        assert seen_suspect, "the failure should go through suspicion before death"
        assert detection < 10.0

        # Restart: it rejoins with a higher incarnation and everyone sees it alive.
        nodes["node-5"].start(join=[seed])

        async def back() -> bool:
            for node in nodes.values():
                state, incarnation = states(await node.view()).get("node-5", ("", 0))
                if state != "alive" or incarnation <= old_incarnation:
                    return False
            return True

        await eventually(back)

        # A node with another key cannot join: its packets are dropped and counted.
        intruder = GossipProcess(
            "intruder", gossip_address(9, lab), tmp_path / "intruder", keys=(os.urandom(16),)
        )
        intruder.start(join=[seed])
        try:
            await asyncio.sleep(2.0)
            view = await nodes["node-1"].view()
            assert "intruder" not in states(view)
            assert sum(view["drops"].values()) > 0
        finally:
            intruder.stop()

    try:
        asyncio.run(scenario())
    finally:
        for node in nodes.values():
            node.stop()
