"""`swarmlab demo`: three managers on loopback, writes, SIGKILL of the leader, nothing lost;
then five gossip nodes: membership, a NetworkDB entry scoped to its network, a failure.

Each step prints what a user would see; the demo exits non-zero if any acknowledged write is
missing afterwards, so it doubles as a smoke test.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from controlplane.cli import format_gossip_view, format_status
from controlplane.client import ManagerClient
from controlplane.lab.processes import GossipProcess, ManagerLab, ManagerProcess, gossip_address
from controlplane.raft.core import RaftError
from controlplane.raft.transport import TransportError


def _say(text: str) -> None:
    print(text, flush=True)


async def _network_names(manager: ManagerProcess, linearizable: bool) -> set[str]:
    async with ManagerClient(manager.address) as client:
        listing = await client.list("network", linearizable=linearizable)
    return {n.spec.annotations.name for n in listing.objects.networks}


async def _write(manager: ManagerProcess, name: str, timeout: float) -> int:
    async with ManagerClient(manager.address) as client:
        response = await client.create_network(name, timeout=timeout)
    if not response.result.ok:
        raise RuntimeError(response.result.error)
    return response.index


async def run_demo(state_dir: Path | None) -> int:
    if state_dir is None:
        with tempfile.TemporaryDirectory(prefix="swarmlab-demo-") as tmp:
            return await _demo(Path(tmp))
    return await _demo(state_dir)


async def _demo(root: Path) -> int:
    lab = ManagerLab(root, 3)
    acknowledged: list[str] = []
    try:
        _say("== 1. Start three managers on loopback (Raft over gRPC on port 2377)")
        await lab.start()
        leader, status = await lab.wait_leader()
        for manager in lab.managers:
            _say(f"   {manager.name}  {manager.address}  pid {manager.pid}")
        _say("")
        _say(format_status(status))

        follower = next(m for m in lab.managers if m is not leader)
        _say(f"\n== 2. Write 5 networks through {follower.name} (a follower: it forwards)")
        for i in range(1, 6):
            name = f"net-{i}"
            index = await _write(follower, name, 10.0)
            acknowledged.append(name)
            _say(f"   created {name} at raft index {index}")

        _say(f"\n== 3. SIGKILL the leader, {leader.name} (pid {leader.pid})")
        killed_at = time.monotonic()
        leader.kill()
        survivor = next(m for m in lab.managers if m.alive())
        first_write = None
        attempt = 0
        while first_write is None and time.monotonic() - killed_at < 60:
            attempt += 1
            name = f"after-kill-{attempt}"
            try:
                await _write(survivor, name, 2.0)
                acknowledged.append(name)
                first_write = time.monotonic() - killed_at
            except (RaftError, TransportError):
                await asyncio.sleep(0.05)
        new_leader, new_status = await lab.wait_leader(exclude=status.node_id)
        _say(f"   new leader: {new_leader.name} in term {new_status.term}")
        if first_write is None:
            _say("   FAILED: no write succeeded within 60 s")
            return 1
        _say(f"   first successful write {first_write:.2f} s after the kill ({attempt} tries)")

        _say("\n== 4. Every acknowledged write is still there (linearizable read, new leader)")
        names = await _network_names(new_leader, linearizable=True)
        missing = [n for n in acknowledged if n not in names]
        _say(f"   {len(acknowledged)} acknowledged, {len(missing)} missing: {sorted(names)}")

        _say(f"\n== 5. Restart {leader.name} from its data directory: it catches up")
        leader.start()
        await leader.wait_ready()
        await _write(new_leader, "after-restart", 10.0)
        acknowledged.append("after-restart")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if set(acknowledged) <= await _network_names(leader, linearizable=False):
                break
            await asyncio.sleep(0.1)
        caught_up = set(acknowledged) <= await _network_names(leader, linearizable=False)
        _say(f"   {leader.name} holds all {len(acknowledged)} networks: {caught_up}")
        _say("")
        _say(format_status((await lab.wait_leader())[1]))
        raft_ok = not missing and caught_up
    finally:
        lab.stop()
    gossip_ok = await _gossip_demo(root / "gossip")
    ok = raft_ok and gossip_ok
    _say("\nresult: " + ("nothing acknowledged was lost; gossip converged" if ok else "FAILED"))
    return 0 if ok else 1


async def _gossip_demo(root: Path) -> bool:
    """Five gossip nodes, AES-GCM sealed: a NetworkDB entry reaches exactly its network's
    members, and a SIGKILLed node is suspected, then declared dead, by everyone."""
    key = os.urandom(16)
    nodes = [
        GossipProcess(
            f"node-{n}",
            gossip_address(n),
            root / f"node-{n}",
            keys=(key,),
            networks=("blue",) if n <= 3 else ("red",),
            entries=("blue/endpoints/web.1=10.0.1.3",) if n == 1 else (),
        )
        for n in range(1, 6)
    ]
    try:
        _say("\n== 6. Gossip on 7946: five nodes (SWIM + Lifeguard), NetworkDB, AES-GCM")
        nodes[0].start()
        await nodes[0].wait_ready()
        for node in nodes[1:]:
            node.start(join=[nodes[0].address])
        started = time.monotonic()
        while time.monotonic() - started < 20:
            views = [await n.wait_ready() for n in nodes]
            if all(len(v["members"]) == 5 for v in views) and all(
                _holds_entry(v) == (i < 3) for i, v in enumerate(views)
            ):
                break
            await asyncio.sleep(0.1)
        _say(f"   all 5 alive everywhere after {time.monotonic() - started:.2f} s")
        _say("")
        _say(format_gossip_view(await nodes[1].view()))
        _say("\n   node-4 and node-5 are not on network blue: they never hold its entry")
        victim = nodes[4]
        victim.kill()
        killed = time.monotonic()
        verdicts: list[str] = []  # states in the order they were first seen
        while time.monotonic() - killed < 20:
            states = [_state_of(await n.view(), victim.name) for n in nodes[:4]]
            verdicts += [s for s in dict.fromkeys(states) if s not in verdicts]
            if all(s == "dead" for s in states):
                break
            await asyncio.sleep(0.05)
        took = time.monotonic() - killed
        _say(
            f"   SIGKILL {victim.name}: seen as {' -> '.join(verdicts)}; "
            f"dead everywhere after {took:.2f} s"
        )
        views = [await n.view() for n in nodes[:4]]
        return all(_state_of(v, victim.name) == "dead" for v in views) and all(
            _holds_entry(v) == (i < 3) for i, v in enumerate(views)
        )
    finally:
        for node in nodes:
            node.stop()


def _holds_entry(view: dict[str, Any]) -> bool:
    entries = view["networks"].get("blue", {}).get("entries", [])
    return any(e["key"] == "web.1" and not (e["deleted"] or e["hidden"]) for e in entries)


def _state_of(view: dict[str, Any], name: str) -> str:
    return next((m["state"] for m in view["members"] if m["name"] == name), "unknown")
