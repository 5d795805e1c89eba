"""NetworkDB: per-network tables gossiped among the nodes of each network, sans I/O.

This is how Swarm nodes learn each other's overlay endpoints (moby/moby libnetwork's
`networkdb`). Every node of the cluster knows which nodes are on which network (network events,
broadcast cluster-wide through the membership layer); the entries of a network's tables travel
only among the nodes of that network: gossiped to a few random peers every gossip interval with a
bounded number of retransmissions, and repaired by a periodic full table exchange (bulk sync)
with one peer per network, and right away when this node joins a network.

Ordering: one Lamport clock for network attachments, one for table entries. A change carries the
clock of its writer, and the newer time wins (ties go to the greater owner name, so every node
picks the same winner; libnetwork keeps whichever came first). The owner of an entry is the node
that last wrote it. A delete leaves a tombstone, reaped after `reap_entry_interval`, so an older
create still in flight cannot bring the entry back; the residual time travels with it.

The membership layer below (SWIM) is reached through a narrow interface only: it reports
`node_alive`/`node_failed`/`node_left`, delivers `NetworkEvent`s and `TableGossip`s to `receive`,
carries `ClusterBroadcast`s in its piggyback queue, sends `SendTo` datagrams, exchanges
`local_state()`/`merge_remote_state()` in its push-pull, and runs `BulkSyncRequest`s over TCP.

Failures: the entries of a failed node are hidden (watchers see them deleted) but kept, and come
back (watchers see them created) if the node returns before they are reaped; the entries of a
node that left the cluster, or left a network, are removed. A node is the authority on its own
entries and attachments: hearing of one newer than what it holds (a leftover of a previous run
under the same name), it overrides it with its actual state at a newer time.

Decisions where libnetwork differs or is silent: watches report this node's own writes too
(events carry the owner, so a reader can skip them); a node that returns from failure is
bulk-synced by only about `rejoin_sync_fanout` of the nodes that see it return, not by all; the
network events learned by a bulk sync are merged, which repairs a missed broadcast between the
peers of a network without waiting for the next push-pull.

Inputs and outputs follow the Raft core's style: no clock, socket or OS access; time comes in as
`now`, randomness from the injected `random.Random`, outputs are drained with `take_outputs()`,
and a driver calls `tick(now)` at `next_deadline()` (re-reading it after every input).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import TypeGuard

from controlplane.gossip.networkdb_queue import PACKET_OVERHEAD, TableQueue, retransmit_limit
from controlplane.gossip.networkdb_types import (
    BulkSyncRequest,
    ClusterBroadcast,
    EntryView,
    Message,
    NetworkEvent,
    NetworkEventType,
    NetworkState,
    Output,
    SendTo,
    TableEvent,
    TableEventType,
    TableGossip,
    TableSync,
    WatchEvent,
    WatchEventType,
)
from controlplane.gossip.networkdb_watch import EventCallback, Watch

_MAX_LTIME = (1 << 64) - 1  # Lamport times are uint64 on the wire


class NetworkDBError(Exception):
    """A request NetworkDB cannot take; the message says why and what to do."""


class NotJoinedError(NetworkDBError):
    pass


class EntryExistsError(NetworkDBError):
    pass


class EntryNotFoundError(NetworkDBError):
    pass


@dataclass(frozen=True, slots=True)
class NetworkDBConfig:
    """Timing and sizing. Defaults are Docker's (libnetwork networkdb over memberlist's LAN
    profile); `lab()` divides the periods by ten, like the SWIM lab profile, and keeps
    tombstones and failed nodes for seconds rather than for half an hour and a day."""

    gossip_interval: float = 0.2  # memberlist GossipInterval, which drives libnetwork's gossip()
    gossip_fanout: int = 3  # libnetwork gossip(): mRandomNodes(3, ...) per network
    retransmit_mult: int = 4  # RetransmitMult of libnetwork's per-network broadcast queues
    packet_budget: int = 1400  # libnetwork PacketBufferSize: bytes of one gossip datagram
    bulk_sync_interval: float = 30.0  # memberlist PushPullInterval, libnetwork bulkSyncTables
    bulk_sync_timeout: float = 30.0  # libnetwork waits 30 s for the answer to a bulk sync
    reap_period: float = 5.0  # libnetwork reapPeriod: how often tombstones are collected
    reap_entry_interval: float = 1800.0  # libnetwork reapEntryInterval: a tombstone's life
    reap_node_interval: float = 86400.0  # libnetwork nodeReapInterval: a failed node's memory
    rejoin_sync_fanout: int = 3  # expected number of nodes bulk-syncing a node that returns
    max_relay_queue: int = 500  # libnetwork maxQueueLenBroadcastOnSync, per network
    watch_queue_limit: int = 10000  # events a polled watch may fall behind before it overflows

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"NetworkDBConfig.{f.name} must be a positive number")
        if self.reap_period > self.reap_entry_interval:
            raise ValueError("reap_period must not exceed reap_entry_interval")

    @property
    def reap_network_interval(self) -> float:
        """How long a left network is remembered: longer than its entries (libnetwork adds
        five reap periods), so they are all collected before the network is forgotten."""
        return self.reap_entry_interval + 5 * self.reap_period

    @classmethod
    def lab(cls) -> NetworkDBConfig:
        return cls(
            gossip_interval=0.02,
            bulk_sync_interval=3.0,
            bulk_sync_timeout=3.0,
            reap_period=0.5,
            reap_entry_interval=30.0,
            reap_node_interval=120.0,
        )


@dataclass(slots=True)
class NetworkDBStats:
    """Counters for the gossip view and for tests; inputs that were ignored are counted here."""

    gossip_sent: int = 0
    events_applied: int = 0
    stale: int = 0  # events not newer than what is held (duplicates, echoes, reordering)
    unknown_sender: int = 0  # from a node the membership layer does not report alive or failed
    unknown_node: int = 0  # about a node not known, or known to have left
    unknown_network: int = 0  # table events of a network this node is not on
    not_attached: int = 0  # table events whose owner is not on the network
    malformed: int = 0
    relay_dropped: int = 0  # relay queue full
    reasserted: int = 0  # leftovers of this node's previous run overridden
    bulk_syncs_started: int = 0
    bulk_syncs_answered: int = 0
    bulk_syncs_completed: int = 0
    bulk_syncs_failed: int = 0
    bulk_syncs_timed_out: int = 0
    watch_overflows: int = 0


class NodeStatus(IntEnum):
    ALIVE = 1
    FAILED = 2
    LEFT = 3


@dataclass(slots=True)
class _Node:
    status: NodeStatus
    reap_at: float = math.inf  # FAILED or LEFT: when the node is forgotten


@dataclass(slots=True)
class _Attachment:
    """A remote node's membership of one network, as last heard."""

    ltime: int
    leaving: bool
    reap_at: float = math.inf


@dataclass(slots=True)
class _LocalNetwork:
    """This node's own membership of one network, and its gossip queues."""

    ltime: int
    leaving: bool = False
    reap_at: float = math.inf
    synced: bool = False  # a bulk sync with a peer has completed since joining
    own: TableQueue | None = None  # events this node wrote
    relay: TableQueue | None = None  # events learned from others, sent when there is room


@dataclass(slots=True)
class _Entry:
    value: bytes
    owner: str
    ltime: int
    deleted: bool = False
    reap_at: float = math.inf  # tombstones and the entries of failed owners


@dataclass(slots=True)
class _PendingSync:
    networks: tuple[str, ...]
    deadline: float
    retry: bool  # on failure, try one other peer


def _is_ltime(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_LTIME


def _is_name(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _valid_network_event(event: object) -> TypeGuard[NetworkEvent]:
    return (
        isinstance(event, NetworkEvent)
        and isinstance(event.type, NetworkEventType)
        and _is_ltime(event.ltime)
        and _is_name(event.node)
        and _is_name(event.network)
    )


def _valid_table_event(event: object) -> TypeGuard[TableEvent]:
    return (
        isinstance(event, TableEvent)
        and isinstance(event.type, TableEventType)
        and _is_ltime(event.ltime)
        and _is_name(event.owner)
        and _is_name(event.network)
        and _is_name(event.table)
        and isinstance(event.key, str)
        and isinstance(event.value, bytes)
        and isinstance(event.residual_reap, int | float)
        and math.isfinite(event.residual_reap)
        and event.residual_reap >= 0
    )


class NetworkDB:
    def __init__(self, node_name: str, config: NetworkDBConfig, rng: random.Random) -> None:
        if not node_name:
            raise ValueError("NetworkDB needs a node name")
        self.name = node_name
        self.config = config
        self.stats = NetworkDBStats()
        self._rng = rng
        self._network_clock = 0
        self._table_clock = 0
        self._nodes: dict[str, _Node] = {}
        self._attachments: dict[str, dict[str, _Attachment]] = {}  # node -> network -> state
        self._peers: dict[str, dict[str, None]] = {}  # network -> alive attached nodes (ordered)
        self._local: dict[str, _LocalNetwork] = {}
        self._entries: dict[str, dict[str, dict[str, _Entry]]] = {}  # network -> table -> key
        self._syncs: dict[str, _PendingSync] = {}  # peer -> bulk sync in flight
        self._watches: list[Watch] = []
        self._outputs: list[Output] = []
        # 0.0 until the first tick, which staggers them (as libnetwork's tickers are).
        self._started = False
        self._next_gossip = 0.0
        self._next_bulk_sync = 0.0
        self._next_reap = 0.0

    # ---- driver interface -----------------------------------------------------------------------

    def take_outputs(self) -> list[Output]:
        outputs, self._outputs = self._outputs, []
        return outputs

    def next_deadline(self) -> float:
        """When `tick` is next due. Gossip counts only while something waits to be sent."""
        deadline = min(self._next_bulk_sync, self._next_reap)
        if self._gossip_pending():
            deadline = min(deadline, self._next_gossip)
        for pending in self._syncs.values():
            deadline = min(deadline, pending.deadline)
        return deadline

    def tick(self, now: float) -> None:
        """Run what is due: expire bulk syncs, gossip, periodic bulk sync, reaping. The first
        call starts the timers, each at a random phase (libnetwork staggers its tickers)."""
        cfg = self.config
        if not self._started:
            self._started = True
            self._next_gossip = now + self._rng.uniform(0, cfg.gossip_interval)
            self._next_bulk_sync = now + self._rng.uniform(0, cfg.bulk_sync_interval)
            self._next_reap = now + self._rng.uniform(0, cfg.reap_period)
        for peer in [p for p, s in self._syncs.items() if s.deadline <= now]:
            del self._syncs[peer]
            self.stats.bulk_syncs_timed_out += 1
        if now >= self._next_gossip:
            self._gossip()
            self._next_gossip = self._next_period(self._next_gossip, cfg.gossip_interval, now)
        if now >= self._next_bulk_sync:
            self._periodic_bulk_sync(now)
            self._next_bulk_sync = self._next_period(
                self._next_bulk_sync, cfg.bulk_sync_interval, now
            )
        if now >= self._next_reap:
            self._reap(now)
            self._next_reap = self._next_period(self._next_reap, cfg.reap_period, now)

    @staticmethod
    def _next_period(due: float, interval: float, now: float) -> float:
        """The first time after `now` on the grid `due + k * interval`: like a ticker, a timer
        keeps its phase and skips the periods missed while idle."""
        if due > now:
            return due
        return due + (math.floor((now - due) / interval) + 1) * interval

    def _queued_for_gossip(self, now: float) -> None:
        """Something was queued: it goes at the next tick of the gossip ticker, which may have
        been idle (and not ticked) for a while."""
        if self._started:
            gossip_interval = self.config.gossip_interval
            self._next_gossip = self._next_period(self._next_gossip, gossip_interval, now)

    # ---- membership events from the layer below --------------------------------------------------

    def node_alive(self, now: float, name: str) -> None:
        """`name` is (again) a reachable member of the cluster."""
        if name == self.name or not _is_name(name):
            return
        node = self._nodes.get(name)
        if node is None:
            self._nodes[name] = _Node(NodeStatus.ALIVE)
            return
        previous = node.status
        if previous is NodeStatus.ALIVE:
            return
        node.status = NodeStatus.ALIVE
        node.reap_at = math.inf
        if previous is not NodeStatus.FAILED:
            return  # a node that left came back as new: its state went when it left
        for network in self._attachments.get(name, {}):
            self._refresh_peer(now, name, network)
        for network, table, key, entry in self._owned_by(name):
            if not entry.deleted:
                entry.reap_at = math.inf
                self._notify(WatchEventType.CREATE, network, table, key, entry)
        # Each node that sees it return syncs with it with this probability, so that about
        # `rejoin_sync_fanout` of them do, whatever the cluster size.
        alive = sum(1 for n in self._nodes.values() if n.status is NodeStatus.ALIVE)
        common = self._common_networks(name)
        if common and self._rng.random() < self.config.rejoin_sync_fanout / alive:
            self._start_bulk_sync(now, name, common, retry=False)

    def node_failed(self, now: float, name: str) -> None:
        """`name` stopped answering: hide its entries until it returns or is reaped."""
        node = self._nodes.get(name)
        if node is None or name == self.name:
            self.stats.unknown_node += 1
            return
        if node.status is not NodeStatus.ALIVE:
            return
        node.status = NodeStatus.FAILED
        node.reap_at = now + self.config.reap_node_interval
        for network in self._attachments.get(name, {}):
            self._refresh_peer(now, name, network)
        for network, table, key, entry in self._owned_by(name):
            if not entry.deleted:
                entry.reap_at = now + self.config.reap_entry_interval
                self._notify(WatchEventType.DELETE, network, table, key, entry)

    def node_left(self, now: float, name: str) -> None:
        """`name` left the cluster gracefully: its entries and attachments go."""
        node = self._nodes.get(name)
        if node is None or name == self.name:
            self.stats.unknown_node += 1
            return
        if node.status is NodeStatus.LEFT:
            return
        for network, table, key, _entry in self._owned_by(name):
            self._drop(network, table, key)  # before the status changes: hidden ones stay quiet
        node.status = NodeStatus.LEFT
        node.reap_at = now + self.config.reap_node_interval
        for network in self._attachments.pop(name, {}):
            self._refresh_peer(now, name, network)

    # ---- messages from other nodes ---------------------------------------------------------------

    def receive(self, now: float, sender: str, message: Message) -> None:
        """A `NetworkEvent` (cluster broadcast) or a `TableGossip` datagram from `sender`.
        Like every input from the network, it is checked: what is malformed is counted."""
        if not self._known_sender(sender):
            return
        if _valid_network_event(message):
            if self._apply_network_event(now, message):
                self._broadcast(message)
        elif isinstance(message, TableGossip) and isinstance(message.events, tuple):
            for event in message.events:
                if _valid_table_event(event):
                    self._apply_table_event(now, event, relay=True)
                else:
                    self.stats.malformed += 1
        else:
            self.stats.malformed += 1

    def local_state(self) -> NetworkState:
        """Every attachment known, for the membership layer's push-pull."""
        events = [self._local_event(network) for network in self._local]
        for node, networks in self._attachments.items():
            events.extend(self._attachment_event(node, network) for network in networks)
        return NetworkState(tuple(events))

    def merge_remote_state(self, now: float, sender: str, state: NetworkState) -> None:
        """The attachments a peer sent in a push-pull."""
        if not self._known_sender(sender):
            return
        if not isinstance(state, NetworkState) or not isinstance(state.attachments, tuple):
            self.stats.malformed += 1
            return
        self._merge_attachments(now, state.attachments)

    def bulk_sync_request(self, now: float, sender: str, request: TableSync) -> TableSync:
        """A peer's bulk sync: merge its tables, answer with ours for the networks we share."""
        if not self._known_sender(sender):
            return TableSync()
        if not self._valid_sync(request):
            return TableSync()
        networks = tuple(dict.fromkeys(n for n in request.networks if self._joined(n) is not None))
        self._merge_sync(now, request, networks)
        self.stats.bulk_syncs_answered += 1
        return self._sync_payload(now, networks)

    def bulk_sync_result(self, now: float, peer: str, response: TableSync | None) -> None:
        """The answer to our `BulkSyncRequest` to `peer`, or None if it failed. An answer for
        none of the networks (the peer left them, or does not know us yet) is a failure too."""
        pending = self._syncs.pop(peer, None)
        if pending is None:
            self.stats.stale += 1  # timed out already, or never asked
            return
        if response is None or not self._valid_sync(response) or not response.networks:
            self.stats.bulk_syncs_failed += 1
            if pending.retry:
                others = [p for p in self._peers.get(pending.networks[0], {}) if p != peer]
                if others:
                    other = self._rng.choice(others)
                    self._start_bulk_sync(now, other, self._common_networks(other), retry=False)
            return
        covered = set(response.networks)
        networks = tuple(
            n for n in pending.networks if n in covered and self._joined(n) is not None
        )
        self._merge_sync(now, response, networks)
        self.stats.bulk_syncs_completed += 1

    # ---- user API -----------------------------------------------------------------------------

    def join_network(self, now: float, network_id: str) -> None:
        """Start taking part in `network_id`'s tables, and sync them from a peer right away."""
        if not _is_name(network_id):
            raise NetworkDBError("a network id must be a non-empty string")
        if self._joined(network_id) is not None:
            raise NetworkDBError(f"network {network_id} is already joined on this node")
        self._network_clock += 1
        self._local[network_id] = _LocalNetwork(
            self._network_clock, own=TableQueue(), relay=TableQueue(self.config.max_relay_queue)
        )
        self._broadcast(self._local_event(network_id))
        self._sync_new_network(now, network_id)

    def leave_network(self, now: float, network_id: str) -> None:
        """Stop taking part in `network_id`: peers drop our entries, we drop theirs."""
        local = self._require_joined(network_id)
        self._network_clock += 1
        local.ltime = self._network_clock
        local.leaving = True
        local.synced = False
        local.reap_at = now + self.config.reap_network_interval
        local.own = local.relay = None
        self._broadcast(self._local_event(network_id))
        reap_at = now + self.config.reap_entry_interval
        for table, key, entry in self._rows(network_id):
            if entry.owner != self.name:
                self._drop(network_id, table, key)
            elif not entry.deleted:
                # Kept as a tombstone: should we rejoin before every peer heard of this leave,
                # the bulk sync on rejoin still deletes the entry everywhere.
                self._table_clock += 1
                tomb = _Entry(entry.value, self.name, self._table_clock, True, reap_at)
                self._store(network_id, table, key, tomb)

    def create_entry(self, now: float, table: str, network_id: str, key: str, value: bytes) -> None:
        local = self._require_joined(network_id)
        current = self._lookup(network_id, table, key)
        if current is not None and self._visible(current):
            raise EntryExistsError(
                f"entry {key!r} already exists in table {table!r} of network {network_id}: "
                "update or delete it instead"
            )
        self._write(now, local, TableEventType.CREATE, network_id, table, key, value)

    def update_entry(self, now: float, table: str, network_id: str, key: str, value: bytes) -> None:
        local = self._require_joined(network_id)
        self._require_entry(network_id, table, key)
        self._write(now, local, TableEventType.UPDATE, network_id, table, key, value)

    def delete_entry(self, now: float, table: str, network_id: str, key: str) -> None:
        local = self._require_joined(network_id)
        current = self._require_entry(network_id, table, key)
        self._write(now, local, TableEventType.DELETE, network_id, table, key, current.value)

    def get_entry(self, table: str, network_id: str, key: str) -> EntryView | None:
        """The entry as readers see it: None if absent, deleted, or its owner has failed."""
        entry = self._lookup(network_id, table, key)
        if entry is None or not self._visible(entry):
            return None
        return self._view(network_id, table, key, entry)

    def entries(self, network_id: str, table: str) -> dict[str, EntryView]:
        """The visible entries of one table of one network, by key."""
        rows = self._entries.get(network_id, {}).get(table, {})
        return {
            key: self._view(network_id, table, key, entry)
            for key, entry in sorted(rows.items())
            if self._visible(entry)
        }

    def records(self, network_id: str) -> list[EntryView]:
        """Everything held for `network_id`, tombstones and hidden entries included."""
        return [
            self._view(network_id, table, key, entry)
            for table, key, entry in self._rows(network_id)
        ]

    def networks(self) -> list[str]:
        """The networks this node is on."""
        return [n for n, local in self._local.items() if not local.leaving]

    def synced(self, network_id: str) -> bool:
        """Whether this node joined `network_id` and has since completed a bulk sync of it
        with a peer (so it holds what the others published before it joined)."""
        local = self._joined(network_id)
        return local is not None and local.synced

    def peers(self, network_id: str) -> list[str]:
        """The other alive nodes on `network_id`, as this node knows them."""
        return list(self._peers.get(network_id, {}))

    def node_status(self, name: str) -> NodeStatus | None:
        node = self._nodes.get(name)
        return node.status if node is not None else None

    def watch(
        self,
        table: str | None = None,
        network_id: str | None = None,
        *,
        on_event: EventCallback | None = None,
    ) -> Watch:
        """Changes of the matching entries, starting with a CREATE for each visible one."""
        networks = [network_id] if network_id is not None else list(self._entries)
        current = [
            self._watch_event(WatchEventType.CREATE, network, t, key, entry)
            for network in networks
            for t, key, entry in self._rows(network)
            if (table is None or t == table) and self._visible(entry)
        ]
        watch = Watch(table, network_id, self.config.watch_queue_limit, on_event, current)
        self._watches.append(watch)
        return watch

    # ---- network events -----------------------------------------------------------------------

    def _apply_network_event(self, now: float, event: NetworkEvent) -> bool:
        """Merge one attachment; True when it was news (then it is worth passing on)."""
        self._network_clock = max(self._network_clock, event.ltime)
        node, network = event.node, event.network
        if node == self.name:
            self._reassert_attachment(now, event)
            return False
        status = self.node_status(node)
        if status is None or status is NodeStatus.LEFT:
            self.stats.unknown_node += 1
            return False
        networks = self._attachments.setdefault(node, {})
        current = networks.get(network)
        if current is not None and current.ltime >= event.ltime:
            self.stats.stale += 1
            return False
        leaving = event.type is NetworkEventType.LEAVE
        if leaving:
            for table, key, entry in self._rows(network):
                if entry.owner == node:
                    self._drop(network, table, key)
        reap_at = now + self.config.reap_network_interval if leaving else math.inf
        networks[network] = _Attachment(event.ltime, leaving, reap_at)
        self._refresh_peer(now, node, network)
        self.stats.events_applied += 1
        return True

    def _reassert_attachment(self, now: float, event: NetworkEvent) -> None:
        """Someone holds an attachment of ours that is not ours: it dates from a previous run
        (whose clock may have reached the same time). Override it with what is true now, at a
        newer time."""
        local = self._local.get(event.network)
        if local is not None:
            same = local.leaving == (event.type is NetworkEventType.LEAVE)
            if local.ltime > event.ltime or (local.ltime == event.ltime and same):
                return  # older than what we hold, or our own news coming back
        self.stats.reasserted += 1
        self._network_clock += 1
        if local is not None:
            local.ltime = self._network_clock
        elif event.type is NetworkEventType.JOIN:
            self._local[event.network] = _LocalNetwork(
                self._network_clock,
                leaving=True,
                reap_at=now + self.config.reap_network_interval,
            )
        else:
            return  # they think we left, and we are not on it: true already
        self._broadcast(self._local_event(event.network))

    def _merge_attachments(self, now: float, events: tuple[object, ...]) -> None:
        for event in events:
            if _valid_network_event(event):
                self._apply_network_event(now, event)
            else:
                self.stats.malformed += 1

    def _refresh_peer(self, now: float, node: str, network: str) -> None:
        """Recompute whether `node` is a gossip peer on `network`; a first peer on a network
        we joined without finding one is where its initial bulk sync comes from."""
        attachment = self._attachments.get(node, {}).get(network)
        is_peer = (
            attachment is not None
            and not attachment.leaving
            and self.node_status(node) is NodeStatus.ALIVE
        )
        peers = self._peers.setdefault(network, {})
        if not is_peer:
            peers.pop(node, None)
            if not peers:
                del self._peers[network]
            return
        if node in peers:
            return
        peers[node] = None
        local = self._joined(network)
        syncing = any(network in s.networks for s in self._syncs.values())
        if local is not None and not local.synced and not syncing:
            self._start_bulk_sync(now, node, self._common_networks(node), retry=True)

    def _local_event(self, network: str) -> NetworkEvent:
        local = self._local[network]
        kind = NetworkEventType.LEAVE if local.leaving else NetworkEventType.JOIN
        return NetworkEvent(kind, local.ltime, self.name, network)

    def _attachment_event(self, node: str, network: str) -> NetworkEvent:
        attachment = self._attachments[node][network]
        kind = NetworkEventType.LEAVE if attachment.leaving else NetworkEventType.JOIN
        return NetworkEvent(kind, attachment.ltime, node, network)

    def _broadcast(self, event: NetworkEvent) -> None:
        key = f"network/{event.network}/{event.node}"
        self._outputs.append(ClusterBroadcast(event, key))

    # ---- table events -------------------------------------------------------------------------

    def _write(
        self,
        now: float,
        local: _LocalNetwork,
        kind: TableEventType,
        network: str,
        table: str,
        key: str,
        value: bytes,
    ) -> None:
        """A change by this node: store it, and queue it for gossip."""
        deleted = kind is TableEventType.DELETE
        residual = self.config.reap_entry_interval if deleted else 0.0
        self._table_clock += 1
        reap_at = now + residual if deleted else math.inf
        entry = _Entry(value, self.name, self._table_clock, deleted, reap_at)
        self._store(network, table, key, entry)
        assert local.own is not None  # a joined network has its queues
        local.own.push(
            TableEvent(kind, entry.ltime, self.name, network, table, key, value, residual)
        )
        self._queued_for_gossip(now)

    def _apply_table_event(self, now: float, event: TableEvent, *, relay: bool) -> None:
        """Merge one table event; with `relay`, pass it on to other peers if it was news."""
        self._table_clock = max(self._table_clock, event.ltime)
        network, table, key = event.network, event.table, event.key
        local = self._joined(network)
        if local is None:
            self.stats.unknown_network += 1
            return
        if event.owner == self.name:
            self._reassert_entry(now, local, event)
            return
        attachment = self._attachments.get(event.owner, {}).get(network)
        if attachment is None or attachment.leaving:
            self.stats.not_attached += 1
            return
        current = self._lookup(network, table, key)
        if current is not None and (current.ltime, current.owner) >= (event.ltime, event.owner):
            self.stats.stale += 1
            return
        deleted = event.type is TableEventType.DELETE
        reap_at = math.inf
        if deleted or self.node_status(event.owner) is NodeStatus.FAILED:
            full = self.config.reap_entry_interval
            reap_at = now + (min(event.residual_reap, full) or full)
        entry = _Entry(event.value, event.owner, event.ltime, deleted, reap_at)
        self._store(network, table, key, entry)
        self.stats.events_applied += 1
        # A tombstone for an entry never seen is passed on only while it is young, or deletes
        # near their reaping would keep circling (libnetwork's 1/6 rule).
        unseen_tombstone = deleted and current is None
        young = event.residual_reap > self.config.reap_entry_interval / 6
        if relay and (young or not unseen_tombstone):
            assert local.relay is not None  # a joined network has its queues
            if local.relay.push(event):
                self._queued_for_gossip(now)
            else:
                self.stats.relay_dropped += 1

    def _reassert_entry(self, now: float, local: _LocalNetwork, event: TableEvent) -> None:
        """A peer holds an entry of ours that is not what we hold: it dates from a previous run
        (whose clock may have reached the same time), or we reaped its tombstone. Override it
        with what we hold, at a newer time."""
        current = self._lookup(event.network, event.table, event.key)
        if current is not None:
            newer = (current.ltime, current.owner) > (event.ltime, event.owner)
            same = (current.value, current.deleted) == (
                event.value,
                event.type is TableEventType.DELETE,
            )
            if newer or (current.ltime == event.ltime and same):
                return  # older than what we hold, or our own news coming back
        if current is not None and current.owner == self.name and not current.deleted:
            kind, value = TableEventType.UPDATE, current.value  # what we wrote since stands
        elif event.type is TableEventType.DELETE:
            # Our tombstone from before: newer than what we hold, so it stands as it is.
            full = self.config.reap_entry_interval
            reap_at = now + (min(event.residual_reap, full) or full)
            tomb = _Entry(event.value, self.name, event.ltime, True, reap_at)
            self._store(event.network, event.table, event.key, tomb)
            return
        else:
            kind, value = TableEventType.DELETE, event.value  # we no longer have it
        self.stats.reasserted += 1
        self._write(now, local, kind, event.network, event.table, event.key, value)

    # ---- gossip and bulk sync ------------------------------------------------------------------

    def _gossip_pending(self) -> bool:
        return any(
            (local.own is not None and len(local.own))
            or (local.relay is not None and len(local.relay))
            for local in self._local.values()
        )

    def _gossip(self) -> None:
        """One datagram of queued table events per network, to a few random peers of it."""
        cfg = self.config
        for network, local in self._local.items():
            peers = self._peers.get(network)
            if local.own is None or local.relay is None or not peers:
                continue
            limit = retransmit_limit(cfg.retransmit_mult, len(peers) + 1)
            # A longer node name leaves less room (it travels in every datagram).
            room = cfg.packet_budget - PACKET_OVERHEAD - len(self.name.encode())
            events, room = local.own.take(room, limit, may_overflow=True)
            relayed, _ = local.relay.take(room, limit, may_overflow=not events)
            events.extend(relayed)
            if not events:
                continue
            message = TableGossip(tuple(events))
            targets = list(peers)
            if len(targets) > cfg.gossip_fanout:
                targets = self._rng.sample(targets, cfg.gossip_fanout)
            for target in targets:
                self._outputs.append(SendTo(target, message))
            self.stats.gossip_sent += len(targets)

    def _periodic_bulk_sync(self, now: float) -> None:
        """Each network is synced with one random peer; a peer shares all common networks."""
        todo = self.networks()
        while todo:
            peers = self._peers.get(todo.pop(0))
            if not peers:
                continue
            peer = self._rng.choice(list(peers))
            common = self._common_networks(peer)
            self._start_bulk_sync(now, peer, common, retry=True)
            todo = [n for n in todo if n not in common]

    def _sync_new_network(self, now: float, network: str) -> None:
        peers = self._peers.get(network)
        if peers:
            peer = self._rng.choice(list(peers))
            self._start_bulk_sync(now, peer, self._common_networks(peer), retry=True)

    def _start_bulk_sync(self, now: float, peer: str, networks: list[str], *, retry: bool) -> None:
        if peer in self._syncs or not networks:
            return
        deadline = now + self.config.bulk_sync_timeout
        self._syncs[peer] = _PendingSync(tuple(networks), deadline, retry)
        self._outputs.append(BulkSyncRequest(peer, self._sync_payload(now, networks)))
        self.stats.bulk_syncs_started += 1

    def _sync_payload(self, now: float, networks: tuple[str, ...] | list[str]) -> TableSync:
        wanted = set(networks)
        attachments = [self._local_event(n) for n in networks]
        for node, held in self._attachments.items():
            attachments.extend(self._attachment_event(node, n) for n in held if n in wanted)
        entries = [
            TableEvent(
                TableEventType.DELETE if e.deleted else TableEventType.CREATE,
                e.ltime,
                e.owner,
                network,
                table,
                key,
                e.value,
                e.reap_at - now if e.reap_at != math.inf else 0.0,
            )
            for network in networks
            for table, key, e in self._rows(network)
            if e.reap_at > now  # one due for reaping would come back with a full lifetime
        ]
        return TableSync(tuple(networks), tuple(attachments), tuple(entries))

    def _merge_sync(self, now: float, sync: TableSync, networks: tuple[str, ...]) -> None:
        """Merge a peer's tables for `networks` (the ones both sides are on). What was news
        is relayed only on networks already synced before: the first sync after a join
        would otherwise flood the network with what everyone else already has."""
        relaying: dict[str, bool] = {}
        for network in networks:  # first, or a peer found in the attachments syncs again
            local = self._local[network]
            relaying[network] = local.synced
            local.synced = True
        self._merge_attachments(now, sync.attachments)
        for event in sync.entries:
            if not _valid_table_event(event):
                self.stats.malformed += 1
            elif event.network not in relaying:
                self.stats.unknown_network += 1
            else:
                self._apply_table_event(now, event, relay=relaying[event.network])

    def _valid_sync(self, sync: object) -> TypeGuard[TableSync]:
        ok = (
            isinstance(sync, TableSync)
            and isinstance(sync.networks, tuple)
            and isinstance(sync.attachments, tuple)
            and isinstance(sync.entries, tuple)
            and all(_is_name(n) for n in sync.networks)
        )
        if not ok:
            self.stats.malformed += 1
        return ok

    def _common_networks(self, peer: str) -> list[str]:
        return [n for n in self.networks() if peer in self._peers.get(n, {})]

    # ---- reaping --------------------------------------------------------------------------------

    def _reap(self, now: float) -> None:
        """Forget what has outlived its purpose: tombstones, the entries and attachments of
        failed nodes, left networks, and nodes that failed or left long ago."""
        for network, tables in list(self._entries.items()):
            for table, rows in list(tables.items()):
                for key in [k for k, e in rows.items() if e.reap_at <= now]:
                    del rows[key]
                if not rows:
                    del tables[table]
            if not tables:
                del self._entries[network]
        for network in [n for n, local in self._local.items() if local.reap_at <= now]:
            del self._local[network]
            self._entries.pop(network, None)
        for networks in self._attachments.values():
            for network in [n for n, a in networks.items() if a.reap_at <= now]:
                del networks[network]
        for name in [n for n, node in self._nodes.items() if node.reap_at <= now]:
            for network, table, key, _entry in self._owned_by(name):
                self._drop(network, table, key)  # hidden already: nobody is told
            del self._nodes[name]
            self._attachments.pop(name, None)
        for name in [n for n, networks in self._attachments.items() if not networks]:
            del self._attachments[name]

    # ---- the store ------------------------------------------------------------------------------

    def _rows(self, network: str) -> list[tuple[str, str, _Entry]]:
        return [
            (table, key, entry)
            for table, rows in self._entries.get(network, {}).items()
            for key, entry in rows.items()
        ]

    def _owned_by(self, owner: str) -> list[tuple[str, str, str, _Entry]]:
        return [
            (network, table, key, entry)
            for network, tables in self._entries.items()
            for table, rows in tables.items()
            for key, entry in rows.items()
            if entry.owner == owner
        ]

    def _lookup(self, network: str, table: str, key: str) -> _Entry | None:
        return self._entries.get(network, {}).get(table, {}).get(key)

    def _visible(self, entry: _Entry) -> bool:
        return not entry.deleted and self.node_status(entry.owner) is not NodeStatus.FAILED

    def _store(self, network: str, table: str, key: str, entry: _Entry) -> None:
        """Put `entry` in place of what is held; watchers hear what readers see change."""
        rows = self._entries.setdefault(network, {}).setdefault(table, {})
        old = rows.get(key)
        rows[key] = entry
        was_visible = old is not None and self._visible(old)
        if self._visible(entry):
            kind = WatchEventType.UPDATE if was_visible else WatchEventType.CREATE
            self._notify(kind, network, table, key, entry)
        elif was_visible:
            assert old is not None
            self._notify(WatchEventType.DELETE, network, table, key, old)

    def _drop(self, network: str, table: str, key: str) -> None:
        """Remove an entry without a tombstone (its owner left the network or the cluster)."""
        tables = self._entries[network]
        old = tables[table].pop(key)
        if not tables[table]:
            del tables[table]
        if not tables:
            del self._entries[network]
        if self._visible(old):
            self._notify(WatchEventType.DELETE, network, table, key, old)

    def _joined(self, network: object) -> _LocalNetwork | None:
        local = self._local.get(network) if isinstance(network, str) else None
        return local if local is not None and not local.leaving else None

    def _require_joined(self, network: str) -> _LocalNetwork:
        local = self._joined(network)
        if local is None:
            raise NotJoinedError(
                f"this node is not on network {network}: join_network({network!r}) first"
            )
        return local

    def _require_entry(self, network: str, table: str, key: str) -> _Entry:
        entry = self._lookup(network, table, key)
        if entry is None or not self._visible(entry):
            raise EntryNotFoundError(
                f"no entry {key!r} in table {table!r} of network {network}: create it first"
            )
        return entry

    def _known_sender(self, sender: str) -> bool:
        status = self.node_status(sender)
        if status is None or status is NodeStatus.LEFT:
            self.stats.unknown_sender += 1
            return False
        return True

    # ---- watches --------------------------------------------------------------------------------

    def _view(self, network: str, table: str, key: str, entry: _Entry) -> EntryView:
        hidden = not entry.deleted and not self._visible(entry)
        return EntryView(
            network, table, key, entry.value, entry.owner, entry.ltime, entry.deleted, hidden
        )

    @staticmethod
    def _watch_event(
        kind: WatchEventType, network: str, table: str, key: str, entry: _Entry
    ) -> WatchEvent:
        return WatchEvent(kind, network, table, key, entry.value, entry.owner)

    def _notify(
        self, kind: WatchEventType, network: str, table: str, key: str, entry: _Entry
    ) -> None:
        if not self._watches:
            return
        event = self._watch_event(kind, network, table, key, entry)
        for watch in self._watches:
            if watch.matches(table, network):
                watch.deliver(event)
                if watch.overflowed:
                    self.stats.watch_overflows += 1
        self._watches = [w for w in self._watches if not w.closed]
