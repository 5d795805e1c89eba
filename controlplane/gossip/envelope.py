"""Sealing and opening gossip packets (7946/udp datagrams and 7946/tcp frames).

An encrypted packet::

    [u8 version=0x01][key id: 4][nonce: 12][AES-GCM( [i64 sent_ms][payload] ) + tag: 16]

The 17-byte header is authenticated as associated data (followed by the caller's `aad`, e.g. a
transport tag so a UDP datagram cannot be replayed as a TCP frame), so a flipped version or
key id fails authentication like any other flipped bit.

Replay protection: the sender's wall-clock time is sealed inside the ciphertext and the random
nonce serves as the packet's unique id (it is authenticated: GCM binds it into the tag, and it
is part of the associated header). A receiver refuses packets older than `max_age` or dated
more than `max_skew` ahead of its own clock, and remembers the nonces it accepted until they
would be refused as too old anyway, so an exact replay within the window is refused too.

A plaintext packet (no keyring: encryption off) is ``[u8 version=0x00][payload]``; the version
byte lets an encrypted node and a plaintext node tell each other's packets apart and report an
encryption mismatch rather than garbage. Plaintext packets have no replay protection: anyone
who can send them can forge them anyway.

Random 96-bit nonces are safe for about 2**32 packets per key (NIST SP 800-38D); rotate keys
well before that.

Every refusal raises `EnvelopeError` with a `DropReason` the transport counts; no input,
however malformed, raises anything else.
"""

from __future__ import annotations

import heapq
import math
import os
import struct
from enum import StrEnum

from cryptography.exceptions import InvalidTag

from controlplane.gossip.keyring import KEY_ID_SIZE, Keyring

VERSION_PLAINTEXT = 0x00
VERSION_AES_GCM = 0x01

NONCE_SIZE = 12
TAG_SIZE = 16
_TIMESTAMP = struct.Struct(">q")  # sender's clock, milliseconds
HEADER_SIZE = 1 + KEY_ID_SIZE + NONCE_SIZE

ENCRYPTED_OVERHEAD = HEADER_SIZE + _TIMESTAMP.size + TAG_SIZE
"""Bytes a sealed packet adds to its payload (41): budget datagrams with this."""

PLAINTEXT_OVERHEAD = 1
"""Bytes a plaintext packet adds to its payload: the version byte."""

MAX_PACKET_SIZE = 2**31 - 1
"""AES-GCM in `cryptography` takes at most this many bytes; no packet of ours comes near it."""

DEFAULT_MAX_AGE = 30.0
DEFAULT_MAX_SKEW = 30.0
DEFAULT_REPLAY_CAPACITY = 16384


class DropReason(StrEnum):
    """Why a packet was refused, as a label for drop counters."""

    TRUNCATED = "truncated"  # shorter than the smallest packet of its version
    BAD_VERSION = "bad_version"  # a version byte we do not know
    ENCRYPTION_MISMATCH = "encryption_mismatch"  # plaintext peer vs encrypted peer
    UNKNOWN_KEY = "unknown_key"  # sealed with a key we do not hold (rotation out of step?)
    AUTH_FAILED = "auth_failed"  # our key, but altered in transit or forged
    TOO_OLD = "too_old"  # older than max_age (or than the replay cache can vouch for)
    TOO_NEW = "too_new"  # dated beyond max_skew ahead of our clock
    REPLAYED = "replayed"  # a packet already accepted (or one we sent, reflected back)
    MALFORMED = "malformed"  # cannot be a packet at all (larger than any packet can be)


class EnvelopeError(Exception):
    """A refused packet: drop it and count `reason`; never worth more than a debug log."""

    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


def _millis(now: float) -> int:
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time in seconds, got {now!r}")
    return round(now * 1000)


class ReplayCache:
    """Nonces of accepted packets, each kept until the packet would be refused as too old.

    Memory is bounded by `capacity`: when full, the entry closest to expiry is forgotten and
    `floor_ms` rises to its expiry, so any packet that old is refused as too old rather than
    risk accepting a replay of the forgotten one. Under overload that drops the oldest
    packets, never lets a replay through.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.floor_ms = -(2**63)
        self._expiry: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._expiry

    def expire(self, now_ms: int) -> None:
        """Forget nonces whose packets are now refused by age alone."""
        heap = self._heap
        while heap and heap[0][0] < now_ms:
            _, nonce = heapq.heappop(heap)
            del self._expiry[nonce]

    def add(self, nonce: bytes, expiry_ms: int) -> None:
        """Remember `nonce` until `expiry_ms`; the caller checked it is not already known."""
        while len(self._expiry) >= self.capacity:
            evicted_ms, evicted = heapq.heappop(self._heap)
            del self._expiry[evicted]
            self.floor_ms = max(self.floor_ms, evicted_ms)
        self._expiry[nonce] = expiry_ms
        heapq.heappush(self._heap, (expiry_ms, nonce))


class PacketSealer:
    """Seals outgoing and opens incoming packets for one node; `keyring=None` means plaintext.

    Stateful because of the replay cache: use one per node, for both directions (it also
    remembers the nonces it sealed, so a packet of ours reflected back to us is refused).
    `now` is wall-clock seconds (or the simulator's virtual clock), the same clock on every node
    up to `max_skew`. A receiver clock stepped backwards reopens the window for packets the
    cache already forgot, so clocks should be slewed (NTP), not stepped.
    """

    def __init__(
        self,
        keyring: Keyring | None,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        max_skew: float = DEFAULT_MAX_SKEW,
        replay_capacity: int = DEFAULT_REPLAY_CAPACITY,
    ) -> None:
        if not (max_age > 0 and math.isfinite(max_age)):
            raise ValueError(f"max_age must be a positive number of seconds, got {max_age!r}")
        if not (max_skew >= 0 and math.isfinite(max_skew)):
            raise ValueError(f"max_skew must be a non-negative number of seconds, got {max_skew!r}")
        self.keyring = keyring
        self._max_age_ms = round(max_age * 1000)
        self._max_skew_ms = round(max_skew * 1000)
        self.replay_cache = ReplayCache(replay_capacity)

    @property
    def encrypted(self) -> bool:
        return self.keyring is not None

    @property
    def overhead(self) -> int:
        """Bytes `seal` adds to a payload in the current mode."""
        return ENCRYPTED_OVERHEAD if self.keyring is not None else PLAINTEXT_OVERHEAD

    def seal(self, payload: bytes, *, now: float, aad: bytes = b"") -> bytes:
        """The packet to send for `payload`; `aad` must be given the same to `open`."""
        if self.keyring is None:
            return bytes((VERSION_PLAINTEXT,)) + payload
        now_ms = _millis(now)
        kid, cipher = self.keyring.sealing_cipher()
        # Never from a seeded generator: a nonce reused under one key breaks GCM.
        nonce = os.urandom(NONCE_SIZE)
        header = bytes((VERSION_AES_GCM,)) + kid + nonce
        sealed = cipher.encrypt(nonce, _TIMESTAMP.pack(now_ms) + payload, header + aad)
        self.replay_cache.expire(now_ms)
        if nonce not in self.replay_cache:
            self.replay_cache.add(nonce, now_ms + self._max_age_ms)
        return header + sealed

    def open(self, data: bytes, *, now: float, aad: bytes = b"") -> bytes:
        """The payload of a received packet, or `EnvelopeError` saying why it was refused."""
        if len(data) > MAX_PACKET_SIZE:
            raise EnvelopeError(DropReason.MALFORMED, f"{len(data)} bytes is larger than a packet")
        if not data:
            raise EnvelopeError(DropReason.TRUNCATED, "empty packet")
        version = data[0]
        if self.keyring is None:
            if version == VERSION_PLAINTEXT:
                return data[1:]
            if version == VERSION_AES_GCM:
                raise EnvelopeError(
                    DropReason.ENCRYPTION_MISMATCH,
                    "encrypted packet but gossip encryption is off on this node",
                )
            raise EnvelopeError(DropReason.BAD_VERSION, f"unknown packet version 0x{version:02x}")
        if version == VERSION_PLAINTEXT:
            raise EnvelopeError(
                DropReason.ENCRYPTION_MISMATCH,
                "plaintext packet but gossip encryption is on on this node",
            )
        if version != VERSION_AES_GCM:
            raise EnvelopeError(DropReason.BAD_VERSION, f"unknown packet version 0x{version:02x}")
        if len(data) < ENCRYPTED_OVERHEAD:
            raise EnvelopeError(
                DropReason.TRUNCATED,
                f"{len(data)} bytes, an encrypted packet has at least {ENCRYPTED_OVERHEAD}",
            )
        return self._open_encrypted(self.keyring, data, now=now, aad=aad)

    def _open_encrypted(self, keyring: Keyring, data: bytes, *, now: float, aad: bytes) -> bytes:
        header = data[:HEADER_SIZE]
        kid = header[1 : 1 + KEY_ID_SIZE]
        nonce = header[1 + KEY_ID_SIZE :]
        plain: bytes | None = None
        tried = 0
        for cipher in keyring.opening_ciphers(kid):
            tried += 1
            try:
                plain = cipher.decrypt(nonce, data[HEADER_SIZE:], header + aad)
                break
            except InvalidTag:
                continue
        if plain is None:
            if tried == 0:
                raise EnvelopeError(
                    DropReason.UNKNOWN_KEY, f"sealed with key {kid.hex()}, which is not installed"
                )
            raise EnvelopeError(
                DropReason.AUTH_FAILED, f"does not authenticate with key {kid.hex()}"
            )

        sent_ms = _TIMESTAMP.unpack_from(plain)[0]
        now_ms = _millis(now)
        if sent_ms < now_ms - self._max_age_ms:
            raise EnvelopeError(DropReason.TOO_OLD, f"sent {(now_ms - sent_ms) / 1000:.3f} s ago")
        if sent_ms > now_ms + self._max_skew_ms:
            raise EnvelopeError(
                DropReason.TOO_NEW,
                f"dated {(sent_ms - now_ms) / 1000:.3f} s ahead of our clock; check clock sync",
            )
        cache = self.replay_cache
        cache.expire(now_ms)
        expiry_ms = sent_ms + self._max_age_ms
        if nonce in cache:
            raise EnvelopeError(
                DropReason.REPLAYED,
                "this packet was already accepted, or was sealed by this node and reflected back",
            )
        if expiry_ms <= cache.floor_ms:
            raise EnvelopeError(
                DropReason.TOO_OLD,
                f"sent {(now_ms - sent_ms) / 1000:.3f} s ago, older than the replay cache"
                f" (full at {cache.capacity} entries) can vouch for",
            )
        cache.add(nonce, expiry_ms)
        return plain[_TIMESTAMP.size :]
