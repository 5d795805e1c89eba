"""The nftables table of kernel-mode published ports (pure rendering): a HostIp matched
alone, and connections from the node's own loopback sent out on the gateway bridge with the
gateway's address (the container could not answer 127.0.0.1)."""

from __future__ import annotations

from controlplane.datapath.host_ports import HostBinding
from controlplane.datapath.kernel.host_ports import BRIDGE, _Published, ruleset


def test_loopback_sources_are_masqueraded_onto_the_bridge_and_host_ips_matched_alone() -> None:
    web = _Published(
        "web-ns",
        "172.18.0.2",
        "swhp0",
        [
            HostBinding("tcp", 80, 8080),
            HostBinding("tcp", 80, 8085, host_ip="127.0.0.1"),
        ],
    )
    table = ruleset([web])
    assert table.count("fib daddr type local tcp dport 8080 dnat to 172.18.0.2:80") == 2
    assert table.count("ip daddr 127.0.0.1 tcp dport 8085 dnat to 172.18.0.2:80") == 2
    assert "type nat hook postrouting priority srcnat" in table
    assert f'ip saddr 127.0.0.0/8 oifname "{BRIDGE}" masquerade' in table
    assert "postrouting" not in ruleset([])  # nothing published: nothing to rewrite
