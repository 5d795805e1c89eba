"""Service VIPs, routed as Docker routes them (`endpoint_mode=vip`, the default).

In Docker every sandbox on a network holds each VIP of that network as a /32 alias on its
interface, and IPVS in the sandbox NATs each new TCP connection or UDP flow to the VIP to one
running task of the service, round robin (libnetwork `service_linux.go`). So a ping to a VIP
is answered by the asking container itself, and traffic leaves the sender already addressed to
a task. Here the same happens in the sender's userspace stack: each stack asks its network's
`VipBalancer` whether an address is a VIP (then it is a local address: ICMP echo is looped
back) and which task a new connection or flow goes to (`stack.py` does the per-connection and
per-flow bookkeeping, as IPVS's connection table).

Where the balancer learns the VIPs and the tasks: from the endpoint records of NetworkDB, as
libnetwork's service bindings. A task's record on a network carries its service's VIP there
(`EndpointRecord.vip`, from the endpoint the allocator gave the task) and whether it is
disabled (still starting: its name resolves, but no traffic is balanced to it). A VIP exists
on a network while at least one enabled task backs it, as Docker adds the alias with the
first backend. Services in `endpoint_mode=dnsrr` have no VIP, so nothing is balanced: their
name resolves to the tasks.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.pb.datapath_pb2 import EndpointRecord

log = logging.getLogger("controlplane.datapath.vips")


@dataclass(frozen=True)
class VipService:
    """One service's VIP on one network and its running tasks' addresses there (sorted, so
    every sender walks them in the same order)."""

    service_id: str
    name: str
    vip: str
    backends: tuple[str, ...]


def vip_services(records: Iterable[EndpointRecord]) -> dict[str, VipService]:
    """VIP -> service, from one network's endpoint records. Records without a VIP (dnsrr
    services, standalone containers) and disabled tasks are no backends. Should two services
    claim one VIP (only while a stale record lingers: the allocator hands an address out once),
    the lower service id keeps it, and it is logged."""
    grouped: dict[str, dict[str, tuple[str, set[str]]]] = {}
    for record in records:
        if not record.vip or record.service_disabled:
            continue
        try:
            vip = str(ipaddress.IPv4Address(record.vip))
            ip = str(ipaddress.IPv4Address(record.ip))
        except ValueError:
            log.warning("event=vip_record_unusable task=%s vip=%r", record.task_id, record.vip)
            continue
        services = grouped.setdefault(vip, {})
        services.setdefault(record.service_id, (record.service_name, set()))[1].add(ip)
    table: dict[str, VipService] = {}
    for vip, services in sorted(grouped.items()):
        chosen = min(services)
        if len(services) > 1:
            log.warning(
                "event=vip_conflict vip=%s services=%s kept=%s", vip, ",".join(services), chosen
            )
        name, backends = services[chosen]
        ordered = tuple(sorted(backends, key=lambda ip: int(ipaddress.IPv4Address(ip))))
        table[vip] = VipService(chosen, name, vip, ordered)
    return table


class VipBalancer:
    """One network's VIPs as every stack on it on this node sees them (IPVS's services in
    the sandboxes). `replace` swaps the table when endpoints change; a VIP keeps its turn
    across changes, so a scale-up does not send the next connections back to the first task."""

    def __init__(self) -> None:
        self._services: dict[bytes, tuple[bytes, ...]] = {}
        self._turn: dict[bytes, int] = {}
        self.picks = 0  # connections and flows balanced, for the view

    def replace(self, services: Mapping[str, VipService]) -> None:
        self._services = {
            _raw(vip): tuple(_raw(ip) for ip in svc.backends) for vip, svc in services.items()
        }
        for vip in [v for v in self._turn if v not in self._services]:
            del self._turn[vip]

    def is_vip(self, ip: bytes) -> bool:
        return ip in self._services

    def pick(self, vip: bytes) -> bytes | None:
        """The task the next connection or flow to `vip` goes to (round robin); None when
        `vip` is no VIP with a running task."""
        backends = self._services.get(vip)
        if not backends:
            return None
        turn = self._turn.get(vip, 0) % len(backends)
        self._turn[vip] = turn + 1
        self.picks += 1
        return backends[turn]

    def serves(self, vip: bytes, backend: bytes) -> bool:
        """Whether `backend` still runs a task behind `vip` (a UDP flow to a task that went
        away picks another on its next datagram)."""
        return backend in self._services.get(vip, ())


class VipBalancers:
    """A node's balancers, one per network, created on first use and kept (the stacks hold
    them), filled from the endpoint records of the networks the node is on."""

    def __init__(self) -> None:
        self._by_network: dict[str, VipBalancer] = {}
        self.services: dict[str, dict[str, VipService]] = {}  # network id -> VIP -> service

    def for_network(self, network_id: str) -> VipBalancer:
        return self._by_network.setdefault(network_id, VipBalancer())

    def update(self, records: Iterable[tuple[str, EndpointRecord]]) -> None:
        """Rebuild every network's table from (network id, record) pairs."""
        per_network: dict[str, list[EndpointRecord]] = {}
        for network_id, record in records:
            per_network.setdefault(network_id, []).append(record)
        self.services = {nid: vip_services(recs) for nid, recs in per_network.items()}
        for network_id in set(self._by_network) | set(self.services):
            self.for_network(network_id).replace(self.services.get(network_id, {}))


def render_vips(services: Mapping[str, Mapping[str, VipService]], names: Mapping[str, str]) -> str:
    """The VIPs every sandbox of this node routes, per network, as `ipvsadm -Ln` lists the
    services and their real servers in a Docker sandbox (one firewall-marked service per VIP,
    every port, round robin, NAT)."""
    lines = ["service VIPs (ipvsadm -Ln in each sandbox):"]
    for network_id, table in sorted(services.items(), key=lambda kv: names.get(kv[0], kv[0])):
        for vip, svc in sorted(table.items(), key=lambda kv: int(ipaddress.IPv4Address(kv[0]))):
            network = names.get(network_id, network_id[:12])
            lines.append(f"  {network}: FWM {vip} ({svc.name}) rr")
            lines += [f"    -> {ip}:0  Masq  1" for ip in svc.backends]
    if len(lines) == 1:
        lines.append("  none (no running task of a VIP-mode service on this node's networks)")
    return "\n".join(lines) + "\n"


def _raw(ip: str) -> bytes:
    return ipaddress.IPv4Address(ip).packed
