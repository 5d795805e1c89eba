"""What this machine offers, as dockerd reports it (`docker info` NCPU and MemTotal, a node's
Description.Resources): the scheduler places tasks' reservations against it. Every node of a
lab runs on the same machine, so each reports all of it, as Docker-in-Docker nodes do."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class Machine:
    cpus: int
    memory_bytes: int  # 0 when the OS does not say

    @property
    def nano_cpus(self) -> int:
        return self.cpus * 1_000_000_000


def this_machine() -> Machine:
    return Machine(cpus=os.cpu_count() or 1, memory_bytes=_memory_bytes())


def _memory_bytes() -> int:
    """MemTotal of /proc/meminfo (Linux), or the physical pages times their size."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0
