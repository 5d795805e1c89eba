"""Two userspace data path backends on loopback (127.77.240.x), each applying the program
`compute` gives its node: ping and an HTTP GET between an endpoint on each, plain and
encrypted, with the datagrams on the wire captured (tshark, when installed and allowed) and
decoded as VXLAN, or as ESP carrying no plaintext. Each test binds its own pair of addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from userspace_testing import Capture, http_get

from controlplane.datapath.program import (
    DataPathKey,
    Endpoint,
    NetworkView,
    NodeView,
    Program,
    compute,
)
from controlplane.datapath.userspace import UserspaceBackend

pytestmark = pytest.mark.integration

PLAIN = NetworkView("plainnet0001", "plainnet", 4101, "10.0.9.0/24", "10.0.9.1")
SECRET = NetworkView("secretnet001", "secretnet", 4102, "10.0.10.0/24", "10.0.10.1", True)
K1 = DataPathKey(1, bytes(range(16)))
K2 = DataPathKey(2, bytes(range(16, 32)))
DEADLINE = 120.0


def nodes(last_octet: int) -> tuple[NodeView, NodeView]:
    return (
        NodeView("node-a", f"127.77.240.{last_octet}"),
        NodeView("node-b", f"127.77.240.{last_octet + 1}"),
    )


def endpoints(net: NetworkView) -> list[Endpoint]:
    prefix = net.subnet.rsplit(".", 1)[0]
    return [
        Endpoint(net.network_id, "ep-client", "client", f"{prefix}.3", "node-a"),
        Endpoint(net.network_id, "ep-web", "web", f"{prefix}.2", "node-b"),
    ]


def programs(
    a: NodeView,
    b: NodeView,
    net: NetworkView,
    keys_a: Sequence[DataPathKey] = (),
    keys_b: Sequence[DataPathKey] = (),
) -> tuple[Program, Program]:
    eps = endpoints(net)
    return compute(a, [a, b], [net], eps, keys_a), compute(b, [a, b], [net], eps, keys_b)


@contextlib.asynccontextmanager
async def backends(
    a: NodeView, b: NodeView, offloads: bool = True
) -> AsyncIterator[tuple[UserspaceBackend, UserspaceBackend]]:
    """Two started backends; `offloads=False` for a capture that shows every datagram as
    the receiver gets it (with UDP GSO a capture on lo sees a run of datagrams as one
    super-datagram, as it sees the kernel VXLAN device's 64 KB ones)."""
    first = UserspaceBackend(a.vtep, a.port, offloads=offloads)
    second = UserspaceBackend(b.vtep, b.port, offloads=offloads)
    await first.start()
    try:
        await second.start()
        try:
            yield first, second
        finally:
            second.close()
    finally:
        first.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(DEADLINE):
            await scenario()

    asyncio.run(bounded())


async def ping_and_get(
    a: UserspaceBackend, b: UserspaceBackend, net: NetworkView, body: bytes
) -> None:
    client, web = a.endpoint(net.network_id, "client"), b.endpoint(net.network_id, "web")
    assert await client.ping(web.ip) >= 0
    assert await web.ping(client.ip) >= 0
    response = await http_get(client, web, body)
    assert response.endswith(b"\r\n\r\n" + body)


def test_ping_and_http_get_over_plain_vxlan(tmp_path: Path) -> None:
    async def scenario() -> None:
        node_a, node_b = nodes(11)
        prog_a, prog_b = programs(node_a, node_b, PLAIN)
        body = random.Random(1).randbytes(60_000)
        async with (
            Capture(tmp_path / "plain.pcap", node_a.vtep) as cap,
            backends(node_a, node_b, offloads=False) as (a, b),
        ):
            assert a.apply(prog_a) and b.apply(prog_b)
            assert a.apply(prog_a) == []  # idempotent
            await ping_and_get(a, b, PLAIN, body)
            counters = a.counters()[PLAIN.network_id]
            assert counters.frames_out > 0 and counters.frames_in > 0
            assert counters.arp_answered >= 1  # ARP answered locally, never sent to node-b
            assert not counters.dropped and not a.node_drops and not b.node_drops
            sent = counters.frames_out + b.counters()[PLAIN.network_id].frames_out
        rows = cap.decode(
            "vxlan", ["frame.protocols", "vxlan.vni", "http.request.uri", "udp.length"]
        )
        assert len(rows) == sent  # one datagram on the wire per frame
        assert max(int(row[3]) for row in rows) <= 8 + 8 + 14 + 1450  # UDP, VXLAN, Ethernet
        protocols = {row[0] for row in rows}
        assert all(p.startswith("eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:") for p in protocols)
        assert any(p.endswith(":icmp:data") for p in protocols)
        assert any(":tcp" in p for p in protocols)
        assert {row[1] for row in rows} == {"4101"}
        assert "/index.html" in {row[2] for row in rows}
        assert not any(":arp" in p for p in protocols)  # no flooding of ARP over the overlay

    run(scenario)


def test_ping_and_http_get_over_esp_encrypted_vxlan(tmp_path: Path) -> None:
    async def scenario() -> None:
        node_a, node_b = nodes(13)
        prog_a, prog_b = programs(node_a, node_b, SECRET, [K1], [K1])
        body = b"top secret page " * 4000
        async with (
            Capture(tmp_path / "esp.pcap", node_a.vtep) as cap,
            backends(node_a, node_b, offloads=False) as (a, b),
        ):
            a.apply(prog_a)
            b.apply(prog_b)
            assert a.endpoint(SECRET.network_id, "client").mtu == 1424
            await ping_and_get(a, b, SECRET, body)
            assert not a.node_drops and not b.node_drops
        spis = {f"0x{sa.spi:08x}" for sa in prog_a.sas}
        rows = cap.decode("udpencap", ["frame.protocols", "esp.spi"])
        assert rows and {row[0] for row in rows} == {"eth:ethertype:ip:udp:udpencap:esp"}
        assert {row[1] for row in rows} == spis  # both directions, under the program's SPIs
        raw = (tmp_path / "esp.pcap").read_bytes()
        assert b"top secret page" not in raw and b"GET /index.html" not in raw

    run(scenario)


def test_a_node_without_the_right_key_cannot_read_the_traffic() -> None:
    async def scenario() -> None:
        node_a, node_b = nodes(15)
        wrong = DataPathKey(1, b"\xee" * 16)  # same tag, other key: same SPIs, bad ICV
        prog_a, prog_b = programs(node_a, node_b, SECRET, [K1], [wrong])
        async with backends(node_a, node_b) as (a, b):
            a.apply(prog_a)
            b.apply(prog_b)
            client = a.endpoint(SECRET.network_id, "client")
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    await client.ping("10.0.10.2", timeout=0.5)
            assert b.node_drops["esp_auth_failed"] >= 3
            assert b.counters()[SECRET.network_id].frames_in == 0  # never delivered
            # Plain VXLAN cannot sneak in either: a node sending without ESP is refused.
            plain_a = compute(node_a, [node_a, node_b], [SECRET], endpoints(SECRET), [])
            assert not plain_a.sas
            a.apply(plain_a)
            with pytest.raises(TimeoutError):
                await client.ping("10.0.10.2", timeout=0.5)
            assert a.counters()[SECRET.network_id].dropped["no_outbound_sa"] >= 1

    run(scenario)


def test_key_rotation_keeps_traffic_flowing_and_reapplying_changes_nothing() -> None:
    async def scenario() -> None:
        node_a, node_b = nodes(17)
        async with backends(node_a, node_b) as (a, b):
            steps = [
                ([K1], [K1]),
                ([K2, K1], [K1, K2]),  # new key everywhere; a already sends with it
                ([K2, K1], [K2, K1]),
                ([K2], [K2]),  # the old key retired
            ]
            for keys_a, keys_b in steps:
                prog_a, prog_b = programs(node_a, node_b, SECRET, keys_a, keys_b)
                a.apply(prog_a)
                b.apply(prog_b)
                assert a.apply(prog_a) == [] and b.apply(prog_b) == []
                client = a.endpoint(SECRET.network_id, "client")
                web = b.endpoint(SECRET.network_id, "web")
                assert await client.ping(web.ip) >= 0
                assert await web.ping(client.ip) >= 0
            assert not a.node_drops and not b.node_drops
            # The endpoints survived every step: the same stacks, never recreated.
            assert a.endpoint(SECRET.network_id, "client") is client

    run(scenario)


def test_bad_use_is_refused_with_a_clear_error() -> None:
    async def scenario() -> None:
        node_a, node_b = nodes(19)
        prog_a, _ = programs(node_a, node_b, PLAIN)
        backend = UserspaceBackend(node_a.vtep, node_a.port)
        with pytest.raises(RuntimeError, match="not started"):
            backend.apply(prog_a)
        await backend.start()
        try:
            with pytest.raises(RuntimeError, match="cannot bind"):
                await UserspaceBackend(node_a.vtep, node_a.port).start()
            with pytest.raises(RuntimeError, match="applied to the data path on"):
                backend.apply(programs(node_a, node_b, PLAIN)[1])
            backend.apply(prog_a)
            with pytest.raises(RuntimeError, match="no local endpoint 'web'"):
                backend.endpoint(PLAIN.network_id, "web")
        finally:
            backend.close()

    run(scenario)
