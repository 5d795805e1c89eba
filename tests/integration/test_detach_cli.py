"""Ctrl-P Ctrl-Q with the real docker CLI on a pseudo-terminal, on a one-manager lab
(127.77.166.x): `docker exec -it` detaches (also with `--detach-keys`) and `docker run -it`
leaves its container running, to be attached again.

Over tcp:// the docker CLI swallows the keys and half-closes (its escape error comes back
wrapped, so it does not know it detached): with dockerd as here, the attach ends and the
process keeps running; `docker exec` then exits, while `docker run` waits for the container's
exit, so the test ends that CLI itself. Over the node's unix socket the CLI knows: `docker run
-it` exits 0 and `docker attach` says "read escape sequence", as with dockerd's socket."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from docker_cli import needs_docker_cli, ok
from test_interactive_cli import Pty

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab

pytestmark = [pytest.mark.integration, needs_docker_cli]

LAB = 166
DETACH = b"\x10\x11"  # Ctrl-P Ctrl-Q


def test_detach_keys_leave_the_processes_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=0, lab=LAB, api_sockets=True)
        try:
            await lab.up()
            await asyncio.to_thread(detach, lab.node("manager-1"))
            await asyncio.to_thread(detach_over_the_socket, lab.node("manager-1"))
        finally:
            lab.stop()

    asyncio.run(scenario())


def running(node: NodeProcess, name: str) -> bool:
    return ok(node, "inspect", "-f", "{{.State.Running}}", name) == "true\n"


def detached(cli: Pty) -> None:
    """`docker exec -it` after the keys: it leaves with "read escape sequence" and status 1
    when it knows it detached, else with status 0 once the node ends the stream (which of the
    two depends on the CLI's own goroutines; with dockerd alike)."""
    status = cli.wait()
    assert status in (0, 1), cli.screen
    assert (b"read escape sequence" in cli.screen) == (status == 1), cli.screen


def detach(node: NodeProcess) -> None:
    ok(node, "run", "-dit", "--name", "keep", "busybox", "sh")
    inner = Pty(node, "exec", "-it", "keep", "sh")
    inner.expect(b"/ # ")
    inner.type(b"echo inside\r")
    inner.expect(b"inside\r\n/ # ")
    inner.type(DETACH)
    detached(inner)
    custom = Pty(node, "exec", "-it", "--detach-keys", "ctrl-x", "keep", "sh")
    custom.expect(b"/ # ")
    custom.type(b"\x18")
    detached(custom)
    assert running(node, "keep")

    shell = Pty(node, "run", "-it", "--name", "shell", "busybox", "sh")
    shell.expect(b"/ # ")
    shell.type(b"echo first\r")
    shell.expect(b"first\r\n/ # ")
    shell.type(DETACH)
    shell.type(b"echo never\r")  # the CLI reads no more input once it saw the keys
    shell.process.kill()
    shell.process.wait()
    os.close(shell.master)
    assert running(node, "shell")

    again = Pty(node, "attach", "shell")
    again.expect(b"/ # ")  # redrawn when the CLI sets the terminal's size
    again.type(b"echo second\r")
    again.expect(b"second\r\n/ # ")
    again.type(b"exit 5\r")
    assert again.wait() == 5
    assert b"never" not in again.screen


def detach_over_the_socket(node: NodeProcess) -> None:
    assert node.api_socket is not None
    host = f"unix://{node.api_socket}"
    shell = Pty(node, "run", "-it", "--name", "sock", "busybox", "sh", host=host)
    shell.expect(b"/ # ")
    shell.type(DETACH)
    assert shell.wait() == 0, shell.screen
    assert running(node, "sock")
    again = Pty(node, "attach", "sock", host=host)
    again.expect(b"/ # ")
    again.type(DETACH)
    assert again.wait() == 1
    assert again.screen.endswith(b"read escape sequence\r\n"), again.screen
    assert running(node, "sock")
