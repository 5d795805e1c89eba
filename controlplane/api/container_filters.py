"""`docker ps -f KEY=VALUE`: which of the node's containers (standalone and swarm task ones)
`GET /containers/json` lists, with dockerd's matching rules.

`name` and `id` are regular expressions searched in the name (with its leading `/`) and the
full id, so `-f name=web` finds `web.1.<task id>` and `-f name=^/web$` only `web`; `label` is
`KEY` or `KEY=VALUE`; `status` is a state name, and giving one lists stopped containers
without `-a`, as dockerd does; `health` is a health status, or `none` for a container
without a healthcheck. Values of one key are alternatives, keys all have to match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from controlplane.agent.health import HealthStatus
from controlplane.agent.runtime import Container
from controlplane.api.common import parse_filters
from controlplane.api.errors import bad_request

LIST_FILTERS = frozenset({"name", "id", "label", "status", "health"})
# dockerd's container states; only created/running/exited ever happen in the emulated runtime.
STATUSES = frozenset({"created", "restarting", "running", "removing", "paused", "exited", "dead"})
HEALTH_STATUSES = frozenset({*(s.value for s in HealthStatus), "none"})


def _patterns(key: str, values: list[str]) -> tuple[re.Pattern[str], ...]:
    try:
        return tuple(re.compile(value) for value in values)
    except re.error as err:
        raise bad_request(f"invalid filter '{key}': {err}: give a regular expression") from None


@dataclass(frozen=True)
class ContainerFilter:
    show_all: bool
    names: tuple[re.Pattern[str], ...]
    ids: tuple[re.Pattern[str], ...]
    labels: tuple[str, ...]
    statuses: frozenset[str]
    healths: frozenset[str]

    @classmethod
    def parse(cls, request: web.Request) -> ContainerFilter:
        """From the `all` and `filters` query parameters; 400 with dockerd's words for an
        unknown key or status."""
        filters = parse_filters(request, LIST_FILTERS)
        statuses = frozenset(filters.get("status", ()))
        unknown = sorted(statuses - STATUSES)
        if unknown:
            raise bad_request(
                f"Invalid filter 'status={unknown[0]}': use one of {', '.join(sorted(STATUSES))}"
            )
        healths = frozenset(filters.get("health", ()))
        for wrong in sorted(healths - HEALTH_STATUSES):
            raise bad_request(
                f"Unrecognised filter value for health: {wrong}: use one of "
                f"{', '.join(sorted(HEALTH_STATUSES))}"
            )
        return cls(
            show_all=request.query.get("all", "") in ("1", "true", "True") or bool(statuses),
            names=_patterns("name", filters.get("name", [])),
            ids=_patterns("id", filters.get("id", [])),
            labels=tuple(filters.get("label", ())),
            statuses=statuses,
            healths=healths,
        )

    def matches(self, container: Container) -> bool:
        state = container.status
        if not self.show_all and state not in ("running", "restarting"):
            return False
        if self.statuses and state not in self.statuses:
            return False
        if self.names and not any(p.search(f"/{container.name}") for p in self.names):
            return False
        if self.ids and not any(p.search(container.id) for p in self.ids):
            return False
        health = container.health.status.value if container.health is not None else "none"
        if self.healths and health not in self.healths:
            return False
        return all(_has_label(container.config.labels, wanted) for wanted in self.labels)


def _has_label(labels: dict[str, str], wanted: str) -> bool:
    key, equals, value = wanted.partition("=")
    if key not in labels:
        return False
    return not equals or labels[key] == value
