"""Round trips between the Raft value types and protobuf, and rejection of malformed input."""

from __future__ import annotations

import contextlib
import random

import pytest

from controlplane.pb import raft_pb2
from controlplane.raft import codec
from controlplane.raft.codec import CodecError
from controlplane.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

BIG = 2**64 - 1  # uint64 fields must survive their full range

META = SnapshotMeta(index=40, term=3, conf=ConfState(voters=(1, 2, BIG), learners=(9,)))


def wire(pb: raft_pb2.Message) -> raft_pb2.Message:
    """What the peer sees: serialized and parsed again."""
    return raft_pb2.Message.FromString(pb.SerializeToString())


@pytest.mark.parametrize(
    "entry",
    [
        Entry(term=1, index=1),
        Entry(term=BIG, index=BIG, type=EntryType.NORMAL, data=b"\x00\xff" * 100),
        Entry(term=2, index=7, type=EntryType.CONF_CHANGE, data=b"cc"),
    ],
)
def test_entry_round_trip(entry: Entry) -> None:
    pb = raft_pb2.Entry.FromString(codec.entry_to_pb(entry).SerializeToString())
    assert codec.entry_from_pb(pb) == entry


def test_state_round_trips() -> None:
    hs = HardState(term=5, vote=BIG, commit=12)
    assert codec.hard_state_from_pb(codec.hard_state_to_pb(hs)) == hs
    assert codec.hard_state_from_pb(codec.hard_state_to_pb(HardState())) == HardState()
    assert codec.conf_state_from_pb(codec.conf_state_to_pb(META.conf)) == META.conf
    assert codec.snapshot_meta_from_pb(codec.snapshot_meta_to_pb(META)) == META
    snap = Snapshot(META, b"state")
    assert codec.snapshot_from_pb(codec.snapshot_to_pb(snap)) == snap


@pytest.mark.parametrize("kind", list(ConfChangeType))
def test_conf_change_round_trip(kind: ConfChangeType) -> None:
    cc = ConfChange(type=kind, node_id=0xABC, address="10.0.0.2:2377")
    assert codec.decode_conf_change(codec.encode_conf_change(cc)) == cc
    assert codec.conf_change_from_pb(codec.conf_change_to_pb(cc)) == cc


@pytest.mark.parametrize("kind", [k for k in MessageType if k is not MessageType.SNAPSHOT])
def test_message_round_trip(kind: MessageType) -> None:
    msg = Message(
        type=kind,
        to=2,
        frm=BIG,
        term=4,
        log_term=3,
        index=10,
        entries=(Entry(3, 11, data=b"a"), Entry(4, 12, EntryType.CONF_CHANGE, b"b")),
        commit=9,
        reject=True,
        reject_hint=7,
        context=b"ctx",
    )
    pb = wire(codec.message_to_pb(msg, cluster_id=0x1234))
    assert pb.cluster_id == 0x1234
    assert codec.message_from_pb(pb) == msg


def test_snapshot_message_carries_only_metadata() -> None:
    msg = Message(MessageType.SNAPSHOT, to=2, frm=1, term=4, snapshot=Snapshot(META, b"big"))
    pb = wire(codec.message_to_pb(msg, cluster_id=1))
    assert pb.snapshot.index == META.index
    assert b"big" not in pb.SerializeToString()
    assert codec.message_from_pb(pb, snapshot_data=b"big") == msg
    assert codec.message_from_pb(pb).snapshot == Snapshot(META, b"")


def test_snapshot_field_ignored_outside_snapshot_messages() -> None:
    msg = Message(MessageType.APPEND, to=2, frm=1, snapshot=Snapshot(META, b"x"))
    pb = codec.message_to_pb(msg, cluster_id=1)
    assert not pb.HasField("snapshot")
    assert codec.message_from_pb(pb).snapshot is None


def _message_pb(**fields: object) -> raft_pb2.Message:
    pb = raft_pb2.Message(to=2, type=raft_pb2.MSG_APPEND)
    setattr(pb, "from", 1)
    for name, value in fields.items():
        if isinstance(value, raft_pb2.SnapshotMetadata):
            pb.snapshot.CopyFrom(value)
        else:
            setattr(pb, name, value)
    return pb


@pytest.mark.parametrize(
    ("pb", "complaint"),
    [
        (_message_pb(type=42), "unknown MessageType value 42"),
        (_message_pb(to=0), "non-zero"),
        (_message_pb(type=raft_pb2.MSG_SNAPSHOT), "no snapshot metadata"),
        (
            _message_pb(type=raft_pb2.MSG_SNAPSHOT, snapshot=raft_pb2.SnapshotMetadata(term=2)),
            "index 0",
        ),
        (
            _message_pb(
                type=raft_pb2.MSG_SNAPSHOT,
                snapshot=raft_pb2.SnapshotMetadata(
                    index=3, conf_state=raft_pb2.ConfState(voters=[1], learners=[1])
                ),
            ),
            "both voter and learner",
        ),
    ],
)
def test_bad_messages(pb: raft_pb2.Message, complaint: str) -> None:
    with pytest.raises(CodecError, match=complaint):
        codec.message_from_pb(wire(pb))


def test_bad_entries_in_message() -> None:
    pb = _message_pb()
    pb.entries.add(term=1, index=0)
    with pytest.raises(CodecError, match="index 0"):
        codec.message_from_pb(pb)
    pb = _message_pb()
    pb.entries.add(term=1, index=4, type=9)
    with pytest.raises(CodecError, match="entry 4: unknown EntryType value 9"):
        codec.message_from_pb(pb)
    pb = _message_pb()
    pb.entries.add(term=1, index=4)
    pb.entries.add(term=1, index=6)
    with pytest.raises(CodecError, match="entry 6 follows entry 4"):
        codec.message_from_pb(pb)


def test_bad_conf_changes() -> None:
    with pytest.raises(CodecError, match="do not parse as ConfChange"):
        codec.decode_conf_change(b"\xff\xff\xff")
    bad_type = raft_pb2.ConfChange(type=17, node_id=1)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="unknown ConfChangeType value 17"):
        codec.decode_conf_change(bad_type.SerializeToString())
    with pytest.raises(CodecError, match="node id 0"):
        codec.decode_conf_change(
            raft_pb2.ConfChange(type=raft_pb2.CONF_PROMOTE).SerializeToString()
        )


def test_batch_round_trip_is_a_proposal_batch() -> None:
    proposals = [b"", b"a", b"\x00" * 300, bytes(range(256))]
    data = codec.encode_batch(proposals)
    assert raft_pb2.ProposalBatch.FromString(data).proposals == proposals
    assert data == raft_pb2.ProposalBatch(proposals=proposals).SerializeToString()
    assert codec.decode_batch(data) == proposals
    with pytest.raises(CodecError, match=r"batch entry: .* do not parse as ProposalBatch"):
        codec.decode_batch(b"\x0a\xff")


def test_bad_conf_states() -> None:
    with pytest.raises(CodecError, match="node id 0"):
        codec.conf_state_from_pb(raft_pb2.ConfState(voters=[1, 0]))
    with pytest.raises(CodecError, match="twice"):
        codec.conf_state_from_pb(raft_pb2.ConfState(learners=[5, 5]))


def test_snapshot_without_metadata() -> None:
    with pytest.raises(CodecError, match="no metadata"):
        codec.snapshot_from_pb(raft_pb2.Snapshot(data=b"x"))
    msg = Message(MessageType.SNAPSHOT, to=2, frm=1)
    with pytest.raises(CodecError, match="carries no snapshot"):
        codec.message_to_pb(msg, cluster_id=1)


def test_parse_names_what_failed() -> None:
    with pytest.raises(CodecError, match=r"WAL entry: 2 bytes do not parse as Entry"):
        codec.parse_pb(raft_pb2.Entry, b"\x0a\xff", "WAL entry")


def test_random_bytes_never_crash_the_decoder() -> None:
    rng = random.Random(1234)
    valid = codec.message_to_pb(
        Message(MessageType.APPEND, to=2, frm=1, entries=(Entry(1, 1, data=b"abc"),)), 1
    ).SerializeToString()
    for _ in range(3000):
        if rng.random() < 0.5:
            data = rng.randbytes(rng.randrange(40))
        else:  # mutations of a valid message reach deeper than pure noise
            buf = bytearray(valid)
            buf[rng.randrange(len(buf))] = rng.randrange(256)
            data = bytes(buf)
        with contextlib.suppress(CodecError):
            codec.message_from_pb(codec.parse_pb(raft_pb2.Message, data, "message"))
