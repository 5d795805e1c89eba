"""Engine-wide views of one node's containers and images: `docker system df` (`/system/df`),
`docker container prune` (`/containers/prune`), the container counts `docker info` shows and
the container ids `docker network inspect` lists.

The emulated engine stores nothing on disk for a container or an image: containers use 0
bytes, each built-in image the size `/images/json` reports; there are no volumes and no build
cache, so those lists are empty.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from controlplane.agent.runtime import ContainerState
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api.common import CONTAINER_STATES, add_route, json_response, parse_filters
from controlplane.api.containers import container_summary
from controlplane.api.errors import bad_request
from controlplane.api.images import LOCAL_IMAGES, image_summaries
from controlplane.api.networks import CONTAINER_IDS
from controlplane.api.prunes import labels_match
from controlplane.api.volumes import volume_json

PRUNE_FILTERS = frozenset({"label", "label!", "until"})
_REGISTRY: web.AppKey[StandaloneContainers] = web.AppKey("system_containers")


def register(app: web.Application, registry: StandaloneContainers) -> web.Application:
    app[_REGISTRY] = registry
    app[CONTAINER_STATES] = lambda: Counter(c.state.value for c in registry.containers())
    app[CONTAINER_IDS] = lambda: {c.name: c.id for c in registry.containers()}
    add_route(app, "GET", "/system/df", disk_usage)
    add_route(app, "POST", "/containers/prune", prune_containers)
    return app


async def disk_usage(request: web.Request) -> web.Response:
    registry = request.app[_REGISTRY]
    runtime = registry.runtime
    containers = registry.containers()
    users = Counter(c.config.image for c in containers)
    images: list[dict[str, Any]] = []
    for image in image_summaries(request.app[LOCAL_IMAGES]):
        tags = image["RepoTags"]
        in_use = sum(users[t] + users[t.split(":")[0]] for t in tags)
        # SharedSize is computed here (no layer is shared), as dockerd's df does; the CLI
        # counts an image in use as not reclaimable only with it.
        images.append({**image, "SharedSize": 0, "Containers": in_use})
    return json_response(
        {
            "LayersSize": sum(image["Size"] for image in images),
            "Images": images,
            "Containers": [
                {**container_summary(registry, c), "SizeRw": 0, "SizeRootFs": 0}
                for c in reversed(containers)
            ],
            "Volumes": [
                {
                    **volume_json(volume),
                    "UsageData": {
                        "RefCount": len(runtime.volume_users(volume.name)),
                        "Size": runtime.volumes.size(volume.name),
                    },
                }
                for volume in runtime.volumes.listed()
            ],
            "BuildCache": [],
            "BuilderSize": 0,
        }
    )


async def prune_containers(request: web.Request) -> web.Response:
    """Every stopped container (exited or never started) goes, task containers included, as
    dockerd prunes them; `label` and `label!` filters as dockerd's."""
    registry = request.app[_REGISTRY]
    filters = parse_filters(request, PRUNE_FILTERS)
    if filters.get("until"):
        raise bad_request(
            "the until filter of container prune is not emulated by Swarmlab; prune by label, "
            "or remove containers with docker rm"
        )
    deleted: list[str] = []
    for container in registry.containers():
        running = container.state is ContainerState.RUNNING
        if running or not labels_match(container.config.labels, filters):
            continue
        await registry.remove(container.id)
        deleted.append(container.id)
    return json_response({"ContainersDeleted": deleted or None, "SpaceReclaimed": 0})
