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


WIN2 = NodeView("win2", "192.168.250.32", platform="windows")


def test_on_encrypted_networks_windows_skips_encryption_and_platforms_do_not_meet() -> None:
    endpoints = [
        ep(SECRET, "linux-web", "10.0.1.2", W1),
        ep(SECRET, "linux-c", "10.0.1.3", W2),
        ep(SECRET, "win-a", "10.0.1.5", WIN),
        ep(SECRET, "win-b", "10.0.1.6", WIN2),
    ]
    nodes = [*NODES, WIN2]
    win = compute(WIN, nodes, [SECRET], endpoints, KEYS)
    seg = win.segments["secret000"]
    # Not encrypted on Windows: plain MTU, no SA, no policy, and it says so.
    assert not seg.encrypted and seg.mtu == MTU and not win.sas and not win.policies
    assert "encryption is not applied on Windows" in seg.platform_note
    # Only the other Windows node's endpoint is programmed; the Linux ones are listed apart.
    assert [n.ip for n in seg.neigh] == ["10.0.1.6"] and seg.peers == ("192.168.250.32",)
    assert [f.vtep for f in seg.fdb] == ["192.168.250.32"]
    assert [(u.ip, u.platform) for u in seg.unreachable] == [
        ("10.0.1.3", "linux"),
        ("10.0.1.2", "linux"),
    ]  # by name: linux-c, linux-web
    # A Linux node: encrypted with its Linux peer only, nothing towards Windows nodes.
    linux = compute(W1, nodes, [SECRET], endpoints, KEYS)
    lseg = linux.segments["secret000"]
    assert lseg.encrypted and lseg.mtu == ENCRYPTED_MTU and lseg.platform_note == ""
    assert [n.ip for n in lseg.neigh] == ["10.0.1.3"] and lseg.peers == ("192.168.250.22",)
    assert {sa.dst for sa in linux.sas if sa.direction == "out"} == {"192.168.250.22"}
    assert {sa.src for sa in linux.sas} <= {"192.168.250.21", "192.168.250.22"}
    assert [(u.name, u.platform) for u in lseg.unreachable] == [
        ("win-a", "windows"),
        ("win-b", "windows"),
    ]
    shown = render(win)
    assert "encryption is not applied on Windows nodes" in shown
    assert "#   linux-web 10.0.1.2 on linux node w1" in shown and "ip xfrm state" not in shown
    assert "#   win-a 10.0.1.5 on windows node win" in render(linux)


def test_on_plain_networks_windows_and_linux_endpoints_talk() -> None:
    endpoints = [ep(PLAIN, "linux-web", "10.0.3.2", W1), ep(PLAIN, "win-a", "10.0.3.5", WIN)]
    win = compute(WIN, NODES, [PLAIN], endpoints, KEYS).segments["plain0000"]
    linux = compute(W1, NODES, [PLAIN], endpoints, KEYS).segments["plain0000"]
    assert [n.ip for n in win.neigh] == ["10.0.3.2"] and [n.ip for n in linux.neigh] == ["10.0.3.5"]
    assert win.unreachable == linux.unreachable == () and win.platform_note == ""


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
