"""`docker volume prune`, `docker image prune` and the build cache's part of `docker system
prune` (`/volumes/prune`, `/images/prune`, `/build/prune`), as dockerd 20.10 answers them
(API 1.41; measured against a real one):

- volumes: every volume no container of the node mounts (running or not), named ones too (API
  1.41 has no `all` filter: 1.42 made anonymous-only the default); filters `label`, `label!`;
  `VolumesDeleted` (an empty list when none) and `SpaceReclaimed`, the bytes of their files.
- images: dangling images only (`<none>:<none>`), or with `dangling=false` (`prune -a`) every
  image no container of the node was made from; filters `dangling`, `label`, `label!`,
  `until`; `ImagesDeleted` (`Untagged`/`Deleted` entries, null when none) and
  `SpaceReclaimed`, the size `/images/json` reports for each one deleted.
- build cache: the node has none (Swarmlab builds nothing): nothing to delete, filters checked.

Any other filter is refused with dockerd's `Invalid filter '<name>'`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime

from aiohttp import web

from controlplane.agent.local_images import ImageUser
from controlplane.agent.runtime import ContainerState
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api.common import add_route, json_response, parse_filters
from controlplane.api.errors import bad_request
from controlplane.api.images import BOOT_NS, IMAGE_SIZE

VOLUME_FILTERS = frozenset({"label", "label!"})
IMAGE_FILTERS = frozenset({"dangling", "label", "label!", "until"})
# what dockerd 20.10's buildkit accepts for a cache prune
BUILD_FILTERS = frozenset(
    {"until", "id", "parent", "type", "description", "inuse", "shared", "private"}
)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_REGISTRY: web.AppKey[StandaloneContainers] = web.AppKey("prune_containers")


def register(app: web.Application, registry: StandaloneContainers) -> web.Application:
    app[_REGISTRY] = registry
    add_route(app, "POST", "/volumes/prune", prune_volumes)
    add_route(app, "POST", "/images/prune", prune_images)
    add_route(app, "POST", "/build/prune", prune_build_cache)
    return app


def labels_match(labels: Mapping[str, str], filters: Mapping[str, list[str]]) -> bool:
    """dockerd's `label` (every one present: `key` or `key=value`) and `label!` (none of
    them present) filters of a prune."""

    def has(wanted: str) -> bool:
        key, equals, value = wanted.partition("=")
        return key in labels and (not equals or labels[key] == value)

    return all(has(w) for w in filters.get("label", [])) and not any(
        has(w) for w in filters.get("label!", [])
    )


def until_ns(value: str, now_ns: int) -> int:
    """An `until` filter as dockerd reads it: a Go duration before now (`10m`, `1h30m`), a
    Unix time (`1700000000[.5]`) or an RFC 3339 time or date; 400 naming the value else."""
    if _is_duration(value):
        return now_ns - _duration_ns(value)
    try:
        return int(float(value) * 1_000_000_000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(
            f'invalid until filter "{value}": give a duration (10m, 24h), a Unix time or an '
            "RFC 3339 time (2006-01-02T15:04:05Z)"
        ) from None
    if moment.tzinfo is None:  # dockerd reads a time without a zone as local time
        moment = moment.astimezone()
    return int(moment.timestamp() * 1_000_000_000)


def _is_duration(value: str) -> bool:
    return bool(re.fullmatch(rf"-?(?:{_DURATION.pattern})+", value))


def _duration_ns(value: str) -> int:
    sign = -1 if value.startswith("-") else 1
    total = sum(
        float(number) * _UNIT_NS[unit] for number, unit in _DURATION.findall(value.lstrip("-"))
    )
    return sign * int(total)


async def prune_volumes(request: web.Request) -> web.Response:
    filters = parse_filters(request, VOLUME_FILTERS)
    runtime = request.app[_REGISTRY].runtime
    deleted: list[str] = []
    reclaimed = 0
    for volume in runtime.volumes.listed():
        if runtime.volume_users(volume.name) or not labels_match(volume.labels, filters):
            continue
        size = runtime.volumes.size(volume.name)
        runtime.volumes.remove(volume.name, [])
        deleted.append(volume.name)
        reclaimed += size
    return json_response({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed})


async def prune_images(request: web.Request) -> web.Response:
    filters = parse_filters(request, IMAGE_FILTERS)
    dangling_only = _dangling_only(filters.get("dangling", []))
    until = [until_ns(v, time.time_ns()) for v in filters.get("until", [])]
    registry = request.app[_REGISTRY]
    # the built-in images have no labels and were made when the engine started: one made
    # after an `until` stays, as in dockerd
    if not labels_match({}, filters) or any(moment < BOOT_NS for moment in until):
        return json_response({"ImagesDeleted": None, "SpaceReclaimed": 0})
    users = [
        ImageUser(c.id, c.reference.repository, c.state is ContainerState.RUNNING)
        for c in registry.containers()
    ]
    deleted = registry.runtime.images.prune(dangling_only, users)
    answer = [entry for image in deleted for entry in image]
    return json_response(
        {"ImagesDeleted": answer or None, "SpaceReclaimed": IMAGE_SIZE * len(deleted)}
    )


def _dangling_only(values: list[str]) -> bool:
    """The `dangling` filter as dockerd reads it: false (`prune -a`) or true (the default)."""
    lowered = {v.lower() for v in values}
    if lowered & {"false", "0"}:
        return False
    if values and not lowered & {"true", "1"}:
        raise bad_request(f"Invalid filter 'dangling=[{' '.join(values)}]'")
    return True


async def prune_build_cache(request: web.Request) -> web.Response:
    parse_filters(request, BUILD_FILTERS)
    return json_response({"CachesDeleted": None, "SpaceReclaimed": 0})
