"""`GET /events` (`docker events`): the node's engine events (`event_hub.py`) as dockerd
streams them, one JSON `EventMessage` per line, flushed as each comes.

`since` and `until` are Unix times (`seconds[.nanoseconds]`; the CLI turns `10m` or an RFC
3339 date into one). With `since`, the kept events (the last 256) from then on come first;
with `until` the stream ends at that time, at once when it is past. `filters` takes dockerd's
keys, each matched as dockerd does: `type`, `event` and `scope` exactly (an `event` of
`exec_create` or `exec_start` also matches the `exec_start: CMD` form), `container`,
`network`, `service`, `node` (and the other object types) by a prefix of the actor's id or
name, `image` by the image name with or without its tag, `label` by `key` or `key=value`
among the attributes. Bad times and filters are refused with 400.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from controlplane.api.common import add_route, parse_filters
from controlplane.api.errors import bad_request
from controlplane.event_hub import EngineEvent, EventHub, SubscriberDropped, Subscription

EVENTS: web.AppKey[EventHub] = web.AppKey("events")

OBJECT_TYPES: tuple[str, ...] = ("config", "container", "daemon", "network", "node", "plugin")
OBJECT_TYPES += ("secret", "service", "volume")
EVENT_TYPES = frozenset((*OBJECT_TYPES, "builder", "image"))  # the spec's EventMessage.Type
SCOPES = frozenset(("local", "swarm"))
FILTERS = frozenset((*OBJECT_TYPES, "event", "image", "label", "scope", "type"))
FUZZY_EVENTS = ("exec_create", "exec_start", "health_status")  # dockerd's #25798
GONE_CHECK = 1.0  # seconds between looks at a quiet client's connection
_SECONDS = re.compile(r"-?[0-9]+")
_FRACTION = re.compile(r"[0-9]+")


def register(app: web.Application, hub: EventHub) -> web.Application:
    app[EVENTS] = hub
    add_route(app, "GET", "/events", stream_events)
    return app


def parse_time(name: str, text: str) -> int | None:
    """A `since`/`until` value in nanoseconds (None when absent), refused with Go's strconv
    words as dockerd's ParseTimestamps."""
    if not text:
        return None
    seconds, dot, fraction = text.partition(".")
    parts = [(seconds, _SECONDS)] + ([(fraction, _FRACTION)] if dot else [])
    for part, pattern in parts:
        if not pattern.fullmatch(part):
            raise bad_request(
                f'strconv.ParseInt: parsing "{part}": invalid syntax (`{name}` must be a Unix '
                "time in seconds[.nanoseconds])"
            )
    nanos = int(fraction.ljust(9, "0")[:9]) if dot else 0
    return int(seconds) * 1_000_000_000 + nanos


@dataclass(frozen=True)
class EventFilter:
    filters: Mapping[str, list[str]]

    @staticmethod
    def parse(filters: Mapping[str, list[str]]) -> EventFilter:
        for key, allowed in (("type", EVENT_TYPES), ("scope", SCOPES)):
            for value in filters.get(key, ()):
                if value not in allowed:
                    raise bad_request(
                        f"Invalid filter '{key}={value}': use one of {', '.join(sorted(allowed))}"
                    )
        return EventFilter(filters)

    def _exact(self, key: str, value: str) -> bool:
        return key not in self.filters or value in self.filters[key]

    def _prefix(self, key: str, value: str) -> bool:
        return key not in self.filters or any(value.startswith(v) for v in self.filters[key])

    def _event(self, action: str) -> bool:
        wanted = self.filters.get("event")
        if wanted is None:
            return True
        if any(w in FUZZY_EVENTS for w in wanted):
            return any(action.startswith(w) for w in wanted)
        return action in wanted

    def _image(self, event: EngineEvent) -> bool:
        image = event.attributes.get("name" if event.type == "image" else "image", "")
        names = {event.actor_id, image, _untagged(event.actor_id), _untagged(image)}
        return "image" not in self.filters or bool(names & set(self.filters["image"]))

    def _labels(self, attributes: Mapping[str, str]) -> bool:
        for wanted in self.filters.get("label", ()):
            key, eq, value = wanted.partition("=")
            if key not in attributes or (eq and attributes[key] != value):
                return False
        return True

    def accepts(self, event: EngineEvent) -> bool:
        name = event.attributes.get("name", "")
        return (
            self._event(event.action)
            and self._exact("type", event.type)
            and self._exact("scope", event.scope)
            and all(
                self._prefix(kind, event.actor_id) or self._prefix(kind, name)
                for kind in OBJECT_TYPES
            )
            and self._image(event)
            and self._labels(event.attributes)
        )


def _untagged(image: str) -> str:
    """`busybox:latest` -> `busybox` (a registry port's colon is not a tag)."""
    name, colon, tag = image.rpartition(":")
    return name if colon and "/" not in tag else image


async def stream_events(request: web.Request) -> web.StreamResponse:
    since = parse_time("since", request.query.get("since", ""))
    until = parse_time("until", request.query.get("until", ""))
    if since is not None and until is not None and until < since:
        raise bad_request(
            f"`since` time ({request.query['since']}) cannot be after `until` time "
            f"({request.query['until']})"
        )
    accept = EventFilter.parse(parse_filters(request, FILTERS)).accepts
    hub = request.app[EVENTS]
    subscription = hub.subscribe()  # before reading the kept ones: nothing falls between
    try:
        past = _kept(hub, since, until, accept)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for event in past:
            await _send(response, event)
        if until is not None and until <= time.time_ns():
            return response
        gone = lambda: request.transport is None or request.transport.is_closing()  # noqa: E731
        await _follow(response, subscription, accept, until, gone)
        return response
    finally:
        hub.unsubscribe(subscription)


def _kept(
    hub: EventHub, since: int | None, until: int | None, accept: Callable[[EngineEvent], bool]
) -> list[EngineEvent]:
    """dockerd's buffered events: none unless `since` or `until` is given."""
    if since is None and until is None:
        return []
    low, high = since or 0, until
    return [
        e
        for e in hub.kept()
        if e.time_ns >= low and (high is None or e.time_ns <= high) and accept(e)
    ]


async def _follow(
    response: web.StreamResponse,
    subscription: Subscription,
    accept: Callable[[EngineEvent], bool],
    until: int | None,
    gone: Callable[[], bool],
) -> None:
    """New events until `until`, the client leaves, or it falls too far behind."""
    pending: asyncio.Task[EngineEvent] | None = None
    try:
        while not gone():
            wait = GONE_CHECK
            if until is not None:
                wait = min(wait, (until - time.time_ns()) / 1e9)
                if wait <= 0:
                    return
            pending = pending or asyncio.ensure_future(subscription.next())
            done, _ = await asyncio.wait((pending,), timeout=wait)
            if not done:
                continue
            event, pending = pending.result(), None
            if accept(event):
                await _send(response, event)
    except (SubscriberDropped, ConnectionResetError):
        return
    finally:
        if pending is not None:
            pending.cancel()


async def _send(response: web.StreamResponse, event: EngineEvent) -> None:
    await response.write(json.dumps(event.message(), separators=(",", ":")).encode() + b"\n")
