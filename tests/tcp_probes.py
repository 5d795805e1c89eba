"""Probing published ports from the host in integration tests: one HTTP/1.0 `GET /` over a
real TCP connection, and whether a port refuses connections."""

from __future__ import annotations

import asyncio

TIMEOUT = 10.0  # seconds to connect, and to read the answer


async def http_answer(host: str, port: int) -> str | None:
    """The whole answer to `GET /` on (host, port); None when nothing answers (refused,
    reset or timed out)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET / HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        return (await asyncio.wait_for(reader.read(), TIMEOUT)).decode(errors="replace")
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()


async def refused(host: str, port: int) -> bool:
    """True when connecting to (host, port) is refused: nothing listens or forwards there."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False
