"""A process's standard streams as attach and exec clients see them: the bytes it writes (kept
in order, tagged stdout or stderr, for whoever follows them) and what it reads.

Without a TTY, standard input is a pipe: the client's bytes, cut into lines, until the client
closes its side (`echo hostname | docker run -i busybox sh`). With a TTY it is a `Terminal`
(`terminal.py`), which also rewrites the output as a terminal does (`\\n` becomes `\\r\\n`).

A real process (kernel mode) brings its own input `Device` instead, a pseudo-terminal or a
pipe (`datapath/kernel/console.py`), plugged when it starts (`connect`): the client's bytes
go to it as they come, and what came before the process started (`docker run -i` attaches
first) is handed to it then.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from controlplane.agent.terminal import Terminal

STDOUT, STDERR = 1, 2
KEPT_CHUNKS = 4096  # a follower that falls this far behind loses the oldest output


class OutputBuffer:
    """What a process wrote, in order; followers read from their own cursor until it closes."""

    def __init__(self) -> None:
        self._chunks: deque[tuple[int, bytes]] = deque(maxlen=KEPT_CHUNKS)
        self.written = 0  # chunks ever written, including those the bounded deque let go
        self.closed = False
        self._changed = asyncio.Event()

    def write(self, stream: int, data: bytes) -> None:
        if data and not self.closed:
            self._chunks.append((stream, data))
            self.written += 1
            self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def kept(self) -> bytes:
        """The kept output, both streams as written (a healthcheck's result)."""
        return b"".join(data for _, data in self._chunks)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, cursor: int) -> AsyncIterator[tuple[int, bytes]]:
        """Each chunk written after the first `cursor` ones, as it comes, until closed."""
        while True:
            first_kept = self.written - len(self._chunks)
            fresh = list(itertools.islice(self._chunks, max(0, cursor - first_kept), None))
            cursor = self.written
            for chunk in fresh:
                yield chunk
            if self.closed and cursor == self.written:
                return
            if cursor == self.written:
                await self._changed.wait()


class Pipe:
    """Standard input without a TTY: lines of what the client sent, then EOF."""

    def __init__(self) -> None:
        self._pending = b""
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._closed = False

    def feed(self, data: bytes) -> None:
        if self._closed:
            return
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._lines.put_nowait(line.decode(errors="replace"))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._pending:
                self._lines.put_nowait(self._pending.decode(errors="replace"))
            self._lines.put_nowait(None)

    async def read_line(self) -> str | None:
        """The next line without its newline; None at EOF (and every time after)."""
        line = await self._lines.get()
        if line is None:
            self._lines.put_nowait(None)
        return line


Input = Pipe | Terminal


class Device(Protocol):
    """A real process's standard input (kernel mode): a pseudo-terminal or a pipe."""

    def feed(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def resize(self, rows: int, columns: int) -> None: ...


class Stdio:
    """One process's streams: `tty` as `docker run -t`, `open_stdin` as `-i`."""

    def __init__(self, *, tty: bool, open_stdin: bool) -> None:
        self.output = OutputBuffer()
        self.tty = tty
        self.terminal = Terminal(self._echo) if tty else None
        self.stdin: Input | None = None
        if open_stdin:
            self.stdin = self.terminal if self.terminal is not None else Pipe()
        self.device: Device | None = None
        self.size: tuple[int, int] | None = None  # the client's terminal, rows and columns
        self._early: bytearray | None = bytearray()  # input fed before the process started
        self._early_eof = False  # that input ended (the client closed its side)

    def connect(self, device: Device | None) -> None:
        """The process starts: a real one's `device` takes the input from now on (it gets
        what came before, and the terminal's size), an emulated one (None) keeps reading
        the emulated pipe or terminal."""
        early, self._early = self._early, None
        if device is None:
            return
        self.device, self.terminal = device, None
        if self.size is not None:
            device.resize(*self.size)
        if self.stdin is not None and early:
            device.feed(bytes(early))
        if self._early_eof:
            device.close_stdin()

    def resize(self, rows: int, columns: int) -> None:
        self.size = (rows, columns)
        if self.device is not None:
            self.device.resize(rows, columns)
        elif self.terminal is not None:
            self.terminal.resize(rows, columns)

    def write_raw(self, data: bytes) -> None:
        """What a real process wrote on its terminal, as is."""
        self.output.write(STDOUT, data)

    def _echo(self, data: bytes) -> None:
        self.output.write(STDOUT, data)

    def out(self, text: str) -> None:
        self._line(STDOUT, text)

    def err(self, text: str) -> None:
        self._line(STDERR, text)

    def _line(self, stream: int, text: str) -> None:
        data = text.encode() + b"\n"
        self.output.write(STDOUT if self.tty else stream, _onlcr(data, self.tty))

    def write(self, text: str) -> None:
        """Text without a newline of its own (a prompt)."""
        self.output.write(STDOUT, _onlcr(text.encode(), self.tty))

    def feed(self, data: bytes) -> None:
        """Bytes from an attached client's standard input (dropped when stdin is closed)."""
        if self.stdin is None:
            return
        if self.device is not None:
            self.device.feed(data)
            return
        if self._early is not None and not self._early_eof:
            self._early += data
        self.stdin.feed(data)

    def close_stdin(self) -> None:
        """The client closed its standard input: EOF for a pipe. A terminal has no such
        thing (its EOF is Ctrl-D), so a client leaving does not end the shell."""
        if self.device is not None:
            self.device.close_stdin()
            return
        self._early_eof = True
        if isinstance(self.stdin, Pipe):
            self.stdin.close()

    def close(self) -> None:
        """The process exited: followers get the end of the stream."""
        if isinstance(self.stdin, Pipe):
            self.stdin.close()
        self.output.close()


def _onlcr(data: bytes, tty: bool) -> bytes:
    return data.replace(b"\n", b"\r\n") if tty else data
