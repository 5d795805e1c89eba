"""The standard input of a real process of a kernel container, from the node's side: a
pseudo-terminal for `-t` (`Console`), a pipe for `-i` without one (`StdinPipe`).

A `Console` is a real TTY: the process gets its slave as standard input, output and error and
as its controlling terminal (`setsid --ctty`, `containers.py`), so the kernel's line discipline
echoes, edits and turns Ctrl-C into SIGINT for the foreground job, and the program sees a
terminal (`isatty`, TIOCGWINSZ, SIGWINCH on a resize). The node keeps the master: the
client's keystrokes are written to it, what the process writes is read from it raw, and the
end of output is the master's EIO once every holder of the slave has closed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
from collections.abc import Callable

READ_SIZE = 65536


class _FdWriter:
    """Bytes written to a non-blocking file descriptor from the event loop, buffered while it
    is full (a process that does not read its input yet)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._pending = bytearray()
        self._watching = False
        self._ending = False  # close the descriptor once the pending bytes are written
        self.closed = False

    def write(self, data: bytes) -> None:
        if not self._ending and not self.closed:
            self._pending += data
            self._flush()

    def end(self) -> None:
        """Close the descriptor after the bytes written so far (a pipe's EOF)."""
        self._ending = True
        self._flush()

    def _flush(self) -> None:
        while self._pending:
            try:
                sent = os.write(self.fd, self._pending)
            except BlockingIOError:
                break
            except OSError:  # the reader is gone: what it did not read is lost, as in a pipe
                self._pending.clear()
                break
            del self._pending[:sent]
        loop = asyncio.get_running_loop()
        if self._pending and not self._watching:
            loop.add_writer(self.fd, self._flush)
            self._watching = True
        elif not self._pending and self._watching:
            loop.remove_writer(self.fd)
            self._watching = False
        if self._ending and not self._pending and not self.closed:
            self.stop()
            os.close(self.fd)
            self.closed = True

    def stop(self) -> None:
        """Stop writing (what is pending is dropped); the descriptor stays open."""
        if self._watching:
            asyncio.get_running_loop().remove_writer(self.fd)
            self._watching = False
        self._pending.clear()


class Console:
    """A pseudo-terminal for one process; `on_output` gets what it writes, raw."""

    def __init__(self, on_output: Callable[[bytes], None]) -> None:
        self.master, self.slave = os.openpty()
        self._on_output = on_output
        self._input = _FdWriter(self.master)
        self._ended = asyncio.Event()
        self._reading = False
        self._closed = False

    def spawned(self) -> None:
        """The process holds the slave now: the node drops its copy (so the master reads
        EIO once the process and its children are gone) and reads the output."""
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1
        asyncio.get_running_loop().add_reader(self.master, self._readable)
        self._reading = True

    def _readable(self) -> None:
        try:
            data = os.read(self.master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: no process holds the slave any more
            data = b""
        if data:
            self._on_output(data)
        else:
            self._stop_reading()
            self._ended.set()

    def _stop_reading(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.master)
            self._reading = False

    async def drained(self, grace: float) -> None:
        """Wait (at most `grace` seconds: a background child may keep the slave open) until
        everything the process wrote has been read."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._ended.wait()

    def feed(self, data: bytes) -> None:
        """Keystrokes: to the line discipline, which echoes and signals as a terminal does."""
        if not self._closed:
            self._input.write(data)

    def close_stdin(self) -> None:
        """A terminal has no end of input of its own (Ctrl-D is the user's): nothing."""

    def resize(self, rows: int, columns: int) -> None:
        """TIOCSWINSZ: the kernel sends SIGWINCH to the terminal's foreground job."""
        if not self._closed and rows > 0 and columns > 0:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        self._input.stop()
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1
        os.close(self.master)
        self._ended.set()


class StdinPipe:
    """`-i` without a TTY: the client's bytes to the process's standard input, and its end
    (the client's half-close) as the pipe's EOF."""

    def __init__(self) -> None:
        self.reader, writer = os.pipe()
        self._writer = _FdWriter(writer)

    def spawned(self) -> None:
        """The process holds the read end: the node drops its copy."""
        if self.reader >= 0:
            os.close(self.reader)
            self.reader = -1

    def feed(self, data: bytes) -> None:
        self._writer.write(data)

    def close_stdin(self) -> None:
        """EOF once what the client sent has been written."""
        self._writer.end()

    def resize(self, rows: int, columns: int) -> None:
        """A pipe has no size: nothing."""

    def close(self) -> None:
        """The process is gone: what it did not read is dropped."""
        self.spawned()
        if not self._writer.closed:
            self._writer.stop()
            self._writer.end()
