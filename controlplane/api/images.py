"""`/images/json` and `/images/create`: the node's images, out of the emulated runtime's
built-ins (there is no registry; `agent/local_images.py`). A pull of a built-in image succeeds
at once (the node holds it again), with the progress messages the CLI prints; a pull of any
other image fails with the registry's refusal as dockerd passes it on. `docker rmi` is
`image_removal.py` (it needs the node's containers).
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from controlplane.agent.images import BUILTIN_IMAGES, ImageError, parse_reference
from controlplane.agent.local_images import Held, LocalImages, builtin_image_id
from controlplane.api.common import add_route, json_response
from controlplane.api.errors import ApiError, bad_request

BOOT_NS = time.time_ns()  # the built-ins are "created" when the engine started
IMAGE_SIZE = 4_261_574  # bytes reported for every built-in image (nothing is stored)
# The node's images: a node's containers API puts its runtime's here (`containers.register`).
LOCAL_IMAGES: web.AppKey[LocalImages] = web.AppKey("local_images")
image_id = builtin_image_id


def register(app: web.Application) -> web.Application:
    app[LOCAL_IMAGES] = LocalImages()
    add_route(app, "GET", "/images/json", list_images)
    add_route(app, "POST", "/images/create", pull)
    return app


def _familiar(repository: str) -> str:
    return repository.removeprefix("docker.io/").removeprefix("library/")


async def list_images(request: web.Request) -> web.Response:
    return json_response(image_summaries(request.app[LOCAL_IMAGES]))


def image_summaries(images: LocalImages) -> list[dict[str, Any]]:
    """The node's images as `/images/json` lists them (a dangling one as dockerd's: tag
    `<none>:<none>` and digest `<none>@<none>`, which the CLI shows as `<none>`)."""
    return [
        {
            "Id": image_id(repository),
            "ParentId": "",
            "RepoTags": [f"{_familiar(repository)}:{tag}" for tag in images.tags(repository)]
            if held is Held.TAGGED
            else ["<none>:<none>"],
            "RepoDigests": [] if held is Held.TAGGED else ["<none>@<none>"],
            "Created": BOOT_NS // 1_000_000_000,
            "Size": IMAGE_SIZE,
            "SharedSize": -1,
            "VirtualSize": IMAGE_SIZE,
            "Labels": None,
            "Containers": -1,
        }
        for repository, held in images.held()
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
    request.app[LOCAL_IMAGES].pulled(reference)
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
