"""The emulated TTY of `docker run -t` / `docker exec -t`: a terminal's line discipline in
cooked mode, between the client's keystrokes and the program's reads.

The docker CLI puts the user's terminal in raw mode and sends every keystroke as typed, so
the remote side echoes, edits and signals, as a Linux TTY does: printable characters are
echoed, Enter (CR, mapped to NL) ends a line and echoes CRLF, Backspace (DEL or ^H) erases
the last character (echoed as busybox's line editor does, `\\b` then clear to end of line),
Ctrl-U erases the line, Ctrl-C echoes `^C`, drops the input typed ahead and interrupts
(SIGINT to the foreground command: `run_on`), Ctrl-D on an empty line is end of input (for
one read), after some characters it hands them to the reader without a newline. A read
gets one line at a time, as a canonical-mode TTY gives it (`byte_streams.Input`). Arrow
keys and other escape sequences are ignored: the emulated shell keeps no history to move
through. A resize (SIGWINCH) redraws a pending prompt, as busybox's line editor does.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from controlplane.agent.byte_streams import Input, as_bytes

ERASE = b"\x08\x1b[J"  # what busybox's line editor writes to erase one character
_ESC_FINAL = range(0x40, 0x7F)  # the byte ending a CSI sequence
EXIT_INTERRUPTED = 128 + 2  # killed by SIGINT


class Interrupted(Exception):
    """Ctrl-C came while the program was reading a line."""


class Terminal(Input):
    def __init__(self, echo: Callable[[bytes], None]) -> None:
        """`echo` writes to the terminal's screen (the process's output stream)."""
        super().__init__()
        self._echo = echo
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._line: list[str] = []
        self._lines: asyncio.Queue[bytes] = asyncio.Queue()  # b"": end of input, for one read
        self._interrupt = asyncio.Event()
        self._escape = ""  # an escape sequence being skipped
        self.rows = 0
        self.columns = 0
        self.catches_interrupt = False  # the foreground program handles Ctrl-C itself
        self._prompt: str | None = None  # while a line is being read with a prompt

    def resize(self, rows: int, columns: int) -> None:
        """A new size (SIGWINCH): a line editor waiting for input redraws its prompt and
        line, which is what a client attaching to a running shell first sees."""
        changed = (rows, columns) != (self.rows, self.columns)
        self.rows, self.columns = rows, columns
        if changed and self._prompt is not None:
            self._echo(b"\r" + as_bytes(self._prompt + "".join(self._line)) + b"\x1b[J")

    def feed(self, data: bytes) -> None:
        """Keystrokes from the client."""
        for ch in self._decoder.decode(data):
            self._key(ch)

    def _key(self, ch: str) -> None:
        if self._escape:
            self._escape += ch
            if self._escape not in ("\x1b[", "\x1bO") and (
                len(self._escape) == 2 or ord(ch) in _ESC_FINAL
            ):
                self._escape = ""
            return
        if ch in "\r\n":
            self._echo(b"\r\n")
            self._lines.put_nowait(as_bytes("".join(self._line) + "\n"))
            self._line.clear()
        elif ch in "\x7f\x08":
            if self._line:
                self._line.pop()
                self._echo(ERASE)
        elif ch == "\x15":
            self._echo(ERASE * len(self._line))
            self._line.clear()
        elif ch == "\x03":
            self._echo(b"^C")
            self._line.clear()
            while not self._lines.empty():  # ISIG flushes the input typed ahead
                self._lines.get_nowait()
            self._interrupt.set()
            self._interrupt = asyncio.Event()
        elif ch == "\x04":
            self._lines.put_nowait(as_bytes("".join(self._line)))
            self._line.clear()
        elif ch == "\x1b":
            self._escape = ch
        elif ch >= " " or ch == "\t":
            self._line.append(ch)
            self._echo(as_bytes(ch))

    async def read_line(self, prompt: str = "") -> str | None:
        """Show `prompt`, then the next line typed, with its newline; None at end of input
        (Ctrl-D: it ends the one read, as a TTY's, so `cat` ends and its shell reads on),
        Interrupted on Ctrl-C."""
        if prompt:
            self._echo(as_bytes(prompt))
            self._prompt = prompt
        try:
            return await super().read_line()
        finally:
            self._prompt = None

    async def more(self) -> bytes:
        """The next line typed (a read's worth); b"" for a Ctrl-D on an empty line."""
        interrupt = self._interrupt
        getting = asyncio.ensure_future(self._lines.get())
        interrupted = asyncio.ensure_future(interrupt.wait())
        try:
            await asyncio.wait((getting, interrupted), return_when=asyncio.FIRST_COMPLETED)
        finally:
            interrupted.cancel()
            if not getting.done():
                getting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getting
        got = getting.done() and not getting.cancelled()
        if interrupt.is_set() or not got:
            raise Interrupted  # a line taken as Ctrl-C came is flushed with the rest
        return getting.result()

    def until_interrupted(self) -> Coroutine[Any, Any, bool]:
        """Wait for the next Ctrl-C after this call (not after the wait begins)."""
        return self._interrupt.wait()


async def run_on(terminal: Terminal | None, running: Awaitable[int]) -> int:
    """Run a program whose standard input is `terminal`: Ctrl-C kills it (SIGINT's default
    action, status 130) unless it catches SIGINT itself, as the interactive shell does."""
    program = asyncio.ensure_future(running)
    try:
        while terminal is not None:
            interrupt = asyncio.ensure_future(terminal.until_interrupted())
            try:
                await asyncio.wait((program, interrupt), return_when=asyncio.FIRST_COMPLETED)
            finally:
                interrupt.cancel()
            if program.done():
                break
            if not terminal.catches_interrupt:
                program.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await program
                return EXIT_INTERRUPTED
        return await program
    finally:
        program.cancel()  # we were cancelled (SIGKILL): so is the program
