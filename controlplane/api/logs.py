"""`GET /services/{id}/logs` and `GET /tasks/{id}/logs`: a service's or a task's output, from
the agents that ran it, through the leader's log broker (see manager/logbroker.py).

The answer is dockerd's: a stream (`application/vnd.docker.raw-stream`) of frames, each an
8-byte header (stream: 1 stdout, 2 stderr, 3 the daemon's own error; three zero bytes; the
payload's length, big-endian) and one line. With `details` a line starts with its attributes
(`com.docker.swarm.node.id=...,com.docker.swarm.service.id=...,com.docker.swarm.task.id=...`,
sorted by key, query-escaped) and a space: the CLI always asks for them and builds its
`web.1.<task>@<node>    | ` prefix from them. With `timestamps` the line starts with the time
(RFC 3339, nine fractional digits) and a space. A TTY service's lines are sent raw, unframed.

Errors before the stream starts have dockerd's statuses: unknown service or task 404, a worker
or an engine outside any swarm 503, and 500 for bad `tail`, `since` or no stream chosen (dockerd
returns these as plain errors). Once the stream started, an error (the leader changed, a node's
lines are missing) ends it with a frame on stream 3: `Error grabbing logs: ...`.

Decisions where Docker is silent: `until` (which dockerd ignores for services) is honoured as for
container logs: lines written after it are left out, and a followed stream ends at that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import quote_plus

from aiohttp import web

from controlplane.api.common import add_route, require_manager
from controlplane.api.errors import ApiError
from controlplane.api.services import find_service
from controlplane.api.tasks import find_task
from controlplane.manager.log_subscriber import LogStreamError
from controlplane.pb.logbroker_pb2 import (
    LogMessage,
    LogSelector,
    LogStream,
    LogSubscriptionOptions,
    SubscribeLogsRequest,
)

RAW_STREAM = "application/vnd.docker.raw-stream"
STDOUT, STDERR, SYSTEMERR = 1, 2, 3
FRAME_TYPES = {LogStream.LOG_STREAM_STDOUT: STDOUT, LogStream.LOG_STREAM_STDERR: STDERR}
CONTEXT_PREFIX = "com.docker.swarm"
DISCONNECT_CHECK = 1.0  # seconds between looks at whether a following client is still there
_UNIX_TIME = re.compile(r"-?[0-9]+(\.[0-9]{1,9})?")


class LogSource(Protocol):
    """What serves the lines: a manager's LogSubscriber (see manager/log_subscriber.py)."""

    async def subscribe_logs(
        self, request: SubscribeLogsRequest
    ) -> AsyncGenerator[list[LogMessage], None]: ...


LOG_SOURCE: web.AppKey[LogSource] = web.AppKey("log_source")


def register(app: web.Application, source: LogSource) -> web.Application:
    app[LOG_SOURCE] = source
    add_route(app, "GET", "/services/{id}/logs", service_logs)
    add_route(app, "GET", "/tasks/{id}/logs", task_logs)
    return app


# ---- framing and line format ----------------------------------------------------------------


_HEADER = struct.Struct(">BxxxI")  # stream, three zero bytes, payload length


def frame(stream: int, payload: bytes) -> bytes:
    """One frame of Docker's multiplexed stream (stdcopy)."""
    return _HEADER.pack(stream, len(payload)) + payload


def unframe(body: bytes) -> list[tuple[int, bytes]]:
    """The (stream, payload) of each frame of a multiplexed stream, as the docker CLI splits
    it; a torn header at the end is left out."""
    frames, offset = [], 0
    while offset + _HEADER.size <= len(body):
        stream, size = _HEADER.unpack_from(body, offset)
        offset += _HEADER.size
        frames.append((stream, body[offset : offset + size]))
        offset += size
    return frames


def fixed_time(ns: int) -> str:
    """Go's RFC3339NanoFixed in UTC: always nine fractional digits."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


def attrs_text(message: LogMessage) -> str:
    """The line's details as dockerd writes them: its own attributes and the swarm context,
    sorted by key, each `key=value` query-escaped, comma-separated."""
    pairs = {a.key: a.value for a in message.attrs}
    pairs[f"{CONTEXT_PREFIX}.node.id"] = message.context.node_id
    pairs[f"{CONTEXT_PREFIX}.service.id"] = message.context.service_id
    pairs[f"{CONTEXT_PREFIX}.task.id"] = message.context.task_id
    return ",".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in sorted(pairs.items()))


@dataclass(frozen=True)
class LogQuery:
    """The query parameters, checked."""

    stdout: bool
    stderr: bool
    follow: bool = False
    timestamps: bool = False
    details: bool = False
    tail: int | None = None  # None: every line
    since_ns: int = 0
    until_ns: int = 0  # 0: no end

    @staticmethod
    def parse(query: dict[str, str]) -> LogQuery:
        parsed = LogQuery(
            stdout=_flag(query, "stdout"),
            stderr=_flag(query, "stderr"),
            follow=_flag(query, "follow"),
            timestamps=_flag(query, "timestamps"),
            details=_flag(query, "details"),
            tail=_tail(query.get("tail", "")),
            since_ns=_unix_time(query.get("since", ""), "since"),
            until_ns=_unix_time(query.get("until", ""), "until"),
        )
        if not (parsed.stdout or parsed.stderr):
            raise ApiError(500, "Bad parameters: you must choose at least one stream")
        return parsed

    def options(self) -> LogSubscriptionOptions:
        streams = [LogStream.LOG_STREAM_STDOUT] if self.stdout else []
        streams += [LogStream.LOG_STREAM_STDERR] if self.stderr else []
        options = LogSubscriptionOptions(
            streams=streams, follow=self.follow, since_ns=self.since_ns
        )
        if self.tail is not None:
            options.tail = self.tail
        return options

    def wants(self, message: LogMessage) -> bool:
        stream = FRAME_TYPES.get(message.stream)
        chosen = (stream == STDOUT and self.stdout) or (stream == STDERR and self.stderr)
        return chosen and not (self.until_ns and message.timestamp_ns > self.until_ns)

    def line(self, message: LogMessage) -> bytes:
        """The payload dockerd writes for one line (see the module docstring)."""
        line = message.data
        if self.details:
            line = attrs_text(message).encode() + b" " + line
        if self.timestamps:
            line = fixed_time(message.timestamp_ns).encode() + b" " + line
        return line


def _flag(query: dict[str, str], name: str) -> bool:
    """dockerd's BoolValue: anything but empty, 0, no, false or none is true."""
    return query.get(name, "").strip().lower() not in ("", "0", "no", "false", "none")


def _tail(value: str) -> int | None:
    if value in ("", "all"):
        return None
    try:
        tail = int(value)
    except ValueError:
        raise ApiError(500, 'tail value must be a positive integer or "all"') from None
    if tail < 0:
        raise ApiError(500, "negative tail values not supported")
    return tail


def _unix_time(value: str, name: str) -> int:
    """`seconds[.nanoseconds]` since the epoch (the CLI turns `10m` or RFC 3339 into that)."""
    if not value:
        return 0
    if not _UNIX_TIME.fullmatch(value):
        raise ApiError(
            500,
            f"could not parse {name} timestamp: {value!r} is not a UNIX time "
            "(seconds, optionally with a fraction of up to 9 digits)",
        )
    seconds, _, fraction = value.partition(".")
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    return int(seconds) * 1_000_000_000 + (-nanos if value.startswith("-") else nanos)


# ---- handlers ------------------------------------------------------------------------------


async def service_logs(request: web.Request) -> web.StreamResponse:
    b = require_manager(request)
    query = LogQuery.parse(dict(request.query))
    service = find_service(b.store, request.match_info["id"])
    selector = LogSelector(service_ids=[service.id])
    return await _stream(request, query, selector, tty=service.spec.container.tty)


async def task_logs(request: web.Request) -> web.StreamResponse:
    b = require_manager(request)
    query = LogQuery.parse(dict(request.query))
    task = find_task(b.store, request.match_info["id"])
    return await _stream(
        request, query, LogSelector(task_ids=[task.id]), tty=task.spec.container.tty
    )


async def _stream(
    request: web.Request, query: LogQuery, selector: LogSelector, *, tty: bool
) -> web.StreamResponse:
    source = request.app[LOG_SOURCE]
    try:
        batches = await source.subscribe_logs(
            SubscribeLogsRequest(selector=selector, options=query.options())
        )
    except LogStreamError as err:
        raise ApiError(500, str(err)) from None
    response = web.StreamResponse(headers={"Content-Type": RAW_STREAM})
    try:
        await response.prepare(request)
        pump = asyncio.create_task(_pump(response, batches, query, tty))
        await _while_connected(request, pump, query.until_ns if query.follow else 0)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
    finally:
        await batches.aclose()
    return response


async def _pump(
    response: web.StreamResponse,
    batches: AsyncGenerator[list[LogMessage], None],
    query: LogQuery,
    tty: bool,
) -> None:
    """Write every wanted line; a broken subscription ends with dockerd's error frame."""
    try:
        async for batch in batches:
            chunk = b"".join(_frames(batch, query, tty))
            if chunk:
                await response.write(chunk)
    except LogStreamError as err:
        text = f"Error grabbing logs: {err}\n".encode()
        await response.write(text if tty else frame(SYSTEMERR, text))


def _frames(batch: Iterable[LogMessage], query: LogQuery, tty: bool) -> Iterable[bytes]:
    for message in batch:
        if query.wants(message):
            payload = query.line(message)
            yield payload if tty else frame(FRAME_TYPES[message.stream], payload)


async def _while_connected(request: web.Request, pump: asyncio.Task[None], until_ns: int) -> None:
    """Wait for `pump`; stop it when the client went away (aiohttp does not cancel handlers
    then) or, following with `until`, when that time has come."""
    try:
        while not pump.done():
            await asyncio.wait({pump}, timeout=DISCONNECT_CHECK)
            gone = request.transport is None or request.transport.is_closing()
            if gone or (until_ns and time.time_ns() > until_ns):
                pump.cancel()
                break
    finally:
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await pump
