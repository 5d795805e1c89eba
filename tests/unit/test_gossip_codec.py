"""The gossip wire format: round trips, refusal of malformed input, and the size estimates.

Size estimates. The SWIM core fills a datagram until `packet_overhead(sender) +
sum(message_size(m))` reaches `packet_budget` (1400); NetworkDB fills a table gossip until
`networkdb_queue.PACKET_OVERHEAD + len(sender) + sum(event_size(e))` does. Measured against the
real encoding, sealed with AES-GCM (`ENCRYPTED_OVERHEAD`), both estimates are exact or generous
(ASCII names), so no datagram either core fills ever exceeds its budget.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable
from typing import Any, cast

import pytest

from controlplane.gossip import codec
from controlplane.gossip.broadcast import BroadcastQueue, message_size, packet_overhead
from controlplane.gossip.codec import CodecError, ErrorReply, View, ViewRequest
from controlplane.gossip.config import PROFILES
from controlplane.gossip.envelope import ENCRYPTED_OVERHEAD
from controlplane.gossip.networkdb_queue import PACKET_OVERHEAD as NETWORKDB_PACKET_OVERHEAD
from controlplane.gossip.networkdb_queue import TableQueue, event_size
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
    PushPullRequest,
    SendPacket,
    Suspect,
    UserMsg,
)
from controlplane.pb import gossip_pb2 as pb
from controlplane.sim.swim_cluster import SwimCluster

BIG = 2**64 - 1  # uint64 fields must survive their full range
BUDGET = 1400  # memberlist's UDPBufferSize, libnetwork's PacketBufferSize

ADDR: Address = ("10.0.0.7", 7946)
ADDR6: Address = ("fd00::1:2", 7946)
META = NodeMeta("abcdefghijklmnopqrstuvwxy", "worker", "10.0.0.7", "10.0.0.7")
META_FULL = NodeMeta("n0", "manager", "192.168.1.1", "172.16.0.1", 65535, "linux/arm64")
META_EMPTY = NodeMeta("x", "worker", "", "", 1, "")


# ---- random realistic values -----------------------------------------------------------------


def rand_name(rng: random.Random, longest: int = 25) -> str:
    """A member name: a hostname-like name, or a Swarm-style 25-character node id."""
    kind = rng.random()
    if kind < 0.4:
        name = f"node-{rng.randrange(10 ** rng.randint(1, 4))}"
    elif kind < 0.7:
        name = "".join(rng.choices(string.ascii_lowercase + string.digits, k=25))
    else:
        name = "".join(rng.choices(string.ascii_lowercase + "-.", k=rng.randint(1, longest)))
    return name[:longest] or "n"


def rand_ip(rng: random.Random) -> str:
    if rng.random() < 0.85:
        return ".".join(str(rng.randrange(256)) for _ in range(4))
    return f"fd00::{rng.randrange(1 << 16):x}:{rng.randrange(1 << 16):x}"


def rand_addr(rng: random.Random) -> Address:
    return (rand_ip(rng), rng.choice([7946, 7946, rng.randint(1, 65535)]))


def rand_meta(rng: random.Random) -> NodeMeta:
    ip = rand_ip(rng)
    return NodeMeta(
        node_id="".join(rng.choices(string.ascii_lowercase + string.digits, k=25)),
        role=rng.choice(["manager", "worker"]),
        advertise_addr=ip,
        data_path_addr=rng.choice([ip, rand_ip(rng)]),
        data_path_port=rng.choice([4789, rng.randint(1, 65535)]),
        platform=rng.choice(["linux/amd64", "linux/arm64", "windows/amd64"]),
    )


def rand_incarnation(rng: random.Random) -> int:
    # Small counts, and the wall-clock seconds a restarted node starts from.
    return rng.choice([0, rng.randrange(100), 1_700_000_000 + rng.randrange(10**8), BIG])


def rand_message(rng: random.Random, longest: int = 25) -> Message:
    name = rand_name(rng, longest)
    other = rand_name(rng, longest)
    seq = rng.choice([0, rng.randrange(1 << 16), rng.randrange(1 << 32)])
    match rng.randrange(8):
        case 0:
            return Ping(seq, name, other, rand_addr(rng))
        case 1:
            return IndirectPing(
                seq, name, rand_addr(rng), rng.random() < 0.5, other, rand_addr(rng)
            )
        case 2:
            return Ack(seq)
        case 3:
            return Nack(seq)
        case 4:
            return Alive(name, rand_incarnation(rng), rand_addr(rng), rand_meta(rng))
        case 5:
            return Suspect(name, rand_incarnation(rng), other)
        case 6:
            return Dead(name, rand_incarnation(rng), rng.choice([name, other]))
        case _:
            return UserMsg(rng.randbytes(rng.choice([0, rng.randrange(130), rng.randrange(600)])))


def rand_ltime(rng: random.Random) -> int:
    return rng.choice([0, rng.randrange(1, 1000), rng.randrange(1 << 32)])


def rand_network_event(rng: random.Random) -> NetworkEvent:
    network = "".join(rng.choices(string.ascii_lowercase + string.digits, k=25))
    return NetworkEvent(
        rng.choice(list(NetworkEventType)), rand_ltime(rng), rand_name(rng), network
    )


def rand_table_event(rng: random.Random) -> TableEvent:
    deleted = rng.random() < 0.2
    return TableEvent(
        type=TableEventType.DELETE if deleted else rng.choice(list(TableEventType)[:2]),
        ltime=rand_ltime(rng),
        owner=rand_name(rng),
        network="".join(rng.choices(string.ascii_lowercase + string.digits, k=25)),
        table=rng.choice(["endpoint_table", "overlay_peer_table", "t"]),
        key=rng.choice(["", "".join(rng.choices("0123456789abcdef", k=64))]),
        value=rng.randbytes(rng.choice([0, rng.randrange(40), rng.randrange(400)])),
        residual_reap=rng.uniform(0, 1800) if deleted else 0.0,
    )


def rand_table_sync(rng: random.Random) -> TableSync:
    return TableSync(
        networks=tuple(rand_name(rng) for _ in range(rng.randrange(4))),
        attachments=tuple(rand_network_event(rng) for _ in range(rng.randrange(4))),
        entries=tuple(rand_table_event(rng) for _ in range(rng.randrange(6))),
    )


def rand_push_pull(rng: random.Random) -> PushPull:
    members = tuple(
        MemberRecord(
            rand_name(rng), rand_addr(rng), rand_incarnation(rng),
            rng.choice(list(MemberState)), rand_meta(rng),
        )
        for _ in range(rng.randrange(6))
    )  # fmt: skip
    state = NetworkState(tuple(rand_network_event(rng) for _ in range(rng.randrange(4))))
    return PushPull(rng.random() < 0.5, members, codec.encode_network_state(state), rand_name(rng))


# ---- round trips ---------------------------------------------------------------------------------

MESSAGES: list[Message] = [
    Ping(1, "b", "a", ADDR),
    Ping(0, "b", "a", ADDR6),
    Ping(BIG, "x" * 300, "ü-node", ("255.255.255.255", 65535)),
    IndirectPing(7, "c", ("10.0.0.9", 7946), True, "a", ADDR),
    IndirectPing(0, "c", ADDR6, False, "a", ("127.0.0.1", 1)),
    Ack(0),
    Ack(BIG),
    Nack(0),
    Nack(12345),
    Alive("a", 0, ADDR, META),
    Alive("a", BIG, ADDR6, META_FULL),
    Alive("a", 3, ADDR, META_EMPTY),
    Suspect("b", 0, "a"),
    Suspect("b", BIG, "c"),
    Dead("b", 4, "a"),
    Dead("b", 4, "b"),
    UserMsg(b""),
    UserMsg(b"\x00"),
    UserMsg(bytes(range(256)) * 8),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    packet = Packet("node-1", (message,))
    assert codec.decode_packet(codec.encode_packet(packet)) == packet


def test_packets_round_trip() -> None:
    everything = Packet("a", tuple(MESSAGES))
    assert codec.decode_packet(codec.encode_packet(everything)) == everything
    empty = Packet("a", ())
    assert codec.decode_packet(codec.encode_packet(empty)) == empty


def test_random_packets_round_trip() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        packet = Packet(rand_name(rng), tuple(rand_message(rng) for _ in range(rng.randrange(12))))
        assert codec.decode_packet(codec.encode_packet(packet)) == packet


NETWORKDB_MESSAGES: list[NetworkEvent | TableGossip] = [
    NetworkEvent(NetworkEventType.JOIN, 1, "node-1", "net-a"),
    NetworkEvent(NetworkEventType.LEAVE, 0, "node-1", "net-a"),
    NetworkEvent(NetworkEventType.JOIN, BIG, "n", "n"),
    TableGossip(()),
    TableGossip((TableEvent(TableEventType.CREATE, 1, "node-1", "net", "t", "k", b"v"),)),
    TableGossip(
        (
            TableEvent(TableEventType.UPDATE, BIG, "o", "n", "t", "", b"", 0.0),
            TableEvent(TableEventType.DELETE, 0, "o", "n", "t", "k", b"\x00" * 500, 1799.25),
            TableEvent(TableEventType.DELETE, 9, "o", "n", "t", "k", b"", 1e-9),
        )
    ),
]


@pytest.mark.parametrize("message", NETWORKDB_MESSAGES, ids=lambda m: type(m).__name__)
def test_networkdb_messages_round_trip(message: NetworkEvent | TableGossip) -> None:
    assert codec.decode_networkdb(codec.encode_networkdb(message)) == message


def test_networkdb_message_rides_in_a_user_message() -> None:
    message = TableGossip((TableEvent(TableEventType.CREATE, 1, "node-1", "net", "t", "k"),))
    packet = Packet("node-1", (UserMsg(codec.encode_networkdb(message)),))
    (user,) = codec.decode_packet(codec.encode_packet(packet)).messages
    assert isinstance(user, UserMsg)
    assert codec.decode_networkdb(user.data) == message


def test_network_state_round_trips() -> None:
    rng = random.Random(3)
    for _ in range(200):
        state = NetworkState(tuple(rand_network_event(rng) for _ in range(rng.randrange(10))))
        assert codec.decode_network_state(codec.encode_network_state(state)) == state
    # A peer whose NetworkDB has nothing to say sends no bytes at all.
    assert codec.encode_network_state(NetworkState()) == b""
    assert codec.decode_network_state(b"") == NetworkState()


NETWORK_JOIN = NetworkEvent(NetworkEventType.JOIN, 4, "a", "net")
PUSH_PULLS = [
    PushPull(False, (), b"", "a"),
    PushPull(
        True,
        (
            MemberRecord("a", ADDR, 0, MemberState.ALIVE, META),
            MemberRecord("b", ADDR6, BIG, MemberState.SUSPECT, META_FULL),
            MemberRecord("c", ADDR, 2, MemberState.DEAD, META_EMPTY),
            MemberRecord("d", ADDR, 3, MemberState.LEFT, META),
        ),
        codec.encode_network_state(NetworkState((NETWORK_JOIN,))),
        "a",
    ),
]
TABLE_SYNCS = [
    TableSync(),
    TableSync(
        networks=("net-a", "net-b"),
        attachments=(NetworkEvent(NetworkEventType.LEAVE, 2, "b", "net-b"),),
        entries=(TableEvent(TableEventType.CREATE, 5, "b", "net-a", "t", "k", b"v", 0.5),),
    ),
]
REQUESTS: list[codec.Request] = [*PUSH_PULLS, *TABLE_SYNCS, Ping(9, "b", "a", ADDR), ViewRequest()]
RESPONSES: list[codec.Response] = [
    *PUSH_PULLS,
    *TABLE_SYNCS,
    Ack(0),
    Ack(BIG),
    View(""),
    View('{"members": [{"name": "a", "state": "alive"}]}'),
    ErrorReply(""),
    ErrorReply("not the ping's target"),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda m: type(m).__name__)
def test_requests_round_trip(request_: codec.Request) -> None:
    assert codec.decode_request(codec.encode_request(request_)) == request_


@pytest.mark.parametrize("response", RESPONSES, ids=lambda m: type(m).__name__)
def test_responses_round_trip(response: codec.Response) -> None:
    assert codec.decode_response(codec.encode_response(response)) == response


def test_random_tcp_exchanges_round_trip() -> None:
    rng = random.Random(11)
    for _ in range(300):
        push_pull = rand_push_pull(rng)
        sync = rand_table_sync(rng)
        assert codec.decode_request(codec.encode_request(push_pull)) == push_pull
        assert codec.decode_response(codec.encode_response(push_pull)) == push_pull
        assert codec.decode_request(codec.encode_request(sync)) == sync
        assert codec.decode_response(codec.encode_response(sync)) == sync
        assert codec.decode_network_state(push_pull.user_state) is not None


def test_a_reflected_request_is_no_answer() -> None:
    """The response oneof does not reuse the request's field numbers where the types differ,
    so a ping reflected at its sender does not read as the ack of the same seq."""
    for request in (Ping(9, "b", "a", ADDR), ViewRequest()):
        with pytest.raises(CodecError, match="TCP response: no message set"):
            codec.decode_response(codec.encode_request(request))
    with pytest.raises(CodecError, match="TCP request: no message set"):
        codec.decode_request(codec.encode_response(Ack(9)))


# ---- refusals ------------------------------------------------------------------------------------


def packet_bytes(*messages: pb.GossipMessage, sender: str = "a") -> bytes:
    return pb.GossipPacket(sender=sender, messages=messages).SerializeToString()


def good_alive() -> pb.GossipAlive:
    return pb.GossipAlive(
        name="b",
        incarnation=1,
        addr=pb.GossipAddress(host="10.0.0.2", port=7946),
        meta=pb.GossipNodeMeta(
            node_id="id", role="worker", advertise_addr="10.0.0.2", data_path_port=4789
        ),
    )


def alive_with(**changes: Any) -> bytes:
    alive = good_alive()
    for path, value in changes.items():
        target: Any = alive
        *parents, leaf = path.split("__")
        for parent in parents:
            target = getattr(target, parent)
        if value is None:
            target.ClearField(leaf)
        else:
            setattr(target, leaf, value)
    return packet_bytes(pb.GossipMessage(alive=alive))


def test_a_well_formed_alive_decodes() -> None:
    """The baseline the refusals below each break in one place."""
    (alive,) = codec.decode_packet(alive_with()).messages
    meta = NodeMeta("id", "worker", "10.0.0.2", "", 4789, platform="")
    assert alive == Alive("b", 1, ("10.0.0.2", 7946), meta)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (alive_with(name=""), r"\(alive ''\): name is empty"),
        (alive_with(addr=None), r"alive 'b'\): address is missing"),
        (alive_with(meta=None), r"node metadata is missing"),
        (alive_with(addr__port=0), r"port 0 is out of range 1-65535"),
        (alive_with(addr__port=65536), r"port 65536 is out of range 1-65535"),
        (alive_with(addr__host=""), r"host '' is not an IP address"),
        (alive_with(addr__host="example.com"), r"host 'example.com' is not an IP address"),
        (alive_with(meta__node_id=""), r"node id is empty"),
        (alive_with(meta__role="admin"), r"role 'admin' is neither 'manager' nor 'worker'"),
        (alive_with(meta__role=""), r"role '' is neither"),
        (alive_with(meta__data_path_port=0), r"data path port 0 is out of range"),
        (packet_bytes(pb.GossipMessage(alive=good_alive()), sender=""), r"sender is empty"),
        (packet_bytes(pb.GossipMessage()), r"message 0: no message set"),
        (
            packet_bytes(pb.GossipMessage(ack=pb.GossipAck(seq=1)), pb.GossipMessage()),
            r"message 1: no message set",
        ),
        (b"", r"sender is empty"),
        (
            packet_bytes(pb.GossipMessage(ping=pb.GossipPing(seq=3, target="b", source="a"))),
            r"ping seq 3\): source address is missing",
        ),
        (
            packet_bytes(
                pb.GossipMessage(
                    ping=pb.GossipPing(
                        seq=3, source="a", source_addr=pb.GossipAddress(host="::1", port=1)
                    )
                )
            ),
            r"ping seq 3\): target is empty",
        ),
        (
            packet_bytes(
                pb.GossipMessage(indirect_ping=pb.GossipIndirectPing(seq=4, target="c", source="a"))
            ),
            r"indirect ping seq 4\): target address is missing",
        ),
        (packet_bytes(pb.GossipMessage(suspect=pb.GossipSuspect(name="b"))), r"source is empty"),
        (packet_bytes(pb.GossipMessage(dead=pb.GossipDead(source="b"))), r"name is empty"),
    ],
)
def test_malformed_packets_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(CodecError, match=error):
        codec.decode_packet(data)


def network_event(**fields: Any) -> pb.NetworkDbNetworkEvent:
    base: dict[str, Any] = {"type": 1, "ltime": 1, "node": "a", "network": "n"}
    return pb.NetworkDbNetworkEvent(**(base | fields))


def table_event(**fields: Any) -> pb.NetworkDbTableEvent:
    base: dict[str, Any] = {"type": 1, "ltime": 1, "owner": "a", "network": "n", "table": "t"}
    return pb.NetworkDbTableEvent(**(base | fields))


def gossip_of(event: pb.NetworkDbTableEvent) -> bytes:
    return pb.NetworkDbMessage(
        table_gossip=pb.NetworkDbTableGossip(events=[event])
    ).SerializeToString()


def event_message(event: pb.NetworkDbNetworkEvent) -> bytes:
    return pb.NetworkDbMessage(network_event=event).SerializeToString()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", r"NetworkDB message: no message set"),
        (event_message(network_event(type=0)), r"unknown NetworkEventType value 0"),
        (event_message(network_event(type=3)), r"unknown NetworkEventType value 3"),
        (event_message(network_event(node="")), r"node is empty"),
        (event_message(network_event(network="")), r"network is empty"),
        (gossip_of(table_event(type=0)), r"unknown TableEventType value 0"),
        (gossip_of(table_event(type=4)), r"unknown TableEventType value 4"),
        (gossip_of(table_event(owner="")), r"owner is empty"),
        (gossip_of(table_event(network="")), r"network is empty"),
        (gossip_of(table_event(table="")), r"table is empty"),
        (gossip_of(table_event(residual_reap=-1.0)), r"residual reap time -1.0 is not"),
        (gossip_of(table_event(residual_reap=math.nan)), r"residual reap time nan is not"),
        (gossip_of(table_event(residual_reap=math.inf)), r"residual reap time inf is not"),
    ],
)
def test_malformed_networkdb_messages_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(CodecError, match=error):
        codec.decode_networkdb(data)


def member_record(**fields: Any) -> pb.GossipMemberRecord:
    base: dict[str, Any] = {
        "name": "a",
        "addr": pb.GossipAddress(host="10.0.0.1", port=7946),
        "meta": pb.GossipNodeMeta(node_id="i", role="worker", data_path_port=4789),
    }
    return pb.GossipMemberRecord(**(base | fields))


def push_pull(**fields: Any) -> pb.GossipPushPull:
    base: dict[str, Any] = {"sender": "a", "members": [member_record()]}
    return pb.GossipPushPull(**(base | fields))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", r"TCP request: no message set"),
        (pb.GossipTcpRequest(push_pull=push_pull(sender="")), r"push-pull: sender is empty"),
        (
            pb.GossipTcpRequest(push_pull=push_pull(members=[member_record(state=4)])),
            r"member 0 \('a'\): state: unknown MemberState value 4",
        ),
        (
            pb.GossipTcpRequest(
                push_pull=push_pull(members=[member_record(), member_record(name="")])
            ),
            r"member 1 \(''\): name is empty",
        ),
        (
            pb.GossipTcpRequest(push_pull=push_pull(members=[member_record(meta=None)])),
            r"node metadata is missing",
        ),
        (
            pb.GossipTcpRequest(bulk_sync=pb.NetworkDbTableSync(networks=["a", ""])),
            r"bulk sync: network 1 is empty",
        ),
        (
            pb.GossipTcpRequest(
                bulk_sync=pb.NetworkDbTableSync(attachments=[network_event(type=7)])
            ),
            r"bulk sync, attachment 0 .*unknown NetworkEventType value 7",
        ),
        (
            pb.GossipTcpRequest(
                bulk_sync=pb.NetworkDbTableSync(entries=[table_event(ltime=2, owner="")])
            ),
            r"bulk sync, entry 0 .*owner is empty",
        ),
        (pb.GossipTcpRequest(ping=pb.GossipPing(seq=1, target="b")), r"source address is missing"),
    ],
)
def test_malformed_requests_are_refused(data: bytes | pb.GossipTcpRequest, error: str) -> None:
    raw = data if isinstance(data, bytes) else data.SerializeToString()
    with pytest.raises(CodecError, match=error):
        codec.decode_request(raw)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", r"TCP response: no message set"),
        (pb.GossipTcpResponse(push_pull=push_pull(sender="")), r"push-pull: sender is empty"),
        (
            pb.GossipTcpResponse(bulk_sync=pb.NetworkDbTableSync(entries=[table_event(type=9)])),
            r"unknown TableEventType value 9",
        ),
    ],
)
def test_malformed_responses_are_refused(data: bytes | pb.GossipTcpResponse, error: str) -> None:
    raw = data if isinstance(data, bytes) else data.SerializeToString()
    with pytest.raises(CodecError, match=error):
        codec.decode_response(raw)


def test_network_state_refuses_bad_attachments() -> None:
    data = pb.NetworkDbState(attachments=[network_event(type=0)]).SerializeToString()
    with pytest.raises(CodecError, match=r"NetworkDB state, attachment 0 .*NetworkEventType"):
        codec.decode_network_state(data)


def test_a_kind_from_a_newer_version_is_refused_not_misread() -> None:
    """A oneof member this version does not know parses as an unknown field: no message set."""
    future = b"\x12\x03" + b"\x7a\x01\x00"  # messages: GossipMessage{field 15: bytes}
    with pytest.raises(CodecError, match="no message set"):
        codec.decode_packet(b"\x0a\x01a" + future)
    # Unknown fields beside known ones are skipped, as protobuf intends.
    ack = pb.GossipMessage(ack=pb.GossipAck(seq=5)).SerializeToString() + b"\x7a\x01\x00"
    assert codec.decode_packet(b"\x0a\x01a\x12" + bytes([len(ack)]) + ack).messages == (Ack(5),)


def test_invalid_utf8_in_a_name_is_refused() -> None:
    data = packet_bytes(pb.GossipMessage(ack=pb.GossipAck(seq=1)), sender="abc")
    broken = data.replace(b"abc", b"a\xffc")
    with pytest.raises(CodecError, match="do not parse as GossipPacket"):
        codec.decode_packet(broken)


@pytest.mark.parametrize(
    ("encode", "value", "error"),
    [
        (codec.encode_packet, Packet("a", (Suspect("b", -1, "a"),)), r"packet from 'a'"),
        (codec.encode_packet, Packet("a", (Ping(2**64, "b", "a", ADDR),)), r"packet from 'a'"),
        (codec.encode_packet, Packet("a", (Ping(1, "b", "a", ("h", -1)),)), r"packet from 'a'"),
        (codec.encode_packet, Packet("a", cast(Any, ("ping",))), r"str is not a gossip message"),
        (codec.encode_networkdb, Ack(1), r"Ack is not a NetworkDB message"),
        (
            codec.encode_networkdb,
            NetworkEvent(NetworkEventType.JOIN, -5, "a", "n"),
            r"cannot encode NetworkDB message",
        ),
        (codec.encode_request, Ack(1), r"Ack is not a TCP request"),
        (codec.encode_response, Ping(1, "b", "a", ADDR), r"Ping is not a TCP response"),
    ],
)
def test_unencodable_values_raise_codec_error(
    encode: Callable[[Any], bytes], value: Any, error: str
) -> None:
    with pytest.raises(CodecError, match=error):
        encode(value)


DECODERS: list[Callable[[bytes], object]] = [
    codec.decode_packet,
    codec.decode_networkdb,
    codec.decode_network_state,
    codec.decode_request,
    codec.decode_response,
]


def valid_samples(rng: random.Random) -> list[bytes]:
    """Valid encodings of every kind, to truncate and mutate."""
    packet = Packet("node-1", tuple(MESSAGES))
    samples = [
        codec.encode_packet(packet),
        codec.encode_packet(Packet(rand_name(rng), tuple(rand_message(rng) for _ in range(8)))),
        *(codec.encode_networkdb(m) for m in NETWORKDB_MESSAGES),
        codec.encode_network_state(NetworkState((NETWORK_JOIN,) * 3)),
        *(codec.encode_request(r) for r in REQUESTS),
        *(codec.encode_response(r) for r in RESPONSES),
        codec.encode_request(rand_push_pull(rng)),
        codec.encode_response(rand_table_sync(rng)),
    ]
    return samples


def decode_or_refuse(decode: Callable[[bytes], object], data: bytes) -> bool:
    """True if `data` decoded; False if refused with CodecError; anything else fails the test."""
    try:
        decode(data)
    except CodecError:
        return False
    return True


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
def test_truncated_input_is_refused_or_decoded_never_crashes(
    decode: Callable[[bytes], object],
) -> None:
    rng = random.Random(5)
    for sample in valid_samples(rng):
        for cut in range(len(sample)):
            decode_or_refuse(decode, sample[:cut])


def test_truncated_packets_are_refused() -> None:
    """A datagram cut inside a field cannot parse; one cut between messages loses messages but
    stays a valid packet (protobuf has no end marker: the envelope's tag is what catches it)."""
    data = codec.encode_packet(Packet("node-1", tuple(MESSAGES)))
    refused = [
        cut for cut in range(1, len(data)) if not decode_or_refuse(codec.decode_packet, data[:cut])
    ]
    assert len(refused) > 0.9 * len(data)
    with pytest.raises(CodecError, match=r"do not parse as GossipPacket"):
        codec.decode_packet(data[:-1])


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
def test_random_bytes_are_refused_or_decoded_never_crash(
    decode: Callable[[bytes], object],
) -> None:
    rng = random.Random(1234)
    for _ in range(20000):
        n = rng.choice([rng.randrange(8), rng.randrange(64), rng.randrange(2000)])
        decode_or_refuse(decode, rng.randbytes(n))


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__name__)
def test_mutated_valid_input_is_refused_or_decoded_never_crashes(
    decode: Callable[[bytes], object],
) -> None:
    """Flipped, inserted, deleted and overwritten bytes in valid encodings get past the first
    byte and exercise the validation of nearly valid messages, which random bytes rarely do."""
    rng = random.Random(99)
    samples = valid_samples(rng)
    decoded = 0
    for _ in range(20000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            if not data:
                break
            at = rng.randrange(len(data))
            match rng.randrange(4):
                case 0:
                    data[at] ^= 1 << rng.randrange(8)
                case 1:
                    data.insert(at, rng.randrange(256))
                case 2:
                    del data[at]
                case _:
                    data[at] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
        decoded += decode_or_refuse(decode, bytes(data))
    assert decoded > 0  # the mutations reach the validation, not only the parser


# ---- size estimates ------------------------------------------------------------------------------


def sealed_size(packet: Packet) -> int:
    """Bytes of the datagram on the wire with encryption on."""
    return ENCRYPTED_OVERHEAD + len(codec.encode_packet(packet))


def promised_size(packet: Packet) -> int:
    """What the SWIM core counted for this packet."""
    return packet_overhead(packet.sender) + sum(message_size(m) for m in packet.messages)


@pytest.mark.parametrize("longest", [25, 100])
def test_message_size_is_exact_or_generous(longest: int) -> None:
    rng = random.Random(21)
    framing = len(codec.encode_packet(Packet("", ())))
    for _ in range(20000):
        message = rand_message(rng, longest)
        actual = len(codec.encode_packet(Packet("", (message,)))) - framing
        assert actual <= message_size(message), message


def test_sizes_at_the_two_byte_length_threshold() -> None:
    """A GossipMessage of 128 bytes or more needs a two-byte length: counted, not missed."""
    alive = Alive(
        "a" * 25, 1_700_000_000, ("10.100.200.250", 7946),
        NodeMeta("b" * 25, "manager", "10.100.200.250", "10.100.200.250"),
    )  # fmt: skip
    for message in (alive, UserMsg(b"x" * 123), UserMsg(b"x" * 124), UserMsg(b"x" * 1300)):
        assert len(codec.encode_packet(Packet("", (message,)))) <= message_size(message)
    for name in ("n" * 21, "n" * 25, "n" * 200):
        packet = Packet(name, (Ack(1),))
        assert sealed_size(packet) <= promised_size(packet)


def fill_like_the_core(rng: random.Random, sender: str, longest: int) -> Packet:
    """A packet built as `SwimNode._send` builds one: a probe message or two, topped up with
    queued broadcasts from a real BroadcastQueue until the estimated budget is used."""
    queue = BroadcastQueue()
    for i in range(rng.randrange(1, 40)):
        queue.queue(rand_message(rng, longest), key=i)
    first: list[Message] = rng.choice(
        [
            [],
            [Ack(rng.randrange(1 << 32))],
            [Ping(rng.randrange(1 << 32), rand_name(rng, longest), sender, rand_addr(rng))],
            [Suspect(rand_name(rng, longest), 3, sender), Ping(1, "b", sender, rand_addr(rng))],
        ]
    )
    room = BUDGET - packet_overhead(sender) - sum(message_size(m) for m in first)
    return Packet(sender, (*first, *queue.take(room, limit=3)))


def test_packets_filled_by_the_core_never_exceed_the_budget() -> None:
    rng = random.Random(42)
    for _ in range(3000):
        sender = rng.choice([rand_name(rng, longest=40), "s" * 25])
        packet = fill_like_the_core(rng, sender, longest=rng.choice([25, 40]))
        assert promised_size(packet) <= BUDGET
        assert sealed_size(packet) <= promised_size(packet), packet


def test_packets_of_a_simulated_cluster_round_trip_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end: every datagram and push-pull the real core emits in a simulated cluster
    (joins, user broadcasts of all sizes, a crash and its suspicion) encodes, decodes to the
    same value, and stays within the documented bound."""
    cluster = SwimCluster(PROFILES["lab"], seed=8)
    packets: list[Packet] = []
    push_pulls: list[PushPull] = []
    act = cluster._act

    def record(member: Any, output: Any) -> None:
        match output:
            case SendPacket(_, packet):
                packets.append(packet)
            case PushPullRequest(_, request):
                push_pulls.append(request)
        act(member, output)

    monkeypatch.setattr(cluster, "_act", record)
    cluster.build(30, spread=1.0)
    cluster.run_until(cluster.all_known, timeout=60)
    rng = random.Random(8)
    for i in range(200):
        member = rng.choice(list(cluster.members.values()))
        if member.node is not None:
            member.node.queue_broadcast(rng.randbytes(rng.randrange(600)), key=b"%d" % i)
        cluster.sim.run_for(0.05)
    cluster.crash("node-0029")
    cluster.sim.run_for(10)
    kinds = {type(m).__name__ for p in packets for m in p.messages}
    assert kinds >= {"Ping", "IndirectPing", "Ack", "Alive", "Suspect", "Dead", "UserMsg"}
    for packet in packets:
        assert codec.decode_packet(codec.encode_packet(packet)) == packet
        assert sealed_size(packet) <= promised_size(packet)
        assert sealed_size(packet) <= cluster.config.packet_budget
    assert push_pulls
    for request in push_pulls:
        assert codec.decode_request(codec.encode_request(request)) == request


def test_networkdb_datagrams_never_exceed_the_budget() -> None:
    """NetworkDB's table gossip, as the driver sends it (one user message in a packet), against
    `networkdb_queue`'s estimate plus the sender's name, which NetworkDB adds to its overhead."""
    rng = random.Random(17)
    for _ in range(3000):
        sender = rand_name(rng, longest=40)
        overhead = NETWORKDB_PACKET_OVERHEAD + len(sender)
        queue = TableQueue()
        for _ in range(rng.randrange(1, 20)):
            queue.push(rand_table_event(rng))
        events, _ = queue.take(BUDGET - overhead, 3, may_overflow=False)
        if not events:
            continue
        message = UserMsg(codec.encode_networkdb(TableGossip(tuple(events))))
        sealed = sealed_size(Packet(sender, (message,)))
        promised = overhead + sum(event_size(e) for e in events)
        assert promised <= BUDGET
        assert sealed <= promised, (sender, events)
