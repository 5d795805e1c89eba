"""dockerd's hijacked connections (`POST /containers/{id}/attach`, `POST /exec/{id}/start`):
the CLI sends `Upgrade: tcp`, gets `101 UPGRADED`, and from then on the connection is a raw
byte stream both ways: the client's standard input in, the process's output out. Output is
raw with a TTY, else multiplexed in 8-byte-header frames (stream 1 stdout, 2 stderr, as
`docker logs`). A client without `Upgrade` gets `200 OK` and the same stream.

The CLI half-closes its side when its standard input ends. With StdinOnce (`docker run -i`,
every exec) and no TTY, that is the process's EOF on a pipe, and the output keeps flowing
until the process exits, when the node closes the connection; otherwise (`docker attach` to a
`run -d -i` container, a TTY) dockerd ends the attach there, and the process and its open
standard input go on. The detach keys in the input (`detach_keys.py`, Ctrl-P Ctrl-Q by
default) detach the client from a TTY and leave the process running.

The docker CLI also watches for the detach keys itself and swallows them. Over a unix socket
it then leaves at once; over tcp:// (the lab) its io.Copy wraps the escape error, so it only
half-closes and waits for the output to end: as dockerd, a TTY's attach ends at the client's
half-close (or when it goes away) and its process keeps running. The CLI then exits for `docker
exec -it`, and waits for the container's exit for `docker run -it` and `docker attach`, with a
real dockerd over TCP too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web

from controlplane.agent.stdio import OutputBuffer, Stdio
from controlplane.api.detach_keys import DEFAULT_DETACH_KEYS, DetachWatch
from controlplane.api.errors import bad_request
from controlplane.api.logs import RAW_STREAM, frame


class _Hijacked(asyncio.Protocol):
    """The connection's protocol once upgraded: input to `on_input`, the client's half-close
    to `on_eof` (the transport stays open for the output), its loss sets `gone`; the rest to
    aiohttp's protocol."""

    def __init__(
        self,
        inner: asyncio.BaseProtocol,
        on_input: Callable[[bytes], None],
        on_eof: Callable[[], None],
        gone: asyncio.Event,
    ) -> None:
        self._inner = inner
        self._on_input = on_input
        self._on_eof = on_eof
        self._gone = gone

    def data_received(self, data: bytes) -> None:
        self._on_input(data)

    def eof_received(self) -> bool:
        self._on_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone.set()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def wanted_streams(query: dict[str, str]) -> set[int]:
    """The output streams the client asked for (`stdout=1`, `stderr=1`)."""
    return {n for n, name in ((1, "stdout"), (2, "stderr")) if query.get(name) in ("1", "true")}


def terminal_size(request: web.Request) -> tuple[int, int]:
    """`h` and `w` of a resize, refused with dockerd's words (Go's strconv) when not numbers."""
    sizes = []
    for key in ("h", "w"):
        text = request.query.get(key, "")
        try:
            sizes.append(int(text))
        except ValueError:
            raise bad_request(f'strconv.Atoi: parsing "{text}": invalid syntax') from None
    return sizes[0], sizes[1]


async def serve_stream(
    request: web.Request,
    stdio: Stdio,
    *,
    streams: set[int],
    stdin: bool,
    cursor: int,
    stdin_once: bool = False,
    detach_keys: bytes = DEFAULT_DETACH_KEYS,
) -> web.StreamResponse:
    """Upgrade the connection and carry `stdio` both ways: output written after the first
    `cursor` chunks, and (with `stdin`) the client's input, until the process exits, the
    client detaches (`detach_keys`, on a TTY) or goes away. With `stdin_once` (`docker run
    -i`'s StdinOnce, and every exec) a pipe's input ends when this client's does. A TTY's
    does not: its client detaching or going away (a close looks like a half-close first)
    leaves the process running, as with dockerd."""
    upgrade = request.headers.get("Upgrade", "").lower() == "tcp"
    response = web.StreamResponse(
        status=101 if upgrade else 200,
        reason="UPGRADED" if upgrade else "OK",
        headers={"Content-Type": RAW_STREAM}
        | ({"Connection": "Upgrade", "Upgrade": "tcp"} if upgrade else {}),
    )
    response.force_close()
    await response.prepare(request)
    await response.write(b"")
    detached = asyncio.Event()
    watch = DetachWatch(detach_keys)

    def on_input(data: bytes) -> None:
        if not stdin or detached.is_set():
            return
        if stdio.tty:
            data = watch.feed(data)
            if watch.detached:
                detached.set()
        stdio.feed(data)

    def on_eof() -> None:
        if not stdin:  # `run -t` without -i: the CLI half-closes at once, the output goes on
            return
        if stdin_once and not stdio.tty:
            stdio.close_stdin()
        else:
            detached.set()  # dockerd ends the attach there; the process (and its stdin) go on

    gone = asyncio.Event()
    if request.transport is not None:
        inner = request.transport.get_protocol()
        request.transport.set_protocol(_Hijacked(inner, on_input, on_eof, gone))
    relay = asyncio.ensure_future(_relay(response, stdio.output, cursor, streams, stdio.tty))
    ends = (relay, asyncio.ensure_future(detached.wait()), asyncio.ensure_future(gone.wait()))
    try:
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for end in ends:
            end.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await relay
    if gone.is_set() and stdin and stdin_once:
        stdio.close_stdin()
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def _relay(
    response: web.StreamResponse, output: OutputBuffer, cursor: int, streams: set[int], tty: bool
) -> None:
    async for stream, data in output.follow(cursor):
        if tty:
            await response.write(data)
        elif stream in streams:
            await response.write(frame(stream, data))
