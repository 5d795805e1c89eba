"""The per-network queue of table events waiting to be gossiped.

Each event is sent a bounded number of times, `retransmit_mult * ceil(log10(n + 1))` for a
network of n nodes (memberlist's TransmitLimitedQueue, which libnetwork gives every network, with
RetransmitMult 4). Least-sent events go first, newest first among equals, so fresh news overtakes
old; a newer event about the same entry replaces the queued one, which is stale. Sizes are
estimates of the protobuf encoding, generous so an encoded datagram stays within its budget.
"""

from __future__ import annotations

import math

from controlplane.gossip.networkdb_types import TableEvent

# Per event: framing, type, ltime varint, residual reap time, and the length bytes of each field.
_EVENT_OVERHEAD = 32
# Per datagram: envelope, encryption nonce and tag, compound framing.
PACKET_OVERHEAD = 64


def event_size(event: TableEvent) -> int:
    """Estimated encoded size of `event` inside a gossip datagram."""
    return (
        _EVENT_OVERHEAD
        + len(event.owner)
        + len(event.network)
        + len(event.table)
        + len(event.key)
        + len(event.value)
    )


def retransmit_limit(mult: int, nodes: int) -> int:
    """How many times a broadcast is sent in a group of `nodes` nodes (at least once)."""
    return max(1, mult * math.ceil(math.log10(nodes + 1)))


class _Item:
    __slots__ = ("event", "seq", "size", "transmits")

    def __init__(self, event: TableEvent, seq: int) -> None:
        self.event = event
        self.seq = seq
        self.size = event_size(event)
        self.transmits = 0


class TableQueue:
    """Table events keyed by (table, key), at most `capacity` of them (None: no bound; the
    queue of a node's own writes is bounded by its entries already)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self._items: dict[tuple[str, str], _Item] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, event: TableEvent) -> bool:
        """Queue `event` in place of any queued one for the same entry; False when full."""
        entry = (event.table, event.key)
        full = self.capacity is not None and len(self._items) >= self.capacity
        if full and entry not in self._items:
            return False
        self._seq += 1
        self._items.pop(entry, None)
        self._items[entry] = _Item(event, self._seq)
        return True

    def take(self, room: int, limit: int, *, may_overflow: bool) -> tuple[list[TableEvent], int]:
        """Events that fit in `room` bytes, each counted as sent once more; also the room left.

        An event sent `limit` times leaves the queue. With `may_overflow` (nothing else is in
        the datagram yet), an event too big for any datagram still goes, alone: the transport
        sends it over TCP instead, and it does not sit in the queue forever.
        """
        taken: list[TableEvent] = []
        order = sorted(self._items.items(), key=lambda kv: (kv[1].transmits, -kv[1].seq))
        for entry, item in order:
            if item.size > room and (taken or not may_overflow):
                continue
            room -= item.size
            taken.append(item.event)
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[entry]
        return taken, room

    def clear(self) -> None:
        self._items.clear()
