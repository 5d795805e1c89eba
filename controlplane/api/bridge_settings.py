"""`docker inspect`'s view of a container on an engine-local network (`bridge`, `none`).

dockerd shows a container on its default `bridge` network under `NetworkSettings.Networks`
as `bridge`, with its address, gateway, prefix length and MAC, and repeats those four at the
top of `NetworkSettings` (the fields scripts read as `{{.NetworkSettings.IPAddress}}`); a
container in `none` (or `host`) mode shows a `none` (`host`) network with no address. Here a
kernel-mode container on no overlay is on the node's bridge (`NodeDataPath.bridge_endpoint`); a
userspace one is on no bridge, so it shows none (its `none` mode shows as dockerd's).
"""

from __future__ import annotations

from typing import Any

from controlplane.agent.local_network_ids import LocalNetworkIds
from controlplane.agent.runtime import ContainerState
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api.networks import endpoint_id
from controlplane.api.predefined_networks import GWBRIDGE
from controlplane.datapath.attachments import INGRESS_SANDBOX
from controlplane.datapath.kernel.host_ports import BridgeEndpoint


def local_networks_json(
    ids: LocalNetworkIds, mode: str, bridge: BridgeEndpoint | None, container_name: str
) -> dict[str, Any]:
    """The `Networks` entries of a container in network mode `mode` (`""` for a task's) at
    `bridge` (None: not on it now); `ids`: the node's local network ids."""
    if bridge is not None:
        name, ip, gateway, prefixlen, mac = (
            "bridge",
            bridge.ip,
            bridge.gateway,
            bridge.prefixlen,
            bridge.mac,
        )
    elif mode in ("none", "host"):
        name, ip, gateway, prefixlen, mac = mode, "", "", 0, ""
    else:
        return {}
    return {
        name: {
            "IPAMConfig": None,
            "Links": None,
            "Aliases": None,
            "NetworkID": ids.id(name),
            "EndpointID": endpoint_id(ids.id(name), container_name),
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


def address_settings(
    ids: LocalNetworkIds, bridge: BridgeEndpoint | None, container_name: str
) -> dict[str, Any]:
    """The top-level endpoint and address fields of `NetworkSettings`: those of its `bridge`
    entry (empty off the bridge, as dockerd's for a container on no `bridge`)."""
    return {
        "EndpointID": endpoint_id(ids.id("bridge"), container_name) if bridge else "",
        "Gateway": bridge.gateway if bridge else "",
        "IPAddress": bridge.ip if bridge else "",
        "IPPrefixLen": bridge.prefixlen if bridge else 0,
        "MacAddress": bridge.mac if bridge else "",
    }


def local_network_containers(registry: StandaloneContainers, name: str) -> dict[str, Any]:
    """`docker network inspect`'s Containers of local network `name`, by id, as dockerd
    lists them: the running containers on the node's bridge with their addresses, or those
    in `host` or `none` mode (no address); docker_gwbridge's are gateway endpoints."""
    if name == GWBRIDGE:
        return _gateway_endpoints(registry)
    out: dict[str, dict[str, str]] = {}
    for container in registry.containers():
        bridge = registry.bridge_endpoint(container) if name == "bridge" else None
        running = container.state is ContainerState.RUNNING
        in_mode = registry.network_of(container) == name
        if bridge is None and not (
            running and in_mode and not registry.left_network_mode(container)
        ):
            continue
        out[container.id] = {
            "Name": container.name,
            "EndpointID": endpoint_id(registry.local_network_ids.id(name), container.name),
            "MacAddress": bridge.mac if bridge else "",
            "IPv4Address": f"{bridge.ip}/{bridge.prefixlen}" if bridge else "",
            "IPv6Address": "",
        }
    return out


def _gateway_endpoints(registry: StandaloneContainers) -> dict[str, Any]:
    """docker_gwbridge's Containers in userspace mode: the ingress sandbox's endpoint
    (`ingress-sbox`) and each container's on an overlay, named as libnetwork names them
    (`gateway_` + a short id: dockerd's is the sandbox's, here the container's)."""
    out: dict[str, dict[str, str]] = {}
    owners = [(INGRESS_SANDBOX, INGRESS_SANDBOX)]
    owners += [(c.id, c.name) for c in registry.containers()]
    for key, name in owners:
        endpoint = registry.gateway_endpoint(name)
        if endpoint is None:
            continue
        label = f"gateway_{key if key == INGRESS_SANDBOX else key[:12]}"
        out[key] = {
            "Name": label,
            "EndpointID": endpoint_id(registry.local_network_ids.id(GWBRIDGE), label),
            "MacAddress": endpoint.mac,
            "IPv4Address": f"{endpoint.ip}/{endpoint.prefixlen}",
            "IPv6Address": "",
        }
    return dict(sorted(out.items()))
