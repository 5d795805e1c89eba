"""The allocator's pure core: subnets, gateways and VNIs of overlay networks, task and attachment
addresses, service VIPs and ingress published ports.

No I/O and no clock: the leader loop calls `allocate_*`/`release_*` and writes the returned plain
values into the store objects. The whole state is a function of those objects, so after a
failover the new leader calls `restore()` with the store's networks, services and tasks and
continues without ever handing out anything that is still in use. Choices are always "lowest
free" in Swarm's order (subnets from the default pool, VNIs from 4096, host addresses from .2,
dynamic ports from 30000), which makes a restored allocator behave exactly like the live one.

Where Swarm accepts something and fails later (an overlapping subnet, an unknown port protocol),
we refuse it up front with a message that says what clashed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, ip_interface

from controlplane.manager.ipam import (
    DEFAULT_ADDR_POOL,
    DEFAULT_SUBNET_SIZE,
    DYNAMIC_PORT_FIRST,
    DYNAMIC_PORT_LAST,
    VNI_FIRST,
    VNI_LAST,
    AddressSpace,
    AllocatorError,
    IdSpace,
    Pool,
    UsedSpans,
    carve,
    mac_address,
    parse_gateway,
    parse_range,
    parse_subnet,
    validate_default_pools,
)
from controlplane.pb import objects_pb2

__all__ = [
    "PROTOCOLS",
    "TERMINAL_TASK_STATES",
    "Allocator",
    "AllocatorError",
    "IPAMRequest",
    "NetworkAllocation",
    "Pool",
    "PortSpec",
    "mac_address",
]

PROTOCOLS = ("tcp", "udp", "sctp")
PUBLISH_MODES = ("ingress", "host")
TERMINAL_TASK_STATES = frozenset(
    {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
)
"""A task in one of these observed states no longer runs, so its addresses are free again; the
caller releases them when it sees the transition, and `restore` does not count them."""

Owner = tuple[str, str]
"""Who holds an address: ("task", task id), ("vip", service id) or ("attachment", any id)."""


@dataclass(frozen=True)
class IPAMRequest:
    """One `--subnet/--gateway/--ip-range` triple as the user gave it (NetworkSpec.ipam)."""

    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""


@dataclass(frozen=True)
class NetworkAllocation:
    """What the caller writes into Network.vni and Network.ipam."""

    vni: int
    pools: tuple[Pool, ...]


@dataclass(frozen=True)
class PortSpec:
    """A published port, as asked (published_port 0 = pick one) or as allocated."""

    target_port: int
    published_port: int = 0
    protocol: str = "tcp"
    publish_mode: str = "ingress"
    name: str = ""

    def label(self) -> str:
        """Docker names the port alone for tcp; other protocols are spelled out."""
        p = str(self.published_port)
        return p if self.protocol == "tcp" else f"{p}/{self.protocol}"


@dataclass
class _Network:
    name: str
    vni: int
    spaces: list[AddressSpace]
    holders: dict[IPv4Address, Owner]


class Allocator:
    """Allocation state of one cluster. Build it with the cluster's default pools, then either
    allocate from scratch (swarm init: the `ingress` network first, so it gets VNI 4096 and
    10.0.0.0/24) or `restore()` from the store after a leadership change."""

    def __init__(
        self,
        default_pools: Sequence[str] = (DEFAULT_ADDR_POOL,),
        subnet_size: int = DEFAULT_SUBNET_SIZE,
    ) -> None:
        self._pool_texts = list(default_pools)
        self._pools = validate_default_pools(list(default_pools), subnet_size)
        self.subnet_size = subnet_size
        self._reset()

    @classmethod
    def for_cluster(cls, cluster: objects_pb2.Cluster) -> Allocator:
        """The allocator for a cluster object's `--default-addr-pool` settings (Swarm's defaults
        where they are unset)."""
        pools = list(cluster.default_address_pool) or [DEFAULT_ADDR_POOL]
        return cls(pools, cluster.subnet_size or DEFAULT_SUBNET_SIZE)

    @property
    def default_pools(self) -> list[str]:
        return list(self._pool_texts)

    def _reset(self) -> None:
        self._vnis = IdSpace(VNI_FIRST, VNI_LAST)
        self._networks: dict[str, _Network] = {}
        self._used = UsedSpans()  # every network's subnets
        self._owned: dict[Owner, dict[str, IPv4Address]] = {}
        self._port_holder: dict[tuple[str, int], str] = {}
        self._dynamic = {p: IdSpace(DYNAMIC_PORT_FIRST, DYNAMIC_PORT_LAST) for p in PROTOCOLS}
        self._service_ports: dict[str, tuple[PortSpec, ...]] = {}
        self._service_names: dict[str, str] = {}

    # ---- networks -------------------------------------------------------------------------

    def allocate_network(
        self, network_id: str, name: str, requests: Sequence[IPAMRequest] = ()
    ) -> NetworkAllocation:
        """Give a network its VNI and pools: the user's subnets (checked, never overlapping another
        network) or the next free block of the default pools. Idempotent per network id."""
        if network_id in self._networks:
            return self.network(network_id)  # type: ignore[return-value]
        spaces = [self._space_for(r, name) for r in requests]
        for i, space in enumerate(spaces):
            for other in spaces[:i]:
                if space.subnet.overlaps(other.subnet):
                    raise AllocatorError(
                        f"invalid subnet {space.subnet}: it overlaps {other.subnet}, another "
                        f"subnet given for network {name}; give each subnet once",
                        "conflict",
                    )
        if not spaces:
            subnet = carve(self._pools, self.subnet_size, self._used)
            if subnet is None:
                raise AllocatorError(
                    "could not find an available, non-overlapping IPv4 address pool among the "
                    f"defaults ({', '.join(self._pool_texts)} as /{self.subnet_size}) to assign "
                    f"to network {name}; remove unused networks or give a --subnet",
                    "exhausted",
                )
            spaces = [AddressSpace(subnet, subnet.network_address + 1, None)]
        vni = self._vnis.take()
        if vni is None:
            raise AllocatorError("no VXLAN id (VNI) is free for a new overlay network", "exhausted")
        self._add_network(network_id, _Network(name, vni, spaces, {}))
        return self.network(network_id)  # type: ignore[return-value]

    def _add_network(self, network_id: str, net: _Network) -> None:
        self._networks[network_id] = net
        for space in net.spaces:
            self._used.add(space.subnet)

    def _space_for(self, req: IPAMRequest, name: str) -> AddressSpace:
        subnet = parse_subnet(req.subnet)
        gateway = (
            parse_gateway(req.gateway, subnet, req.subnet)
            if req.gateway
            else subnet.network_address + 1
        )
        rng = parse_range(req.ip_range, subnet, req.subnet) if req.ip_range else None
        for nid, net in self._networks.items():
            for space in net.spaces:
                if space.subnet.overlaps(subnet):
                    raise AllocatorError(
                        f"invalid subnet {req.subnet} for network {name}: it overlaps subnet "
                        f"{space.subnet} of network {net.name} ({nid}); choose a subnet that no "
                        "other network uses",
                        "conflict",
                    )
        return AddressSpace(subnet, gateway, rng)

    def release_network(self, network_id: str) -> None:
        """Free a deleted network's VNI and subnets, and forget every address held on it."""
        net = self._networks.pop(network_id, None)
        if net is None:
            return
        for space in net.spaces:
            self._used.remove(space.subnet)
        if not any(n.vni == net.vni for n in self._networks.values()):
            self._vnis.release(net.vni)
        for owner in net.holders.values():
            held = self._owned.get(owner)
            if held is not None:
                held.pop(network_id, None)
                if not held:
                    del self._owned[owner]

    def has_network(self, network_id: str) -> bool:
        """The network is allocated here (`network()` without building its pools)."""
        return network_id in self._networks

    def network(self, network_id: str) -> NetworkAllocation | None:
        net = self._networks.get(network_id)
        if net is None:
            return None
        return NetworkAllocation(net.vni, tuple(s.pool for s in net.spaces))

    # ---- addresses ------------------------------------------------------------------------

    def _allocate(self, owner: Owner, network_id: str, wanted: str = "") -> str:
        """`owner`'s address on the network (the one it holds, else `wanted` if given, else
        the next free one), or an AllocatorError saying why it cannot have one."""
        net = self._networks.get(network_id)
        if net is None:
            raise AllocatorError(
                f"network {network_id} has no allocation yet (not found or not allocated)",
                "not_found",
            )
        held = self._owned.get(owner, {})
        if network_id in held:
            return self._cidr(net, held[network_id])
        ip, space = self._requested(net, wanted) if wanted else self._next_free(net, network_id)
        self._owned.setdefault(owner, {})[network_id] = ip
        net.holders[ip] = owner
        return space.cidr(ip)

    @staticmethod
    def _next_free(net: _Network, network_id: str) -> tuple[IPv4Address, AddressSpace]:
        for space in net.spaces:
            ip = space.take()
            if ip is not None:
                return ip, space
        raise AllocatorError(
            f"no available IPv4 addresses on this network's address pools: {net.name} "
            f"({network_id})",
            "exhausted",
        )

    @staticmethod
    def _requested(net: _Network, wanted: str) -> tuple[IPv4Address, AddressSpace]:
        """`wanted` taken in its space, or the reason it cannot be."""
        try:
            ip = IPv4Address(wanted)
        except ValueError:
            raise AllocatorError(f"invalid IPv4 address: {wanted}", "invalid") from None
        space = next((s for s in net.spaces if s.contains(ip)), None)
        if space is None:
            subnets = ", ".join(str(s.subnet) for s in net.spaces)
            raise AllocatorError(
                f"address {ip} is not in network {net.name}'s subnets ({subnets}): "
                "give an address of its subnet",
                "invalid",
            )
        if ip in net.holders or not space.reserve(ip):
            raise AllocatorError(
                f"address {ip} is in use on network {net.name}, or is not one it hands out "
                "(its network, gateway or broadcast address, or outside its --ip-range): "
                "give another address, or none",
                "conflict",
            )
        return ip, space

    def _release(self, owner: Owner, network_id: str | None = None) -> None:
        held = self._owned.get(owner)
        if held is None:
            return
        for nid in [network_id] if network_id is not None else list(held):
            ip = held.pop(nid, None)
            net = self._networks.get(nid)
            if ip is None or net is None:
                continue
            net.holders.pop(ip, None)
            for space in net.spaces:
                if space.contains(ip):
                    space.release(ip)
        if not held:
            del self._owned[owner]

    @staticmethod
    def _cidr(net: _Network, ip: IPv4Address) -> str:
        for space in net.spaces:
            if space.contains(ip):
                return space.cidr(ip)
        return f"{ip}/32"  # unreachable: holders only hold addresses of their spaces

    def allocate_vip(self, service_id: str, network_id: str) -> str:
        """The service's virtual IP on a network (CIDR form, Endpoint.virtual_ips), one per
        service per network: asking again returns the same one."""
        return self._allocate(("vip", service_id), network_id)

    def release_vip(self, service_id: str, network_id: str | None = None) -> None:
        self._release(("vip", service_id), network_id)

    def allocate_task_address(self, task_id: str, network_id: str, wanted: str = "") -> str:
        """A task's address on a network (CIDR form, NetworkAttachment.addresses); idempotent.
        `wanted`: the one IPv4 address the user asked for (`docker run --ip`)."""
        return self._allocate(("task", task_id), network_id, wanted)

    def release_task(self, task_id: str, network_id: str | None = None) -> None:
        """Free a task's addresses (on one network, or all of them)."""
        self._release(("task", task_id), network_id)

    def allocate_attachment(self, owner_id: str, network_id: str) -> str:
        """An address for something that is not a task: a node's ingress sandbox or load-balancer
        endpoint, a standalone container on an attachable network."""
        return self._allocate(("attachment", owner_id), network_id)

    def release_attachment(self, owner_id: str, network_id: str | None = None) -> None:
        self._release(("attachment", owner_id), network_id)

    def vips(self, service_id: str) -> dict[str, str]:
        return self._addresses(("vip", service_id))

    def task_addresses(self, task_id: str) -> dict[str, str]:
        return self._addresses(("task", task_id))

    def _addresses(self, owner: Owner) -> dict[str, str]:
        return {
            nid: self._cidr(self._networks[nid], ip)
            for nid, ip in self._owned.get(owner, {}).items()
        }

    # ---- published ports ------------------------------------------------------------------

    def allocate_ports(
        self, service_id: str, service_name: str, ports: Sequence[PortSpec]
    ) -> tuple[PortSpec, ...]:
        """Set a service's published ports (create or update) and return them with every ingress
        port filled in. Given ports are reserved; unset ones come from 30000-32767 (a port the
        service already had for the same target keeps its number across updates). Ports are per
        protocol. Nothing changes when this raises."""
        wanted = [self._check_port(p) for p in ports]
        explicit: set[tuple[str, int]] = set()
        for p in wanted:
            if p.publish_mode == "ingress" and p.published_port:
                key = (p.protocol, p.published_port)
                if key in explicit:
                    raise AllocatorError("EndpointSpec: duplicate published ports provided")
                explicit.add(key)
                holder = self._port_holder.get(key)
                if holder is not None and holder != service_id:
                    raise AllocatorError(
                        f"port '{p.label()}' is already in use by service "
                        f"'{self._service_names.get(holder, holder)}' ({holder}) as an ingress "
                        "port",
                        "conflict",
                    )
        previous = self._service_ports.get(service_id, ())
        reusable = [
            p
            for p in previous
            if p.publish_mode == "ingress"
            and p.published_port
            and (p.protocol, p.published_port) not in explicit
        ]
        self._unhold_ports(service_id)
        result: list[PortSpec] = []
        try:
            for p in wanted:
                if p.publish_mode != "ingress":
                    result.append(p)
                elif p.published_port:
                    self._hold_port(service_id, p.protocol, p.published_port)
                    result.append(p)
                else:
                    result.append(PortSpec(0, 0))  # placeholder, filled below
            # Kept numbers are held before any new one is taken, so a new port never gets a
            # number that a kept one is about to claim.
            fresh: list[int] = []
            for i, p in enumerate(wanted):
                if p.publish_mode != "ingress" or p.published_port:
                    continue
                match = next(
                    (
                        q
                        for q in reusable
                        if (q.protocol, q.target_port, q.name)
                        == (p.protocol, p.target_port, p.name)
                    ),
                    None,
                )
                if match is None:
                    fresh.append(i)
                    continue
                reusable.remove(match)
                self._hold_port(service_id, p.protocol, match.published_port)
                result[i] = replace(p, published_port=match.published_port)
            for i in fresh:
                p = wanted[i]
                result[i] = replace(p, published_port=self._take_dynamic(service_id, p.protocol))
        except AllocatorError:
            self._unhold_ports(service_id)
            for q in previous:
                if q.publish_mode == "ingress" and q.published_port:
                    self._hold_port(service_id, q.protocol, q.published_port)
            raise
        self._service_ports[service_id] = tuple(result)
        self._service_names[service_id] = service_name
        return tuple(result)

    @staticmethod
    def _check_port(p: PortSpec) -> PortSpec:
        protocol = p.protocol.lower() or "tcp"
        mode = p.publish_mode.lower() or "ingress"
        if protocol not in PROTOCOLS:
            raise AllocatorError(
                f"invalid protocol value {p.protocol}: use one of {', '.join(PROTOCOLS)}"
            )
        if mode not in PUBLISH_MODES:
            raise AllocatorError(
                f"invalid publish mode value {p.publish_mode}: "
                f"use one of {', '.join(PUBLISH_MODES)}"
            )
        if not 1 <= p.target_port <= 65535:
            raise AllocatorError(f"invalid target port {p.target_port}: use 1-65535")
        if not 0 <= p.published_port <= 65535:
            raise AllocatorError(f"invalid published port {p.published_port}: use 1-65535")
        return PortSpec(p.target_port, p.published_port, protocol, mode, p.name)

    def _hold_port(self, service_id: str, protocol: str, port: int) -> None:
        key = (protocol, port)
        holder = self._port_holder.get(key)
        if holder is not None and holder != service_id:
            raise AllocatorError(  # only reachable from restore with inconsistent objects
                f"port '{port}/{protocol}' is already in use by service "
                f"'{self._service_names.get(holder, holder)}' ({holder}) as an ingress port",
                "conflict",
            )
        self._port_holder[key] = service_id
        self._dynamic[protocol].reserve(port)

    def _take_dynamic(self, service_id: str, protocol: str) -> int:
        port = self._dynamic[protocol].take()
        if port is None:
            raise AllocatorError(
                f"no free published port left in the dynamic range "
                f"{DYNAMIC_PORT_FIRST}-{DYNAMIC_PORT_LAST}/{protocol}; give --publish "
                "published=<port> or remove services that publish ports",
                "exhausted",
            )
        self._port_holder[(protocol, port)] = service_id
        return port

    def _unhold_ports(self, service_id: str) -> None:
        for key in [k for k, sid in self._port_holder.items() if sid == service_id]:
            del self._port_holder[key]
            self._dynamic[key[0]].release(key[1])

    def release_ports(self, service_id: str) -> None:
        self._unhold_ports(service_id)
        self._service_ports.pop(service_id, None)
        self._service_names.pop(service_id, None)

    def release_service(self, service_id: str) -> None:
        """A deleted service gives back its VIPs and its published ports."""
        self.release_vip(service_id)
        self.release_ports(service_id)

    def port_holder(self, protocol: str, port: int) -> str | None:
        return self._port_holder.get((protocol, port))

    # ---- restore --------------------------------------------------------------------------

    def restore(
        self,
        networks: Iterable[objects_pb2.Network],
        services: Iterable[objects_pb2.Service],
        tasks: Iterable[objects_pb2.Task],
        attachments: Iterable[tuple[str, str, str]] = (),
    ) -> list[str]:
        """Rebuild every allocation from the store's objects (a new leader's first step), replacing
        the current state. Objects not allocated yet (VNI 0, no pools) are skipped: the caller
        allocates them next. `attachments` are (owner id, network id, CIDR) of non-task holders.
        Returns the inconsistencies found (a resource claimed twice); the first claim wins."""
        self._reset()
        problems: list[str] = []
        claimed = _Claims()
        for n in sorted(networks, key=lambda n: n.id):
            self._restore_network(n, problems, claimed)
        for svc in sorted(services, key=lambda s: s.id):
            problems += self.claim_service(svc)
        for task in sorted(tasks, key=lambda t: t.id):
            problems += self.claim_task(task)
        by_owner: dict[str, list[tuple[str, str]]] = {}
        for owner_id, nid, cidr in sorted(attachments):
            by_owner.setdefault(owner_id, []).append((nid, cidr))
        for owner_id, held in by_owner.items():
            problems += self.claim_attachments(owner_id, held)
        return problems

    # ---- one object at a time (a store change) ------------------------------------------
    # What `restore` does for each object, for a caller that keeps an allocator equal to the
    # store by its changes (`store_allocation.py`): each first forgets what the object held,
    # then claims what it holds now, so applying a change twice, or one `restore` already
    # counted, changes nothing.

    def claim_network(self, n: objects_pb2.Network) -> list[str]:
        """A created (or re-read) network's VNI and pools. A network already held with the same
        allocation keeps its addresses; one whose allocation changed starts afresh. Only a VNI
        held twice is reported here: subnets that overlap another network's (which the network
        creator refuses up front) are found by `restore`, which compares them all."""
        current = self.network(n.id)
        if current is not None:
            if current.vni == n.vni and [p.subnet for p in current.pools] == [
                c.subnet for c in n.ipam
            ]:
                return []
            self.release_network(n.id)
        problems: list[str] = []
        vni_taken = n.vni in self._vnis
        self._restore_network(n, problems, _Claims())
        if vni_taken and n.id in self._networks:
            problems.append(f"network {n.id}: VNI {n.vni} is also used by another network")
        return problems

    def claim_service(self, svc: objects_pb2.Service) -> list[str]:
        """A service's VIPs and published ports, as its endpoint records them."""
        self.release_service(svc.id)
        problems: list[str] = []
        for nid, cidr in sorted(svc.endpoint.virtual_ips.items()):
            if cidr:  # none on a node-local network (`host`, `bridge`)
                self._restore_address(("vip", svc.id), nid, cidr, problems)
        self._restore_ports(svc, problems)
        return problems

    def claim_task(self, task: objects_pb2.Task) -> list[str]:
        """A task's addresses, unless it has finished (then they are free again)."""
        self.release_task(task.id)
        problems: list[str] = []
        if task.status.state not in TERMINAL_TASK_STATES:
            for att in task.networks:
                for cidr in att.addresses:
                    self._restore_address(("task", task.id), att.network_id, cidr, problems)
        return problems

    def claim_attachments(self, owner_id: str, held: Iterable[tuple[str, str]]) -> list[str]:
        """The addresses (network id, CIDR) a non-task holder (a node's sandbox) has now."""
        self.release_attachment(owner_id)
        problems: list[str] = []
        for nid, cidr in sorted(held):
            self._restore_address(("attachment", owner_id), nid, cidr, problems)
        return problems

    def _restore_network(
        self, n: objects_pb2.Network, problems: list[str], claimed: _Claims
    ) -> None:
        if n.vni == 0 or not n.ipam:
            return
        spaces: list[AddressSpace] = []
        for cfg in n.ipam:
            try:
                subnet = IPv4Network(cfg.subnet, strict=False)
                gateway = IPv4Address(cfg.gateway) if cfg.gateway else subnet.network_address + 1
                rng = IPv4Network(cfg.range, strict=False) if cfg.range else None
            except ValueError as e:
                problems.append(f"network {n.id}: unreadable pool {cfg.subnet!r}: {e}")
                continue
            spaces.append(AddressSpace(subnet, gateway, rng))
        problems.extend(claimed.clashes(n.id, n.vni, [s.subnet for s in spaces]))
        claimed.add(n.id, n.vni, [s.subnet for s in spaces])
        self._vnis.reserve(n.vni)
        self._add_network(n.id, _Network(n.spec.annotations.name, n.vni, spaces, {}))

    def _restore_address(self, owner: Owner, nid: str, cidr: str, problems: list[str]) -> None:
        who = f"{owner[0]} {owner[1]}"
        net = self._networks.get(nid)
        if net is None:
            problems.append(f"{who}: address {cidr} on network {nid}, which has no allocation")
            return
        try:
            ip = ip_interface(cidr).ip
        except ValueError:
            problems.append(f"{who}: unreadable address {cidr!r} on network {nid}")
            return
        held = self._owned.setdefault(owner, {})
        if nid in held:
            problems.append(f"{who}: a second address {cidr} on network {nid} (kept {held[nid]})")
            return
        if not isinstance(ip, IPv4Address):
            problems.append(f"{who}: address {cidr} on network {nid} is not IPv4")
        elif ip in net.holders:
            other = net.holders[ip]
            problems.append(
                f"{who}: address {cidr} on network {nid} is held by {other[0]} {other[1]}"
            )
        elif not any(s.contains(ip) and s.reserve(ip) for s in net.spaces):
            problems.append(f"{who}: address {cidr} is not allocatable on network {nid}")
        else:
            held[nid] = ip
            net.holders[ip] = owner
        if not held:
            del self._owned[owner]

    def _restore_ports(self, svc: objects_pb2.Service, problems: list[str]) -> None:
        specs: list[PortSpec] = []
        for pc in svc.endpoint.ports:
            spec = PortSpec(
                pc.target_port,
                pc.published_port,
                pc.protocol or "tcp",
                pc.publish_mode or "ingress",
                pc.name,
            )
            if spec.publish_mode == "ingress" and spec.published_port:
                if spec.protocol not in PROTOCOLS:
                    problems.append(f"service {svc.id}: unknown protocol {spec.protocol!r}")
                    continue
                try:
                    self._hold_port(svc.id, spec.protocol, spec.published_port)
                except AllocatorError as e:
                    problems.append(f"service {svc.id}: {e}")
                    continue
            specs.append(spec)
        if specs:
            self._service_ports[svc.id] = tuple(specs)
            self._service_names[svc.id] = svc.spec.annotations.name

    # ---- inspection -----------------------------------------------------------------------

    def state(self) -> dict[str, object]:
        """A canonical, comparable picture of everything allocated (tests compare a restored
        allocator with the live one through it)."""
        return {
            "networks": {
                nid: (net.vni, tuple(s.pool for s in net.spaces))
                for nid, net in sorted(self._networks.items())
            },
            "addresses": sorted(
                (nid, str(ip), owner)
                for nid, net in self._networks.items()
                for ip, owner in net.holders.items()
            ),
            "ports": sorted((proto, port, sid) for (proto, port), sid in self._port_holder.items()),
        }


class _Claims:
    """The subnets and VNIs restored so far, indexed so that a network's clashes are found
    without comparing it with every network before it (a store of N networks restores in
    O(N log N), not O(N^2): the leader restores on every pass)."""

    def __init__(self) -> None:
        self._spans: list[tuple[int, int, int, int, IPv4Network, str]] = []  # sorted by start
        self._widest = 0
        self._vnis: dict[int, list[tuple[int, str]]] = {}
        self._seq = 0  # restore order of the networks, in which clashes are reported

    def clashes(self, network_id: str, vni: int, subnets: list[IPv4Network]) -> list[str]:
        """Problems in the order a comparison with each earlier network, in turn, finds them."""
        found: list[tuple[int, int, int, int, str]] = []
        for position, subnet in enumerate(subnets):
            lo, hi = int(subnet.network_address), int(subnet.broadcast_address)
            i = bisect.bisect_right(self._spans, (hi, _MAX_KEY))
            while i > 0:
                i -= 1
                start, end, seq, index, other, owner = self._spans[i]
                if start < lo - self._widest:
                    break  # nothing starting this far below can reach `lo`
                if end >= lo:
                    problem = f"subnet {subnet} overlaps {other} of network {owner}"
                    found.append((seq, 0, position, index, f"network {network_id}: {problem}"))
        for seq, owner in self._vnis.get(vni, ()):
            problem = f"VNI {vni} is also used by network {owner}"
            found.append((seq, 1, 0, 0, f"network {network_id}: {problem}"))
        return [problem for *_order, problem in sorted(found)]

    def add(self, network_id: str, vni: int, subnets: list[IPv4Network]) -> None:
        for index, subnet in enumerate(subnets):
            lo, hi = int(subnet.network_address), int(subnet.broadcast_address)
            bisect.insort(self._spans, (lo, hi, self._seq, index, subnet, network_id))
            self._widest = max(self._widest, hi - lo + 1)
        self._vnis.setdefault(vni, []).append((self._seq, network_id))
        self._seq += 1


_MAX_KEY = 1 << 64  # sorts after any end address: a bisect key for "starts at or below"
