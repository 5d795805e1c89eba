"""What the benches need around a real dockerd they started as a reference: finding the
containerd it spawned, and leaving nothing behind once it is stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def containerd_pid(data_dir: Path) -> int | None:
    """The containerd our dockerd in `data_dir` started (it names our exec root), if it runs."""
    pid_file = data_dir / "exec" / "containerd" / "containerd.pid"
    try:
        pid = int(pid_file.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(data_dir).encode() in command else None


def clean_up_after(data_dir: Path, containerd: int | None) -> None:
    """Once our dockerd has stopped: SIGTERM to its containerd (`containerd`, read while the
    dockerd ran) if it outlived it, then unmount whatever it left mounted under `data_dir`."""
    if containerd is not None and containerd_pid(data_dir) == containerd:
        with contextlib.suppress(ProcessLookupError):
            os.kill(containerd, signal.SIGTERM)
    prefix = f" {data_dir}/"
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    for line in sorted((m for m in mounts if prefix in m), reverse=True):
        subprocess.run(["umount", "-l", line.split()[1]], check=False)
