"""Linux UDP segmentation offloads for the VTEP socket: many datagrams per system call.

GSO (`UDP_SEGMENT`, Linux 4.18): one `sendmsg` carries several datagrams for one destination,
laid end to end, all of one size but the last (which may be shorter); the kernel cuts them
apart, so each still travels as its own UDP datagram. GRO (`UDP_GRO`, Linux 5.0): one
`recvmsg` may return several datagrams of one sender coalesced the same way, with a control
message giving their size. Both are probed once per socket; where the kernel has neither the
backend sends and reads one datagram per call, as before.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

UDP_SEGMENT = 103  # linux/udp.h
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS (64 before Linux 6.10, 128 since)
GSO_MAX_BYTES = 65535 - 20 - 8  # one IPv4 datagram's payload: the super-datagram's limit
_INT = struct.Struct("=i")  # the GRO control message's payload: a C int, host byte order
GRO_CONTROL_SPACE = socket.CMSG_SPACE(_INT.size)


@dataclass(frozen=True)
class Offloads:
    """What the kernel offers this socket: GSO on send, GRO on receive."""

    gso: bool
    gro: bool


def enable_offloads(sock: socket.socket, wanted: bool = True) -> Offloads:
    """Turn GRO on for `sock` and find whether GSO works, once, at start. A kernel without
    them answers the socket option with ENOPROTOOPT (or EINVAL): that one is left off."""
    if not wanted:
        return Offloads(gso=False, gro=False)
    try:
        sock.getsockopt(socket.IPPROTO_UDP, UDP_SEGMENT)
        gso = True
    except OSError:
        gso = False
    try:
        sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
        gro = True
    except OSError:
        gro = False
    return Offloads(gso=gso, gro=gro)


def gso_runs(datagrams: Sequence[bytes]) -> Iterator[tuple[int, int]]:
    """Cut a destination's queue, in order, into runs one GSO send can carry: [start, end)
    ranges of datagrams of one size, but the last which may be shorter, at most
    GSO_MAX_SEGMENTS of them and GSO_MAX_BYTES in all. A run of one is a plain send."""
    start, count = 0, len(datagrams)
    while start < count:
        size = len(datagrams[start])
        limit = min(count, start + GSO_MAX_SEGMENTS, start + max(1, GSO_MAX_BYTES // size))
        end = start + 1
        while end < limit and len(datagrams[end]) == size:
            end += 1
        if end < limit and len(datagrams[end]) < size:
            end += 1  # a shorter one may close the run
        yield start, end
        start = end


def gso_control(segment_size: int) -> list[tuple[int, int, bytes]]:
    """The control message telling the kernel where to cut a GSO send."""
    return [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("=H", segment_size))]


def gro_segment_size(ancdata: Sequence[tuple[int, int, bytes]]) -> int | None:
    """The size of the datagrams a GRO read coalesced, from its control message; None when
    the read returned one datagram as it came."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_UDP and kind == UDP_GRO and len(data) >= _INT.size:
            size: int = _INT.unpack_from(data)[0]
            return size
    return None


def split_coalesced(data: bytes, segment_size: int | None) -> list[bytes]:
    """The datagrams of one GRO read: `segment_size` bytes each, the last the rest."""
    if segment_size is None or segment_size <= 0 or len(data) <= segment_size:
        return [data]
    return [data[i : i + segment_size] for i in range(0, len(data), segment_size)]
