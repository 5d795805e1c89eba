"""The engine-local networks a node has besides the swarm's: what `docker network ls` lists
with scope `local` on a real swarm node (`bridge`, `host`, `none`, `docker_gwbridge`), here
only where the node really gives a container what the network stands for.

- `none`: always; a container in `none` mode has only its loopback, as in Docker.
- `bridge` (docker0): a container on no other network is on the node's bridge (172.17.0.0/16,
  gateway .1), as dockerd's on docker0. In userspace mode always: the emulated `docker0`
  (`datapath/host_ports.py` on `DEFAULT_BRIDGE`), where containers of the node reach each
  other and publish their ports. In kernel mode in a swarm: the real bridge `swdocker0`
  (masqueraded), a container there being a process in a namespace of its own.
- `docker_gwbridge`: in a swarm, the node's gateway bridge (172.18.0.0/16) through which
  ports are published (`datapath/host_ports.py`, `kernel/host_ports.py`). In userspace mode
  it is the emulation's own: containers get no `eth1` on it.
- `host`: always; a container in `host` mode shares the node's network: its servers listen
  on the node's address, its clients connect from it (`agent/host_stack.py`).

`docker network rm` of `bridge`, `host` or `none` is refused with dockerd's words and status
(403) whether listed or not; `docker_gwbridge` is refused too (dockerd removes it only once
no container uses it, and the emulation keeps it while the node is in a swarm). Ids and
creation times are the node's own, random, kept in its data dir as dockerd keeps them
(`agent/local_network_ids.py`: `bridge`'s are made again at each start), and what a
container's inspect names (`bridge_settings.py`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from controlplane.agent.host_stack import HostInterface
from controlplane.agent.local_network_ids import LocalNetworkIds
from controlplane.api.common import go_time
from controlplane.datapath.program import mac_for

BUILTIN = frozenset({"bridge", "host", "none"})
"""dockerd's predefined networks (`type=builtin`); docker_gwbridge is a custom one."""
GWBRIDGE = "docker_gwbridge"


@dataclass(frozen=True)
class LocalNetwork:
    """One engine-local network of this node, as `network ls` and `inspect` show it."""

    name: str
    driver: str
    id: str
    created_ns: int
    subnet: str = ""  # empty: no IPAM pool (`none`)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN


def local_networks(*, swarm: bool, kernel: bool, ids: LocalNetworkIds) -> list[LocalNetwork]:
    """This node's local networks, by name: `swarm` whether it is in a swarm (its data path
    runs), `kernel` whether that data path is the kernel's; `ids` the node's identities of
    them."""

    def network(
        name: str, driver: str, subnet: str = "", options: dict[str, str] | None = None
    ) -> LocalNetwork:
        identity = ids.get(name)
        return LocalNetwork(name, driver, identity.id, identity.created_ns, subnet, options or {})

    nets = [network("none", "null"), network("host", "host")]
    if swarm or not kernel:
        nets.append(
            network(
                "bridge",
                "bridge",
                "172.17.0.0/16",
                {
                    "com.docker.network.bridge.default_bridge": "true",
                    "com.docker.network.bridge.enable_icc": "true",
                    "com.docker.network.bridge.enable_ip_masquerade": "true",
                    "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                    "com.docker.network.bridge.name": "swdocker0" if kernel else "docker0",
                    "com.docker.network.driver.mtu": "1500",
                },
            )
        )
    if swarm:
        nets.append(
            network(
                GWBRIDGE,
                "bridge",
                "172.18.0.0/16",
                {
                    "com.docker.network.bridge.enable_icc": "false",
                    "com.docker.network.bridge.enable_ip_masquerade": "true",
                    "com.docker.network.bridge.name": "swgwbridge" if kernel else GWBRIDGE,
                },
            )
        )
    return sorted(nets, key=lambda n: n.name)


def bridge_interfaces(nets: list[LocalNetwork]) -> list[HostInterface]:
    """The node's bridges among `nets`, as its interfaces (its address the gateway): what
    `ip addr` lists in a host-mode container besides the node's address."""
    found = []
    for net in nets:
        device = net.options.get("com.docker.network.bridge.name")
        if net.driver == "bridge" and device and net.subnet:
            subnet = ipaddress.IPv4Network(net.subnet)
            gateway = ipaddress.IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")
            found.append(HostInterface(device, gateway, mac_for(str(gateway.ip))))
    return found


def local_network_json(net: LocalNetwork, containers: dict[str, Any]) -> dict[str, Any]:
    """dockerd's NetworkResource of a local network; `containers` as its Containers."""
    config: list[dict[str, str]] = []
    if net.subnet:
        gateway = ipaddress.IPv4Network(net.subnet).network_address + 1
        config.append({"Subnet": net.subnet, "Gateway": str(gateway)})
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": go_time(net.created_ns),
        "Scope": "local",
        "Driver": net.driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": config},
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers,
        "Options": dict(net.options),
        "Labels": {},
    }


def absent_reason(name: str) -> str:
    """Why a local network `name` this node has not now was not found (a 404's words), or
    ""."""
    if name == "bridge":
        return "a kernel-mode node has a bridge network only while it is in a swarm"
    if name == GWBRIDGE:
        return "this node has a docker_gwbridge only while it is in a swarm"
    return ""


def removal_refusal(name: str) -> str | None:
    """Why `docker network rm NAME` of a local network is refused (dockerd's words for the
    predefined ones), or None for a name that is not one."""
    if name in BUILTIN:
        return f"{name} is a pre-defined network and cannot be removed"
    if name == GWBRIDGE:
        return (
            f"{GWBRIDGE} cannot be removed: this emulated engine keeps it while the node is in "
            "a swarm (it publishes the node's ports)"
        )
    return None
