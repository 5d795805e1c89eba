"""datapath/userspace/udp_offload.py and its use by the backend: the datagrams of a TCP
sender's burst for one VTEP go in one GSO send per run of equal sizes, anything else at once, a
GRO read is cut back into its datagrams, and where the kernel (or the route) has neither, one
datagram per call as before. The kernel still puts one datagram per frame in every receiver
that did not ask for GRO."""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from userspace_testing import http_get

from controlplane.datapath.program import DataPathKey, Endpoint, NetworkView, NodeView, compute
from controlplane.datapath.userspace import UserspaceBackend
from controlplane.datapath.userspace import backend as backend_module
from controlplane.datapath.userspace.frames import Vxlan
from controlplane.datapath.userspace.udp_offload import (
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    UDP_GRO,
    enable_offloads,
    gro_segment_size,
    gso_control,
    gso_runs,
    split_coalesced,
)

PORT = 47892  # not 4789: a kernel VXLAN device elsewhere on the machine may hold that
DEADLINE = 60.0
PLAIN = NetworkView("offloadnet01", "offloadnet", 4301, "10.0.41.0/24", "10.0.41.1")
SECRET = NetworkView("offloadsec01", "offloadsec", 4302, "10.0.42.0/24", "10.0.42.1", True)
KEY = DataPathKey(1, bytes(range(16)))
VXLAN_MAX = 1450 + 14 + 8  # the largest datagram a 1450-byte overlay MTU puts on the wire


# ---- pure helpers ---------------------------------------------------------------------------


def sizes_of(runs: list[tuple[int, int]], datagrams: list[bytes]) -> list[list[int]]:
    return [[len(d) for d in datagrams[start:end]] for start, end in runs]


def test_a_run_is_equal_sizes_closed_by_at_most_one_shorter() -> None:
    datagrams = [bytes(n) for n in (100, 100, 100, 60, 100, 100, 120, 120, 7)]
    runs = list(gso_runs(datagrams))
    assert sizes_of(runs, datagrams) == [[100, 100, 100, 60], [100, 100], [120, 120, 7]]
    assert [end for _, end in runs][-1] == len(datagrams)  # all of them, in order


def test_runs_keep_to_the_kernels_segment_and_size_limits() -> None:
    small = [bytes(10)] * (GSO_MAX_SEGMENTS + 6)
    assert [end - start for start, end in gso_runs(small)] == [GSO_MAX_SEGMENTS, 6]
    full = [bytes(VXLAN_MAX)] * 50
    per_run = GSO_MAX_BYTES // VXLAN_MAX  # 44: a super-datagram stays one IPv4 datagram
    assert [end - start for start, end in gso_runs(full)] == [per_run, 50 - per_run]
    assert list(gso_runs([])) == []
    assert list(gso_runs([b"x"])) == [(0, 1)]


def test_a_coalesced_read_splits_at_the_segment_size() -> None:
    data = b"a" * 5 + b"b" * 5 + b"c" * 3
    assert split_coalesced(data, 5) == [b"aaaaa", b"bbbbb", b"ccc"]
    assert split_coalesced(data[:10], 5) == [b"aaaaa", b"bbbbb"]
    assert split_coalesced(data, None) == [data]  # no GRO control message: one datagram
    assert split_coalesced(data, 13) == [data]


def test_the_segment_size_comes_from_the_gro_control_message() -> None:
    size = (1472).to_bytes(4, "little" if socket.htons(1) != 1 else "big")
    assert gro_segment_size([(socket.IPPROTO_UDP, UDP_GRO, size)]) == 1472
    assert gro_segment_size([(socket.SOL_SOCKET, 29, size)]) is None  # another message
    assert gro_segment_size([]) is None
    assert gso_control(1472)[0][:2] == (socket.IPPROTO_UDP, 103)


def test_offloads_are_probed_and_refused_options_leave_them_off() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert enable_offloads(udp, wanted=False).gso is False
        found = enable_offloads(udp)
        if not (found.gso and found.gro):
            pytest.skip(f"this kernel lacks UDP GSO/GRO ({found}); the fallback is tested below")
        assert udp.getsockopt(socket.IPPROTO_UDP, UDP_GRO) == 1
    # A socket whose protocol knows neither option answers ENOPROTOOPT, as an old kernel's
    # UDP does: both stay off, nothing raises.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        refused = enable_offloads(tcp)
        assert (refused.gso, refused.gro) == (False, False)


# ---- the backend ----------------------------------------------------------------------------


def needs_offloads() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        found = enable_offloads(probe)
    if not (found.gso and found.gro):
        pytest.skip(f"this kernel lacks UDP GSO/GRO: {found}")


class CountingSocket:
    """The backend's socket, its send calls counted (and GSO sends refused when asked)."""

    def __init__(self, sock: socket.socket, refuse_gso: bool = False) -> None:
        self._sock = sock
        self.refuse_gso = refuse_gso
        self.sendto_calls = 0
        self.gso_sends: list[int] = []  # datagrams per GSO send

    def sendto(self, data: bytes, dest: tuple[str, int]) -> int:
        self.sendto_calls += 1
        return self._sock.sendto(data, dest)

    def sendmsg(self, buffers: list[bytes], *args: Any) -> int:
        if self.refuse_gso:
            raise OSError(errno.EIO, "Input/output error")
        self.gso_sends.append(len(buffers))
        return self._sock.sendmsg(buffers, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@asynccontextmanager
async def pair(
    last_octet: int, net: NetworkView, offloads_a: bool = True, offloads_b: bool = True
) -> AsyncIterator[tuple[UserspaceBackend, UserspaceBackend]]:
    node_a = NodeView("node-a", f"127.77.216.{last_octet}", PORT)
    node_b = NodeView("node-b", f"127.77.216.{last_octet + 1}", PORT)
    prefix = net.subnet.rsplit(".", 1)[0]
    eps = [
        Endpoint(net.network_id, "ep-client", "client", f"{prefix}.3", "node-a"),
        Endpoint(net.network_id, "ep-web", "web", f"{prefix}.2", "node-b"),
    ]
    keys = [KEY] if net.encrypted else []
    a = UserspaceBackend(node_a.vtep, PORT, offloads=offloads_a)
    b = UserspaceBackend(node_b.vtep, PORT, offloads=offloads_b)
    await a.start()
    try:
        await b.start()
        try:
            a.apply(compute(node_a, [node_a, node_b], [net], eps, keys))
            b.apply(compute(node_b, [node_a, node_b], [net], eps, keys))
            yield a, b
        finally:
            b.close()
    finally:
        a.close()


def recording_sizes(backend: UserspaceBackend) -> list[int]:
    """The size of every datagram the backend takes in, as its socket read them."""
    sizes: list[int] = []
    received: Callable[[bytes, tuple[str, int]], None] = backend._received

    def record(data: bytes, addr: tuple[str, int]) -> None:
        sizes.append(len(data))
        received(data, addr)

    backend._received = record  # type: ignore[method-assign]
    return sizes


async def transfer(a: UserspaceBackend, b: UserspaceBackend, net: NetworkView) -> None:
    """A 300 KB HTTP answer from web (node-b) to client (node-a), checked byte for byte."""
    body = random.Random(7).randbytes(300_000)
    client, web = a.endpoint(net.network_id, "client"), b.endpoint(net.network_id, "web")
    async with asyncio.timeout(DEADLINE):
        response = await http_get(client, web, body)
    assert response.endswith(b"\r\n\r\n" + body)
    assert not a.node_drops and not b.node_drops
    for backend in (a, b):
        assert not backend.counters()[net.network_id].dropped


@pytest.mark.parametrize("net", [PLAIN, SECRET], ids=["plain", "encrypted"])
def test_gso_sends_reach_a_receiver_without_gro_as_one_datagram_per_frame(
    net: NetworkView,
) -> None:
    """node-b sends with GSO; node-a reads without GRO, so the kernel hands it every datagram
    on its own: each at most what the overlay MTU allows, none coalesced."""
    needs_offloads()

    async def scenario() -> None:
        async with pair(11, net, offloads_a=False) as (a, b):
            counting = CountingSocket(b._sock)  # type: ignore[arg-type]
            b._sock = counting  # type: ignore[assignment]
            sizes = recording_sizes(a)
            await transfer(a, b, net)
            assert counting.gso_sends and max(counting.gso_sends) > 10  # whole windows
            limit = VXLAN_MAX if not net.encrypted else 1500  # one ESP datagram, never several
            assert sizes and max(sizes) <= limit
            sent = b.counters()[net.network_id].frames_out
            assert a.counters()[net.network_id].frames_in == sent == len(sizes)

    asyncio.run(scenario())


def test_gro_reads_bring_several_datagrams_and_each_frame_still_arrives() -> None:
    needs_offloads()
    coalesced: list[int] = []
    split = backend_module.split_coalesced

    def counting_split(data: bytes, size: int | None) -> list[bytes]:
        datagrams = split(data, size)
        coalesced.append(len(datagrams))
        return datagrams

    async def scenario() -> None:
        async with pair(13, PLAIN) as (a, b):
            assert a.offloads.gro and b.offloads.gso
            await transfer(a, b, PLAIN)
            counters = a.counters()[PLAIN.network_id]
            assert counters.frames_in == b.counters()[PLAIN.network_id].frames_out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backend_module, "split_coalesced", counting_split)
        asyncio.run(scenario())
    assert max(coalesced) > 1  # loopback hands a GSO send to a GRO reader whole


def test_a_gro_receiver_takes_datagrams_from_senders_without_gso() -> None:
    async def scenario() -> None:
        async with pair(15, PLAIN, offloads_b=False) as (a, b):
            counting = CountingSocket(b._sock)  # type: ignore[arg-type]
            b._sock = counting  # type: ignore[assignment]
            await transfer(a, b, PLAIN)
            assert not counting.gso_sends and counting.sendto_calls > 200  # one per datagram

    asyncio.run(scenario())


def test_a_route_refusing_gso_falls_back_to_one_datagram_per_send(
    caplog: pytest.LogCaptureFixture,
) -> None:
    needs_offloads()

    async def scenario() -> None:
        async with pair(17, PLAIN) as (a, b):
            counting = CountingSocket(b._sock, refuse_gso=True)  # type: ignore[arg-type]
            b._sock = counting  # type: ignore[assignment]
            await transfer(a, b, PLAIN)  # nothing lost: the refused run went one by one
            assert not b.offloads.gso and b.offloads.gro
            assert counting.sendto_calls > 200

    with caplog.at_level(logging.WARNING, logger=backend_module.__name__):
        asyncio.run(scenario())
    warnings = [r for r in caplog.records if "event=datapath_gso_off" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per send


def test_a_coalesced_read_with_a_truncated_last_datagram_drops_and_counts_only_that_one() -> None:
    needs_offloads()

    async def scenario() -> None:
        backend = UserspaceBackend("127.77.216.19", PORT)
        await backend.start()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            assert backend.offloads.gro
            datagram = Vxlan(99, bytes(200)).pack()  # a VNI the node does not hold
            truncated = datagram[:5]  # not even a whole VXLAN header
            sender.sendmsg([datagram] * 3 + [truncated], gso_control(len(datagram)), 0,
                           (backend.vtep, PORT))  # fmt: skip
            async with asyncio.timeout(DEADLINE):
                while backend.node_drops["malformed_vxlan"] < 1:
                    await asyncio.sleep(0.01)
            assert backend.node_drops == {"unknown_vni": 3, "malformed_vxlan": 1}
        finally:
            sender.close()
            backend.close()

    asyncio.run(scenario())


def test_without_offloads_every_datagram_is_its_own_send() -> None:
    async def scenario() -> None:
        async with pair(21, PLAIN, offloads_a=False, offloads_b=False) as (a, b):
            assert not (b.offloads.gso or b.offloads.gro)
            counting = CountingSocket(b._sock)  # type: ignore[arg-type]
            b._sock = counting  # type: ignore[assignment]
            sizes = recording_sizes(a)
            await transfer(a, b, PLAIN)
            assert not counting.gso_sends
            assert counting.sendto_calls == b.counters()[PLAIN.network_id].frames_out
            assert len(sizes) == a.counters()[PLAIN.network_id].frames_in

    asyncio.run(scenario())


def test_closing_a_backend_still_resets_its_connections_at_the_peer() -> None:
    """The resets an endpoint's close sends go at once, not to a turn that never comes."""

    async def scenario() -> None:
        async with pair(23, PLAIN) as (a, b):
            assert a.offloads.gso
            client, web = (
                a.endpoint(PLAIN.network_id, "client"),
                b.endpoint(PLAIN.network_id, "web"),
            )
            listener = web.listen(80)
            accepted = asyncio.ensure_future(listener.accept())
            conn = await client.connect(web.ip, 80)
            served = await accepted
            await conn.send(b"x" * 50_000)  # a window's worth queued behind the reset
            a.close()
            async with asyncio.timeout(DEADLINE):
                with pytest.raises(ConnectionResetError):
                    while await served.recv():
                        pass

    asyncio.run(scenario())


def test_a_datagram_outside_a_burst_goes_at_once_even_with_gso() -> None:
    """UDP, pings, ACKs: nothing to send it with, so it does not wait for anything."""
    needs_offloads()

    async def scenario() -> None:
        async with pair(25, PLAIN) as (a, _):
            assert await a.endpoint(PLAIN.network_id, "client").ping("10.0.41.2") >= 0
            counting = CountingSocket(a._sock)  # type: ignore[arg-type]
            a._sock = counting  # type: ignore[assignment]
            sock = a.endpoint(PLAIN.network_id, "client").udp_socket()
            sock.sendto(b"hello", ("10.0.41.2", 53))
            sock.sendto(b"again", ("10.0.41.2", 53))
            assert counting.sendto_calls == 2 and not counting.gso_sends  # before any await
            assert a.counters()[PLAIN.network_id].frames_out >= 2

    asyncio.run(scenario())
