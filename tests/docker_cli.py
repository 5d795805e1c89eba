"""The real docker CLI against one lab node's Engine API, the way every CLI test runs it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from controlplane.lab.processes import NodeProcess

needs_docker_cli = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


def docker(
    node: NodeProcess, *args: str, stdin: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`docker -H tcp://<node's API> ARGS...`, its exit status and output left to the caller."""
    return subprocess.run(
        ["docker", "-H", f"tcp://{node.api}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


def ok(node: NodeProcess, *args: str, stdin: str | None = None, timeout: float = 90) -> str:
    """The command's standard output; the test fails with its words when it exits non-zero."""
    result = docker(node, *args, stdin=stdin, timeout=timeout)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout
