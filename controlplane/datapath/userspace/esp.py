"""ESP (RFC 4303) with AES-GCM (RFC 4106) for the userspace data path: what the kernel's xfrm
does for Docker's encrypted overlays, done on the VXLAN datagram between two VTEPs.

Packet: SPI (4) | sequence number (4) | IV (8) | ciphertext | ICV (16). The AEAD nonce is the
SA's 4-byte salt followed by the 8-byte explicit IV, the additional data is SPI || sequence
number (no extended sequence numbers), and the plaintext is the protected payload, padding to
a 4-byte boundary (1, 2, 3, ... as RFC 4303 specifies), the pad length and the next header.

Transport mode: the protected payload is the VXLAN UDP datagram (UDP header, VXLAN header,
inner frame) and the next header is UDP (17). Without privileges the outer IP header cannot be
protocol 50, so the ESP packet travels as a UDP datagram to the peer's data path port (the
encapsulation RFC 3948 uses for NAT traversal): an observer sees UDP to 4789 carrying ESP.

Explicit IVs count up from a random 64-bit start per SA: unique for the SA's life (RFC 4106
requires uniqueness per key, not unpredictability) and unlikely to repeat after a restart.
Inbound, the anti-replay window (64 packets by default, RFC 4303 section 3.4.3) is checked
before decryption and moved only after the ICV verified, so forgeries cannot shift it.
"""

from __future__ import annotations

import os
import socket
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controlplane.datapath.program import SecurityAssociation

HEADER = 8  # SPI and sequence number
IV_SIZE = 8
ICV_SIZE = 16
OVERHEAD_MAX = HEADER + IV_SIZE + 3 + 2 + ICV_SIZE  # with the worst-case padding
REPLAY_WINDOW = 64
_SEQ_LIMIT = 1 << 32
_IV_MASK = (1 << 64) - 1
_PADDING = [bytes(range(1, size + 1)) for size in range(4)]  # RFC 4303's 1, 2, 3, ... by size
_SPI_AND_SEQ = struct.Struct("!II")
_SHORTEST = HEADER + IV_SIZE + ICV_SIZE


def _padding(size: int) -> bytes:
    return _PADDING[size] if size < len(_PADDING) else bytes(range(1, size + 1))


class EspError(ValueError):
    """An ESP packet that must be dropped; `reason` is a short name for the drop counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def spi_of(packet: bytes) -> int:
    """The SPI of an ESP packet (which SA to open it with)."""
    if len(packet) < _SHORTEST:
        raise _too_short(packet)
    return int.from_bytes(packet[:4])


def _too_short(packet: bytes) -> EspError:
    return EspError(
        "esp_truncated", f"ESP packet of {len(packet)} bytes is shorter than its header"
    )


def _cipher(sa: SecurityAssociation) -> AESGCM:
    if len(sa.key) != 16 or len(sa.salt) != 4:
        raise ValueError(
            f"SA {sa.spi:#010x} has a {len(sa.key)}-byte key and a {len(sa.salt)}-byte salt; "
            "rfc4106(gcm(aes)) with AES-128 needs 16 and 4"
        )
    return AESGCM(sa.key)


class OutboundSA:
    """Seals payloads for one peer under one SA, numbering them from 1."""

    def __init__(self, sa: SecurityAssociation) -> None:
        self.sa = sa
        self._aead = _cipher(sa)
        self._spi = sa.spi.to_bytes(4)
        self._salt = sa.salt
        self._iv_base = int.from_bytes(os.urandom(IV_SIZE))
        self.seq = 0

    def seal(self, payload: bytes, next_header: int, prefix: bytes = b"") -> bytes:
        """The ESP packet protecting `prefix` + `payload` (a header kept apart from what it
        heads: they are joined once, with the padding)."""
        if self.seq + 1 >= _SEQ_LIMIT:
            raise EspError(
                "seq_exhausted",
                f"SA {self.sa.spi:#010x} used all 2^32 sequence numbers; rotate the data path keys",
            )
        self.seq = seq = self.seq + 1
        header = self._spi + seq.to_bytes(4)
        iv = ((self._iv_base + seq) & _IV_MASK).to_bytes(IV_SIZE)
        pad = -(len(prefix) + len(payload) + 2) % 4
        plaintext = b"".join((prefix, payload, _PADDING[pad], bytes((pad, next_header))))
        return b"".join((header, iv, self._aead.encrypt(self._salt + iv, plaintext, header)))


class InboundSA:
    """Opens packets from one peer under one SA, refusing replays and forgeries."""

    def __init__(self, sa: SecurityAssociation, window: int = REPLAY_WINDOW) -> None:
        self.sa = sa
        self.src_raw = socket.inet_aton(sa.src)  # the peer, for the inner UDP pseudo-header
        self._aead = _cipher(sa)
        self._salt = sa.salt
        self._window = window
        self._window_mask = (1 << window) - 1
        self._top = 0  # highest sequence number accepted
        self._seen = 0  # bit i set: sequence number top - i was accepted

    def open(self, packet: bytes) -> tuple[int, bytes]:
        """(next header, payload) of a packet sealed by the peer's matching `OutboundSA`."""
        if len(packet) < _SHORTEST:
            raise _too_short(packet)
        spi, seq = _SPI_AND_SEQ.unpack_from(packet)
        if spi != self.sa.spi:
            raise EspError("esp_wrong_sa", f"SPI {spi:#010x} is not {self.sa.spi:#010x}")
        if seq <= self._top:  # a newer number is never a replay: no call for the usual case
            self._check_replay(seq)
        iv = packet[HEADER : HEADER + IV_SIZE]
        try:
            # A memoryview: the ciphertext is read where it lies, not copied first.
            plaintext = self._aead.decrypt(
                self._salt + iv, memoryview(packet)[HEADER + IV_SIZE :], packet[:HEADER]
            )
        except InvalidTag:
            raise EspError(
                "esp_auth_failed",
                f"ESP packet {seq} under SPI {self.sa.spi:#010x} failed authentication "
                "(wrong key or tampered)",
            ) from None
        if len(plaintext) < 2:
            raise EspError("esp_malformed", "ESP plaintext has no pad length and next header")
        pad, next_header = plaintext[-2], plaintext[-1]
        if pad > len(plaintext) - 2 or plaintext[-2 - pad : -2] != _padding(pad):
            raise EspError("esp_malformed", f"ESP padding of {pad} bytes is not 1, 2, 3, ...")
        self._accept(seq)
        return next_header, plaintext[: -2 - pad]

    def _check_replay(self, seq: int) -> None:
        if seq == 0:
            raise EspError("esp_replay", "ESP sequence number 0 is never sent (RFC 4303)")
        age = self._top - seq
        if age >= self._window or self._seen >> age & 1:
            raise EspError(
                "esp_replay",
                f"ESP packet {seq} under SPI {self.sa.spi:#010x} is a replay or older than the "
                f"{self._window}-packet window",
            )

    def _accept(self, seq: int) -> None:
        if seq > self._top:
            shift = seq - self._top
            self._seen = ((self._seen << shift) | 1) & self._window_mask
            self._top = seq
        else:
            self._seen |= 1 << (self._top - seq)
