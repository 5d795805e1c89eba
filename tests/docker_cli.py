"""The real docker CLI against one lab node's Engine API, the way every CLI test runs it."""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import struct
import subprocess
import termios
import time

import pytest

from controlplane.lab.processes import NodeProcess

needs_docker_cli = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


def docker(
    node: NodeProcess,
    *args: str,
    stdin: str | None = None,
    timeout: float = 90,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`docker -H tcp://<node's API> ARGS...`, its exit status and output left to the caller
    (with `check`, the test fails with its words when it exits non-zero)."""
    done = subprocess.run(
        ["docker", "-H", f"tcp://{node.api}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def ok(node: NodeProcess, *args: str, stdin: str | None = None, timeout: float = 90) -> str:
    """The command's standard output; the test fails with its words when it exits non-zero."""
    result = docker(node, *args, stdin=stdin, timeout=timeout)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


SCREEN_DEADLINE = 60.0  # seconds the CLI may take to show what a test expects


class Pty:
    """The docker CLI on a pseudo-terminal of 24x80, as a user's shell runs it."""

    def __init__(self, node: NodeProcess, *args: str, host: str = "") -> None:
        """`host`: the DOCKER_HOST to use instead of the node's tcp:// address."""
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.process = subprocess.Popen(
            ["docker", "-H", host or f"tcp://{node.api}", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.screen = b""
        self.matched = 0  # the screen up to here matched earlier expectations

    def _read(self, timeout: float) -> bytes | None:
        """What the CLI wrote within `timeout` (b"" if nothing); None once it closed."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.master, 4096) or None
        except OSError:  # the CLI exited and closed the terminal
            return None

    def expect(self, wanted: bytes) -> bytes:
        """Read the screen until `wanted` shows up after what was already expected."""
        deadline = time.monotonic() + SCREEN_DEADLINE
        while wanted not in self.screen[self.matched :]:
            assert time.monotonic() < deadline, f"no {wanted!r} on the screen: {self.screen!r}"
            chunk = self._read(0.2)
            if chunk is None:
                raise AssertionError(f"the CLI ended before {wanted!r}: {self.screen!r}")
            self.screen += chunk
        self.matched = self.screen.index(wanted, self.matched) + len(wanted)
        return self.screen

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self) -> int:
        """The CLI's exit status, reading the rest of the screen meanwhile."""
        deadline = time.monotonic() + SCREEN_DEADLINE
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"the CLI did not exit: {self.screen!r}")
            self.screen += self._read(0.2) or b""
        while chunk := self._read(0.05):  # what it wrote just before exiting
            self.screen += chunk
        os.close(self.master)
        return self.process.returncode
