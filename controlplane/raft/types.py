"""Plain value types shared by the Raft core, its storage and its drivers.

The core works on these dataclasses rather than on protobuf messages: they are cheap to build in
simulation, and `codec.py` converts them to and from the wire/WAL format at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

NONE = 0  # node id 0 means "nobody" (no vote, no leader)


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1
    BATCH = 2  # several proposals (codec.encode_batch), applied one after the other


class ConfChangeType(IntEnum):
    ADD_LEARNER = 0
    PROMOTE = 1
    REMOVE = 2
    DEMOTE = 3


class MessageType(IntEnum):
    APPEND = 0
    APPEND_RESP = 1
    VOTE = 2
    VOTE_RESP = 3
    PRE_VOTE = 4
    PRE_VOTE_RESP = 5
    HEARTBEAT = 6
    HEARTBEAT_RESP = 7
    SNAPSHOT = 8
    TIMEOUT_NOW = 9


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3

    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: int
    address: str = ""


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf: ConfState = ConfState()


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the local applied index reaches `index`."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class SoftState:
    leader: int
    role: Role


_LEADER_TRAFFIC = frozenset(
    {MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT, MessageType.TIMEOUT_NOW}
)


@dataclass(slots=True)
class Ready:
    """Everything the driver must do after a batch of inputs, in this order:

    1. persist `snapshot` (if any), `entries` and `hard_state` (fsync when `must_sync`); a
       leader may send the early part of `split_messages()` first, overlapping its fsync with
       the followers' (it counts its own entries only after `advance`, so this is safe);
    2. send `messages`;
    3. apply `snapshot` to the state machine, then `committed_entries`;
    4. hand `read_states` to waiting readers once applied;
    5. call `advance(ready)`.
    """

    soft_state: SoftState
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def split_messages(self) -> tuple[list[Message], list[Message]]:
        """(messages that may go out before persisting, messages that must wait for it).

        Only a leader's replication traffic may go early: every answer (vote, append
        response) promises something about our disk and must wait for the fsync."""
        if self.soft_state.role is not Role.LEADER:
            return [], self.messages
        early = [m for m in self.messages if m.type in _LEADER_TRAFFIC]
        late = [m for m in self.messages if m.type not in _LEADER_TRAFFIC]
        return early, late

    def must_sync(self, synced: HardState) -> bool:
        """Whether persisting this Ready needs an fsync. A hard state whose only change is the
        commit index may be lost in a crash (the commit index is learned again from the
        leader), so it rides along unsynced until the next synced write, as in etcd."""
        if self.entries or self.snapshot is not None:
            return True
        hs = self.hard_state
        return hs is not None and (hs.term, hs.vote) != (synced.term, synced.vote)
