"""Gossip under the lab's faults: a partition installed on one node only still cuts both
directions, so each side stops seeing the other alive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from controlplane.faults import FaultPlan, Faults
from controlplane.gossip.node import GossipNode
from controlplane.gossip.service import GossipRun, build_options
from controlplane.gossip.types import MemberState

A = ("127.77.189.21", 7946)
B = ("127.77.189.22", 7946)


def _options(name: str, address: tuple[str, int]) -> GossipRun:
    return GossipRun(name=name, listen=address, advertise=address, seeds=[])


async def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _sees_alive(node: GossipNode, name: str) -> bool:
    member = node.swim.member(name)
    return member is not None and member.state is MemberState.ALIVE


def test_a_one_sided_partition_cuts_gossip_both_ways() -> None:
    async def scenario() -> None:
        a_faults = Faults()
        a = GossipNode(build_options(_options("a", A)), faults=a_faults)
        b = GossipNode(build_options(_options("b", B)), faults=Faults())
        await a.start([])
        await b.start([A])
        try:
            await _until(lambda: _sees_alive(a, "b") and _sees_alive(b, "a"))
            a_faults.install(FaultPlan(frozenset({B[0]})))
            await _until(lambda: not _sees_alive(a, "b") and not _sees_alive(b, "a"))
            assert a.drops["lab_fault_out"] > 0
            assert a.drops["lab_partition_in"] > 0
        finally:
            await b.stop(leave=False)
            await a.stop(leave=False)

    asyncio.run(scenario())


def _state(node: GossipNode, name: str) -> MemberState | None:
    member = node.swim.member(name)
    return member.state if member is not None else None


def test_after_a_healed_partition_both_sides_find_each_other_again() -> None:
    """Two against two: each side declares the other dead (SWIM then forgets it), and since
    neither side is alone, only the NetworkDB-style reconnection of failed members can bring
    them back together once the partition heals."""

    async def scenario() -> None:
        addresses = {name: (f"127.77.189.{30 + i}", 7946) for i, name in enumerate("abcd")}
        faults = {name: Faults() for name in addresses}
        nodes = {
            name: GossipNode(build_options(_options(name, addr)), faults=faults[name])
            for name, addr in addresses.items()
        }
        await nodes["a"].start([])
        for name in "bcd":
            await nodes[name].start([addresses["a"]])
        everyone = [(x, y) for x in addresses for y in addresses if x != y]
        try:
            await _until(lambda: all(_sees_alive(nodes[x], y) for x, y in everyone))
            cut = FaultPlan(frozenset({addresses["c"][0], addresses["d"][0]}))
            faults["a"].install(cut)
            faults["b"].install(cut)
            across = [(x, y) for x in "ab" for y in "cd"] + [(y, x) for x in "ab" for y in "cd"]
            await _until(
                lambda: all(_state(nodes[x], y) in (MemberState.DEAD, None) for x, y in across)
            )
            faults["a"].install(FaultPlan())
            faults["b"].install(FaultPlan())
            await _until(lambda: all(_sees_alive(nodes[x], y) for x, y in everyone))
        finally:
            for node in nodes.values():
                await node.stop(leave=False)

    asyncio.run(scenario())
