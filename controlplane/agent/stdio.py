"""A process's standard streams as attach and exec clients see them: the bytes it writes (kept
in order, tagged stdout or stderr, for whoever follows them) and what it reads.

Without a TTY, standard input is a pipe (`byte_streams.Pipe`): the client's bytes, until the
client closes its side (`echo hostname | docker run -i busybox sh`). With a TTY it is a
`Terminal` (`terminal.py`), and the output is the terminal's: both streams in one, each `\n`
written as `\r\n` (the TTY's ONLCR), as a client and the container's log see it.

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

from controlplane.agent.byte_streams import Pipe
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
        self.terminal = Terminal(self.raw) if tty else None
        self.stdin: Pipe | Terminal | None = None
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

    def shown(self, stream: int, data: bytes) -> tuple[int, bytes]:
        """What a program writes on `stream` as clients see it (and a container's log keeps
        it): with a TTY, on the terminal, each newline written as CR LF."""
        if self.tty:
            return STDOUT, data.replace(b"\n", b"\r\n")
        return stream, data

    def write(self, stream: int, data: bytes) -> None:
        """What a program wrote on `stream` (STDOUT, STDERR)."""
        self.output.write(*self.shown(stream, data))

    def raw(self, data: bytes) -> None:
        """What a terminal shows as is: its echo, or a real process's terminal output."""
        self.output.write(STDOUT, data)

    def feed(self, data: bytes) -> None:
        """Bytes from an attached client's standard input (dropped when stdin is closed)."""
        if self.stdin is None:
            return
        if self.device is not None:
            self.device.feed(data)
            return
        if self._early is not None and not self._early_eof:
            self._early += data
        if isinstance(self.stdin, Pipe):
            self.stdin.write(data)
        else:
            self.stdin.feed(data)

    def close_stdin(self) -> None:
        """The client closed its standard input: EOF for a pipe. A terminal has no such
        thing (its EOF is Ctrl-D), so a client leaving does not end the shell."""
        if self.device is not None:
            self.device.close_stdin()
            return
        self._early_eof = True
        if isinstance(self.stdin, Pipe):
            self.stdin.close_writer()

    def close(self) -> None:
        """The process exited: followers get the end of the stream."""
        if isinstance(self.stdin, Pipe):
            self.stdin.close_writer()
        self.output.close()
