"""A standalone container's published ports in the Engine API's shapes: what `docker run -p`
/ `-P` send at create (`HostConfig.PortBindings`, `HostConfig.PublishAllPorts`,
`ExposedPorts`), read into a `PortRequest`, and what `docker ps` (the summary's `Ports`),
`docker port` and `docker inspect` (`NetworkSettings.Ports`, `HostConfig.PortBindings`,
`Config.ExposedPorts`) show back, as dockerd shows them.

IPv4 only: dockerd 20.10 publishes `-p 8080:80` on `0.0.0.0` and `::` both (`docker port`
lists `[::]:8080` too, even on a host whose IPv6 is disabled). A lab node is an emulated host
whose one address is IPv4 (127.77.x.y), so only the IPv4 binding is made and shown, never a
`::` line nothing answers on; an IPv6 HostIp (`-p [::1]:8080:80`) is refused at create, naming
what works."""

from __future__ import annotations

import ipaddress
from typing import Any

from controlplane.agent.runtime import Container, ContainerState
from controlplane.agent.standalone import PortRequest, StandaloneContainers
from controlplane.api.errors import bad_request
from controlplane.datapath.host_ports import HostBinding
from controlplane.numbers import is_number

PROTOCOLS = ("tcp", "udp", "sctp")


def _container_port(text: str) -> str:
    """`80`, `80/udp` as `80/tcp`, `80/udp` (Docker's nat.Port); 400 otherwise."""
    number, _, protocol = text.partition("/")
    protocol = protocol.lower() or "tcp"
    if protocol not in PROTOCOLS:
        raise bad_request(f"invalid proto: {protocol} (in {text!r}): use one of tcp, udp, sctp")
    if not is_number(number) or not 0 < int(number) < 65536:
        raise bad_request(f"invalid containerPort: {number} (in {text!r}): give a port 1-65535")
    return f"{int(number)}/{protocol}"


def _host_port(text: str) -> tuple[int, int]:
    """`8080` as (8080, 0), `8080-8081` as (8080, 8081), `` as (0, 0): the node picks."""
    if not text:
        return 0, 0
    first, dash, last = text.partition("-")
    if not is_number(first) or (dash and not is_number(last)):
        raise bad_request(f"invalid hostPort: {text}: give a port, a range like 8080-8081, or none")
    low, high = int(first), int(last) if dash else 0
    if not 0 < low < 65536 or (dash and not low <= high < 65536):
        raise bad_request(f"invalid hostPort: {text}: ports are 1-65535, a range low-high")
    return low, high


def _host_ip(text: str) -> str:
    if not text:
        return ""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise bad_request(f"invalid IP address: {text}") from None
    if address.version != 4:
        raise bad_request(
            f"invalid HostIp {text}: a Swarmlab node is an emulated host with one IPv4 address "
            "and no IPv6, so it publishes on IPv4 only; give none (every address of the node), "
            "127.0.0.1 (its loopback, reached at the node's address) or the node's address"
        )
    return text


_JSON_KINDS = {int: "number", float: "number", bool: "bool", list: "array", dict: "object"}


def _string(binding: dict[str, Any], field: str) -> str:
    """A binding's field, which dockerd decodes into a Go string: a number is refused there."""
    value = binding.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request(
            f"json: cannot unmarshal {_JSON_KINDS.get(type(value), 'value')} into Go struct "
            f"field PortBinding.HostConfig.PortBindings.{field} of type string"
        )
    return value


def _bindings(value: Any) -> tuple[tuple[str, tuple[HostBinding, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise bad_request(f"HostConfig.PortBindings must be an object, got {value!r}")
    out = []
    for key, hosts in value.items():
        port = _container_port(str(key))
        number, _, protocol = port.partition("/")
        if hosts is None:
            continue  # exposed, bound to nothing
        if not isinstance(hosts, list) or not all(isinstance(h, dict) for h in hosts):
            raise bad_request(f"HostConfig.PortBindings[{key!r}] must be a list of bindings")
        bound = []
        for host in hosts:
            low, high = _host_port(_string(host, "HostPort"))
            ip = _host_ip(_string(host, "HostIp"))
            bound.append(HostBinding(protocol, int(number), low, high, ip))
        if bound:
            out.append((port, tuple(bound)))
    return tuple(out)


def port_request(body: dict[str, Any]) -> PortRequest:
    """The ports a create body asks to publish; 400 naming what is wrong."""
    host_config = body.get("HostConfig") or {}
    if not isinstance(host_config, dict):
        raise bad_request(f"HostConfig must be an object, got {host_config!r}")
    exposed = body.get("ExposedPorts") or {}
    if not isinstance(exposed, dict):
        raise bad_request(f"ExposedPorts must be an object, got {exposed!r}")
    return PortRequest(
        bindings=_bindings(host_config.get("PortBindings")),
        publish_all=bool(host_config.get("PublishAllPorts")),
        exposed=tuple(_container_port(str(port)) for port in exposed),
    )


def _asked(binding: HostBinding) -> str:
    return binding.asked() if binding.published_port else ""


def _key(port: str) -> tuple[int, str]:
    number, _, protocol = port.partition("/")
    return int(number), protocol


def _exposed(request: PortRequest) -> list[str]:
    """Every container port of the container: exposed or bound, in port order."""
    ports = {*request.exposed, *(port for port, _ in request.bindings)}
    return sorted(ports, key=_key)


def _bound(registry: StandaloneContainers, container: Container) -> list[HostBinding]:
    if container.state is not ContainerState.RUNNING:
        return []
    return registry.published_ports(container)


def summary_ports(registry: StandaloneContainers, container: Container) -> list[dict[str, Any]]:
    """The summary's `Ports` (`docker ps`): a running container's bound ports, and its
    exposed ports bound to nothing (`80/tcp`); none once it is not running, nor in host
    mode (its ports are the node's)."""
    if container.state is not ContainerState.RUNNING or registry.network_of(container) == "host":
        return []
    bound = _bound(registry, container)
    shown: list[dict[str, Any]] = [
        {
            "IP": b.shown_ip,
            "PrivatePort": b.target_port,
            "PublicPort": b.published_port,
            "Type": b.protocol,
        }
        for b in bound
    ]
    published = {f"{b.target_port}/{b.protocol}" for b in bound}
    for port in _exposed(registry.port_request(container)):
        if port not in published:
            number, protocol = _key(port)
            shown.append({"PrivatePort": number, "Type": protocol})
    return shown


def network_ports(
    registry: StandaloneContainers, container: Container
) -> dict[str, list[dict[str, str]] | None]:
    """`NetworkSettings.Ports` (`docker port`): each exposed port of the running container
    with its host bindings (null: bound to nothing); empty once it is not running, and in
    host mode."""
    if container.state is not ContainerState.RUNNING or registry.network_of(container) == "host":
        return {}
    out: dict[str, list[dict[str, str]] | None] = {
        port: None for port in _exposed(registry.port_request(container))
    }
    for b in _bound(registry, container):
        port = f"{b.target_port}/{b.protocol}"
        entry = {"HostIp": b.shown_ip, "HostPort": str(b.published_port)}
        out[port] = [*(out.get(port) or []), entry]
    return out


def host_config_ports(registry: StandaloneContainers, container: Container) -> dict[str, Any]:
    """`HostConfig.PortBindings` and `PublishAllPorts`, as the create asked them."""
    request = registry.port_request(container)
    return {
        "PortBindings": {
            port: [{"HostIp": b.host_ip, "HostPort": _asked(b)} for b in hosts]
            for port, hosts in request.bindings
        },
        "PublishAllPorts": request.publish_all,
    }


def exposed_ports(registry: StandaloneContainers, container: Container) -> dict[str, Any] | None:
    """`Config.ExposedPorts`: the image's and the create's (null: none)."""
    ports = _exposed(registry.port_request(container))
    return {port: {} for port in ports} or None
