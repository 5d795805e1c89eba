"""A container's log, kept as dockerd's json-file driver keeps it: what `docker logs` and
`docker service logs` give back.

dockerd's copier (`daemon/logger/copier.go`) reads each output stream as bytes and logs a
message, with its own timestamp, each time a newline ends a line; a line longer than its
16 KiB buffer is logged in pieces (partial messages, without a newline of their own); what is
left when the stream ends is logged without a newline (`printf ab` logs `ab`). The json-file
driver stores each message as a JSON string, so bytes that are not UTF-8 come back as U+FFFD,
one for each such byte (Go's encoding/json), while attach and exec streams carry them as
written.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_MESSAGE = 16 * 1024  # dockerd's copier buffer: a longer line is logged in pieces
_GO_UTF8 = "controlplane-go-utf8"


def _replace_each_byte(error: UnicodeError) -> tuple[str, int]:
    """Go's way with bad UTF-8: one U+FFFD for each byte that starts no valid character."""
    assert isinstance(error, UnicodeDecodeError)
    return "\ufffd", error.start + 1


codecs.register_error(_GO_UTF8, _replace_each_byte)


def as_json_string(data: bytes) -> bytes:
    """`data` as it comes back from a JSON string of Go's encoding/json."""
    return data.decode("utf-8", _GO_UTF8).encode()


@dataclass(frozen=True)
class LogLine:
    """One logged message: a line with its newline, or a piece of a line without one."""

    timestamp_ns: int
    stream: str  # "stdout" | "stderr"
    data: bytes


class LogCopier:
    """One output stream of a container, cut into log messages as dockerd's copier does;
    `log` takes each message."""

    def __init__(self, stream: str, log: Callable[[LogLine], None]) -> None:
        self.stream = stream
        self._log = log
        self._pending = bytearray()  # the line being written, not yet ended

    def write(self, data: bytes) -> None:
        """Log each line `data` ends, and each full buffer of a line that has no end yet."""
        self._pending += data
        start = 0
        while True:
            end = self._pending.find(b"\n", start, start + MAX_MESSAGE)
            if end >= 0:
                self._message(self._pending[start : end + 1])
                start = end + 1
            elif len(self._pending) - start >= MAX_MESSAGE:
                self._message(self._pending[start : start + MAX_MESSAGE])
                start += MAX_MESSAGE
            else:
                break
        del self._pending[:start]

    def flush(self) -> None:
        """The stream ended: what is left of its last line is logged as it is."""
        if self._pending:
            self._message(self._pending)
            self._pending.clear()

    def _message(self, data: bytearray) -> None:
        self._log(LogLine(time.time_ns(), self.stream, as_json_string(bytes(data))))
