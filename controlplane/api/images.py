"""`/images/json` and `/images/create`: the emulated runtime's built-in images (there is no
registry). A pull of a built-in image succeeds at once, with the progress messages the CLI
prints; a pull of any other image fails with the registry's refusal as dockerd passes it on.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from aiohttp import web

from controlplane.agent.images import BUILTIN_IMAGES, ImageError, parse_reference
from controlplane.api.common import add_route, json_response
from controlplane.api.errors import ApiError, bad_request

_BOOT_NS = time.time_ns()  # the built-ins are "created" when the engine started
_SIZE = 4_261_574  # bytes reported for every built-in image (nothing is stored)


def register(app: web.Application) -> web.Application:
    add_route(app, "GET", "/images/json", list_images)
    add_route(app, "POST", "/images/create", pull)
    return app


def image_id(repository: str) -> str:
    """A stable id per built-in image, as `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(repository.encode()).hexdigest()


def _familiar(repository: str) -> str:
    return repository.removeprefix("docker.io/").removeprefix("library/")


async def list_images(_request: web.Request) -> web.Response:
    return json_response(image_summaries())


def image_summaries() -> list[dict[str, Any]]:
    """The built-in images as `/images/json` lists them."""
    return [
        {
            "Id": image_id(repository),
            "ParentId": "",
            "RepoTags": [f"{_familiar(repository)}:latest"],
            "RepoDigests": [],
            "Created": _BOOT_NS // 1_000_000_000,
            "Size": _SIZE,
            "SharedSize": -1,
            "VirtualSize": _SIZE,
            "Labels": None,
            "Containers": -1,
        }
        for repository in sorted(BUILTIN_IMAGES)
    ]


async def pull(request: web.Request) -> web.StreamResponse:
    name = request.query.get("fromImage", "")
    if not name:
        raise bad_request("fromImage is required: the image to pull (`docker pull IMAGE`)")
    tag = request.query.get("tag", "")
    text = f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}" if tag else name
    try:
        reference = parse_reference(text)
    except ImageError as err:
        raise bad_request(str(err)) from None
    if reference.repository not in BUILTIN_IMAGES:
        path = _familiar(reference.repository)
        raise ApiError(
            404,
            f"pull access denied for {path}, repository does not exist or may require "
            "'docker login': denied: requested access to the resource is denied",
        )
    digest = image_id(reference.repository)
    messages = [
        {
            "status": f"Pulling from {reference.repository.removeprefix('docker.io/')}",
            "id": reference.tag or "latest",
        },
        {"status": f"Digest: {digest}"},
        {"status": f"Status: Image is up to date for {reference.familiar}"},
    ]
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for message in messages:
        await response.write(json.dumps(message).encode() + b"\r\n")
    await response.write_eof()
    return response
