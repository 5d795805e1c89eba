"""What an emulated program sees while it runs in a container: its environment, its output
streams (bytes, `byte_streams.py`), SIGTERM, and a way to run another command of the same
image.

A container's first program is its PID 1: only PID 1 receives the SIGTERM of a stop, as in
Docker. A program that does not handle SIGTERM ignores it there (Linux gives PID 1 no default
signal actions) and is killed when the grace period ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controlplane.agent.byte_streams import Sink, as_bytes
from controlplane.agent.network import ContainerNetwork
from controlplane.agent.stdio import Stdio
from controlplane.agent.task_files import TaskFile

if TYPE_CHECKING:
    from controlplane.agent.byte_streams import Input

# Exit statuses as a shell gives them.
EXIT_NOT_FOUND = 127
EXIT_KILLED = 128 + 9


class ExecNotFoundError(Exception):
    """The command names no executable of the image; the message is Docker's (runc's)."""


@dataclass
class Exec:
    """One running program's context. `spawn` runs another command of the image as a child
    (not PID 1) with the same environment, output and network, and returns its exit
    status."""

    env: dict[str, str]
    hostname: str
    files: Mapping[str, str]  # the image's executables: path -> program
    stdout: Sink
    stderr: Sink
    spawn: Callable[[Exec, list[str]], Awaitable[int]]
    terminated: asyncio.Event = field(default_factory=asyncio.Event)
    pid1: bool = True
    net: ContainerNetwork = field(default_factory=ContainerNetwork)
    stdin: bytes = b""  # what the program reads on its standard input (empty: /dev/null)
    input: Input | None = None  # its standard input when a pipe or a file (`sh`'s `|`, `<`)
    stdio: Stdio | None = None  # the raw streams of an interactive program (-i, -t)
    container_files: Mapping[str, TaskFile] = field(default_factory=dict)  # by path

    def child(self) -> Exec:
        """The context of a child process: it shares everything but never sees the SIGTERM."""
        return Exec(
            env=dict(self.env),
            hostname=self.hostname,
            files=self.files,
            stdout=self.stdout,
            stderr=self.stderr,
            spawn=self.spawn,
            pid1=False,
            net=self.net,
            stdio=self.stdio,
            container_files=self.container_files,
            input=self.input,
        )

    def write(self, text: str) -> None:
        """`text` on standard output, as is (`printf`)."""
        self.stdout(as_bytes(text))

    def out(self, line: str) -> None:
        """One line on standard output (its newline added)."""
        self.stdout(as_bytes(line + "\n"))

    def err(self, line: str) -> None:
        """One line on standard error (its newline added)."""
        self.stderr(as_bytes(line + "\n"))

    async def until_terminated(self) -> None:
        """Wait for a SIGTERM, forever if this is not PID 1 (none will come)."""
        await self.terminated.wait()


Program = Callable[[Exec, list[str]], Awaitable[int]]


def find_executable(files: Mapping[str, str], path_env: str, name: str) -> str:
    """The image file `name` runs: as given when it has a slash, else found along PATH.

    Raises ExecNotFoundError with the message runc gives for each case.
    """
    if "/" in name:
        if name in files:
            return name
        raise ExecNotFoundError(f'exec: "{name}": stat {name}: no such file or directory')
    for directory in filter(None, path_env.split(":")):
        candidate = f"{directory.rstrip('/')}/{name}"
        if candidate in files:
            return candidate
    raise ExecNotFoundError(f'exec: "{name}": executable file not found in $PATH')
