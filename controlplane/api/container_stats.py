"""`GET /containers/{id}/stats` (`docker stats`): the container's measured figures
(`agent/container_stats.py`) in dockerd's StatsJSON.

As dockerd: `stream=0` answers one sample whose `precpu_stats` is one taken a second before
(the CLI's CPU % is the difference), unless `one-shot=1` (then no previous sample); a stream
answers a sample a second, each with the one before as its previous, until the client goes
or the container is removed. A container that does not run has zero figures and zero times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from controlplane.agent.container_stats import StatsSample, sample
from controlplane.agent.runtime import Container, NoSuchContainerError
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api.common import add_route, go_time
from controlplane.api.container_errors import container_error

_REGISTRY: web.AppKey[StandaloneContainers] = web.AppKey("stats_containers")
INTERVAL = 1.0  # seconds between two samples, dockerd's collection interval
_ZERO_TIME = "0001-01-01T00:00:00Z"


def register(app: web.Application, registry: StandaloneContainers) -> web.Application:
    app[_REGISTRY] = registry
    add_route(app, "GET", "/containers/{id}/stats", stats)
    return app


def _truthy(value: str) -> bool:
    return value.lower() in ("1", "true")


async def stats(request: web.Request) -> web.StreamResponse:
    registry = request.app[_REGISTRY]
    try:
        container = registry.get(request.match_info["id"])
    except Exception as err:
        raise container_error(err) from None
    stream = _truthy(request.query.get("stream", "1"))
    one_shot = _truthy(request.query.get("one-shot", "")) and not stream

    def now() -> StatsSample:
        return sample(registry.runtime, registry.execs, container)

    previous = StatsSample(read_ns=0)
    if not one_shot:
        previous = now()
        if previous.cpu is not None:  # a CPU % needs a second sample
            await asyncio.sleep(INTERVAL)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        while True:
            current = now()
            body = stats_json(container, current, previous)
            await response.write(json.dumps(body).encode() + b"\n")
            if not stream:
                break
            await asyncio.sleep(INTERVAL)
            previous = current
            try:
                registry.get(container.id)
            except NoSuchContainerError:
                break
        await response.write_eof()
    return response


def _time(ns: int) -> str:
    return go_time(ns) if ns else _ZERO_TIME


def _cpu_json(taken: StatsSample) -> dict[str, Any]:
    usage = taken.cpu.container_ns if taken.cpu is not None else 0
    out: dict[str, Any] = {
        "cpu_usage": {"total_usage": usage, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
    }
    if taken.cpu is not None:
        out["system_cpu_usage"] = taken.cpu.system_ns
        out["online_cpus"] = taken.cpu.online_cpus
    out["throttling_data"] = {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
    return out


def _blkio_json(taken: StatsSample) -> dict[str, Any]:
    names = [
        "io_service_bytes_recursive", "io_serviced_recursive", "io_queue_recursive",
        "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
        "io_time_recursive", "sectors_recursive",
    ]  # fmt: skip
    if not taken.read_ns:
        return dict.fromkeys(names)
    out: dict[str, Any] = {name: [] for name in names}
    if taken.block_read or taken.block_write:
        out["io_service_bytes_recursive"] = [
            {"major": 0, "minor": 0, "op": "read", "value": taken.block_read},
            {"major": 0, "minor": 0, "op": "write", "value": taken.block_write},
        ]
    return out


def stats_json(container: Container, current: StatsSample, previous: StatsSample) -> dict[str, Any]:
    """dockerd's StatsJSON of `current` (with `previous` as its pre-sample)."""
    body: dict[str, Any] = {
        "read": _time(current.read_ns),
        "preread": _time(previous.read_ns),
        "pids_stats": {"current": current.pids} if current.pids is not None else {},
        "blkio_stats": _blkio_json(current),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu_json(current),
        "precpu_stats": _cpu_json(previous),
        "memory_stats": (
            {"usage": current.memory_bytes, "limit": current.memory_limit, "stats": {}}
            if current.memory_bytes is not None
            else {}
        ),
        "name": f"/{container.name}",
        "id": container.id,
    }
    if current.networks:
        body["networks"] = {
            name: {
                "rx_bytes": c.rx_bytes,
                "rx_packets": c.rx_packets,
                "rx_errors": 0,
                "rx_dropped": 0,
                "tx_bytes": c.tx_bytes,
                "tx_packets": c.tx_packets,
                "tx_errors": 0,
                "tx_dropped": 0,
            }
            for name, c in current.networks.items()
        }
    return body
