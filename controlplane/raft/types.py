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


@dataclass(slots=True)
class Ready:
    """Everything the driver must do after a batch of inputs, in this order:

    1. persist `snapshot` (if any), `entries` and `hard_state` durably (fsync);
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

    def has_work(self) -> bool:
        return bool(
            self.hard_state is not None
            or self.entries
            or self.snapshot is not None
            or self.committed_entries
            or self.messages
            or self.read_states
        )
