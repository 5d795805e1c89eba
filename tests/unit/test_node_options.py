"""`swarmlab node run` options of the platform and key issue: bad values are refused with a
message naming the option and what to give instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.node import NodeOptions, SwarmNode
from controlplane.process import NodeError


def test_an_unknown_platform_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NodeError, match="unknown platform 'macos'; use one of linux, windows"):
        SwarmNode(NodeOptions(tmp_path, "127.77.142.1", platform="macos"))


def test_a_non_positive_rotation_interval_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NodeError, match="key rotation interval must be a positive"):
        SwarmNode(NodeOptions(tmp_path, "127.77.142.1", key_rotation_interval=0))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--key-rotation-interval", "0"], "'0': give a positive number of seconds"),
        (["--key-rotation-interval", "soon"], "'soon' is not a number of seconds"),
        (["--platform", "macos"], "invalid choice: 'macos'"),
    ],
)
def test_the_cli_refuses_bad_values(tmp_path: Path, args: list[str], expected: str) -> None:
    command = [sys.executable, "-m", "controlplane.cli", "node", "run"]
    command += ["--data-dir", str(tmp_path), "--address", "127.77.142.1", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and expected in done.stderr, done.stderr
