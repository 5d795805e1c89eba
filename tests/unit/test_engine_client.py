"""`lab.engine.EngineClient` against a small Engine API stand-in on a unix socket (how the
scale bench reaches its reference dockerd): JSON and tar bodies, progress streams, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from controlplane.lab.engine import EngineClient, EngineError


async def _images_create(request: web.Request) -> web.Response:
    """As dockerd: one JSON object a line while it imports, so not one document."""
    body = await request.read()
    lines = [
        {"status": "Importing", "type": request.content_type, "bytes": len(body)},
        {"status": "sha256:feed", "repo": request.query["repo"]},
    ]
    return web.Response(text="\n".join(json.dumps(line) for line in lines) + "\n")


async def _networks_create(request: web.Request) -> web.Response:
    spec = await request.json()
    if spec["Name"] == "taken":
        return web.json_response({"message": "network with name taken already exists"}, status=409)
    return web.json_response({"Id": f"id-of-{spec['Name']}", "Type": request.content_type})


async def _broken(_request: web.Request) -> web.Response:
    return web.Response(text="plain words, no JSON", status=500)


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def _no_content(_request: web.Request) -> web.Response:
    return web.Response(status=204)


def _with_engine(tmp_path: Path, scenario: Callable[[EngineClient], Awaitable[None]]) -> None:
    socket = tmp_path / "docker.sock"

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/_ping", _ok)
        app.router.add_post("/v1.41/images/create", _images_create)
        app.router.add_post("/v1.41/networks/create", _networks_create)
        app.router.add_delete("/v1.41/networks/{name}", _no_content)
        app.router.add_get("/v1.41/broken", _broken)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, str(socket)).start()
        try:
            async with EngineClient("docker", timeout=30, unix_socket=socket) as engine:
                await scenario(engine)
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_json_bodies_and_answers_over_a_unix_socket(tmp_path: Path) -> None:
    async def scenario(engine: EngineClient) -> None:
        assert await engine.ping()
        created = await engine.request("POST", "/networks/create", {"Name": "net"})
        assert created == {"Id": "id-of-net", "Type": "application/json"}
        assert await engine.request("DELETE", "/networks/net") is None  # 204: no body

    _with_engine(tmp_path, scenario)


def test_a_tar_body_and_a_progress_stream_answer(tmp_path: Path) -> None:
    async def scenario(engine: EngineClient) -> None:
        answer = await engine.request(
            "POST", "/images/create", params={"fromSrc": "-", "repo": "busybox"}, tar=b"x" * 1024
        )
        # Not one JSON document: the text, line by line as the daemon sent it.
        lines = [json.loads(line) for line in answer.splitlines()]
        assert lines[0] == {"status": "Importing", "type": "application/x-tar", "bytes": 1024}
        assert lines[1]["repo"] == "busybox"

    _with_engine(tmp_path, scenario)


def test_errors_carry_the_status_and_the_daemons_message(tmp_path: Path) -> None:
    async def scenario(engine: EngineClient) -> None:
        with pytest.raises(EngineError) as err:
            await engine.request("POST", "/networks/create", {"Name": "taken"})
        assert (err.value.status, str(err.value)) == (409, "network with name taken already exists")
        with pytest.raises(EngineError) as err:
            await engine.request("GET", "/broken")
        assert (err.value.status, str(err.value)) == (500, "plain words, no JSON")

    _with_engine(tmp_path, scenario)


def test_ping_is_false_when_nothing_listens(tmp_path: Path) -> None:
    async def main() -> None:
        async with EngineClient("docker", timeout=5, unix_socket=tmp_path / "none.sock") as engine:
            assert not await engine.ping()

    asyncio.run(main())
