"""The xfrm states and policies the kernel backend derives from a program (pure)."""

from __future__ import annotations

from controlplane.datapath.kernel import xfrm
from controlplane.datapath.program import (
    DataPathKey,
    Endpoint,
    NetworkView,
    NodeView,
    compute,
    spi_for,
)

NET = NetworkView("labnetwork000000", "labnet", 4097, "10.0.1.0/24", "10.0.1.1", True)
ONE, TWO = NodeView("node-1", "10.201.0.1"), NodeView("node-2", "10.201.0.2", port=4790)
ENDPOINTS = [
    Endpoint(NET.network_id, "e1", "web", "10.0.1.2", "node-1"),
    Endpoint(NET.network_id, "e2", "client", "10.0.1.3", "node-2"),
]
KEYS = [DataPathKey(7, bytes(range(16))), DataPathKey(6, bytes(range(16, 32)))]


def test_state_is_esp_transport_rfc4106_with_key_then_salt() -> None:
    program = compute(ONE, [TWO], [NET], ENDPOINTS, KEYS)
    (out,) = [sa for sa in program.sas if sa.direction == "out"]
    spi = spi_for("10.201.0.1", "10.201.0.2", 7)
    assert xfrm.state_args(out) == [
        "xfrm",
        "state",
        "add",
        "src",
        "10.201.0.1",
        "dst",
        "10.201.0.2",
        "proto",
        "esp",
        "spi",
        f"0x{spi:08x}",
        "reqid",
        str(xfrm.REQID),
        "mode",
        "transport",
        "aead",
        "rfc4106(gcm(aes))",
        "0x" + bytes(range(16)).hex() + f"{spi:08x}",
        "128",
    ]


def test_policy_sends_vxlan_to_the_peer_through_the_primary_sa() -> None:
    program = compute(ONE, [TWO], [NET], ENDPOINTS, KEYS)
    (policy,) = program.policies
    spi = spi_for("10.201.0.1", "10.201.0.2", 7)
    assert xfrm.policy_args(policy) == [
        "xfrm",
        "policy",
        "add",
        "src",
        "10.201.0.1/32",
        "dst",
        "10.201.0.2/32",
        "proto",
        "udp",
        "dport",
        "4789",
        "dir",
        "out",
        "tmpl",
        "src",
        "10.201.0.1",
        "dst",
        "10.201.0.2",
        "proto",
        "esp",
        "spi",
        f"0x{spi:08x}",
        "reqid",
        str(xfrm.REQID),
        "mode",
        "transport",
    ]
    assert xfrm.policy_delete_args(policy)[:3] == ["xfrm", "policy", "delete"]


def test_both_ends_derive_matching_states() -> None:
    """node-1's outbound state is node-2's inbound state for the primary key, byte for byte;
    node-2 accepts every live key inbound (rotation drops nothing)."""
    one = compute(ONE, [TWO], [NET], ENDPOINTS, KEYS)
    two = compute(TWO, [ONE], [NET], ENDPOINTS, KEYS)
    (out,) = [sa for sa in one.sas if sa.direction == "out"]
    inbound = {sa.spi: sa for sa in two.sas if sa.direction == "in"}
    assert len(inbound) == 2
    match = inbound[out.spi]
    assert xfrm.state_args(match) == xfrm.state_args(out)


def test_refusal_names_the_network_the_reason_and_the_way_out() -> None:
    said = xfrm.refusal("labnet", "the kernel refuses ESP (Requested AEAD algorithm not found.)")
    assert "encrypted network 'labnet'" in said
    assert "Requested AEAD algorithm not found" in said
    assert "--datapath userspace" in said
