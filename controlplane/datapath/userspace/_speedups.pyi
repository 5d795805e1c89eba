# The optional C extension built from _speedups.c (see speedups.py, which falls back to Python).
from typing import Any

def word_sum(data: bytes, /) -> int:
    """The 16-bit ones' complement sum of data's big-endian 16-bit words (RFC 1071)."""

def tcp_in_ipv4(frame: bytes, offset: int, segment_type: Any, /) -> tuple[bytes, bytes, Any] | None:
    """(src, dst, segment) of a well-formed IPv4/TCP packet at frame[offset:], else None."""

def tcp_ipv4_frame(
    dst_mac: bytes,
    src_mac: bytes,
    src_ip: bytes,
    dst_ip: bytes,
    ident: int,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: bytes,
    /,
) -> bytes:
    """The Ethernet frame of a TCP segment (no options) in an IPv4 packet, checksums in."""
