"""`/volumes` (`docker volume create/ls/inspect/rm`): the node's volumes
(`agent/volumes.py`), in use while a container of the node (running or not) mounts them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controlplane.agent.standalone import StandaloneContainers
from controlplane.agent.volumes import (
    InvalidVolumeError,
    NoSuchVolumeError,
    Volume,
    VolumeError,
    VolumeInUseError,
)
from controlplane.api.common import add_route, go_time, json_body, json_response, parse_filters
from controlplane.api.errors import ApiError, bad_request

_REGISTRY: web.AppKey[StandaloneContainers] = web.AppKey("volume_containers")
_FILTERS = frozenset({"dangling", "driver", "label", "name"})
_STATUS: dict[type[VolumeError], int] = {
    NoSuchVolumeError: 404,
    VolumeInUseError: 409,
    InvalidVolumeError: 400,
}


def register(app: web.Application, registry: StandaloneContainers) -> web.Application:
    app[_REGISTRY] = registry
    add_route(app, "GET", "/volumes", list_volumes)
    add_route(app, "POST", "/volumes/create", create)
    add_route(app, "GET", "/volumes/{name}", inspect)
    add_route(app, "DELETE", "/volumes/{name}", remove)
    return app


def volume_error(err: VolumeError) -> ApiError:
    return ApiError(_STATUS.get(type(err), 500), str(err))


def volume_json(volume: Volume) -> dict[str, Any]:
    """dockerd's Volume; CreatedAt to the second, as dockerd's local driver gives it."""
    return {
        "CreatedAt": go_time(volume.created_at_ns // 1_000_000_000 * 1_000_000_000),
        "Driver": volume.driver,
        "Labels": volume.labels or None,
        "Mountpoint": str(volume.mountpoint),
        "Name": volume.name,
        "Options": volume.options or None,
        "Scope": "local",
    }


def _strings(value: Any, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{key} must be an object of strings, got {value!r}")
    return {str(k): str(v) for k, v in value.items()}


async def create(request: web.Request) -> web.Response:
    body = await json_body(request)
    name = body.get("Name") or ""
    if not isinstance(name, str):
        raise bad_request(f"Name must be a string, got {name!r}")
    try:
        volume = request.app[_REGISTRY].runtime.volumes.create(
            name,
            driver=str(body.get("Driver") or "local"),
            labels=_strings(body.get("Labels"), "Labels"),
            options=_strings(body.get("DriverOpts"), "DriverOpts"),
        )
    except VolumeError as err:
        raise volume_error(err) from None
    return json_response(volume_json(volume), status=201)


def _matches(volume: Volume, wanted: dict[str, list[str]], used: bool) -> bool:
    for key, values in wanted.items():
        if key == "name" and not any(v in volume.name for v in values):
            return False
        if key == "driver" and volume.driver not in values:
            return False
        if key == "dangling":
            dangling = {v.lower() in ("true", "1") for v in values}
            if (not used) not in dangling:
                return False
        if key == "label":
            for label in values:
                k, has_value, v = label.partition("=")
                if k not in volume.labels or (has_value and volume.labels[k] != v):
                    return False
    return True


async def list_volumes(request: web.Request) -> web.Response:
    wanted = parse_filters(request, _FILTERS)
    runtime = request.app[_REGISTRY].runtime
    found = [
        volume_json(v)
        for v in runtime.volumes.listed()
        if _matches(v, wanted, bool(runtime.volume_users(v.name)))
    ]
    return json_response({"Volumes": found, "Warnings": None})


async def inspect(request: web.Request) -> web.Response:
    try:
        volume = request.app[_REGISTRY].runtime.volumes.get(request.match_info["name"])
    except VolumeError as err:
        raise volume_error(err) from None
    return json_response(volume_json(volume))


async def remove(request: web.Request) -> web.Response:
    """`docker volume rm [-f]`: `-f` makes a missing volume no error (one in use still is),
    as dockerd."""
    runtime = request.app[_REGISTRY].runtime
    name = request.match_info["name"]
    force = request.query.get("force", "").lower() in ("1", "true")
    try:
        runtime.volumes.remove(name, runtime.volume_users(name))
    except NoSuchVolumeError as err:
        if not force:
            raise volume_error(err) from None
    except VolumeError as err:
        raise volume_error(err) from None
    return web.Response(status=204)
