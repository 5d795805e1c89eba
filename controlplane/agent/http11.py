"""HTTP/1.x over a container's TCP (`datapath.userspace.stack`; real sockets in host mode,
`host_stack.py`): the server the emulated web images run on every attached network, and the
GET the emulated `wget` sends.
One request per connection (`Connection: close`), which is what lab clients do."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from controlplane.agent.network import Listener, StreamConnection
from controlplane.agent.process import Exec
from controlplane.numbers import is_number

log = logging.getLogger("controlplane.agent.http")

MAX_HEAD = 64 * 1024
READ_TIMEOUT = 30.0


class HttpError(Exception):
    """A message that is not HTTP/1.x; says what was wrong."""


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    peer: tuple[str, int]
    local: tuple[str, int]

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Response]


async def _read_head(conn: StreamConnection, buffer: bytearray) -> bytes:
    """Bytes up to the blank line ending a message's head; the rest stays in `buffer`."""
    async with asyncio.timeout(READ_TIMEOUT):
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > MAX_HEAD:
                raise HttpError(f"a message head longer than {MAX_HEAD} bytes")
            data = await conn.recv()
            if not data:
                raise HttpError("the connection closed before the message head ended")
            buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    return head


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise HttpError(f"a header line without a name: {line!r}")
        headers.append((name.strip(), value.strip()))
    return headers


# ---- server ---------------------------------------------------------------------------------


async def serve(
    process: Exec,
    port: int,
    handler: Handler,
    server: str,
    on_request: Callable[[Request, Response], None] = lambda _req, _resp: None,
) -> None:
    """Answer HTTP on `port` of every stack of the container until the process gets its
    SIGTERM; OSError when a port is taken."""
    listeners = [stack.listen(port) for stack in process.net.stacks]
    connections: set[asyncio.Task[None]] = set()

    async def accept(listener: Listener) -> None:
        while True:
            conn = await listener.accept()
            task = asyncio.create_task(answer(conn, handler, server, on_request))
            connections.add(task)
            task.add_done_callback(connections.discard)

    acceptors = [asyncio.create_task(accept(listener)) for listener in listeners]
    try:
        await process.until_terminated()
    finally:
        for task in [*acceptors, *connections]:
            task.cancel()
        for listener in listeners:
            listener.close()


async def answer(
    conn: StreamConnection,
    handler: Handler,
    server: str,
    on_request: Callable[[Request, Response], None],
) -> None:
    """Read one request on `conn`, answer it with `handler`'s response and close."""
    try:
        head = await _read_head(conn, bytearray())
        request_line, *lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(f"not an HTTP/1.x request line: {request_line!r}")
        request = Request(
            parts[0], parts[1], parts[2], _parse_headers(lines), conn.peer, conn.local
        )
        response = handler(request)
        on_request(request, response)
        await conn.send(_response_bytes(request, response, server))
        conn.close()
    except (HttpError, UnicodeError) as err:
        log.debug("event=http_bad_request peer=%s error=%s", conn.peer, err)
        with contextlib.suppress(OSError):
            await conn.send(_response_bytes(None, Response(400, b"Bad Request\n"), server))
        conn.close()
    except (OSError, TimeoutError) as err:
        log.debug("event=http_connection_failed peer=%s error=%r", conn.peer, str(err))
        conn.abort()


def _response_bytes(request: Request | None, response: Response, server: str) -> bytes:
    reason = HTTPStatus(response.status).phrase
    head = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Server: {server}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        *(f"{k}: {v}" for k, v in response.headers),
        "Connection: close",
    ]
    body = b"" if request is not None and request.method == "HEAD" else response.body
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


# ---- client ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")


async def get(conn: StreamConnection, host: str, path: str, user_agent: str) -> Reply:
    """Send a GET for `path` on `conn` and read the whole reply (to the close)."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    )
    await conn.send(request.encode("latin-1"))
    buffer = bytearray()
    head = await _read_head(conn, buffer)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not is_number(code):
        raise HttpError(f"not an HTTP/1.x status line: {status_line!r}")
    headers = _parse_headers(lines)
    async with asyncio.timeout(READ_TIMEOUT):
        while data := await conn.recv():
            buffer += data
    reply = Reply(version, int(code), reason, headers, bytes(buffer))
    if reply.header("Transfer-Encoding").lower() == "chunked":
        return Reply(version, reply.status, reason, headers, _dechunk(reply.body))
    length = reply.header("Content-Length")
    if is_number(length):
        return Reply(version, reply.status, reason, headers, reply.body[: int(length)])
    return reply


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise HttpError(f"a bad chunk size {size_line!r}") from None
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)
