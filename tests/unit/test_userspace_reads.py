"""datapath/userspace/backend.py reads its VTEP socket in batches: one wake-up of the loop
drains up to READ_BATCH datagrams, the rest wait for the next turn (others get theirs)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from controlplane.datapath.userspace.backend import READ_BATCH, UserspaceBackend
from controlplane.datapath.userspace.frames import Vxlan

VTEP = "127.77.176.31"
PORT = 47891  # not 4789: a kernel VXLAN device elsewhere on the machine may hold that
DEADLINE = 60.0


def test_one_wake_up_reads_a_batch_and_the_rest_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        backend = UserspaceBackend(VTEP, PORT)
        per_wake_up: list[int] = []
        read = backend._read_ready

        def counting() -> None:
            before = backend.node_drops["unknown_vni"]
            read()
            per_wake_up.append(backend.node_drops["unknown_vni"] - before)

        monkeypatch.setattr(backend, "_read_ready", counting)
        await backend.start()
        total = 2 * READ_BATCH + 5
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            datagram = Vxlan(99, bytes(60)).pack()  # a VNI the node does not hold
            for _ in range(total):  # all queued before the loop's next turn
                sender.sendto(datagram, (VTEP, PORT))
            async with asyncio.timeout(DEADLINE):
                while backend.node_drops["unknown_vni"] < total:
                    await asyncio.sleep(0.01)
        finally:
            sender.close()
            backend.close()
        assert per_wake_up[:3] == [READ_BATCH, READ_BATCH, 5]
        assert sum(per_wake_up) == total

    asyncio.run(scenario())
