"""Forwarding a query the embedded resolver does not own to the node's own resolvers, over the
transport the container used (UDP, or TCP after a truncated answer), with a timeout.

The query goes out under a fresh random ID (so a forged reply must guess it) and the reply
comes back under the container's ID. Servers are tried in order; when none answers the
caller gets `UpstreamError` and replies SERVFAIL, as Docker's resolver does."""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Sequence

HEADER = 12
QR_BIT = 0x80  # in the third header byte


class UpstreamError(Exception):
    """No upstream resolver gave an answer; says which failed and how."""


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self, query_id: bytes) -> None:
        self.query_id = query_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if _is_reply_to(data, self.query_id) and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def forward(
    query: bytes, servers: Sequence[tuple[str, int]], *, tcp: bool, timeout: float
) -> bytes:
    """The first answer of `servers` to `query` (a well-formed DNS message), its ID set back
    to the query's."""
    if not servers:
        raise UpstreamError("no upstream resolver is configured")
    failures: list[str] = []
    for host, port in servers:
        query_id = secrets.token_bytes(2)
        outgoing = query_id + query[2:]
        try:
            ask = _ask_tcp if tcp else _ask_udp
            reply = await asyncio.wait_for(ask(outgoing, host, port), timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, UpstreamError) as err:
            failures.append(f"{host}:{port}: {type(err).__name__} {err}".rstrip())
            continue
        return query[:2] + reply[2:]
    raise UpstreamError("; ".join(failures))


async def _ask_udp(message: bytes, host: str, port: int) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _OneReply(message[:2]), remote_addr=(host, port)
    )
    try:
        transport.sendto(message)
        return await protocol.reply
    finally:
        transport.close()


async def _ask_tcp(message: bytes, host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack("!H", len(message)) + message)
        await writer.drain()
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            reply = await reader.readexactly(length)
            if _is_reply_to(reply, message[:2]):
                return reply
    finally:
        writer.close()


def _is_reply_to(data: bytes, query_id: bytes) -> bool:
    return len(data) >= HEADER and data[:2] == query_id and bool(data[2] & QR_BIT)
