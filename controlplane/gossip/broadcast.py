"""The transmit-limited broadcast queue, and the size estimates that keep packets in budget.

Dissemination in SWIM rides on traffic that flows anyway: every outgoing packet (ping, ack,
gossip) is topped up with queued broadcasts until it reaches the datagram budget. Each broadcast
is sent a bounded number of times, RetransmitMult * ceil(log10(n + 1)), which is enough for an
epidemic to reach every member with high probability; the least-sent items go first (newest
first among equals, see `BroadcastQueue`), so fresh news overtakes old news. A newer broadcast
about the same key (a member's latest alive/suspect/dead, a user key) replaces the older one,
which is stale.

Sizes are estimates of the protobuf encoding (`codec.py`): tag and length bytes, varints and
string lengths (names are ASCII, so characters count as bytes), plus a per-packet allowance for
the envelope (sender, framing, AES-GCM nonce and tag). They err on the large side so a packet the
core fills never exceeds the budget once encoded; the transport still falls back to TCP for the
rare packet that does (a single oversized user message).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable

from controlplane.gossip.types import (
    Ack,
    Address,
    Alive,
    Dead,
    IndirectPing,
    Message,
    Nack,
    NodeMeta,
    Ping,
    Suspect,
    UserMsg,
)

# Sealing of one datagram (envelope.ENCRYPTED_OVERHEAD: version, key id, nonce, timestamp and
# GCM tag, 41 bytes), rounded up.
_ENVELOPE = 48
# No message is smaller than this: once less room is left, stop looking.
_SMALLEST_MESSAGE = 6
# Items of a tier inspected without finding one that fits before giving up on the tier: bounds
# the work of filling an almost full packet from a long queue.
_MAX_MISSES = 4


def _varint(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def _text(value: str) -> int:
    return 1 + _varint(len(value)) + len(value)


@functools.lru_cache(maxsize=4096)
def _addr(addr: Address) -> int:
    inner = _text(addr[0]) + 1 + _varint(addr[1])
    return 1 + _varint(inner) + inner


@functools.lru_cache(maxsize=4096)
def _meta(meta: NodeMeta) -> int:
    inner = (
        _text(meta.node_id)
        + _text(meta.role)
        + _text(meta.advertise_addr)
        + _text(meta.data_path_addr)
        + 1
        + _varint(meta.data_path_port)
        + _text(meta.platform)
    )
    return 1 + _varint(inner) + inner


def message_size(message: Message) -> int:
    """Estimated encoded size of `message` inside a packet, framing included."""
    match message:
        case Alive():  # first, and without sub-patterns: it is most of the volume
            body = (
                _text(message.name)
                + 1
                + _varint(message.incarnation)
                + _addr(message.addr)
                + _meta(message.meta)
            )
        case Ping(seq, target, source, source_addr):
            body = 1 + _varint(seq) + _text(target) + _text(source) + _addr(source_addr)
        case IndirectPing(seq, target, target_addr, _nack, source, source_addr):
            body = (
                1 + _varint(seq) + _text(target) + _addr(target_addr) + 2
                + _text(source) + _addr(source_addr)
            )  # fmt: skip
        case Ack(seq) | Nack(seq):
            body = 1 + _varint(seq)
        case Suspect(name, incarnation, source) | Dead(name, incarnation, source):
            body = _text(name) + 1 + _varint(incarnation) + _text(source)
        case UserMsg(data):
            body = 1 + _varint(len(data)) + len(data)
    # The oneof field inside GossipMessage, then that message inside the packet's repeated field.
    inner = 1 + _varint(body) + body
    return 1 + _varint(inner) + inner


def packet_overhead(sender: str) -> int:
    """Bytes of a datagram that are not messages: the sealing envelope and the sender's name."""
    return _ENVELOPE + _text(sender)


class _Item:
    __slots__ = ("dropped", "key", "message", "size")

    def __init__(self, message: Message, key: Hashable | None, size: int) -> None:
        self.message = message
        self.key = key
        self.size = size
        self.dropped = False  # replaced by a newer item with the same key


class BroadcastQueue:
    """Broadcasts waiting to be piggybacked, ordered by (transmits ascending, newest first)."""

    def __init__(self) -> None:
        # _tiers[t] is a stack of the items sent t times (the index is their transmit count).
        # Tier 0 is in queueing order, so the newest is on top, exactly. Higher tiers are in the
        # order of the items' previous transmission: the most recently sent on top. That
        # approximates memberlist's "newest first" (which orders by age with a B-tree) and
        # keeps each transmission O(1); sorting by age cost a quarter of the simulation time.
        # A replaced item is only flagged, and skipped when it comes to the top.
        self._tiers: list[list[_Item]] = [[]]
        self._by_key: dict[Hashable, _Item] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: Hashable) -> bool:
        return key in self._by_key

    def queue(self, message: Message, key: Hashable | None = None) -> None:
        """Queue `message`; a queued item with the same `key` is dropped (None: never)."""
        item = _Item(message, key, message_size(message))
        if key is not None:
            old = self._by_key.get(key)
            if old is not None:
                old.dropped = True
                self._count -= 1
            self._by_key[key] = item
        self._count += 1
        self._tiers[0].append(item)

    def take(self, room: int, limit: int) -> list[Message]:
        """Messages for `room` bytes, each counted as one more transmission; an item sent
        `limit` times leaves the queue."""
        tiers = self._tiers
        moves: list[tuple[int, list[_Item]]] = []  # (new transmit count, items newest first)
        for transmits, tier in enumerate(tiers, 1):
            if room < _SMALLEST_MESSAGE:
                break
            # Walk down from the top; the walked part is cut off at the end, and the items that
            # did not fit are put back in their order.
            sent: list[_Item] = []
            skipped: list[_Item] = []
            index = len(tier) - 1
            while index >= 0:
                item = tier[index]
                index -= 1
                if item.dropped:
                    continue
                if item.size > room:
                    skipped.append(item)
                    if len(skipped) >= _MAX_MISSES:
                        break
                    continue
                room -= item.size
                sent.append(item)
                if room < _SMALLEST_MESSAGE:
                    break
            del tier[index + 1 :]
            if skipped:
                tier.extend(reversed(skipped))
            if sent:
                moves.append((transmits, sent))
        # Move the sent items up a tier after the walk, or they could be picked again from the
        # next tier; in reverse, so that the first sent ends on top.
        taken: list[Message] = []
        for transmits, sent in moves:
            taken += [item.message for item in sent]
            if transmits < limit:
                while len(tiers) <= transmits:
                    tiers.append([])
                tiers[transmits] += reversed(sent)
            else:
                self._count -= len(sent)
                for item in sent:
                    if item.key is not None:
                        del self._by_key[item.key]
        return taken
