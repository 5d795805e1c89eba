"""`docker inspect`'s view of a container on an engine-local network (`bridge`, `none`).

dockerd shows a container on its default `bridge` network under `NetworkSettings.Networks`
as `bridge`, with its address, gateway, prefix length and MAC, and repeats those four at the
top of `NetworkSettings` (the fields scripts read as `{{.NetworkSettings.IPAddress}}`); a
container in `none` mode shows a `none` network with no address. Here a kernel-mode
container on no overlay is on the node's bridge (`NodeDataPath.bridge_endpoint`); a
userspace one is on no bridge, so it shows none (its `none` mode shows as dockerd's).
"""

from __future__ import annotations

from typing import Any

from controlplane.agent.standalone import StandaloneContainers
from controlplane.api.networks import endpoint_id
from controlplane.api.predefined_networks import LOCAL_NETWORK_IDS
from controlplane.datapath.kernel.host_ports import BridgeEndpoint


def local_networks_json(
    mode: str, bridge: BridgeEndpoint | None, container_name: str
) -> dict[str, Any]:
    """The `Networks` entries of a container in network mode `mode` (`""` for a task's) at
    `bridge` (None: not on it now)."""
    if bridge is not None:
        name, ip, gateway, prefixlen, mac = (
            "bridge",
            bridge.ip,
            bridge.gateway,
            bridge.prefixlen,
            bridge.mac,
        )
    elif mode == "none":
        name, ip, gateway, prefixlen, mac = "none", "", "", 0, ""
    else:
        return {}
    return {
        name: {
            "IPAMConfig": None,
            "Links": None,
            "Aliases": None,
            "NetworkID": LOCAL_NETWORK_IDS[name],
            "EndpointID": endpoint_id(LOCAL_NETWORK_IDS[name], container_name),
            "Gateway": gateway,
            "IPAddress": ip,
            "IPPrefixLen": prefixlen,
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "MacAddress": mac,
            "DriverOpts": None,
        }
    }


def address_settings(bridge: BridgeEndpoint | None, container_name: str) -> dict[str, Any]:
    """The top-level endpoint and address fields of `NetworkSettings`: those of its `bridge`
    entry (empty off the bridge, as dockerd's for a container on no `bridge`)."""
    return {
        "EndpointID": endpoint_id(LOCAL_NETWORK_IDS["bridge"], container_name) if bridge else "",
        "Gateway": bridge.gateway if bridge else "",
        "IPAddress": bridge.ip if bridge else "",
        "IPPrefixLen": bridge.prefixlen if bridge else 0,
        "MacAddress": bridge.mac if bridge else "",
    }


def bridge_containers(registry: StandaloneContainers) -> dict[str, dict[str, str]]:
    """`docker network inspect bridge`'s Containers: the node's containers on its bridge
    (kernel mode), by id, as dockerd lists those on docker0."""
    out: dict[str, dict[str, str]] = {}
    for container in registry.containers():
        bridge = registry.bridge_endpoint(container)
        if bridge is not None:
            out[container.id] = {
                "Name": container.name,
                "EndpointID": endpoint_id(LOCAL_NETWORK_IDS["bridge"], container.name),
                "MacAddress": bridge.mac,
                "IPv4Address": f"{bridge.ip}/{bridge.prefixlen}",
                "IPv6Address": "",
            }
    return out
