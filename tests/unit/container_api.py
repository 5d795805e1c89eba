"""A node's containers API served in-process on a loopback address, and the raw hijacked
connection a docker CLI holds after `101 UPGRADED` (attach and exec streams), for the unit
tests of those endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from controlplane.agent.runtime import Runtime
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api import containers, create_app
from controlplane.api.local import LocalBackend

DEADLINE = 30.0
Client = TestClient[Any, Any]


def serve_containers(host: str, test: Callable[[Client], Awaitable[None]]) -> None:
    """Run `test` against a fresh node's containers API on `host` (its own loopback address,
    so test files running at once do not meet), closing every container afterwards."""

    async def main() -> None:
        registry = StandaloneContainers(Runtime())
        app = containers.register(create_app(LocalBackend()), registry)
        async with TestClient(TestServer(app, host=host)) as client:
            try:
                await test(client)
            finally:
                await registry.close()

    asyncio.run(main())


class Hijacked:
    """A raw connection after `101 UPGRADED`, as the CLI holds it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received = b""

    @classmethod
    async def open(cls, client: Client, path: str, body: bytes = b"") -> Hijacked:
        host = str(client.host)
        reader, writer = await asyncio.open_connection(host, client.port)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n"), head
        assert b"Upgrade: tcp" in head and b"application/vnd.docker.raw-stream" in head
        return cls(reader, writer)

    async def until(self, wanted: bytes) -> bytes:
        while wanted not in self.received:
            chunk = await asyncio.wait_for(self.reader.read(4096), DEADLINE)
            assert chunk, f"the stream ended before {wanted!r}: {self.received!r}"
            self.received += chunk
        return self.received

    async def rest(self) -> bytes:
        """Everything until the node closes the connection."""
        while chunk := await asyncio.wait_for(self.reader.read(4096), DEADLINE):
            self.received += chunk
        return self.received

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def close_stdin(self) -> None:
        self.writer.write_eof()
