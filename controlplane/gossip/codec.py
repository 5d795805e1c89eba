"""The wire format of gossip on 7946: gossip value types to protobuf bytes and back.

Five pairs of functions, one per thing that travels (`protos/controlplane/v1/gossip.proto`):

- `encode_packet` / `decode_packet`: a SWIM `Packet`, one UDP datagram (`GossipPacket`);
- `encode_networkdb` / `decode_networkdb`: a NetworkDB `NetworkEvent` or `TableGossip`, the
  data of a `UserMsg` (`NetworkDbMessage`);
- `encode_network_state` / `decode_network_state`: NetworkDB's `NetworkState`, the user state
  of a push-pull (`NetworkDbState`);
- `encode_request` / `decode_request`: what opens a TCP exchange (`GossipTcpRequest`): a
  `PushPull`, a NetworkDB bulk sync (`TableSync`), the fallback `Ping`, or a `ViewRequest`;
- `encode_response` / `decode_response`: its one answer (`GossipTcpResponse`): a `PushPull`, a
  `TableSync`, an `Ack`, a `View` or an `ErrorReply`.

Decoding checks what protobuf cannot: proto3 enums accept any number and every field is
optional, so a decoder requires what the cores rely on (a message in every oneof, sub-messages
present, names non-empty, addresses that are IP literals with a port in 1-65535, known enum
values, finite non-negative reap times; counters, incarnations and Lamport times are uint64 on
the wire, so never negative). Anything else, including bytes that do not parse, raises
`CodecError` saying what is wrong, so the transport drops and counts it; no input raises
anything else. Unknown fields are skipped (protobuf's forward compatibility), but a oneof set to
a kind this version does not know reads as empty and is refused.

Encoding checks only what protobuf refuses to represent (a negative or too large integer, a
value of the wrong type), and reports it as `CodecError` too. The SWIM core sizes packets with
estimates of this encoding (`broadcast.message_size`), which is why every field number in the
proto is at most 15 (one-byte tags); `tests/unit/test_gossip_codec.py` checks the estimates.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message as PbMessage

from controlplane.gossip.networkdb_types import (
    NetworkEvent,
    NetworkEventType,
    NetworkState,
    TableEvent,
    TableEventType,
    TableGossip,
    TableSync,
)
from controlplane.gossip.types import (
    Ack,
    Address,
    Alive,
    Dead,
    IndirectPing,
    MemberRecord,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Packet,
    Ping,
    PushPull,
    Suspect,
    UserMsg,
)
from controlplane.pb import gossip_pb2 as pb
from controlplane.wire import CodecError, enum_value, parse_pb

__all__ = [
    "CodecError",
    "ErrorReply",
    "Request",
    "Response",
    "View",
    "ViewRequest",
    "decode_network_state",
    "decode_networkdb",
    "decode_packet",
    "decode_request",
    "decode_response",
    "encode_network_state",
    "encode_networkdb",
    "encode_packet",
    "encode_request",
    "encode_response",
]


_ROLES = frozenset({"manager", "worker"})


# ---- the TCP exchanges' own small types ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViewRequest:
    """Ask a node for its gossip view (what `swarmlab` shows)."""


@dataclass(frozen=True, slots=True)
class View:
    """A node's gossip view as a JSON document (members, states, NetworkDB tables)."""

    json: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The answer to a request the node refused or could not serve."""

    message: str


Request = PushPull | TableSync | Ping | ViewRequest
Response = PushPull | TableSync | Ack | View | ErrorReply

# ---- public API ----------------------------------------------------------------------------------


def encode_packet(packet: Packet) -> bytes:
    """One UDP datagram's payload (before sealing)."""
    return _serialize(lambda: _packet_pb(packet), f"packet from {packet.sender!r}")


def decode_packet(data: bytes) -> Packet:
    p = parse_pb(pb.GossipPacket, data, "gossip packet")
    sender = _name(p.sender, "gossip packet: sender")
    what = f"packet from {sender!r}"
    messages = tuple(_message(m, f"{what}, message {i}") for i, m in enumerate(p.messages))
    return Packet(sender, messages)


def encode_networkdb(message: NetworkEvent | TableGossip) -> bytes:
    """The data of the `UserMsg` that carries a NetworkDB message."""
    return _serialize(lambda: _networkdb_pb(message), "NetworkDB message")


def decode_networkdb(data: bytes) -> NetworkEvent | TableGossip:
    p = parse_pb(pb.NetworkDbMessage, data, "NetworkDB message")
    match p.WhichOneof("message"):
        case "network_event":
            return _network_event(p.network_event, "NetworkDB network event")
        case "table_gossip":
            return _table_gossip(p.table_gossip, "NetworkDB table gossip")
        case None:
            raise CodecError(f"NetworkDB message: {_NO_ONEOF}")


def encode_network_state(state: NetworkState) -> bytes:
    """The `user_state` of a push-pull."""
    return _serialize(
        lambda: pb.NetworkDbState(attachments=[_network_event_pb(e) for e in state.attachments]),
        "NetworkDB state",
    )


def decode_network_state(data: bytes) -> NetworkState:
    """Empty `data` (a peer with no NetworkDB state yet) is an empty state."""
    p = parse_pb(pb.NetworkDbState, data, "NetworkDB state")
    return NetworkState(_network_events(p.attachments, "NetworkDB state, attachment"))


def encode_request(request: Request) -> bytes:
    """What the side opening a TCP connection sends."""
    return _serialize(lambda: _request_pb(request), f"TCP request {type(request).__name__}")


def decode_request(data: bytes) -> Request:
    p = parse_pb(pb.GossipTcpRequest, data, "TCP request")
    match p.WhichOneof("request"):
        case "push_pull":
            return _push_pull(p.push_pull, "TCP request: push-pull")
        case "bulk_sync":
            return _table_sync(p.bulk_sync, "TCP request: bulk sync")
        case "ping":
            return _ping(p.ping, "TCP request: ping")
        case "view":
            return ViewRequest()
        case None:
            raise CodecError(f"TCP request: {_NO_ONEOF}")


def encode_response(response: Response) -> bytes:
    """The one answer on a TCP connection."""
    return _serialize(lambda: _response_pb(response), f"TCP response {type(response).__name__}")


def decode_response(data: bytes) -> Response:
    p = parse_pb(pb.GossipTcpResponse, data, "TCP response")
    match p.WhichOneof("response"):
        case "push_pull":
            return _push_pull(p.push_pull, "TCP response: push-pull")
        case "bulk_sync":
            return _table_sync(p.bulk_sync, "TCP response: bulk sync")
        case "ack":
            return Ack(p.ack.seq)
        case "view":
            return View(p.view.json)
        case "error":
            return ErrorReply(p.error)
        case None:
            raise CodecError(f"TCP response: {_NO_ONEOF}")


# ---- encoding ------------------------------------------------------------------------------------


def _serialize(build: Callable[[], PbMessage], what: str) -> bytes:
    try:
        return build().SerializeToString()
    except CodecError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise CodecError(f"cannot encode {what}: {exc}") from exc


def _addr_pb(addr: Address) -> pb.GossipAddress:
    return pb.GossipAddress(host=addr[0], port=addr[1])


def _meta_pb(meta: NodeMeta) -> pb.GossipNodeMeta:
    return pb.GossipNodeMeta(
        node_id=meta.node_id,
        role=meta.role,
        advertise_addr=meta.advertise_addr,
        data_path_addr=meta.data_path_addr,
        data_path_port=meta.data_path_port,
        platform=meta.platform,
    )


def _ping_pb(m: Ping) -> pb.GossipPing:
    return pb.GossipPing(
        seq=m.seq, target=m.target, source=m.source, source_addr=_addr_pb(m.source_addr)
    )


def _message_pb(m: Message) -> pb.GossipMessage:
    match m:
        case Alive():  # first: most of the volume
            alive = pb.GossipAlive(
                name=m.name, incarnation=m.incarnation, addr=_addr_pb(m.addr), meta=_meta_pb(m.meta)
            )
            return pb.GossipMessage(alive=alive)
        case Ping():
            return pb.GossipMessage(ping=_ping_pb(m))
        case IndirectPing():
            indirect = pb.GossipIndirectPing(
                seq=m.seq,
                target=m.target,
                target_addr=_addr_pb(m.target_addr),
                nack=m.nack,
                source=m.source,
                source_addr=_addr_pb(m.source_addr),
            )
            return pb.GossipMessage(indirect_ping=indirect)
        case Ack():
            return pb.GossipMessage(ack=pb.GossipAck(seq=m.seq))
        case Nack():
            return pb.GossipMessage(nack=pb.GossipNack(seq=m.seq))
        case Suspect():
            suspect = pb.GossipSuspect(name=m.name, incarnation=m.incarnation, source=m.source)
            return pb.GossipMessage(suspect=suspect)
        case Dead():
            dead = pb.GossipDead(name=m.name, incarnation=m.incarnation, source=m.source)
            return pb.GossipMessage(dead=dead)
        case UserMsg():
            return pb.GossipMessage(user=pb.GossipUserMsg(data=m.data))
    raise CodecError(f"{type(m).__name__} is not a gossip message")


def _packet_pb(packet: Packet) -> pb.GossipPacket:
    return pb.GossipPacket(sender=packet.sender, messages=[_message_pb(m) for m in packet.messages])


def _push_pull_pb(m: PushPull) -> pb.GossipPushPull:
    members = [
        pb.GossipMemberRecord(
            name=r.name,
            addr=_addr_pb(r.addr),
            incarnation=r.incarnation,
            state=pb.GossipMemberState.ValueType(r.state),
            meta=_meta_pb(r.meta),
        )
        for r in m.members
    ]
    return pb.GossipPushPull(join=m.join, members=members, user_state=m.user_state, sender=m.sender)


def _network_event_pb(e: NetworkEvent) -> pb.NetworkDbNetworkEvent:
    return pb.NetworkDbNetworkEvent(
        type=pb.NetworkDbNetworkEventType.ValueType(e.type),
        ltime=e.ltime,
        node=e.node,
        network=e.network,
    )


def _table_event_pb(e: TableEvent) -> pb.NetworkDbTableEvent:
    return pb.NetworkDbTableEvent(
        type=pb.NetworkDbTableEventType.ValueType(e.type),
        ltime=e.ltime,
        owner=e.owner,
        network=e.network,
        table=e.table,
        key=e.key,
        value=e.value,
        residual_reap=e.residual_reap,
    )


def _table_sync_pb(m: TableSync) -> pb.NetworkDbTableSync:
    return pb.NetworkDbTableSync(
        networks=m.networks,
        attachments=[_network_event_pb(e) for e in m.attachments],
        entries=[_table_event_pb(e) for e in m.entries],
    )


def _networkdb_pb(m: NetworkEvent | TableGossip) -> pb.NetworkDbMessage:
    match m:
        case NetworkEvent():
            return pb.NetworkDbMessage(network_event=_network_event_pb(m))
        case TableGossip():
            gossip = pb.NetworkDbTableGossip(events=[_table_event_pb(e) for e in m.events])
            return pb.NetworkDbMessage(table_gossip=gossip)
    raise CodecError(f"{type(m).__name__} is not a NetworkDB message")


def _request_pb(m: Request) -> pb.GossipTcpRequest:
    match m:
        case PushPull():
            return pb.GossipTcpRequest(push_pull=_push_pull_pb(m))
        case TableSync():
            return pb.GossipTcpRequest(bulk_sync=_table_sync_pb(m))
        case Ping():
            return pb.GossipTcpRequest(ping=_ping_pb(m))
        case ViewRequest():
            return pb.GossipTcpRequest(view=pb.GossipViewRequest())
    raise CodecError(f"{type(m).__name__} is not a TCP request")


def _response_pb(m: Response) -> pb.GossipTcpResponse:
    match m:
        case PushPull():
            return pb.GossipTcpResponse(push_pull=_push_pull_pb(m))
        case TableSync():
            return pb.GossipTcpResponse(bulk_sync=_table_sync_pb(m))
        case Ack():
            return pb.GossipTcpResponse(ack=pb.GossipAck(seq=m.seq))
        case View():
            return pb.GossipTcpResponse(view=pb.GossipView(json=m.json))
        case ErrorReply():
            return pb.GossipTcpResponse(error=m.message)
    raise CodecError(f"{type(m).__name__} is not a TCP response")


# ---- decoding and validation ---------------------------------------------------------------------

_NO_ONEOF = "no message set (empty, or a kind this version does not know)"


def _name(value: str, what: str) -> str:
    if not value:
        raise CodecError(f"{what} is empty")
    return value


def _require(present: bool, what: str) -> None:
    if not present:
        raise CodecError(f"{what} is missing")


def _port(value: int, what: str) -> int:
    if not 1 <= value <= 65535:
        raise CodecError(f"{what} {value} is out of range 1-65535")
    return value


def _addr(p: pb.GossipAddress, what: str) -> Address:
    host = p.host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise CodecError(f"{what}: host {host!r} is not an IP address") from None
    return (host, _port(p.port, f"{what}: port"))


def _meta(p: pb.GossipNodeMeta, what: str) -> NodeMeta:
    if p.role not in _ROLES:
        raise CodecError(f"{what}: role {p.role!r} is neither 'manager' nor 'worker'")
    return NodeMeta(
        node_id=_name(p.node_id, f"{what}: node id"),
        role=p.role,
        advertise_addr=p.advertise_addr,
        data_path_addr=p.data_path_addr,
        data_path_port=_port(p.data_path_port, f"{what}: data path port"),
        platform=p.platform,
    )


def _ping(p: pb.GossipPing, what: str) -> Ping:
    what = f"{what} (ping seq {p.seq})"
    _require(p.HasField("source_addr"), f"{what}: source address")
    return Ping(
        seq=p.seq,
        target=_name(p.target, f"{what}: target"),
        source=_name(p.source, f"{what}: source"),
        source_addr=_addr(p.source_addr, f"{what}: source address"),
    )


def _indirect_ping(p: pb.GossipIndirectPing, what: str) -> IndirectPing:
    what = f"{what} (indirect ping seq {p.seq})"
    _require(p.HasField("target_addr"), f"{what}: target address")
    _require(p.HasField("source_addr"), f"{what}: source address")
    return IndirectPing(
        seq=p.seq,
        target=_name(p.target, f"{what}: target"),
        target_addr=_addr(p.target_addr, f"{what}: target address"),
        nack=p.nack,
        source=_name(p.source, f"{what}: source"),
        source_addr=_addr(p.source_addr, f"{what}: source address"),
    )


def _alive(p: pb.GossipAlive, what: str) -> Alive:
    what = f"{what} (alive {p.name!r})"
    _require(p.HasField("addr"), f"{what}: address")
    _require(p.HasField("meta"), f"{what}: node metadata")
    return Alive(
        name=_name(p.name, f"{what}: name"),
        incarnation=p.incarnation,
        addr=_addr(p.addr, f"{what}: address"),
        meta=_meta(p.meta, f"{what}: node metadata"),
    )


AccusationT = TypeVar("AccusationT", Suspect, Dead)


def _accusation(
    p: pb.GossipSuspect | pb.GossipDead, what: str, kind: type[AccusationT]
) -> AccusationT:
    """Suspect and Dead carry the same fields: who, at which incarnation, said by whom."""
    what = f"{what} ({kind.__name__.lower()} {p.name!r})"
    return kind(
        name=_name(p.name, f"{what}: name"),
        incarnation=p.incarnation,
        source=_name(p.source, f"{what}: source"),
    )


def _message(p: pb.GossipMessage, what: str) -> Message:
    match p.WhichOneof("message"):
        case "alive":
            return _alive(p.alive, what)
        case "ping":
            return _ping(p.ping, what)
        case "indirect_ping":
            return _indirect_ping(p.indirect_ping, what)
        case "ack":
            return Ack(p.ack.seq)
        case "nack":
            return Nack(p.nack.seq)
        case "suspect":
            return _accusation(p.suspect, what, Suspect)
        case "dead":
            return _accusation(p.dead, what, Dead)
        case "user":
            return UserMsg(p.user.data)
        case None:
            raise CodecError(f"{what}: {_NO_ONEOF}")


def _member(p: pb.GossipMemberRecord, what: str) -> MemberRecord:
    what = f"{what} ({p.name!r})"
    _require(p.HasField("addr"), f"{what}: address")
    _require(p.HasField("meta"), f"{what}: node metadata")
    return MemberRecord(
        name=_name(p.name, f"{what}: name"),
        addr=_addr(p.addr, f"{what}: address"),
        incarnation=p.incarnation,
        state=enum_value(MemberState, p.state, f"{what}: state"),
        meta=_meta(p.meta, f"{what}: node metadata"),
    )


def _push_pull(p: pb.GossipPushPull, what: str) -> PushPull:
    sender = _name(p.sender, f"{what}: sender")
    what = f"{what} from {sender!r}"
    members = tuple(_member(r, f"{what}, member {i}") for i, r in enumerate(p.members))
    return PushPull(join=p.join, members=members, user_state=p.user_state, sender=sender)


def _network_event(p: pb.NetworkDbNetworkEvent, what: str) -> NetworkEvent:
    what = f"{what} ({p.node!r} on {p.network!r})"
    return NetworkEvent(
        type=enum_value(NetworkEventType, p.type, f"{what}: type"),
        ltime=p.ltime,
        node=_name(p.node, f"{what}: node"),
        network=_name(p.network, f"{what}: network"),
    )


def _network_events(
    events: Iterable[pb.NetworkDbNetworkEvent], what: str
) -> tuple[NetworkEvent, ...]:
    return tuple(_network_event(e, f"{what} {i}") for i, e in enumerate(events))


def _table_event(p: pb.NetworkDbTableEvent, what: str) -> TableEvent:
    what = f"{what} ({p.network!r}/{p.table!r}/{p.key!r})"
    reap = p.residual_reap
    if not (math.isfinite(reap) and reap >= 0):
        raise CodecError(f"{what}: residual reap time {reap} is not a finite number >= 0")
    return TableEvent(
        type=enum_value(TableEventType, p.type, f"{what}: type"),
        ltime=p.ltime,
        owner=_name(p.owner, f"{what}: owner"),
        network=_name(p.network, f"{what}: network"),
        table=_name(p.table, f"{what}: table"),
        key=p.key,  # an empty key is a valid key (NetworkDB accepts it)
        value=p.value,
        residual_reap=reap,
    )


def _table_events(events: Iterable[pb.NetworkDbTableEvent], what: str) -> tuple[TableEvent, ...]:
    return tuple(_table_event(e, f"{what} {i}") for i, e in enumerate(events))


def _table_gossip(p: pb.NetworkDbTableGossip, what: str) -> TableGossip:
    return TableGossip(_table_events(p.events, f"{what}, event"))


def _table_sync(p: pb.NetworkDbTableSync, what: str) -> TableSync:
    networks = tuple(_name(n, f"{what}: network {i}") for i, n in enumerate(p.networks))
    return TableSync(
        networks=networks,
        attachments=_network_events(p.attachments, f"{what}, attachment"),
        entries=_table_events(p.entries, f"{what}, entry"),
    )
