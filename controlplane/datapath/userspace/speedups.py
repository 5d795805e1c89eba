"""The per-segment hot spots of the userspace data path, in C when the optional extension
`_speedups` was built (`setup.py`; it needs a C compiler and the Python headers), else in
pure Python with the same results (tests compare the two):

- `word_sum`: the RFC 1071 ones' complement sum. Every TCP payload is summed twice (sender
  and receiver); in Python that was about a third of the CPU time of a segment.
- `tcp_in_ipv4`: the common received packet (IPv4 without options, not a fragment, carrying
  TCP, both checksums right) parsed in one call, or None for anything else, which then goes
  through `frames.IPv4.parse` and `frames.Tcp.parse` (they name what is wrong). Without the
  extension it is None: every packet takes that general path.
- `tcp_ipv4_frame`: the Ethernet frame of a TCP segment without options, IPv4 and TCP
  headers with their checksums, in one call and one copy; None without the extension, and
  `frames.tcp_ipv4_frame` is then its pure-Python twin.

`SWARMLAB_SPEEDUPS=off` in the environment forces the pure-Python ones (tests, and the
benchmark's comparison)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DISABLE_ENV = "SWARMLAB_SPEEDUPS"

# tcp_in_ipv4(frame, offset, segment_type) -> (src, dst, segment_type(fields...)) | None
TcpInIpv4 = Callable[[bytes, int, Any], tuple[bytes, bytes, Any] | None]
# tcp_ipv4_frame(dst_mac, src_mac, src_ip, dst_ip, ident, src_port, dst_port, seq, ack,
# flags, window, payload) -> bytes
TcpIpv4Frame = Callable[
    [bytes, bytes, bytes, bytes, int, int, int, int, int, int, int, bytes], bytes
]


def word_sum_python(data: bytes) -> int:
    """The 16-bit ones' complement sum of `data`'s big-endian 16-bit words, a trailing odd
    byte padded with zero: 0 only when every byte is 0, else 1..0xFFFF. Because 2**16 is 1
    modulo 0xFFFF, the big-endian integer of the bytes (made in C by `int.from_bytes`) is
    congruent to the sum; the modulo folds it (0xFFFF comes out as 0: put back)."""
    value = int.from_bytes(data)
    if len(data) & 1:
        value <<= 8
    folded = value % 0xFFFF
    return folded if folded or not value else 0xFFFF


def _select() -> tuple[Callable[[bytes], int], TcpInIpv4 | None, TcpIpv4Frame | None, str]:
    if os.environ.get(DISABLE_ENV) == "off":
        return word_sum_python, None, None, f"python ({DISABLE_ENV}=off)"
    try:
        from controlplane.datapath.userspace import _speedups
    except ImportError as err:
        return word_sum_python, None, None, f"python (the C extension is not built: {err})"
    return _speedups.word_sum, _speedups.tcp_in_ipv4, _speedups.tcp_ipv4_frame, "c"


# `word_sum(data)`: exactly as `word_sum_python`. Sums of parts that each start at an even
# offset add up (and fold with `frames.checksum_of_sum`).
word_sum, tcp_in_ipv4, tcp_ipv4_frame, IMPLEMENTATION = _select()

_reported = False


def report_implementation() -> None:
    """Log once per process which implementation is in use; a warning when the C one could
    not be loaded, since a TCP segment then costs about twice the CPU."""
    global _reported
    if _reported:
        return
    _reported = True
    if IMPLEMENTATION == "c":
        log.info("event=datapath_speedups impl=c")
    else:
        log.warning(
            "event=datapath_speedups impl=python detail=%r hint=%r",
            IMPLEMENTATION,
            "install a C compiler and the Python headers (gcc, python3-dev), then reinstall "
            "(touch setup.py; make .venv/.installed) for the faster C path",
        )
