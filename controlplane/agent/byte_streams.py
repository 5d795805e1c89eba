"""Standard streams as emulated programs use them: bytes, as a real process's are.

A program writes bytes (`Sink`: `printf a` writes one byte, no newline); it reads its
standard input (`Input`) in chunks as they come (`cat`, `tr`, `wc`) or a line at a time
(`grep`, `read`), the last line possibly without its newline. The emulated `sh`'s words are
Python text: `as_bytes`/`as_text` go between the two without loss (bytes that are not UTF-8,
`printf '\\377'`, travel as lone surrogates, Python's `surrogateescape`).

`Pipe` joins one command's output to the next one's input while both run (`sh`'s `|`), and
carries a client's standard input without a TTY (`docker run -i`). It keeps a real pipe's
manners: the reader gets end of input once the writer is done; a writer whose reader has gone
is killed at its next write, as SIGPIPE kills it (status 141); a writer far ahead of its
reader waits (`drained`), as a full pipe blocks it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controlplane.agent.process import Exec

PIPE_CAPACITY = 64 * 1024  # Linux's pipe buffer: a writer this far ahead of its reader waits
EXIT_BROKEN_PIPE = 128 + 13  # killed by SIGPIPE

Sink = Callable[[bytes], None]  # where a program's output goes


def as_bytes(text: str) -> bytes:
    """The bytes a program writes for shell text (lone surrogates are the raw bytes)."""
    return text.encode("utf-8", "surrogateescape")


def as_text(data: bytes) -> str:
    """Shell text for bytes read, without loss (`as_bytes` gives them back)."""
    return data.decode("utf-8", "surrogateescape")


def discard(data: bytes) -> None:
    """/dev/null."""


class Input:
    """A standard input: bytes as they come (`read`), or a line at a time (`read_line`),
    from the same buffer, so commands that take turns reading it (`read a; cat`) each get
    what the one before left. Subclasses say where the bytes come from (`more`)."""

    def __init__(self) -> None:
        self._held = b""  # read from the source, not yet by a program, from `_start` on
        self._start = 0

    async def more(self) -> bytes:
        """The next bytes from the source, waiting for them; b"" at end of input."""
        raise NotImplementedError

    async def read(self) -> bytes:
        """What is there (at least one byte), waiting for it; b"" at end of input."""
        if self._start < len(self._held):
            data = self._held[self._start :]
            self._held, self._start = b"", 0
            return data
        return await self.more()

    async def read_line(self) -> str | None:
        """The next line with its newline (the last may have none), as text; None at end of
        input."""
        end = self._held.find(b"\n", self._start)
        while end < 0:
            data = await self.more()
            if not data:
                if self._start == len(self._held):
                    return None
                end = len(self._held) - 1
                break
            searched = len(self._held) - self._start
            self._held = self._held[self._start :] + data
            self._start = 0
            end = self._held.find(b"\n", searched)
        line = self._held[self._start : end + 1]
        self._start = end + 1
        return as_text(line)


class BytesInput(Input):
    """Input known in advance (a file, a here-document, a datagram)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = data

    async def more(self) -> bytes:
        data, self._data = self._data, b""
        return data


def no_input() -> Input:
    """/dev/null."""
    return BytesInput(b"")


class Pipe(Input):
    """A pipe: `write` at one end, `read`/`read_line` at the other."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._readable = asyncio.Event()  # set at each write and at the writer's end
        self._writable = asyncio.Event()  # set at each read and at the reader's end
        self._writer_done = False
        self._reader_done = False
        self.writer: asyncio.Task[int] | None = None  # killed when it writes to no reader

    def write(self, data: bytes) -> None:
        if self._reader_done:
            if self.writer is not None:
                self.writer.cancel()  # SIGPIPE
            return
        if data and not self._writer_done:
            self._chunks.append(data)
            self._size += len(data)
            self._readable.set()

    async def more(self) -> bytes:
        while not self._chunks:
            if self._writer_done:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._writable.set()
        return data

    async def drained(self) -> None:
        """Wait while the reader is far behind (returns at once when it has gone)."""
        while self._size >= PIPE_CAPACITY and not self._reader_done:
            self._writable.clear()
            await self._writable.wait()

    def close_writer(self) -> None:
        self._writer_done = True
        self._readable.set()

    def close_reader(self) -> None:
        self._reader_done = True
        self._chunks.clear()
        self._size = 0
        self._writable.set()


def input_of(process: Exec) -> Input:
    """What `process` reads on its standard input: the data it was given (`nc -e`'s
    datagram), else its pipe or redirection, else the container's (`-i`, `-t`), else
    nothing."""
    if process.stdin:
        return BytesInput(process.stdin)
    if process.input is not None:
        return process.input
    if process.stdio is not None and process.stdio.stdin is not None:
        return process.stdio.stdin
    return no_input()


async def read_all(source: Input) -> bytes:
    """Every byte of `source`, until its end."""
    chunks = []
    while data := await source.read():
        chunks.append(data)
    return b"".join(chunks)
