"""ESP packets that authenticate yet carry a malformed trailer (a peer's bug, not an attacker:
only the key holder can make them) are refused as `esp_malformed` without moving the replay
window; an SA that used all 2^32 sequence numbers refuses to seal rather than wrap."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controlplane.datapath.program import SecurityAssociation
from controlplane.datapath.userspace.esp import EspError, InboundSA, OutboundSA
from controlplane.datapath.userspace.frames import PROTO_UDP

KEY = bytes(range(16))
SALT = b"\x01\x02\x03\x04"
SPI = 0x0BAD0E5B


def sa(direction: str) -> SecurityAssociation:
    return SecurityAssociation(direction, "127.77.229.1", "127.77.229.2", SPI, KEY, SALT, 1)  # type: ignore[arg-type]


def sealed_by_hand(seq: int, plaintext: bytes) -> bytes:
    """What a peer holding the key would send with this very plaintext (trailer and all)."""
    header = SPI.to_bytes(4) + seq.to_bytes(4)
    iv = seq.to_bytes(8)
    return header + iv + AESGCM(KEY).encrypt(SALT + iv, plaintext, header)


@pytest.mark.parametrize(
    ("plaintext", "problem"),
    [
        (b"", "no pad length and next header"),
        (b"\x11", "no pad length and next header"),
        (b"payload" + bytes((9, PROTO_UDP)), "padding of 9 bytes"),  # more pad than bytes
        (b"payload" + b"\x01\x03" + bytes((2, PROTO_UDP)), "padding of 2 bytes"),  # not 1, 2
    ],
)
def test_an_authentic_packet_with_a_malformed_trailer_is_refused(
    plaintext: bytes, problem: str
) -> None:
    inbound = InboundSA(sa("in"))
    with pytest.raises(EspError, match=problem) as refused:
        inbound.open(sealed_by_hand(1, plaintext))
    assert refused.value.reason == "esp_malformed"
    # Sequence number 1 was not taken: the peer's well-formed packet 1 still opens.
    assert inbound.open(sealed_by_hand(1, b"ok" + bytes((0, PROTO_UDP)))) == (PROTO_UDP, b"ok")


def test_an_sa_out_of_sequence_numbers_refuses_to_seal() -> None:
    outbound = OutboundSA(sa("out"))
    outbound.seq = 2**32 - 2
    packet = outbound.seal(b"last", PROTO_UDP)  # number 2^32 - 1, the last there is
    assert InboundSA(sa("in")).open(packet) == (PROTO_UDP, b"last")
    with pytest.raises(EspError, match="used all 2\\^32 sequence numbers") as refused:
        outbound.seal(b"one more", PROTO_UDP)
    assert refused.value.reason == "seq_exhausted"
