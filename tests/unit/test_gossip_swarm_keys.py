"""Gossip with the managers' keys, on real loopback sockets: a swarm member waits for its first
keys before it joins, follows rotations staged across nodes without a refused packet, and a
node with other keys is refused (logged once per reason and peer) without anyone crashing."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

import pytest

from controlplane.gossip.keyring import generate_key
from controlplane.gossip.node import GossipKeysError, GossipNode
from controlplane.gossip.service import GossipRun, build_options
from controlplane.manager.keymanager import keys_of, rotated
from controlplane.pb.objects_pb2 import Cluster

HOSTS = {name: f"127.77.149.{10 + i}" for i, name in enumerate(["a", "b", "c", "intruder"])}
REFUSALS = ("unknown_key", "auth_failed", "encryption_mismatch", "tcp_unknown_key")


def member(name: str, seeds: list[str], *, keys: list[bytes] | None = None) -> GossipNode:
    """A swarm member (waits for keys) unless `keys` are given up front."""
    host = HOSTS[name]
    return GossipNode(
        build_options(
            GossipRun(
                name=name,
                listen=(host, 7946),
                advertise=(host, 7946),
                seeds=[(HOSTS[s], 7946) for s in seeds],
                keys=keys or [],
                await_keys=keys is None,
            )
        )
    )


async def start(node: GossipNode, seeds: list[str]) -> GossipNode:
    await node.start([(HOSTS[s], 7946) for s in seeds])
    return node


async def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def alive(node: GossipNode) -> set[str]:
    return {meta.node_id for meta in node.live_members()}


def gossip_keys(cluster: Cluster) -> list[bytes]:
    """What a node installs from its session message: the primary first."""
    return [k.key for k in keys_of(cluster.network_bootstrap_keys, "networking:gossip")]


def refusals(node: GossipNode) -> int:
    return sum(node.drops.get(reason, 0) for reason in REFUSALS)


def test_a_member_joins_only_once_it_has_keys_and_survives_staged_rotations() -> None:
    numbers = itertools.count(1)
    hour = 3600 * 10**9

    def next_cluster(cluster: Cluster, at: int) -> Cluster:
        updated = rotated(cluster, at * hour, hour, lambda: generate_key())
        assert updated is not None
        return updated

    async def scenario() -> None:
        cluster = next_cluster(Cluster(id="c"), next(numbers))
        a = await start(member("a", []), [])
        b = await start(member("b", ["a"]), ["a"])
        c = await start(member("c", ["a"]), ["a"])
        nodes = [a, b, c]
        try:
            # No keys yet: nobody is joined, nothing is sent.
            await asyncio.sleep(1.0)  # join retries would have happened by now: none must
            assert all(n.awaiting_keys and alive(n) == {n.name} for n in nodes)
            assert all(n.view()["awaiting_keys"] for n in nodes)
            for n in nodes:
                n.set_keys(gossip_keys(cluster))
            await wait_for(lambda: all(alive(n) == {"a", "b", "c"} for n in nodes), "all meet")

            # Three rotations, each reaching one node after the other, with gossip flowing
            # in between: a node one rotation ahead or behind still understands the others.
            for _ in range(3):
                cluster = next_cluster(cluster, next(numbers))
                for n in nodes:
                    n.set_keys(gossip_keys(cluster))
                    acks = n.swim.counters.acks
                    await wait_for(lambda n=n, acks=acks: n.swim.counters.acks >= acks + 3, "acks")
                assert [n.view()["keys"] for n in nodes].count(nodes[0].view()["keys"]) == 3
            assert all(alive(n) == {"a", "b", "c"} for n in nodes)
            assert [refusals(n) for n in nodes] == [0, 0, 0], [n.drops for n in nodes]
            assert all(n.view()["encrypted"] and len(n.view()["keys"]) == 3 for n in nodes)
        finally:
            for n in nodes:
                await n.stop()

    asyncio.run(scenario())


def test_a_node_with_other_keys_is_refused_logged_once_and_nobody_crashes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        keys = [generate_key() for _ in range(3)]
        a = await start(member("a", []), [])
        b = await start(member("b", ["a"]), ["a"])
        a.set_keys(keys)
        b.set_keys(keys)
        intruder = await start(member("intruder", ["a"], keys=[generate_key()]), ["a"])
        try:
            await wait_for(lambda: alive(a) == {"a", "b"} == alive(b), "a and b meet")
            await wait_for(lambda: refusals(a) >= 3, "several refused join attempts")
            assert alive(a) == {"a", "b"} and alive(intruder) == {"intruder"}
            assert intruder.swim.counters.push_pull_failures >= 3  # it tried, and goes on
        finally:
            await intruder.stop(leave=False)
            await b.stop()
            await a.stop()

    with caplog.at_level(logging.WARNING, logger="controlplane.gossip"):
        asyncio.run(scenario())
    refused = [r.getMessage() for r in caplog.records if "event=gossip_refused" in r.getMessage()]
    from_intruder = [m for m in refused if f"peer={HOSTS['intruder']} " in m]
    assert len(from_intruder) == 1, refused
    assert "reason=unknown_key" in from_intruder[0]


def test_keys_given_wrongly_are_refused_with_a_reason() -> None:
    async def scenario() -> None:
        plaintext = GossipNode(
            build_options(GossipRun("a", (HOSTS["a"], 7946), (HOSTS["a"], 7946), seeds=[]))
        )
        with pytest.raises(GossipKeysError, match="plaintext"):
            plaintext.set_keys([generate_key()])
        waiting = member("b", [])
        with pytest.raises(GossipKeysError, match="primary key first"):
            waiting.set_keys([])
        with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
            waiting.set_keys([b"short"])
        assert waiting.awaiting_keys

    asyncio.run(scenario())
