"""What a process ignores, read from /proc: kernel containers must start with every signal at
its default action (as runc resets a container init's), whatever their node ignores."""

from __future__ import annotations

import signal
from pathlib import Path

# signals the C library keeps for itself (glibc's 32 and 33): its sigaction refuses to change
# them, so `env --default-signal` cannot reset them (runc's raw syscalls can); none is ever
# sent to a container
LIBC_RESERVED = frozenset(range(32, signal.SIGRTMIN))


def ignored_signals(pid: int) -> set[int]:
    """The signals process `pid` ignores (its SigIgn mask in /proc/<pid>/status), less the C
    library's own."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            ignored = {number for number in range(1, 65) if mask & (1 << (number - 1))}
            return ignored - LIBC_RESERVED
    raise AssertionError(f"no SigIgn line for process {pid}")
