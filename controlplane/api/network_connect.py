"""`POST /networks/{id}/connect` and `/networks/{id}/disconnect`: `docker network connect|
disconnect NET CONTAINER` for this node's standalone containers (`agent/standalone.py`), on
attachable swarm overlays.

Statuses and words are dockerd 20.10's: no such container 404, a container already on the
network 409 (`C is already attached to network N`), a network the managers refuse (unknown
500, not attachable 403) with the whole `Could not attach to network N: rpc error: ...`
message, a container that is not on the network 500 (`container ID is not connected to
network N`), a container in `none` mode 400. Disconnecting a running container from a
network no container of this node is on is dockerd's 404 `network N not found`, as dockerd
only knows its node's networks.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import grpc
from aiohttp import web

from controlplane.agent.network_attach import NetworkAttachError
from controlplane.agent.standalone import (
    AlreadyConnectedError,
    EndpointRequest,
    NotConnectedError,
    StandaloneContainers,
)
from controlplane.api.common import add_route, json_body
from controlplane.api.container_errors import container_error
from controlplane.api.errors import ApiError, bad_request

CONNECT_REGISTRY: web.AppKey[StandaloneContainers] = web.AppKey("connect_containers")
# The managers' refusals: (status, whether dockerd shows only their words or its whole
# `Could not attach to network N: rpc error: ...` message).
_REFUSALS = {
    grpc.StatusCode.NOT_FOUND: (500, False),
    grpc.StatusCode.ALREADY_EXISTS: (409, True),
    grpc.StatusCode.PERMISSION_DENIED: (403, False),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (403, False),
}


def register(app: web.Application, registry: StandaloneContainers) -> web.Application:
    app[CONNECT_REGISTRY] = registry
    add_route(app, "POST", "/networks/{id}/connect", connect)
    add_route(app, "POST", "/networks/{id}/disconnect", disconnect)
    return app


def _container(body: dict[str, Any]) -> str:
    container = body.get("Container")
    if not container or not isinstance(container, str):
        raise bad_request("Container is required: give the container's name or id")
    return container


def _aliases(config: dict[str, Any]) -> tuple[str, ...]:
    aliases = config.get("Aliases")
    if aliases is None:
        return ()
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise bad_request(f"EndpointConfig.Aliases must be a list of strings, got {aliases!r}")
    return tuple(aliases)


def requested_ipv4(config: dict[str, Any]) -> str:
    """The address an endpoint config asks for (`--ip`: `IPAMConfig.IPv4Address`), "" for
    none; dockerd's 400 `invalid IPv4 address: X` for one that is not an IPv4 address."""
    ipam = config.get("IPAMConfig") or {}
    wanted = ipam.get("IPv4Address") if isinstance(ipam, dict) else None
    if not wanted:
        return ""
    try:
        return str(IPv4Address(wanted))
    except ValueError:
        raise bad_request(f"invalid IPv4 address: {wanted}") from None


def _error(err: Exception) -> ApiError:
    if isinstance(err, AlreadyConnectedError):
        return ApiError(409, str(err))
    if isinstance(err, NotConnectedError):
        return ApiError(500, str(err))
    if isinstance(err, NetworkAttachError) and err.code in _REFUSALS:
        status, words_only = _REFUSALS[err.code]
        return ApiError(status, str(err).rpartition(" desc = ")[2] if words_only else str(err))
    return container_error(err)


async def connect(request: web.Request) -> web.Response:
    body = await json_body(request)
    config = body.get("EndpointConfig") or {}
    if not isinstance(config, dict):
        raise bad_request(f"EndpointConfig must be an object, got {config!r}")
    container = _container(body)
    endpoint = EndpointRequest(request.match_info["id"], _aliases(config), requested_ipv4(config))
    try:
        await request.app[CONNECT_REGISTRY].connect(container, endpoint)
    except Exception as err:
        raise _error(err) from None
    return web.Response(status=200)


async def disconnect(request: web.Request) -> web.Response:
    body = await json_body(request)
    container = _container(body)
    force = bool(body.get("Force"))  # `-f`
    try:
        await request.app[CONNECT_REGISTRY].disconnect(container, request.match_info["id"], force)
    except Exception as err:
        raise _error(err) from None
    return web.Response(status=200)
