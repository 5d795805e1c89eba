"""The Raft-only manager's Engine API, loaded when its first client connects."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from controlplane.process import NodeError
from controlplane.raft_lab import EngineApiOnDemand

LISTEN = "127.77.150.1:2375"


def test_the_api_loads_on_the_first_connection_and_answers_it() -> None:
    built: list[web.Application] = []

    def make_app() -> web.Application:
        async def version(_request: web.Request) -> web.Response:
            return web.json_response({"ApiVersion": "1.43"})

        app = web.Application()
        app.router.add_get("/version", version)
        built.append(app)
        return app

    async def scenario() -> None:
        api = EngineApiOnDemand(LISTEN, make_app)
        api.start()
        try:
            await asyncio.sleep(0.1)
            assert built == [], "nothing is loaded before a client connects"
            async with aiohttp.ClientSession() as session:
                for _ in range(2):
                    async with session.get(f"http://{LISTEN}/version") as response:
                        assert await response.json() == {"ApiVersion": "1.43"}
            assert len(built) == 1
        finally:
            await api.stop()

    asyncio.run(scenario())


def test_an_address_that_cannot_be_bound_is_a_clear_error() -> None:
    async def scenario() -> None:
        first = EngineApiOnDemand(LISTEN, web.Application)
        first.start()
        try:
            with pytest.raises(NodeError, match=f"cannot serve the Engine API on {LISTEN}"):
                EngineApiOnDemand(LISTEN, web.Application).start()
            with pytest.raises(NodeError, match="cannot serve the Engine API on nowhere"):
                EngineApiOnDemand("nowhere", web.Application).start()
        finally:
            await first.stop()

    asyncio.run(scenario())
