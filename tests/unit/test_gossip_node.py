"""The gossip driver on real loopback sockets: two nodes meet; garbage is dropped and counted;
a network is ready only once the node is in the cluster."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from controlplane.gossip.node import GossipNode
from controlplane.gossip.service import GossipRun, build_options

KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")


def run_options(name: str, host: str, seeds: list[tuple[str, int]]) -> GossipRun:
    return GossipRun(
        name=name, listen=(host, 7946), advertise=(host, 7946), seeds=seeds, keys=[KEY]
    )


def test_two_nodes_meet_and_garbage_is_counted_not_fatal() -> None:
    async def scenario() -> None:
        a = GossipNode(build_options(run_options("a", "127.77.201.1", [])))
        b = GossipNode(build_options(run_options("b", "127.77.201.2", [("127.77.201.1", 7946)])))
        await a.start([])
        await b.start([("127.77.201.1", 7946)])
        try:
            for _ in range(100):
                if {m.name for m in a.swim.members()} == {"a", "b"}:
                    break
                await asyncio.sleep(0.05)
            assert {m.name for m in a.swim.members()} == {"a", "b"}

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"", ("127.77.201.1", 7946))
                udp.sendto(b"\x01" + os.urandom(60), ("127.77.201.1", 7946))
                udp.sendto(b"\x00not protobuf", ("127.77.201.1", 7946))
            reader, writer = await asyncio.open_connection("127.77.201.1", 7946)
            writer.write(struct.pack(">I", 1 << 30))  # an absurd frame length
            await writer.drain()
            await reader.read()
            writer.close()
            await asyncio.sleep(0.3)
            assert sum(a.drops.values()) >= 4, a.drops
            assert {m.name for m in a.swim.members()} == {"a", "b"}  # still fine
        finally:
            await b.stop()
            await a.stop()

    asyncio.run(scenario())


def test_a_node_started_before_its_seed_joins_once_the_seed_is_up() -> None:
    async def scenario() -> None:
        seed = ("127.77.201.3", 7946)
        early = GossipNode(build_options(run_options("early", "127.77.201.4", [seed])))
        await early.start([seed])  # nobody answers yet: the join fails and is retried
        early.join_network("net-1")
        await asyncio.sleep(0.8)
        # Alone, the node cannot tell "no peer on net-1" from "no peer known yet".
        assert not early.in_cluster() and not early.network_ready("net-1")
        late_seed = GossipNode(build_options(run_options("seed", seed[0], [])))
        await late_seed.start([])
        try:
            late_seed.join_network("net-2")
            assert late_seed.network_ready("net-2")  # the first node: nobody else to ask
            for _ in range(200):
                if {m.name for m in late_seed.swim.members()} == {"early", "seed"}:
                    break
                await asyncio.sleep(0.05)
            assert {m.name for m in late_seed.swim.members()} == {"early", "seed"}
            for _ in range(200):
                if early.network_ready("net-1"):
                    break
                await asyncio.sleep(0.05)
            assert early.in_cluster() and early.network_ready("net-1")  # the seed is not on it
        finally:
            await early.stop()
            await late_seed.stop()

    asyncio.run(scenario())


def test_a_new_role_reaches_the_other_members() -> None:
    """A promoted node's gossip metadata says "manager" everywhere, as its gossip view shows."""

    async def scenario() -> None:
        first = ("127.77.201.5", 7946)
        a = GossipNode(build_options(run_options("a", first[0], [])))
        b = GossipNode(build_options(run_options("b", "127.77.201.6", [first])))
        await a.start([])
        await b.start([first])
        try:

            def role_seen_by_a() -> str:
                return next((m.role for m in a.live_members() if m.node_id == "b"), "")

            for _ in range(100):
                if role_seen_by_a():
                    break
                await asyncio.sleep(0.05)
            assert role_seen_by_a() == "worker"
            b.set_role("manager")
            for _ in range(100):
                if role_seen_by_a() == "manager":
                    break
                await asyncio.sleep(0.05)
            assert role_seen_by_a() == "manager"
            view_of_a = {m["name"]: m["role"] for m in a.view()["members"]}
            assert view_of_a == {"a": "worker", "b": "manager"}
        finally:
            await b.stop()
            await a.stop()

    asyncio.run(scenario())
