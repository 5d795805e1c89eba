"""The nftables table of kernel-mode published ports (pure rendering): a HostIp matched
alone, and connections from the node's own loopback sent out on the gateway bridge with the
gateway's address (the container could not answer 127.0.0.1)."""

from __future__ import annotations

from controlplane.datapath.host_ports import HostBinding
from controlplane.datapath.kernel.host_ports import (
    DEFAULT_BRIDGE,
    GATEWAY_BRIDGE,
    _Published,
    ruleset,
)


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
    assert f'ip saddr 127.0.0.0/8 oifname "{GATEWAY_BRIDGE.name}" masquerade' in table
    assert "postrouting" not in ruleset([])  # nothing published: nothing to rewrite


def test_each_bridge_in_use_masquerades_what_leaves_it_even_with_no_port() -> None:
    """An owner on no overlay is plugged into the default bridge with no port: no DNAT, but
    what it sends off the bridge leaves with the node's address (dockerd's MASQUERADE of
    docker0's subnet); the gateway bridge is not named while nothing is on it."""
    sleeper = _Published("sleeper-ns", "172.17.0.2", "swhp0", [], DEFAULT_BRIDGE)
    table = ruleset([sleeper])
    assert "dnat" not in table
    assert 'ip saddr 172.17.0.0/16 oifname != "swdocker0" masquerade' in table
    assert "127.0.0.0/8" not in table  # no port: nothing from the node's loopback to rewrite
    assert GATEWAY_BRIDGE.name not in table
    web = _Published("web-ns", "172.18.0.2", "swhp1", [HostBinding("tcp", 80, 8080)])
    both = ruleset([web, sleeper])
    assert 'ip saddr 172.18.0.0/16 oifname != "swgwbridge" masquerade' in both
    assert 'ip saddr 127.0.0.0/8 oifname "swdocker0" masquerade' in both
