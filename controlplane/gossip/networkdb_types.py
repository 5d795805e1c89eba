"""Messages, outputs and read-only views of NetworkDB (the core is in `networkdb.py`).

The messages are plain frozen dataclasses, like the Raft core's: cheap to build in simulation, and
a codec at the edge turns them into protobuf for the wire. They follow the shape of libnetwork's
`networkdb.proto` (NetworkEvent, TableEvent, the compound gossip message, BulkSyncMessage and the
push-pull NetworkPushPull), minus what the membership layer below already carries (node join and
leave events: SWIM reports those to NetworkDB as `node_alive`/`node_failed`/`node_left`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# ---- messages between NetworkDB instances --------------------------------------------------------


class NetworkEventType(IntEnum):
    JOIN = 1
    LEAVE = 2


@dataclass(frozen=True, slots=True)
class NetworkEvent:
    """Node `node` joined or left network `network` at network-clock time `ltime`.

    Every node of the cluster learns these (they travel as cluster-wide broadcasts), so that a
    node joining a network already knows whom to bulk-sync and gossip with.
    """

    type: NetworkEventType
    ltime: int
    node: str
    network: str


class TableEventType(IntEnum):
    CREATE = 1
    UPDATE = 2
    DELETE = 3


@dataclass(frozen=True, slots=True)
class TableEvent:
    """The state of one entry as written by its owner at table-clock time `ltime`.

    `residual_reap` is how many seconds the sender still keeps the entry (a tombstone, or the
    entry of a failed owner) before reaping it; 0 for a live entry. Passing it on keeps a
    tombstone from living forever by being re-learned from peers that received it later.
    """

    type: TableEventType
    ltime: int
    owner: str
    network: str
    table: str
    key: str
    value: bytes = b""
    residual_reap: float = 0.0


@dataclass(frozen=True, slots=True)
class TableGossip:
    """Table events of one network packed into one datagram (libnetwork's compound message)."""

    events: tuple[TableEvent, ...]


@dataclass(frozen=True, slots=True)
class TableSync:
    """A full exchange of the tables of `networks` (libnetwork's bulk sync), over TCP.

    The side that starts it sends its state for the networks both sides are on; the other side
    merges it and answers with its own state for those networks. `attachments` is what the
    sender knows of who is on those networks, so a sync also repairs missed network events.
    """

    networks: tuple[str, ...] = ()
    attachments: tuple[NetworkEvent, ...] = ()
    entries: tuple[TableEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkState:
    """Every network attachment a node knows of, carried in the membership layer's push-pull
    (memberlist's LocalState/MergeRemoteState), so a node joining the cluster learns them all."""

    attachments: tuple[NetworkEvent, ...] = ()


Message = NetworkEvent | TableGossip

# ---- outputs, drained by the driver with `NetworkDB.take_outputs()` ------------------------------


@dataclass(frozen=True, slots=True)
class SendTo:
    """Send `message` to node `name`, best effort (one datagram; lost is lost)."""

    name: str
    message: TableGossip


@dataclass(frozen=True, slots=True)
class ClusterBroadcast:
    """Queue `message` in the membership layer's broadcast queue for every node; a queued
    broadcast with the same `key` is stale and replaced. The layer need not relay it further:
    each NetworkDB re-broadcasts the network events that are news to it."""

    message: NetworkEvent
    key: str


@dataclass(frozen=True, slots=True)
class BulkSyncRequest:
    """Open a TCP bulk sync with `name`: deliver `request` to its `bulk_sync_request()`, and
    report the answer, or None if it failed, to `bulk_sync_result()` here."""

    name: str
    request: TableSync


Output = SendTo | ClusterBroadcast | BulkSyncRequest

# ---- views for readers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryView:
    """One entry as stored. Readers of live state only ever see `deleted=hidden=False` ones;
    `NetworkDB.records()` shows tombstones and the hidden entries of failed owners too."""

    network: str
    table: str
    key: str
    value: bytes
    owner: str
    ltime: int
    deleted: bool = False
    hidden: bool = False


class WatchEventType(IntEnum):
    CREATE = 1
    UPDATE = 2
    DELETE = 3


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change of what readers see: an entry appeared, changed, or disappeared (then `value` is
    the last value they saw). An owner failing looks like DELETE, its return like CREATE."""

    type: WatchEventType
    network: str
    table: str
    key: str
    value: bytes
    owner: str
