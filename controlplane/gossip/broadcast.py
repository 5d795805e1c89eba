"""The transmit-limited broadcast queue, and the size estimates that keep packets in budget.

Dissemination in SWIM rides on traffic that flows anyway: every outgoing packet (ping, ack,
gossip) is topped up with queued broadcasts until it reaches the datagram budget. Each broadcast
is sent a bounded number of times, RetransmitMult * ceil(log10(n + 1)), which is enough for an
epidemic to reach every member with high probability; the least-sent items go first (newest
first among equals), so fresh news overtakes old news. A newer broadcast about the same key (a
member's latest alive/suspect/dead, a user key) replaces the older one, which is stale.

Sizes are estimates of the protobuf encoding (`codec.py`): tag and length bytes, varints and
string lengths (names are ASCII, so characters count as bytes), plus a per-packet allowance for
the envelope (sender, framing, AES-GCM nonce and tag). They err on the large side so a packet the
core fills never exceeds the budget once encoded; the transport still falls back to TCP for the
rare packet that does (a single oversized user message).
"""

from __future__ import annotations

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

# Envelope of one datagram: version and key id, 12-byte nonce, 16-byte GCM tag, the sender name
# field and the repeated-field framing, rounded up.
PACKET_OVERHEAD = 64
# Tag and length of one message inside the packet's repeated oneof.
_MESSAGE_OVERHEAD = 3
# No message is smaller than this: once less room is left, stop looking.
_SMALLEST_MESSAGE = 6
# Items of a tier inspected without finding one that fits before giving up on the tier: bounds
# the work of filling an almost full packet from a long queue.
_MAX_MISSES = 16


def _varint(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def _text(value: str) -> int:
    return 1 + _varint(len(value)) + len(value)


def _addr(addr: Address) -> int:
    inner = _text(addr[0]) + 1 + _varint(addr[1])
    return 1 + _varint(inner) + inner


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
        case Ping(seq, target, source, source_addr):
            body = 1 + _varint(seq) + _text(target) + _text(source) + _addr(source_addr)
        case IndirectPing(seq, target, target_addr, _nack, source, source_addr):
            body = (
                1 + _varint(seq) + _text(target) + _addr(target_addr) + 2
                + _text(source) + _addr(source_addr)
            )  # fmt: skip
        case Ack(seq) | Nack(seq):
            body = 1 + _varint(seq)
        case Alive(name, incarnation, addr, meta):
            body = _text(name) + 1 + _varint(incarnation) + _addr(addr) + _meta(meta)
        case Suspect(name, incarnation, source) | Dead(name, incarnation, source):
            body = _text(name) + 1 + _varint(incarnation) + _text(source)
        case UserMsg(data):
            body = 1 + _varint(len(data)) + len(data)
    return _MESSAGE_OVERHEAD + _varint(body) + body


class _Item:
    __slots__ = ("id", "key", "message", "size", "transmits")

    def __init__(self, message: Message, key: Hashable, size: int, item_id: int) -> None:
        self.message = message
        self.key = key
        self.size = size
        self.id = item_id
        self.transmits = 0


class BroadcastQueue:
    """Broadcasts waiting to be piggybacked, ordered by (transmits ascending, newest first)."""

    def __init__(self) -> None:
        # _tiers[t] holds the items sent t times in the order they got there (oldest first);
        # for t > 0 that is the order of their previous transmission, which follows their age.
        self._tiers: list[dict[int, _Item]] = []
        self._by_key: dict[Hashable, _Item] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return sum(len(tier) for tier in self._tiers)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._by_key

    def queue(self, message: Message, key: Hashable | None = None) -> None:
        """Queue `message`; a queued item with the same `key` is dropped (None: never)."""
        self._next_id += 1
        if key is None:
            key = ("unique", self._next_id)
        else:
            old = self._by_key.pop(key, None)
            if old is not None:
                del self._tiers[old.transmits][old.id]
        item = _Item(message, key, message_size(message), self._next_id)
        self._by_key[key] = item
        if not self._tiers:
            self._tiers.append({})
        self._tiers[0][item.id] = item

    def take(self, room: int, limit: int) -> list[Message]:
        """Messages for `room` bytes, each counted as one more transmission; an item sent
        `limit` times leaves the queue."""
        taken: list[Message] = []
        promoted: list[_Item] = []
        tiers = self._tiers
        for tier in tiers:
            if room < _SMALLEST_MESSAGE:
                break
            if not tier:
                continue
            chosen: list[_Item] = []
            misses = 0
            for item in reversed(tier.values()):
                if item.size <= room:
                    chosen.append(item)
                    room -= item.size
                    if room < _SMALLEST_MESSAGE:
                        break
                else:
                    misses += 1
                    if misses >= _MAX_MISSES:
                        break
            for item in chosen:
                taken.append(item.message)
                del tier[item.id]
                item.transmits += 1
                if item.transmits >= limit:
                    del self._by_key[item.key]
                else:
                    promoted.append(item)
        # Promote after the walk, or an item would be picked again from the next tier; oldest
        # first, so a tier stays in arrival order and its newest item is still picked first.
        for item in reversed(promoted):
            while len(tiers) <= item.transmits:
                tiers.append({})
            tiers[item.transmits][item.id] = item
        return taken
