"""`docker inspect`'s engine-local networks (pure): a container on the node's bridge shows
`bridge` with its address, gateway, prefix and MAC, repeated at the top of NetworkSettings;
`--network none` shows `none` with no address; one on neither shows nothing (dockerd 20.10's
answers for `docker run -d busybox sleep` and `--network none`, in its own namespace)."""

from __future__ import annotations

from controlplane.agent.local_network_ids import LocalNetworkIds
from controlplane.api.bridge_settings import address_settings, local_networks_json
from controlplane.datapath.kernel.host_ports import BridgeEndpoint

ON_BRIDGE = BridgeEndpoint("172.17.0.2", 16, "172.17.0.1", "02:42:ac:11:00:02")
IDS = LocalNetworkIds()


def test_a_container_on_the_bridge_shows_its_interface_there_and_at_the_top() -> None:
    networks = local_networks_json(IDS, "default", ON_BRIDGE, "c1")
    assert list(networks) == ["bridge"]
    bridge = networks["bridge"]
    assert (bridge["IPAddress"], bridge["Gateway"], bridge["IPPrefixLen"]) == (
        "172.17.0.2",
        "172.17.0.1",
        16,
    )
    assert bridge["MacAddress"] == "02:42:ac:11:00:02"
    assert bridge["NetworkID"] == IDS.id("bridge")
    assert len(bridge["EndpointID"]) == 64
    assert (
        bridge["EndpointID"]
        != local_networks_json(IDS, "", ON_BRIDGE, "c2")["bridge"]["EndpointID"]
    )
    assert address_settings(IDS, ON_BRIDGE, "c1") == {
        "EndpointID": bridge["EndpointID"],
        "Gateway": "172.17.0.1",
        "IPAddress": "172.17.0.2",
        "IPPrefixLen": 16,
        "MacAddress": "02:42:ac:11:00:02",
    }


def test_none_mode_shows_the_none_network_without_an_address() -> None:
    none = local_networks_json(IDS, "none", None, "c1")["none"]
    assert (none["IPAddress"], none["Gateway"], none["IPPrefixLen"], none["MacAddress"]) == (
        "",
        "",
        0,
        "",
    )
    assert none["NetworkID"] == IDS.id("none") != IDS.id("bridge")
    assert address_settings(IDS, None, "c1") == {
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "MacAddress": "",
    }


def test_off_any_bridge_a_container_shows_no_local_network() -> None:
    """A stopped kernel container, a userspace one, a task's on an overlay."""
    assert local_networks_json(IDS, "default", None, "c1") == {}
    assert local_networks_json(IDS, "", None, "c1") == {}
