"""Service discovery's names: what a node's embedded resolver (Docker's 127.0.0.11) answers for
the containers it serves. Pure: built from the endpoints the node knows (its own and those
gossiped in NetworkDB), asked with the networks of the asking container; no sockets, no wire
format (`dns.py` speaks DNS around it).

What Docker's resolver answers, and so this table (see shared/reference/real-swarm/FINDINGS.md):
- a container's name, and each of its network aliases, -> its address on that network; a task
  is a container named `<service>.<slot>.<task id>`, so its name resolves the same way;
- a service's name (and its service aliases) -> its virtual IP on that network, or the
  addresses of all its tasks when the service uses `endpoint_mode=dnsrr`;
- `tasks.<service>` (and `tasks.<service alias>`) -> the addresses of all its tasks;
- `<name>.<network name>` -> `<name>` looked up on that network only;
- a container's address -> `<name>.<network name>` (PTR); virtual IPs have no PTR, as in Docker;
- only on networks the asker shares with the target: a container on network A never learns of
  one that is only on network B. When the asker shares several networks that know a name, the
  first of the asker's networks (its own order) answers, as Docker walks its endpoints.
Names are matched case-insensitively, without the trailing dot.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from controlplane.datapath.program import Endpoint
from controlplane.pb.datapath_pb2 import EndpointRecord

TASKS_PREFIX = "tasks."
REVERSE_SUFFIX = ".in-addr.arpa"


class NamesError(ValueError):
    """A record the table cannot hold (a bad address, an empty name); says which."""


@dataclass(frozen=True)
class ServiceRef:
    """The service a task's endpoint belongs to, as Docker gossips it with the endpoint: its
    name, its virtual IP on the endpoint's network (None for `endpoint_mode=dnsrr`) and its
    aliases on that network (`--network name=N,alias=A`)."""

    name: str
    vip: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class NameRecord:
    """One endpoint the resolver knows: a standalone container (`service` None) or a task."""

    endpoint: Endpoint
    service: ServiceRef | None = None


def name_record(network_id: str, key: str, record: EndpointRecord) -> NameRecord:
    """What a NetworkDB endpoint entry (`key` in network `network_id`'s endpoint table) means
    to the resolver. A task's aliases are its service's aliases on that network (they come
    from the service's `--network name=N,alias=A`), so they name the service; a standalone
    container's aliases (`docker run --network-alias`) name the container. A task that is not
    running yet (`service_disabled`) is known by its container name only, as Docker adds a
    task's service records once its container started."""
    if record.service_name and record.service_disabled:
        return NameRecord(Endpoint(network_id, key, record.name, record.ip, record.node_id))
    if record.service_name:
        endpoint = Endpoint(network_id, key, record.name, record.ip, record.node_id)
        service = ServiceRef(record.service_name, record.vip or None, tuple(record.aliases))
        return NameRecord(endpoint, service)
    aliases = tuple(record.aliases)
    return NameRecord(Endpoint(network_id, key, record.name, record.ip, record.node_id, aliases))


@dataclass(frozen=True)
class _NetworkNames:
    forward: Mapping[str, tuple[str, ...]]  # lower-case name -> addresses, sorted
    reverse: Mapping[str, str]  # container address -> its name


@dataclass(frozen=True)
class NameTable:
    """Every name the resolver owns, per network. Immutable: the resolver swaps a whole new
    table in when endpoints change, so a query never sees half an update."""

    _networks: Mapping[str, _NetworkNames] = field(default_factory=dict)
    _network_ids_by_name: Mapping[str, str] = field(default_factory=dict)
    _network_names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, records: Iterable[NameRecord], network_names: Mapping[str, str] | None = None
    ) -> NameTable:
        """The table of `records`; `network_names` (network id -> name) enables the
        `<name>.<network>` form and names PTR answers as Docker does."""
        forward: dict[str, dict[str, set[str]]] = {}
        reverse: dict[str, dict[str, str]] = {}
        for record in records:
            ep = record.endpoint
            ip = _address(ep.ip, f"endpoint {ep.endpoint_id!r}")
            names = forward.setdefault(ep.network_id, {})
            for name in (ep.name, *ep.aliases):
                names.setdefault(_key(name, ep.endpoint_id), set()).add(ip)
            reverse.setdefault(ep.network_id, {}).setdefault(ip, ep.name)
            if record.service is not None:
                _add_service(names, record.service, ip, ep.endpoint_id)
        networks = {
            nid: _NetworkNames(
                forward={name: tuple(sorted(ips, key=_sort_key)) for name, ips in names.items()},
                reverse=reverse.get(nid, {}),
            )
            for nid, names in forward.items()
        }
        named = dict(network_names or {})
        return cls(networks, {name.lower(): nid for nid, name in named.items()}, named)

    def lookup(self, name: str, asker: Sequence[str]) -> tuple[str, ...] | None:
        """The addresses `name` resolves to for a container on the networks `asker`, or None
        when the name is not one of ours there (the resolver then asks upstream)."""
        key = name.rstrip(".").lower()
        found = self._first(key, asker)
        if found is not None:
            return found
        # `a.b.c` may be `a.b` on network `c` or `a` on network `b.c`.
        labels = key.split(".")
        for cut in range(len(labels) - 1, 0, -1):
            network_id = self._network_ids_by_name.get(".".join(labels[cut:]))
            if network_id is not None and network_id in asker:
                found = self._first(".".join(labels[:cut]), (network_id,))
                if found is not None:
                    return found
        return None

    def reverse(self, ip: str, asker: Sequence[str]) -> str | None:
        """The PTR name of a container address seen from `asker`: `<name>.<network name>`."""
        for network_id in asker:
            names = self._networks.get(network_id)
            name = names.reverse.get(ip) if names is not None else None
            if name is not None:
                network_name = self._network_names.get(network_id)
                return f"{name}.{network_name}" if network_name else name
        return None

    def _first(self, key: str, asker: Sequence[str]) -> tuple[str, ...] | None:
        for network_id in asker:
            names = self._networks.get(network_id)
            if names is not None and key in names.forward:
                return names.forward[key]
        return None


def _add_service(names: dict[str, set[str]], service: ServiceRef, ip: str, owner: str) -> None:
    vip = _address(service.vip, f"service {service.name!r}") if service.vip else None
    for name in (service.name, *service.aliases):
        key = _key(name, owner)
        names.setdefault(key, set()).add(vip or ip)
        names.setdefault(TASKS_PREFIX + key, set()).add(ip)


def reverse_name_to_ip(qname: str) -> str | None:
    """`4.3.2.1.in-addr.arpa` -> `1.2.3.4`; None when `qname` is not an IPv4 reverse name."""
    key = qname.rstrip(".").lower()
    if not key.endswith(REVERSE_SUFFIX):
        return None
    octets = key.removesuffix(REVERSE_SUFFIX).split(".")
    if len(octets) != 4:
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(octets))))
    except ValueError:
        return None


def _key(name: str, owner: str) -> str:
    key = name.rstrip(".").lower()
    if not key:
        raise NamesError(f"endpoint {owner!r} has an empty name or alias: give every name text")
    return key


def _address(text: str, owner: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise NamesError(
            f"{owner} has address {text!r}, which is not an IPv4 address (no prefix length)"
        ) from None


def _sort_key(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))
