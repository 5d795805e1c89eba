"""The `swarmlab` command line run as a user runs it, in a subprocess, against one lab
directory: for the tests of the lab commands (up, status, kill, restart, down, ...)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


async def swarmlab(lab_dir: Path, *args: str) -> str:
    """Its standard output; a failure names the command and gives its standard error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controlplane.cli",
        *args,
        "--lab-dir",
        str(lab_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode == 0, f"swarmlab {' '.join(args)}: {err.decode()}"
    return out.decode()
