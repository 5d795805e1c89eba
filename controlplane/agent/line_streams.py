"""Standard input as emulated programs read it, and the pipes of the emulated `sh`.

Emulated programs write whole lines (`Exec.out`), so a pipe carries lines: `LineChannel`
joins one command's output to the next one's input while both run. It keeps a real pipe's
manners: the reader gets end of input once every writer is done; a writer whose reader has
gone is killed at its next write, as SIGPIPE kills it (status 141); a writer far ahead of its
reader waits (`drained`), as a full pipe blocks it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from controlplane.agent.process import Exec

HIGH_WATER_LINES = 512  # a writer this far ahead of its reader waits (a pipe's buffer)
EXIT_BROKEN_PIPE = 128 + 13  # killed by SIGPIPE


class LineSource(Protocol):
    async def read_line(self) -> str | None:
        """The next line without its newline; None at end of input."""
        ...


class TextLines:
    """Input that is a text known in advance (a file, a here-document, a datagram)."""

    def __init__(self, text: str) -> None:
        self._lines = deque(text.splitlines())

    async def read_line(self) -> str | None:
        return self._lines.popleft() if self._lines else None


NO_INPUT = TextLines("")  # /dev/null


class LineChannel:
    """A pipe between two commands of a pipeline."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque()
        self._changed = asyncio.Event()
        self._writer_done = False
        self._reader_done = False
        self.writer: asyncio.Task[int] | None = None  # killed when it writes to no reader

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def write(self, line: str) -> None:
        if self._reader_done:
            if self.writer is not None:
                self.writer.cancel()  # SIGPIPE
            return
        self._lines.append(line)
        self._wake()

    async def read_line(self) -> str | None:
        while not self._lines:
            if self._writer_done:
                return None
            await self._changed.wait()
        line = self._lines.popleft()
        if len(self._lines) < HIGH_WATER_LINES:
            self._wake()
        return line

    async def drained(self) -> None:
        """Wait while the reader is far behind (returns at once when it has gone)."""
        while len(self._lines) >= HIGH_WATER_LINES and not self._reader_done:
            await self._changed.wait()

    def close_writer(self) -> None:
        self._writer_done = True
        self._wake()

    def close_reader(self) -> None:
        self._reader_done = True
        self._lines.clear()
        self._wake()


def input_of(process: Exec) -> LineSource:
    """What `process` reads on its standard input: the text it was given (`nc -e`'s
    datagram), else its pipe or redirection, else the container's (`-i`, `-t`), else
    nothing."""
    if process.stdin:
        return TextLines(process.stdin)
    if process.input is not None:
        return process.input
    if process.stdio is not None and process.stdio.stdin is not None:
        return process.stdio.stdin
    return NO_INPUT


async def read_all(process: Exec) -> list[str]:
    """Every line of `process`'s standard input, until its end."""
    source = input_of(process)
    lines = []
    while (line := await source.read_line()) is not None:
        lines.append(line)
    return lines
