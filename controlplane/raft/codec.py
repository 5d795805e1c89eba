"""Conversions between the Raft value types and their protobuf form (wire and WAL).

Everything that comes from a peer or from disk goes through the `*_from_pb` / `decode_*`
functions, which check what protobuf cannot: proto3 enums accept any number, and every field is
optional. A bad input raises `CodecError` saying what is wrong, so a transport can drop the
message (or storage can name the damaged record) instead of feeding nonsense to the core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

from controlplane.pb import raft_pb2
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
from controlplane.wire import CodecError, enum_value, length_delimited, parse_pb

__all__ = [
    "CodecError",
    "conf_change_from_pb",
    "conf_change_to_pb",
    "conf_state_from_pb",
    "conf_state_to_pb",
    "decode_conf_change",
    "encode_conf_change",
    "entry_from_pb",
    "entry_to_pb",
    "hard_state_from_pb",
    "hard_state_to_pb",
    "message_from_pb",
    "message_to_pb",
    "parse_pb",
    "snapshot_from_pb",
    "snapshot_meta_from_pb",
    "snapshot_meta_to_pb",
    "snapshot_to_pb",
]


def entry_to_pb(entry: Entry) -> raft_pb2.Entry:
    return raft_pb2.Entry(
        term=entry.term,
        index=entry.index,
        type=raft_pb2.EntryType.ValueType(entry.type),
        data=entry.data,
    )


def entry_from_pb(pb: raft_pb2.Entry) -> Entry:
    if pb.index == 0:
        raise CodecError(f"entry with term {pb.term} has index 0; log indexes start at 1")
    kind = enum_value(EntryType, pb.type, f"entry {pb.index}")
    return Entry(term=pb.term, index=pb.index, type=kind, data=pb.data)


def hard_state_to_pb(hs: HardState) -> raft_pb2.HardState:
    return raft_pb2.HardState(term=hs.term, vote=hs.vote, commit=hs.commit)


def hard_state_from_pb(pb: raft_pb2.HardState) -> HardState:
    return HardState(term=pb.term, vote=pb.vote, commit=pb.commit)


def conf_state_to_pb(cs: ConfState) -> raft_pb2.ConfState:
    return raft_pb2.ConfState(voters=cs.voters, learners=cs.learners)


def conf_state_from_pb(pb: raft_pb2.ConfState) -> ConfState:
    voters, learners = tuple(pb.voters), tuple(pb.learners)
    if 0 in voters or 0 in learners:
        raise CodecError("conf state lists node id 0, which means 'nobody'")
    both = set(voters) & set(learners)
    if both:
        ids = ", ".join(f"{n:#x}" for n in sorted(both))
        raise CodecError(f"conf state lists {ids} as both voter and learner")
    if len(set(voters)) != len(voters) or len(set(learners)) != len(learners):
        raise CodecError("conf state lists a node twice")
    return ConfState(voters=voters, learners=learners)


def snapshot_meta_to_pb(meta: SnapshotMeta) -> raft_pb2.SnapshotMetadata:
    return raft_pb2.SnapshotMetadata(
        index=meta.index, term=meta.term, conf_state=conf_state_to_pb(meta.conf)
    )


def snapshot_meta_from_pb(pb: raft_pb2.SnapshotMetadata) -> SnapshotMeta:
    return SnapshotMeta(index=pb.index, term=pb.term, conf=conf_state_from_pb(pb.conf_state))


def snapshot_to_pb(snapshot: Snapshot) -> raft_pb2.Snapshot:
    return raft_pb2.Snapshot(metadata=snapshot_meta_to_pb(snapshot.meta), data=snapshot.data)


def snapshot_from_pb(pb: raft_pb2.Snapshot) -> Snapshot:
    if not pb.HasField("metadata"):
        raise CodecError("snapshot has no metadata")
    return Snapshot(meta=snapshot_meta_from_pb(pb.metadata), data=pb.data)


def conf_change_to_pb(cc: ConfChange) -> raft_pb2.ConfChange:
    return raft_pb2.ConfChange(
        type=raft_pb2.ConfChangeType.ValueType(cc.type), node_id=cc.node_id, address=cc.address
    )


def conf_change_from_pb(pb: raft_pb2.ConfChange) -> ConfChange:
    kind = enum_value(ConfChangeType, pb.type, "conf change")
    if pb.node_id == 0:
        raise CodecError(f"conf change {kind.name} names node id 0, which means 'nobody'")
    return ConfChange(type=kind, node_id=pb.node_id, address=pb.address)


def encode_conf_change(cc: ConfChange) -> bytes:
    """The payload of an EntryType.CONF_CHANGE entry."""
    return conf_change_to_pb(cc).SerializeToString()


def decode_conf_change(data: bytes) -> ConfChange:
    return conf_change_from_pb(parse_pb(raft_pb2.ConfChange, data, "conf change entry"))


def encode_batch(proposals: Sequence[bytes]) -> bytes:
    """The payload of an EntryType.BATCH entry: a ProposalBatch, framed by hand (the same
    bytes protobuf gives, without copying every proposal into a message first)."""
    return b"".join([length_delimited(1, proposal) for proposal in proposals])


def decode_batch(data: bytes) -> list[bytes]:
    return list(parse_pb(raft_pb2.ProposalBatch, data, "batch entry").proposals)


def message_to_pb(msg: Message, cluster_id: int) -> raft_pb2.Message:
    """The wire form; a snapshot's data is not included (it is streamed in chunks)."""
    pb = raft_pb2.Message(
        type=raft_pb2.MessageType.ValueType(msg.type),
        to=msg.to,
        term=msg.term,
        log_term=msg.log_term,
        index=msg.index,
        entries=[entry_to_pb(e) for e in msg.entries],
        commit=msg.commit,
        reject=msg.reject,
        reject_hint=msg.reject_hint,
        context=msg.context,
        cluster_id=cluster_id,
    )
    # `from` is a Python keyword, so it cannot be passed to the constructor.
    setattr(pb, "from", msg.frm)
    if msg.type is MessageType.SNAPSHOT:
        if msg.snapshot is None:
            raise CodecError(f"snapshot message to {msg.to:#x} carries no snapshot")
        pb.snapshot.CopyFrom(snapshot_meta_to_pb(msg.snapshot.meta))
    return pb


def _contiguous(entries: Sequence[Entry], what: Callable[[], str]) -> None:
    for prev, cur in pairwise(entries):
        if cur.index != prev.index + 1:
            raise CodecError(f"{what()}: entry {cur.index} follows entry {prev.index}")


def message_from_pb(pb: raft_pb2.Message, snapshot_data: bytes = b"") -> Message:
    """Rebuild a message; for MSG_SNAPSHOT, `snapshot_data` is the reassembled snapshot body."""
    kind = enum_value(MessageType, pb.type, "message")
    sender: int = getattr(pb, "from")

    def what() -> str:
        # Only when something is wrong: formatting it for every message cost more than the
        # rest of the decoding of an append response.
        return f"{kind.name} message from {sender:#x} to {pb.to:#x}"

    if sender == 0 or pb.to == 0:
        raise CodecError(f"{what()}: sender and recipient must be non-zero node ids")
    entries = tuple(entry_from_pb(e) for e in pb.entries) if pb.entries else ()
    _contiguous(entries, what)
    snapshot = None
    if kind is MessageType.SNAPSHOT:
        if not pb.HasField("snapshot"):
            raise CodecError(f"{what()}: no snapshot metadata")
        meta = snapshot_meta_from_pb(pb.snapshot)
        if meta.index == 0:
            raise CodecError(f"{what()}: snapshot metadata has index 0")
        snapshot = Snapshot(meta=meta, data=snapshot_data)
    return Message(
        type=kind,
        to=pb.to,
        frm=sender,
        term=pb.term,
        log_term=pb.log_term,
        index=pb.index,
        entries=entries,
        commit=pb.commit,
        reject=pb.reject,
        reject_hint=pb.reject_hint,
        context=pb.context,
        snapshot=snapshot,
    )
