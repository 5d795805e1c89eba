"""What every node process needs around its parts: serving the Engine API, waiting for a
signal, and the error that ends a process with a message."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("controlplane.node")


class NodeError(Exception):
    """The node cannot start, or cannot go on; the message says why and what to do."""


API_SHUTDOWN_GRACE = 2.0  # seconds


async def serve_api(
    app: web.Application, listen: str, unix_socket: Path | None = None
) -> web.AppRunner:
    """The Engine API on `listen` (HOST:PORT) and, if given, also on `unix_socket` (as
    dockerd's /var/run/docker.sock; one left by a killed process is replaced)."""
    # aiohttp is imported here, not at the top: a Raft-only manager (`raft_lab.py`) imports
    # this module but loads its Engine API only when a client first connects (12 MB of RSS).
    from aiohttp import web

    host, _, port = listen.rpartition(":")
    # A stopping node waits this long for requests in flight, then cancels them: long polls
    # such as the `POST /containers/{id}/wait` every `docker run -d` leaves behind (the CLI
    # hangs up, the handler waits for the exit) would otherwise hold it for aiohttp's 60 s.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=API_SHUTDOWN_GRACE)
    await runner.setup()
    where = listen
    try:
        await web.TCPSite(runner, host, int(port)).start()
        if unix_socket is not None:
            where = str(unix_socket)
            if unix_socket.is_socket():
                unix_socket.unlink()
            await web.UnixSite(runner, str(unix_socket)).start()
    except OSError as err:
        await runner.cleanup()
        raise NodeError(f"cannot serve the Engine API on {where}: {err}") from err
    log.info("event=api_listening address=%s socket=%s", listen, unix_socket or "")
    return runner


async def until_signalled(also: asyncio.Future[BaseException] | None = None) -> None:
    """Return on SIGTERM or SIGINT, or when `also` completes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.ensure_future(stop.wait())
    waits: set[asyncio.Future[Any]] = {stopped} if also is None else {stopped, also}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
