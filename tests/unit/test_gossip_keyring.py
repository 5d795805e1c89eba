"""Gossip keyring and packet envelope: rotation, tampering, truncation, replay, fuzzing."""

from __future__ import annotations

import hashlib
import random

import pytest

from controlplane.gossip.envelope import (
    ENCRYPTED_OVERHEAD,
    HEADER_SIZE,
    PLAINTEXT_OVERHEAD,
    VERSION_AES_GCM,
    VERSION_PLAINTEXT,
    DropReason,
    EnvelopeError,
    PacketSealer,
)
from controlplane.gossip.keyring import KEY_SIZES, Keyring, generate_key, key_id

T0 = 1_700_000_000.0
K1, K2, K3 = (bytes([n]) * 16 for n in (1, 2, 3))
PAYLOAD = b"\x0aping from node-1"


def pair(sender_ring: Keyring | None, receiver_ring: Keyring | None) -> tuple[PacketSealer, ...]:
    return PacketSealer(sender_ring), PacketSealer(receiver_ring)


def refused(sealer: PacketSealer, data: bytes, now: float = T0, aad: bytes = b"") -> DropReason:
    with pytest.raises(EnvelopeError) as info:
        sealer.open(data, now=now, aad=aad)
    return info.value.reason


# --- keyring ---------------------------------------------------------------------------------


def test_keyring_orders_primary_first_and_rotates() -> None:
    ring = Keyring(K1)
    ring.install(K2)
    ring.install(K2)  # idempotent
    assert ring.keys == (K1, K2)
    ring.use(K2)
    assert ring.primary == K2
    assert ring.keys == (K2, K1)
    ring.remove(K1)
    assert list(ring.keys) == [K2]
    assert K1 not in ring and K2 in ring and len(ring) == 1


@pytest.mark.parametrize("size", [0, 1, 15, 17, 23, 31, 33, 64])
def test_keyring_refuses_keys_of_the_wrong_size(size: int) -> None:
    with pytest.raises(ValueError, match=rf"16, 24 or 32 bytes.*got {size} bytes"):
        Keyring(b"k" * size)
    ring = Keyring(K1)
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        ring.install(b"k" * size)
    assert ring.keys == (K1,)


def test_keyring_refuses_text_keys() -> None:
    with pytest.raises(TypeError, match="must be bytes, got str"):
        Keyring("0123456789abcdef")  # type: ignore[arg-type]


def test_keyring_refuses_removing_the_primary_or_an_unknown_key() -> None:
    ring = Keyring(K1, [K2])
    with pytest.raises(ValueError, match="primary key"):
        ring.remove(K1)
    with pytest.raises(ValueError, match="not installed"):
        ring.remove(K3)
    with pytest.raises(ValueError, match="not installed; install it first"):
        ring.use(K3)
    assert ring.keys == (K1, K2)


def test_keyring_never_shows_key_material() -> None:
    ring = Keyring(K1, [K2])
    text = repr(ring)
    assert key_id(K1).hex() in text and key_id(K2).hex() in text
    assert K1.hex() not in text and "\\x01" not in text
    with pytest.raises(ValueError) as info:
        ring.remove(K1)
    assert K1.hex() not in str(info.value)


def test_key_id_is_a_sha256_prefix_and_generated_keys_are_distinct() -> None:
    assert key_id(K1) == hashlib.sha256(K1).digest()[:4]
    assert len(generate_key()) == 16
    assert generate_key() != generate_key()
    assert {len(generate_key(size)) for size in KEY_SIZES} == set(KEY_SIZES)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", KEY_SIZES)
def test_round_trip_with_each_key_size(size: int) -> None:
    key = generate_key(size)
    sender, receiver = pair(Keyring(key), Keyring(key))
    for payload in (b"", PAYLOAD, bytes(range(256)) * 5):
        packet = sender.seal(payload, now=T0)
        assert len(packet) == len(payload) + ENCRYPTED_OVERHEAD == len(payload) + sender.overhead
        assert packet[0] == VERSION_AES_GCM
        assert packet[1:5] == key_id(key)
        assert payload not in packet or not payload
        assert receiver.open(packet, now=T0 + 0.5) == payload


def test_overhead_leaves_room_in_a_1400_byte_datagram() -> None:
    sealer = PacketSealer(Keyring(K1))
    assert ENCRYPTED_OVERHEAD == 41
    packet = sealer.seal(b"x" * (1400 - sealer.overhead), now=T0)
    assert len(packet) == 1400


def test_each_packet_gets_a_fresh_nonce() -> None:
    sealer = PacketSealer(Keyring(K1))
    packets = {sealer.seal(PAYLOAD, now=T0) for _ in range(100)}
    assert len({p[5:HEADER_SIZE] for p in packets}) == 100


def test_aad_must_match() -> None:
    sender, receiver = pair(Keyring(K1), Keyring(K1))
    packet = sender.seal(PAYLOAD, now=T0, aad=b"udp")
    assert refused(receiver, packet, aad=b"tcp") is DropReason.AUTH_FAILED
    assert receiver.open(packet, now=T0, aad=b"udp") == PAYLOAD


# --- rotation and wrong keys -----------------------------------------------------------------


def test_rotation_old_key_opens_new_primary_seals_removed_key_refused() -> None:
    a_ring, b_ring = Keyring(K1), Keyring(K1)
    a, b = pair(a_ring, b_ring)
    old_packet = a.seal(b"old", now=T0)

    # Step 1: every node installs K2; K1 still seals.
    a_ring.install(K2)
    b_ring.install(K2)
    assert a.seal(b"x", now=T0)[1:5] == key_id(K1)

    # Step 2: a switches to K2 first; b (still sealing with K1) and a understand each other.
    a_ring.use(K2)
    new_packet = a.seal(b"new", now=T0)
    assert new_packet[1:5] == key_id(K2)
    assert b.open(new_packet, now=T0) == b"new"
    assert a.open(b.seal(b"from b", now=T0), now=T0) == b"from b"

    # Step 3: b switches too, then both remove K1: K1 packets are refused.
    b_ring.use(K2)
    b_ring.remove(K1)
    a_ring.remove(K1)
    assert refused(b, old_packet) is DropReason.UNKNOWN_KEY
    assert a.open(b.seal(b"k2", now=T0), now=T0) == b"k2"


def test_old_key_still_opens_before_removal() -> None:
    sender = PacketSealer(Keyring(K1))
    receiver = PacketSealer(Keyring(K2, [K1]))
    assert receiver.open(sender.seal(PAYLOAD, now=T0), now=T0) == PAYLOAD


def test_wrong_key_is_an_unknown_key() -> None:
    sender, receiver = pair(Keyring(K1), Keyring(K2))
    assert refused(receiver, sender.seal(PAYLOAD, now=T0)) is DropReason.UNKNOWN_KEY


def test_keys_sharing_an_id_are_both_tried() -> None:
    """A 32-bit id collides by the birthday bound after ~2**16 keys; find such a pair."""
    seen: dict[bytes, bytes] = {}
    for n in range(1_000_000):
        key = hashlib.sha256(n.to_bytes(8, "big")).digest()[:16]
        kid = key_id(key)
        if kid in seen:
            first, second = seen[kid], key
            break
        seen[kid] = key
    else:
        pytest.fail("no key id collision found")
    sender = PacketSealer(Keyring(second))
    receiver = PacketSealer(Keyring(first, [second]))
    assert receiver.open(sender.seal(PAYLOAD, now=T0), now=T0) == PAYLOAD
    stranger = PacketSealer(Keyring(first, [K1]))
    assert refused(stranger, sender.seal(PAYLOAD, now=T0)) is DropReason.AUTH_FAILED


# --- damage ----------------------------------------------------------------------------------


def test_truncated_at_every_length() -> None:
    sender = PacketSealer(Keyring(K1))
    packet = sender.seal(PAYLOAD, now=T0)
    for length in range(len(packet)):
        receiver = PacketSealer(Keyring(K1))
        reason = refused(receiver, packet[:length])
        if length < ENCRYPTED_OVERHEAD:
            assert reason is DropReason.TRUNCATED, length
        else:
            assert reason is DropReason.AUTH_FAILED, length


def test_bit_flips_anywhere_are_refused() -> None:
    sender = PacketSealer(Keyring(K1))
    packet = sender.seal(PAYLOAD, now=T0)
    receiver = PacketSealer(Keyring(K1))
    for bit in range(len(packet) * 8):
        damaged = bytearray(packet)
        damaged[bit // 8] ^= 1 << (bit % 8)
        reason = refused(receiver, bytes(damaged))
        if bit < 8:  # the version byte
            expected = {DropReason.BAD_VERSION, DropReason.ENCRYPTION_MISMATCH}
        elif bit < 8 * HEADER_SIZE - 8 * 12:  # the key id
            expected = {DropReason.UNKNOWN_KEY}
        else:
            expected = {DropReason.AUTH_FAILED}
        assert reason in expected, (bit, reason)
    assert len(receiver.replay_cache) == 0
    assert receiver.open(packet, now=T0) == PAYLOAD  # the intact packet still opens


def test_unknown_version_is_bad_version() -> None:
    packet = PacketSealer(Keyring(K1)).seal(PAYLOAD, now=T0)
    for sealer in (PacketSealer(Keyring(K1)), PacketSealer(None)):
        assert refused(sealer, b"\x7f" + packet[1:]) is DropReason.BAD_VERSION
        assert refused(sealer, b"") is DropReason.TRUNCATED


# --- replay and freshness --------------------------------------------------------------------


def test_replay_of_the_same_packet_is_refused() -> None:
    sender, receiver = pair(Keyring(K1), Keyring(K1))
    packet = sender.seal(PAYLOAD, now=T0)
    assert receiver.open(packet, now=T0 + 1) == PAYLOAD
    assert refused(receiver, packet, now=T0 + 2) is DropReason.REPLAYED
    assert refused(receiver, packet, now=T0 + 29) is DropReason.REPLAYED
    assert refused(receiver, packet, now=T0 + 31) is DropReason.TOO_OLD


def test_own_packet_reflected_back_is_refused() -> None:
    sealer = PacketSealer(Keyring(K1))
    packet = sealer.seal(PAYLOAD, now=T0)
    assert refused(sealer, packet) is DropReason.REPLAYED


def test_too_old_and_too_new_are_refused() -> None:
    sender = PacketSealer(Keyring(K1))
    receiver = PacketSealer(Keyring(K1), max_age=30, max_skew=5)
    assert refused(receiver, sender.seal(PAYLOAD, now=T0 - 30.001)) is DropReason.TOO_OLD
    assert refused(receiver, sender.seal(PAYLOAD, now=T0 + 5.001)) is DropReason.TOO_NEW
    # At the edges of the window, and with the sender's clock behind or ahead within bounds.
    assert receiver.open(sender.seal(PAYLOAD, now=T0 - 30), now=T0) == PAYLOAD
    assert receiver.open(sender.seal(PAYLOAD, now=T0 + 5), now=T0) == PAYLOAD


def test_window_is_configurable() -> None:
    sender = PacketSealer(Keyring(K1))
    receiver = PacketSealer(Keyring(K1), max_age=2, max_skew=0)
    assert refused(receiver, sender.seal(PAYLOAD, now=T0 - 3)) is DropReason.TOO_OLD
    assert refused(receiver, sender.seal(PAYLOAD, now=T0 + 0.01)) is DropReason.TOO_NEW
    assert receiver.open(sender.seal(PAYLOAD, now=T0 - 1.5), now=T0) == PAYLOAD
    with pytest.raises(ValueError, match="max_age"):
        PacketSealer(Keyring(K1), max_age=0)
    with pytest.raises(ValueError, match="max_skew"):
        PacketSealer(Keyring(K1), max_skew=-1)


def test_replay_cache_forgets_by_age() -> None:
    sender, receiver = pair(Keyring(K1), Keyring(K1))
    for i in range(100):
        receiver.open(sender.seal(PAYLOAD, now=T0 + i), now=T0 + i)
    # Only packets of the last max_age seconds are remembered.
    assert len(receiver.replay_cache) <= 32
    receiver.open(sender.seal(PAYLOAD, now=T0 + 1000), now=T0 + 1000)
    assert len(receiver.replay_cache) == 1


def test_replay_cache_stays_bounded_and_still_refuses_replays() -> None:
    sender = PacketSealer(Keyring(K1))
    receiver = PacketSealer(Keyring(K1), replay_capacity=64)
    packets = [sender.seal(PAYLOAD + bytes([i % 256]), now=T0 + i / 1000) for i in range(1000)]
    for packet in packets:
        receiver.open(packet, now=T0 + 1)
        assert len(receiver.replay_cache) <= 64
    # Every packet is refused the second time, forgotten ones as too old (the cache cannot
    # vouch for them), remembered ones as replays: none gets through.
    reasons = {refused(receiver, packet, now=T0 + 1) for packet in packets}
    assert reasons == {DropReason.TOO_OLD, DropReason.REPLAYED}
    # Newer packets are still accepted.
    assert receiver.open(sender.seal(PAYLOAD, now=T0 + 1), now=T0 + 1) == PAYLOAD
    assert len(receiver.replay_cache) <= 64


# --- plaintext mode --------------------------------------------------------------------------


def test_plaintext_round_trip() -> None:
    sender, receiver = pair(None, None)
    packet = sender.seal(PAYLOAD, now=T0)
    assert packet == bytes([VERSION_PLAINTEXT]) + PAYLOAD
    assert len(packet) == len(PAYLOAD) + PLAINTEXT_OVERHEAD == len(PAYLOAD) + sender.overhead
    assert receiver.open(packet, now=T0) == PAYLOAD
    assert receiver.open(packet, now=T0) == PAYLOAD  # no replay protection without a key
    assert not sender.encrypted


def test_plaintext_and_encrypted_nodes_refuse_each_other() -> None:
    plain, encrypted = PacketSealer(None), PacketSealer(Keyring(K1))
    with pytest.raises(EnvelopeError, match="encryption is on") as info:
        encrypted.open(plain.seal(PAYLOAD, now=T0), now=T0)
    assert info.value.reason is DropReason.ENCRYPTION_MISMATCH
    with pytest.raises(EnvelopeError, match="encryption is off") as info:
        plain.open(encrypted.seal(PAYLOAD, now=T0), now=T0)
    assert info.value.reason is DropReason.ENCRYPTION_MISMATCH


# --- fuzzing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("keyring", [Keyring(K1, [K2]), None], ids=["encrypted", "plaintext"])
def test_fuzz_random_bytes_raise_only_envelope_errors(keyring: Keyring | None) -> None:
    rng = random.Random(7946)
    receiver = PacketSealer(keyring, replay_capacity=128)
    valid = PacketSealer(Keyring(K1)).seal(PAYLOAD, now=T0)
    headers = [b"", bytes([VERSION_AES_GCM]), valid[:5], valid[:HEADER_SIZE]]
    for i in range(20_000):
        kind = i % 3
        if kind == 0:  # random bytes behind a plausible header
            data = rng.choice(headers) + rng.randbytes(rng.randrange(0, 200))
        elif kind == 1:  # a valid packet with random damage
            damaged = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            data = bytes(damaged[: rng.randrange(len(damaged) + 1)])
        else:
            data = rng.randbytes(rng.randrange(0, 1500))
        now = rng.choice([T0, 0.0, -1e9, 1e12])
        try:
            receiver.open(data, now=now, aad=rng.choice([b"", b"udp"]))
        except EnvelopeError as err:
            assert isinstance(err.reason, DropReason)
