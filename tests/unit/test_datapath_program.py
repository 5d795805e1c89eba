"""datapath/program.py: the desired data path of a node, its changes, and how it is shown."""

from __future__ import annotations

import pytest

from controlplane.datapath.program import (
    ENCRYPTED_MTU,
    MTU,
    DataPathKey,
    Endpoint,
    NetworkView,
    NodeView,
    ProgramError,
    compute,
    diff,
    mac_for,
    render,
    spi_for,
)

W1 = NodeView("w1", "192.168.250.21")
W2 = NodeView("w2", "192.168.250.22")
M1 = NodeView("m1", "192.168.250.11")
WIN = NodeView("win", "192.168.250.31", platform="windows")
NODES = [W1, W2, M1, WIN]
PLAIN = NetworkView("plain0000", "plainnet", 4099, "10.0.3.0/24", "10.0.3.1")
SECRET = NetworkView("secret000", "labnet", 4097, "10.0.1.0/24", "10.0.1.1", encrypted=True)
KEYS = [DataPathKey(3, b"k" * 16), DataPathKey(2, b"j" * 16), DataPathKey(1, b"i" * 16)]


def ep(network: NetworkView, name: str, ip: str, node: NodeView) -> Endpoint:
    return Endpoint(network.network_id, f"ep-{name}", name, ip, node.node_id)


def test_mac_is_02_42_and_the_address_in_hex() -> None:
    assert mac_for("10.0.1.8") == "02:42:0a:00:01:08"
    with pytest.raises(ProgramError, match="not an IPv4 address"):
        mac_for("10.0.1.300")


def test_a_node_holds_only_networks_it_has_an_endpoint_on() -> None:
    endpoints = [ep(PLAIN, "webp", "10.0.3.2", W1), ep(PLAIN, "client", "10.0.3.8", W2)]
    program = compute(W1, NODES, [PLAIN, SECRET], endpoints)
    assert list(program.segments) == ["plain0000"]
    seg = program.segments["plain0000"]
    assert (seg.vni, seg.mtu, seg.gateway) == (4099, MTU, "10.0.3.1/24")
    assert [e.name for e in seg.local] == ["webp"]
    assert [(f.mac, f.vtep, f.port) for f in seg.fdb] == [
        ("02:42:0a:00:03:08", "192.168.250.22", 4789)
    ]
    assert [(n.ip, n.mac) for n in seg.neigh] == [("10.0.3.8", "02:42:0a:00:03:08")]
    assert seg.peers == ("192.168.250.22",)
    assert not program.sas
    # m1 has no endpoint: it programs nothing at all.
    assert not compute(M1, NODES, [PLAIN], endpoints).segments


def test_unknown_nodes_and_networks_wait_for_the_next_gossip_round() -> None:
    stranger = Endpoint(PLAIN.network_id, "ep-x", "x", "10.0.3.9", "unknown-node")
    orphan = Endpoint("no-such-network", "ep-y", "y", "10.9.0.2", W1.node_id)
    program = compute(W1, NODES, [PLAIN], [ep(PLAIN, "a", "10.0.3.2", W1), stranger, orphan])
    assert program.segments["plain0000"].fdb == ()


def test_encrypted_networks_get_sas_for_every_key_inbound_and_the_primary_outbound() -> None:
    endpoints = [ep(SECRET, "web", "10.0.1.2", W1), ep(SECRET, "c", "10.0.1.8", W2)]
    w1 = compute(W1, NODES, [SECRET], endpoints, KEYS)
    w2 = compute(W2, NODES, [SECRET], endpoints, KEYS)
    assert w1.segments["secret000"].mtu == ENCRYPTED_MTU
    inbound = sorted(sa.tag for sa in w1.sas if sa.direction == "in")
    outbound = [sa for sa in w1.sas if sa.direction == "out"]
    assert inbound == [1, 2, 3] and [sa.tag for sa in outbound] == [3]
    # Both ends derive the same SA for each direction without talking.
    w1_out = outbound[0]
    w2_in = {(sa.src, sa.dst, sa.spi, sa.key) for sa in w2.sas if sa.direction == "in"}
    assert (w1_out.src, w1_out.dst, w1_out.spi, w1_out.key) in w2_in
    assert w1_out.salt == w1_out.spi.to_bytes(4)  # as Docker's: the salt is the SPI's bytes
    assert spi_for("192.168.250.21", "192.168.250.22", 3) != spi_for(
        "192.168.250.22", "192.168.250.21", 3
    )
    [policy] = w1.policies
    assert (policy.dst, policy.port, policy.spi) == ("192.168.250.22", 4789, w1_out.spi)


def test_a_bad_key_is_refused_with_its_tag() -> None:
    with pytest.raises(ProgramError, match="key 7 is 5 bytes"):
        compute(W1, NODES, [SECRET], [], [DataPathKey(7, b"short")])


def test_windows_nodes_skip_encryption_and_cannot_reach_linux_endpoints() -> None:
    endpoints = [
        ep(SECRET, "linux-web", "10.0.1.2", W1),
        ep(SECRET, "win-a", "10.0.1.5", WIN),
        ep(SECRET, "win-b", "10.0.1.6", NodeView("win2", "192.168.250.32", platform="windows")),
    ]
    nodes = [*NODES, NodeView("win2", "192.168.250.32", platform="windows")]
    win = compute(WIN, nodes, [SECRET], endpoints, KEYS)
    seg = win.segments["secret000"]
    assert not seg.encrypted and seg.mtu == MTU and not win.sas
    assert [n.ip for n in seg.neigh] == ["10.0.1.6"]  # the other Windows node only
    linux = compute(W1, nodes, [SECRET], endpoints, KEYS)
    assert linux.segments["secret000"].neigh == ()


def test_diff_is_incremental_ordered_and_idempotent() -> None:
    first = [ep(SECRET, "web", "10.0.1.2", W1), ep(SECRET, "c", "10.0.1.8", W2)]
    old = compute(W1, NODES, [SECRET], first, KEYS[:1])
    assert diff(old, old) == []
    changes = diff(None, old)
    kinds = [c.what for c in changes]
    assert kinds.index("segment") < kinds.index("sa") < kinds.index("fdb")
    # A new remote endpoint and a key rotation: only what changed, deletions first.
    more = [*first, ep(SECRET, "d", "10.0.1.9", W2)]
    new = compute(W1, NODES, [SECRET], more, [KEYS[0], KEYS[1]])
    changes = diff(old, new)
    assert all(c.op == "add" for c in changes)
    assert {c.what for c in changes} == {"fdb", "neigh", "sa"}
    # The last endpoint on w1 goes: the segment, its entries and its SAs go, in reverse order.
    gone = diff(new, compute(W1, NODES, [SECRET], more[1:], [KEYS[0], KEYS[1]]))
    order = [c.what for c in gone]
    assert all(c.op == "del" for c in gone)
    assert order.index("neigh") < order.index("sa") < order.index("segment")


def test_render_mirrors_the_kernel_tools() -> None:
    endpoints = [ep(SECRET, "web", "10.0.1.2", W1), ep(SECRET, "c", "10.0.1.8", W2)]
    text = render(compute(W1, NODES, [SECRET], endpoints, KEYS[:1]))
    assert "vxlan id 4097 srcport 0 0 dstport 4789" in text
    assert "02:42:0a:00:01:08 dst 192.168.250.22 self permanent" in text
    assert "10.0.1.8 lladdr 02:42:0a:00:01:08 PERMANENT" in text
    assert "aead rfc4106(gcm(aes))" in text and "proto udp dport 4789" in text
