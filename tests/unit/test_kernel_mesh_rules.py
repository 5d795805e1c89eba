"""The nftables tables of the kernel routing mesh (pure rendering)."""

from __future__ import annotations

from controlplane.datapath.ingress import Backend, MeshService, PublishedPort
from controlplane.datapath.kernel.mesh import TABLE, node_ruleset, sandbox_ruleset

PORTS = {
    PublishedPort("tcp", 8080): MeshService(
        "svc1",
        "whoami",
        "10.0.0.9",
        80,
        (Backend("10.0.0.5", 80, "task-a"), Backend("10.0.0.6", 80, "task-b")),
    ),
    PublishedPort("udp", 5353): MeshService(
        "svc2", "dns", "10.0.0.10", 53, (Backend("10.0.0.7", 53, "task-c"),)
    ),
}


def test_rulesets_balance_with_numgen_over_one_chain_per_task() -> None:
    sandbox = sandbox_ruleset(PORTS)
    assert (
        'iifname "gw0" tcp dport 8080 numgen inc mod 2 vmap '
        "{ 0 : jump tcp_8080_0, 1 : jump tcp_8080_1 }" in sandbox
    )
    assert "meta l4proto tcp dnat to 10.0.0.6:80" in sandbox
    assert 'oifname "eth0" masquerade' in sandbox
    node = node_ruleset(PORTS)
    assert node.count("fib daddr type local tcp dport 8080 dnat to 169.254.77.2") == 2
    assert "type nat hook output priority -100" in node  # the node's own connections too
    empty = {PublishedPort("tcp", 8081): MeshService("svc3", "none", "10.0.0.11", 80, ())}
    assert "8081" not in node_ruleset(empty) and "8081" not in sandbox_ruleset(empty)


def test_a_script_replaces_the_whole_table_in_one_transaction() -> None:
    script = sandbox_ruleset(PORTS)
    assert script.startswith(f"table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n")
    assert 'iifname "gw0" udp dport 5353 numgen inc mod 1 vmap { 0 : jump udp_5353_0 }' in script
    assert "meta l4proto udp dnat to 10.0.0.7:53" in script
