"""`DELETE /images/{name}` (`docker rmi`, `docker image rm`): the node's images
(`agent/local_images.py`) checked against the node's containers, dockerd's answers and
conflicts."""

from __future__ import annotations

from aiohttp import web

from controlplane.agent.images import ImageError, NoSuchImageError
from controlplane.agent.local_images import ImageConflictError, ImageUser
from controlplane.agent.runtime import ContainerState
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api.common import add_route, json_response
from controlplane.api.errors import ApiError
from controlplane.api.images import LOCAL_IMAGES

_REGISTRY: web.AppKey[StandaloneContainers] = web.AppKey("image_removal_containers")


def register(app: web.Application, registry: StandaloneContainers) -> web.Application:
    """The node's images are its runtime's from now on (`docker images` lists them)."""
    app[_REGISTRY] = registry
    app[LOCAL_IMAGES] = registry.runtime.images
    add_route(app, "DELETE", "/images/{name:.+}", remove_image)
    return app


def _truthy(value: str) -> bool:
    return value.lower() in ("1", "true")


async def remove_image(request: web.Request) -> web.Response:
    registry = request.app[_REGISTRY]
    users = [
        ImageUser(c.id, c.reference.repository, c.state is ContainerState.RUNNING)
        for c in registry.containers()
    ]
    try:
        answer = registry.runtime.images.remove(
            request.match_info["name"], _truthy(request.query.get("force", "")), users
        )
    except NoSuchImageError as err:
        raise ApiError(404, str(err)) from None
    except ImageConflictError as err:
        raise ApiError(409, str(err)) from None
    except ImageError as err:
        raise ApiError(400, str(err)) from None
    return json_response(answer)
