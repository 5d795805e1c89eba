"""Helpers shared by the resource modules: the backend key, routes under every API version,
JSON bodies, Docker's filter syntax and Go's time format."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from aiohttp import web

from controlplane.api.backend import EngineBackend
from controlplane.api.errors import (
    NO_SWARM_MESSAGE,
    ApiError,
    bad_request,
    not_a_manager,
    not_found,
)
from controlplane.go_time import go_time as go_time  # where the API modules take it from
from controlplane.raft.core import RaftError
from controlplane.raft.errors import TransportError

API_VERSION = "1.41"
MIN_API_VERSION = "1.12"

BACKEND: web.AppKey[EngineBackend] = web.AppKey("backend")
# How many of the node's containers are in each state ("running", "exited", ...), for
# `docker info`; set where the node's containers are served (api/system.py).
CONTAINER_STATES: web.AppKey[Callable[[], Counter[str]]] = web.AppKey("container_states")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Python's parser recurses once per level: JSON nested past its stack is refused, not a 500.
TOO_DEEP = "invalid JSON in %s: nested too deeply"


def add_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Serve `path` unversioned and as `/v<major>.<minor>/path`, as dockerd does. The current
    version's path is also a route of its own: aiohttp finds such a path through its index of
    path prefixes, while a route beginning with `{version}` is one more regular expression
    tried, in order, for every versioned request (the route of `POST /v1.41/services/create`
    came after 20 of them)."""
    for p in (path, f"/v{API_VERSION}{path}", r"/v{version:[0-9]+\.[0-9]+}" + path):
        if method == "GET":
            app.router.add_get(p, handler)  # with HEAD, as dockerd answers HEAD /_ping
        else:
            app.router.add_route(method, p, handler)


def backend(request: web.Request) -> EngineBackend:
    return request.app[BACKEND]


def require_manager(request: web.Request) -> EngineBackend:
    """Swarm-scope writes are for managers; a worker answers with Docker's errNoManager."""
    b = backend(request)
    state = b.local_state()
    if state.local_node_state == "inactive":
        raise ApiError(503, NO_SWARM_MESSAGE)
    if state.local_node_state == "error":
        raise ApiError(503, f"this node's swarm state is in error: {state.error}")
    if state.role != "manager":
        raise not_a_manager()
    return b


READ_CATCH_UP_TIMEOUT = 2.0  # seconds a manager waits for the leader before reading its own store


async def caught_up(b: EngineBackend) -> EngineBackend:
    """Before a read of swarm objects on a manager: its store made to hold every write
    acknowledged so far, as a write's check needs (`prepare_write`: at once on a settled
    leader, a linearizable read through the leader elsewhere), so a manager that was down or
    cut off while writes were acknowledged does not answer without them (swarmkit sends a
    follower's reads to the leader). Without a leader answering in time, reads still answer
    from this manager's own store, as Docker's do without a quorum."""
    with contextlib.suppress(TimeoutError, RaftError, TransportError):
        await asyncio.wait_for(b.prepare_write(), READ_CATCH_UP_TIMEOUT)
    return b


async def require_manager_read(request: web.Request) -> EngineBackend:
    """`require_manager`, then `caught_up`: what every read of swarm objects starts with."""
    return await caught_up(require_manager(request))


class _Identified(Protocol):
    id: str


Identified = TypeVar("Identified", bound=_Identified)


def by_id_prefix(objects: Iterable[Identified], ref: str, what: str) -> Identified:
    """The one object whose id starts with `ref`, dockerd's last way to resolve a reference
    (after the full id and the name): 400 when several match, 404 when none does."""
    matches = [o for o in objects if ref and o.id.startswith(ref)]
    if len(matches) > 1:
        raise bad_request(f"{what} {ref} is ambiguous ({len(matches)} matches found)")
    if not matches:
        raise not_found(f"{what} {ref} not found")
    return matches[0]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode() + b"\n",
        content_type="application/json",
    )


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body counts as `{}`."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad_request(f"invalid JSON in the request body: {e}") from None
    except RecursionError:
        raise bad_request(TOO_DEEP % "the request body") from None
    if not isinstance(body, dict):
        raise bad_request(
            f"invalid JSON in the request body: expected an object, got {type(body).__name__}"
        )
    return body


def parse_filters(request: web.Request, accepted: frozenset[str]) -> dict[str, list[str]]:
    """Docker's `filters` query parameter: `{"key": {"value": true}}` (current form) or
    `{"key": ["value"]}` (API < 1.22). Unknown keys are refused as dockerd does."""
    text = request.query.get("filters", "")
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad_request(f"invalid filters {text!r}: {e}") from None
    except RecursionError:
        raise bad_request(TOO_DEEP % "the filters") from None
    if not isinstance(raw, dict):
        raise bad_request(f"invalid filters {text!r}: expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in raw.items():
        if key not in accepted:
            raise bad_request(f"Invalid filter '{key}'")
        if isinstance(value, dict):
            out[key] = [str(v) for v, on in value.items() if on]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        else:
            raise bad_request(f"invalid filters {text!r}: values of '{key}' must be a map")
    return out


def check_api_version(version: str | None) -> None:
    """Refuse versions newer than 1.41 or older than 1.12, with dockerd's words."""
    if version is not None:
        refusal = _version_refusal(version)
        if refusal:
            raise ApiError(400, refusal)


@functools.lru_cache(maxsize=64)
def _version_refusal(version: str) -> str:
    """Why `version` is refused ("" if it is not); worked out once per version a client sends,
    not on every request."""
    if _tuple(version) > _tuple(API_VERSION):
        return (
            f"client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )
    if _tuple(version) < _tuple(MIN_API_VERSION):
        return (
            f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )
    return ""


def _tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))
