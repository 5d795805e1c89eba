"""The data path program: what one node's overlay data path must hold, computed from the
replicated network table, the endpoints every node publishes in NetworkDB, and the data path
keys the managers hand out. Pure: no sockets, no netlink, no clock; backends (userspace VXLAN,
kernel devices) apply a program, and `diff` tells them what changed since the last one.

What Docker programs for a network a node takes part in (measured on a real swarm, see
`shared/reference/real-swarm/FINDINGS.md`), and what the program holds accordingly:
- a VXLAN segment (the network's VNI, UDP to each peer's data path port, learning off) and a
  bridge holding the gateway address; MTU 1450, or 1424 when encrypted (ESP's overhead);
- static forwarding entries, one per remote endpoint: its MAC -> the VTEP of its node (no
  flooding: Docker answers ARP from its neighbour table, it never broadcasts over the overlay);
- neighbour entries, one per remote endpoint: IP -> MAC, the MAC being `02:42:` followed by the
  IPv4 address in hex;
- for encrypted networks, ESP security associations with every peer node: inbound for every
  live key (so rotation never drops traffic), outbound for the primary key only, and a policy
  that sends the VXLAN traffic to that peer through the outbound SA.

A node takes part in a network while it has a local endpoint on it (a task or an attached
container), as Docker's overlay driver joins a network's sandbox on the first endpoint.

Windows nodes (emulated), as Docker documents for encrypted overlays: encryption is not applied
on a Windows node (its segment is plain, it has no SAs, traffic between Windows nodes crosses
the wire as bare VXLAN), and on an encrypted network Windows and Linux containers cannot talk:
neither side programs forwarding, neighbour or SA entries towards the other platform's
endpoints. The segment says so (`platform_note`, `unreachable`), for `swarmlab datapath` and
the Engine API. Plain networks are not affected: both platforms talk over them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

MTU = 1450  # 1500 minus the VXLAN, UDP and IPv4 headers (50 bytes)
ENCRYPTED_MTU = 1424  # minus ESP's header, IV and ICV as Docker accounts for them
MAX_LOCAL_ENDPOINTS = 1000  # the Linux bridge port limit Docker inherits
DEFAULT_DATA_PATH_PORT = 4789


class ProgramError(ValueError):
    """Inputs the program cannot be built from (a bad address, a bad key); says which."""


@dataclass(frozen=True, order=True)
class NodeView:
    """A node as the data path needs it: where its VTEP listens, and its platform."""

    node_id: str
    vtep: str  # the data path address (`--data-path-addr`, default the advertise address)
    port: int = DEFAULT_DATA_PATH_PORT
    platform: Literal["linux", "windows"] = "linux"


@dataclass(frozen=True, order=True)
class NetworkView:
    network_id: str
    name: str
    vni: int
    subnet: str  # CIDR
    gateway: str  # address without prefix length
    encrypted: bool = False


@dataclass(frozen=True, order=True)
class Endpoint:
    """One container's attachment to a network, as its node publishes it in NetworkDB."""

    network_id: str
    endpoint_id: str
    name: str
    ip: str  # address without prefix length
    node_id: str
    aliases: tuple[str, ...] = ()

    @property
    def mac(self) -> str:
        return mac_for(self.ip)


@dataclass(frozen=True, order=True)
class DataPathKey:
    """A key the managers distributed; `tag` identifies it (Docker's LamportTime)."""

    tag: int
    key: bytes  # 16 bytes of AES-128-GCM key


@dataclass(frozen=True, order=True)
class FdbEntry:
    mac: str
    vtep: str
    port: int


@dataclass(frozen=True, order=True)
class NeighEntry:
    ip: str
    mac: str


@dataclass(frozen=True, order=True)
class LocalEndpoint:
    name: str
    ip: str
    mac: str


@dataclass(frozen=True, order=True)
class UnreachableEndpoint:
    """A remote endpoint this node does not program, and on which platform it lives."""

    name: str
    ip: str
    node_id: str
    platform: str


@dataclass(frozen=True)
class Segment:
    """One overlay network on this node: its VXLAN device, bridge and static entries."""

    network_id: str
    name: str
    vni: int
    mtu: int
    gateway: str  # CIDR, on the bridge
    encrypted: bool
    local: tuple[LocalEndpoint, ...]
    fdb: tuple[FdbEntry, ...]
    neigh: tuple[NeighEntry, ...]
    peers: tuple[str, ...]  # VTEPs of the other nodes on this network
    # Why this node's segment differs from what the network asks (Windows on an encrypted
    # network), and the remote endpoints left out for that reason.
    platform_note: str = ""
    unreachable: tuple[UnreachableEndpoint, ...] = ()


@dataclass(frozen=True, order=True)
class SecurityAssociation:
    """ESP in transport mode between two VTEPs, AES-GCM (RFC 4106): 16-byte key, 4-byte salt."""

    direction: Literal["in", "out"]
    src: str
    dst: str
    spi: int
    key: bytes
    salt: bytes
    tag: int


@dataclass(frozen=True, order=True)
class Policy:
    """Send VXLAN (UDP to `port`) from `src` to `dst` through the SA with `spi`."""

    src: str
    dst: str
    port: int
    spi: int


@dataclass(frozen=True)
class Program:
    node: NodeView
    segments: Mapping[str, Segment] = field(default_factory=dict)  # by network id
    sas: frozenset[SecurityAssociation] = frozenset()
    policies: frozenset[Policy] = frozenset()


def mac_for(ip: str) -> str:
    """Docker's container MAC: `02:42:` then the IPv4 address's four bytes in hex."""
    return "02:42:" + ":".join(f"{b:02x}" for b in _ip(ip).packed)


def _ip(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError as err:
        raise ProgramError(f"{text!r} is not an IPv4 address: {err}") from None


def spi_for(src: str, dst: str, tag: int) -> int:
    """The SPI of the SA from `src` to `dst` under the key `tag`: both ends compute the same
    one without talking (as Docker's, it hashes the two addresses and the key's tag), kept out
    of the reserved range 0-255."""
    digest = hashlib.sha256(b"swarmlab-esp" + _ip(src).packed + _ip(dst).packed + tag.to_bytes(8))
    return max(int.from_bytes(digest.digest()[:4]), 256)


def compute(
    local: NodeView,
    nodes: Iterable[NodeView],
    networks: Iterable[NetworkView],
    endpoints: Iterable[Endpoint],
    keys: Sequence[DataPathKey] = (),
) -> Program:
    """The program of node `local`. `keys[0]` is the primary key (outbound traffic); all keys
    are accepted inbound. Endpoints of unknown nodes or networks are left out (they will come
    with the next gossip round)."""
    for k in keys:
        if len(k.key) != 16:
            raise ProgramError(f"data path key {k.tag} is {len(k.key)} bytes; AES-128 needs 16")
    by_node = {n.node_id: n for n in nodes}
    by_node[local.node_id] = local
    by_network = {n.network_id: n for n in networks}
    grouped: dict[str, list[Endpoint]] = {}
    for ep in endpoints:
        if ep.network_id in by_network and ep.node_id in by_node:
            grouped.setdefault(ep.network_id, []).append(ep)
    segments: dict[str, Segment] = {}
    encrypted_peers: set[str] = set()
    for network_id, members in sorted(grouped.items()):
        mine = sorted(ep for ep in members if ep.node_id == local.node_id)
        if not mine:
            continue  # this node takes no part in the network
        net = by_network[network_id]
        encrypted = net.encrypted and local.platform == "linux"
        others = sorted(ep for ep in members if ep.node_id != local.node_id)
        remote = [ep for ep in others if _reachable(net, local, by_node[ep.node_id])]
        unreachable = tuple(
            sorted(
                UnreachableEndpoint(ep.name, ep.ip, ep.node_id, by_node[ep.node_id].platform)
                for ep in others
                if not _reachable(net, local, by_node[ep.node_id])
            )
        )
        peers = sorted({by_node[ep.node_id].vtep for ep in remote})
        if encrypted:
            encrypted_peers.update(peers)
        prefix = ipaddress.IPv4Network(net.subnet, strict=False).prefixlen
        segments[network_id] = Segment(
            network_id=network_id,
            name=net.name,
            vni=net.vni,
            mtu=ENCRYPTED_MTU if encrypted else MTU,
            gateway=f"{_ip(net.gateway)}/{prefix}",
            encrypted=encrypted,
            local=tuple(LocalEndpoint(ep.name, ep.ip, ep.mac) for ep in mine),
            fdb=tuple(
                FdbEntry(ep.mac, by_node[ep.node_id].vtep, by_node[ep.node_id].port)
                for ep in remote
            ),
            neigh=tuple(NeighEntry(ep.ip, ep.mac) for ep in remote),
            peers=tuple(peers),
            platform_note=_platform_note(net, local),
            unreachable=unreachable,
        )
    sas, policies = _ipsec(local, sorted(encrypted_peers), keys)
    return Program(node=local, segments=segments, sas=sas, policies=policies)


def _reachable(net: NetworkView, local: NodeView, remote: NodeView) -> bool:
    """Whether `local` programs entries towards `remote`'s endpoints on `net`: always on a
    plain network; on an encrypted one only between nodes of the same platform."""
    return not net.encrypted or local.platform == remote.platform


WINDOWS_NOTE = (
    "encryption is not applied on Windows nodes: traffic to other Windows nodes is not"
    " encrypted, and Windows containers cannot talk with Linux containers on this network"
)


def _platform_note(net: NetworkView, local: NodeView) -> str:
    if not net.encrypted:
        return ""
    return WINDOWS_NOTE if local.platform == "windows" else ""


def _ipsec(
    local: NodeView, peers: Sequence[str], keys: Sequence[DataPathKey]
) -> tuple[frozenset[SecurityAssociation], frozenset[Policy]]:
    if not keys or not peers:
        return frozenset(), frozenset()
    sas: set[SecurityAssociation] = set()
    policies: set[Policy] = set()
    primary = keys[0]
    for peer in peers:
        for k in keys:
            spi = spi_for(peer, local.vtep, k.tag)
            sas.add(SecurityAssociation("in", peer, local.vtep, spi, k.key, spi.to_bytes(4), k.tag))
        spi = spi_for(local.vtep, peer, primary.tag)
        sas.add(
            SecurityAssociation(
                "out", local.vtep, peer, spi, primary.key, spi.to_bytes(4), primary.tag
            )
        )
        policies.add(Policy(local.vtep, peer, local.port, spi))
    return frozenset(sas), frozenset(policies)


# ---- changes between two programs ---------------------------------------------------------


What = Literal["segment", "endpoint", "fdb", "neigh", "sa", "policy"]


@dataclass(frozen=True, order=True)
class Change:
    """One step a backend takes: `op` is "add" or "del" of `what` in network `network_id`
    ("" for SAs and policies, which are per peer)."""

    op: Literal["del", "add"]
    what: What
    network_id: str
    item: object


_ADD_ORDER: tuple[What, ...] = ("segment", "endpoint", "sa", "policy", "fdb", "neigh")


def diff(old: Program | None, new: Program) -> list[Change]:
    """What turns `old` into `new`: deletions first (entries, then SAs, then segments), then
    additions (segments, then SAs, then entries), so traffic never meets a missing SA or an
    entry pointing into a segment that is gone. Applying a program twice changes nothing."""
    before = _items(old) if old is not None else set()
    after = _items(new)
    removed = sorted(before - after, key=lambda c: (-_ADD_ORDER.index(c[0]), c[1], repr(c[2])))
    added = sorted(after - before, key=lambda c: (_ADD_ORDER.index(c[0]), c[1], repr(c[2])))
    return [Change("del", w, n, i) for w, n, i in removed] + [
        Change("add", w, n, i) for w, n, i in added
    ]


def _items(program: Program) -> set[tuple[What, str, object]]:
    items: set[tuple[What, str, object]] = set()
    for nid, seg in program.segments.items():
        # A segment's identity is what its devices are made with; entries are separate items.
        items.add(("segment", nid, (seg.name, seg.vni, seg.mtu, seg.gateway, seg.encrypted)))
        items.update(("endpoint", nid, ep) for ep in seg.local)
        items.update(("fdb", nid, e) for e in seg.fdb)
        items.update(("neigh", nid, e) for e in seg.neigh)
    items.update(("sa", "", sa) for sa in program.sas)
    items.update(("policy", "", p) for p in program.policies)
    return items


# ---- the program shown as the kernel's tools would show it --------------------------------


def render(program: Program) -> str:
    """This node's data path as `ip -d link`, `bridge fdb show`, `ip neigh`, `ip xfrm state`
    and `ip xfrm policy` would print it, per network (what `swarmlab datapath` shows)."""
    node = program.node
    out: list[str] = [f"# node {node.node_id}  vtep {node.vtep}:{node.port}  {node.platform}"]
    for seg in sorted(program.segments.values(), key=lambda s: s.vni):
        out += [
            "",
            f"# network {seg.name} ({seg.network_id[:12]})"
            + ("  encrypted" if seg.encrypted else ""),
            *([f"# {seg.platform_note}"] if seg.platform_note else []),
            *(
                [
                    "# not programmed: Windows and Linux containers cannot talk on an"
                    " encrypted overlay",
                    *(
                        f"#   {u.name} {u.ip} on {u.platform} node {u.node_id}"
                        for u in seg.unreachable
                    ),
                ]
                if seg.unreachable
                else []
            ),
            "$ ip -d link show",
            f"br0: <BROADCAST,MULTICAST,UP> mtu {seg.mtu}  inet {seg.gateway}",
            f"vxlan0: <BROADCAST,MULTICAST,UP> mtu {seg.mtu} master br0",
            f"    vxlan id {seg.vni} srcport 0 0 dstport {node.port} proxy l2miss l3miss "
            "ttl auto ageing 300 nolearning",
        ]
        out += [
            f"veth{i}: mtu {seg.mtu} master br0  # {ep.name} {ep.ip} {ep.mac}"
            for i, ep in enumerate(seg.local)
        ]
        out.append("$ bridge fdb show dev vxlan0")
        out += [f"{e.mac} dst {e.vtep} self permanent" for e in seg.fdb]
        out.append("$ ip neigh show dev vxlan0")
        out += [f"{e.ip} lladdr {e.mac} PERMANENT" for e in seg.neigh]
    if any(seg.encrypted and seg.peers for seg in program.segments.values()) and not program.sas:
        out += ["", "# encrypted networks, but no data path keys yet: nothing is sent to peers"]
    if program.sas:
        out += ["", "$ ip xfrm state"]
        for sa in sorted(program.sas, key=lambda s: (s.src, s.dst, s.tag)):
            out += [
                f"src {sa.src} dst {sa.dst}",
                f"    proto esp spi 0x{sa.spi:08x} reqid 13681891 mode transport",
                f"    aead rfc4106(gcm(aes)) 0x{(sa.key + sa.salt).hex()} 128  # key {sa.tag}, "
                f"{sa.direction}",
            ]
        out += ["", "$ ip xfrm policy"]
        for p in sorted(program.policies):
            out += [
                f"src {p.src}/32 dst {p.dst}/32 proto udp dport {p.port}",
                "    dir out priority 0",
                f"    tmpl src {p.src} dst {p.dst} proto esp spi 0x{p.spi:08x} mode transport",
            ]
    return "\n".join(out)
