"""The node's Engine API server: a stop must not wait on long polls left by clients."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from controlplane.process import serve_api

ADDRESS = "127.77.187.1"
DEADLINE = 30.0  # far above the grace, far below aiohttp's own 60 s default


def test_stopping_does_not_wait_on_a_long_poll_whose_client_hung_up() -> None:
    async def scenario() -> None:
        waiting = asyncio.Event()

        async def wait_forever(request: web.Request) -> web.Response:
            waiting.set()
            await asyncio.Event().wait()  # as a container wait for a container that runs on
            return web.Response()

        app = web.Application()
        app.router.add_post("/containers/{id}/wait", wait_forever)
        runner = await serve_api(app, f"{ADDRESS}:0")
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as client:
            call = asyncio.create_task(client.post(f"http://{ADDRESS}:{port}/containers/c/wait"))
            await asyncio.wait_for(waiting.wait(), DEADLINE)
            call.cancel()  # the docker CLI of `docker run -d` exits without its answer
        async with asyncio.timeout(DEADLINE):  # before: aiohttp's 60 s for the handler
            await runner.cleanup()

    asyncio.run(scenario())
