"""A peer that holds the gossip key yet sends nonsense (a bug, another version): whatever opens
under the key but does not decode is dropped and counted by reason, over UDP and TCP, and the
node goes on answering. (Garbage that does not open under the key: test_gossip_node.py.)"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from controlplane.gossip import codec
from controlplane.gossip.envelope import PacketSealer
from controlplane.gossip.keyring import Keyring
from controlplane.gossip.node import GossipNode, query_view
from controlplane.gossip.service import GossipRun, build_options
from controlplane.gossip.types import Packet, UserMsg

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
HOST = "127.77.228.1"
DEADLINE = 30.0


def sealed(payload: bytes, aad: bytes) -> bytes:
    return PacketSealer(Keyring(KEY)).seal(payload, now=time.time(), aad=aad)


async def counted(node: GossipNode, reason: str, at_least: int = 1) -> None:
    deadline = time.monotonic() + DEADLINE
    while node.drops[reason] < at_least:
        assert time.monotonic() < deadline, f"no {reason!r} drop counted: {dict(node.drops)}"
        await asyncio.sleep(0.02)


async def tcp_frame(payload: bytes) -> bytes:
    """Send one sealed frame to the node; what it answers before closing."""
    reader, writer = await asyncio.open_connection(HOST, 7946)
    frame = sealed(payload, b"tcp")
    writer.write(struct.pack(">I", len(frame)) + frame)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), DEADLINE)
    writer.close()
    return answer


def test_well_sealed_nonsense_is_dropped_by_reason_and_the_node_goes_on() -> None:
    async def scenario() -> None:
        node = GossipNode(
            build_options(
                GossipRun(
                    name="a", listen=(HOST, 7946), advertise=(HOST, 7946), seeds=[], keys=[KEY]
                )
            )
        )
        await node.start([])
        try:
            packets: list[tuple[bytes, str]] = [
                (b"\xff\x00 not a packet", "malformed"),
                (
                    codec.encode_packet(Packet("mallory", (UserMsg(b"\xff\xfe not networkdb"),))),
                    "bad_networkdb_message",
                ),
            ]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for payload, reason in packets:
                    udp.sendto(sealed(payload, b"udp"), (HOST, 7946))
                    await counted(node, reason)

            name = b"mallory"
            frames: list[tuple[bytes, str]] = [
                (b"", "tcp_frame_too_short_for_its_sender_name"),
                (b"\x09short", "tcp_frame_too_short_for_its_sender_name"),
                (b"\x02\xff\xfe", "tcp_sender_name_is_not_UTF-8"),
                (bytes([len(name)]) + name + b"\xff\x00 not a request", "tcp_malformed"),
            ]
            for payload, reason in frames:
                before = node.drops[reason]
                assert await tcp_frame(payload) == b""  # no answer, the connection is closed
                await counted(node, reason, before + 1)

            view = await query_view((HOST, 7946), Keyring(KEY))  # still answering
            assert [m["name"] for m in view["members"]] == ["a"]
        finally:
            await node.stop()

    asyncio.run(scenario())
