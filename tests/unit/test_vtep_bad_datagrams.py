"""What reaches a userspace VTEP that it must not deliver: datagrams too short for any header,
VXLAN for a VNI it does not hold, plaintext on an encrypted network, frames from a host that is
no peer of the network, frames too short for Ethernet or for no local endpoint, ESP under an
unknown SPI, from the wrong peer, or that does not authenticate. Each is dropped and counted
by reason (the node's counters or the segment's), nothing reaches an endpoint, and the VTEP
goes on delivering. Real sockets on 127.77.229.x."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from polling import eventually

from controlplane.datapath.program import DataPathKey, Endpoint, NetworkView, NodeView, compute
from controlplane.datapath.userspace import SegmentCounters, UserspaceBackend
from controlplane.datapath.userspace.frames import Vxlan

PORT = 47893  # not 4789: a kernel VXLAN device elsewhere on the machine may hold that
NODE = NodeView("node-a", "127.77.229.11", PORT)
PEER = NodeView("node-b", "127.77.229.12", PORT)
STRANGER = "127.77.229.13"
PLAIN = NetworkView("plainnet0001", "plainnet", 4201, "10.0.21.0/24", "10.0.21.1")
SECRET = NetworkView("secretnet001", "secretnet", 4202, "10.0.22.0/24", "10.0.22.1", True)
KEYS = [DataPathKey(1, bytes(range(16)))]
LOCAL_MAC = bytes.fromhex("02420a001502")  # 10.0.21.2, the endpoint on this node


@contextlib.asynccontextmanager
async def vtep() -> AsyncIterator[tuple[UserspaceBackend, int]]:
    """The node's backend with one local endpoint on each network, and the SPI its peer
    seals under."""
    endpoints = [
        Endpoint(PLAIN.network_id, "ep-a", "a", "10.0.21.2", NODE.node_id),
        Endpoint(PLAIN.network_id, "ep-b", "b", "10.0.21.3", PEER.node_id),
        Endpoint(SECRET.network_id, "ep-sa", "sa", "10.0.22.2", NODE.node_id),
        Endpoint(SECRET.network_id, "ep-sb", "sb", "10.0.22.3", PEER.node_id),
    ]
    program = compute(NODE, [NODE, PEER], [PLAIN, SECRET], endpoints, KEYS)
    (inbound,) = [sa for sa in program.sas if sa.direction == "in"]
    backend = UserspaceBackend(NODE.vtep, PORT)
    await backend.start()
    try:
        backend.apply(program)
        yield backend, inbound.spi
    finally:
        backend.close()


def send(source: str, datagram: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(datagram, (NODE.vtep, PORT))


def frame_to(mac: bytes, size: int = 60) -> bytes:
    return mac + bytes(6) + b"\x08\x00" + bytes(size - 14)


def test_datagrams_a_vtep_must_not_deliver_are_dropped_by_reason() -> None:
    async def scenario() -> None:
        async with vtep() as (backend, spi):
            plain = backend.counters()[PLAIN.network_id]
            secret = backend.counters()[SECRET.network_id]
            node_drops: list[tuple[str, bytes, str]] = [
                (PEER.vtep, b"", "esp_unknown_spi"),  # no VXLAN word: taken for ESP
                (PEER.vtep, b"\x08\x00", "esp_unknown_spi"),
                (PEER.vtep, spi.to_bytes(4) + bytes(4), "esp_truncated"),
                (PEER.vtep, b"\x08\x00\x00\x00", "malformed_vxlan"),  # VXLAN word, no VNI
                (PEER.vtep, Vxlan(9999, frame_to(LOCAL_MAC)).pack(), "unknown_vni"),
                (PEER.vtep, (spi + 1).to_bytes(4) + bytes(60), "esp_unknown_spi"),
                (STRANGER, spi.to_bytes(4) + bytes(60), "esp_wrong_peer"),
                (PEER.vtep, spi.to_bytes(4) + (1).to_bytes(4) + bytes(60), "esp_auth_failed"),
            ]
            for source, datagram, reason in node_drops:
                before = backend.node_drops[reason]
                send(source, datagram)
                await eventually(reason, lambda r=reason, b=before: backend.node_drops[r] > b)

            segment_drops: list[tuple[str, bytes, str, SegmentCounters]] = [
                (
                    PEER.vtep,
                    Vxlan(SECRET.vni, frame_to(LOCAL_MAC)).pack(),
                    "plaintext_on_encrypted_network",
                    secret,
                ),
                (STRANGER, Vxlan(PLAIN.vni, frame_to(LOCAL_MAC)).pack(), "unknown_peer", plain),
                (PEER.vtep, Vxlan(PLAIN.vni, bytes(10)).pack(), "malformed_frame", plain),
                (
                    PEER.vtep,
                    Vxlan(PLAIN.vni, frame_to(bytes(6))).pack(),
                    "no_local_endpoint",
                    plain,
                ),
            ]
            for source, datagram, reason, counters in segment_drops:
                dropped = counters.dropped
                before = dropped[reason]
                send(source, datagram)
                await eventually(reason, lambda d=dropped, r=reason, b=before: d[r] > b)
            assert plain.frames_in == secret.frames_in == 0  # nothing was delivered

            send(PEER.vtep, Vxlan(PLAIN.vni, frame_to(LOCAL_MAC)).pack())  # still delivering
            await eventually("a good frame delivered", lambda: plain.frames_in == 1)

    asyncio.run(scenario())
