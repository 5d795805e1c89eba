"""The RFC 1071 ones' complement sum, in C when the optional extension `_checksum` was built
(`setup.py`; it needs a C compiler and the Python headers), else in pure Python. Every TCP
payload is summed twice (sender and receiver); in Python that was about a third of the CPU time
of a segment, in C it is a few percent. Both give the same numbers (tests compare them over
random data); `SWARMLAB_CHECKSUM=python` in the environment forces the pure-Python one (tests,
and the benchmark's comparison)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

FORCE_PYTHON_ENV = "SWARMLAB_CHECKSUM"


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


def _select() -> tuple[Callable[[bytes], int], str]:
    if os.environ.get(FORCE_PYTHON_ENV) == "python":
        return word_sum_python, f"python ({FORCE_PYTHON_ENV}=python)"
    try:
        from controlplane.datapath.userspace._checksum import word_sum as word_sum_c
    except ImportError as err:
        return word_sum_python, f"python (the C extension is not built: {err})"
    return word_sum_c, "c"


# `word_sum(data) -> int`: the ones' complement sum, exactly as `word_sum_python` gives it.
word_sum, IMPLEMENTATION = _select()

_reported = False


def report_implementation() -> None:
    """Log once per process which sum is in use; a warning when the C one could not be
    loaded, since the data path is then about a third slower per segment."""
    global _reported
    if _reported:
        return
    _reported = True
    if IMPLEMENTATION == "c":
        log.info("event=checksum_implementation impl=c")
    else:
        log.warning(
            "event=checksum_implementation impl=python detail=%r hint=%r",
            IMPLEMENTATION,
            "install a C compiler and the Python headers (gcc, python3-dev), then reinstall "
            "(touch setup.py; make .venv/.installed) for the faster C sum",
        )
