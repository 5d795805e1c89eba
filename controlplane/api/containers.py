"""`/containers/...`: the node's standalone containers (`docker run`, `ps`, `logs`, `inspect`,
`start`, `stop`, `restart`, `rename`, `kill`, `wait`, `rm`, `attach`, `top`), on the registry
in `agent/standalone.py`.

Attach is dockerd's hijacked stream (`hijack.py`): the container's output, and with `stdin=1`
the client's input as the container's standard input (`-i`; a TTY's keystrokes with `-t`).
The CLI sends attach and `wait` before `start`, so both answer their headers at once and
their body later; with a TTY it then sends `resize` with its terminal's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from controlplane.agent import top as processes
from controlplane.agent.create_options import (
    ConfigEcho,
    CreateOptionsError,
    HostOptions,
    RestartPolicy,
)
from controlplane.agent.health import HealthConfig, HealthConfigError
from controlplane.agent.log_copier import LogLine
from controlplane.agent.mounts import MountError, container_mounts
from controlplane.agent.network_modes import PORTS_DISCARDED_WARNING
from controlplane.agent.runtime import (
    Container,
    ContainerConfig,
    ContainerState,
)
from controlplane.agent.standalone import WAIT_CONDITIONS, StandaloneContainers
from controlplane.api import (
    container_ports,
    container_stats,
    execs,
    image_removal,
    network_connect,
    prunes,
    volumes,
)
from controlplane.api.bridge_settings import (
    local_network_containers,
)
from controlplane.api.common import add_route, json_body, json_response
from controlplane.api.container_errors import container_error
from controlplane.api.container_filters import ContainerFilter
from controlplane.api.container_inspect import inspect_json, mounts_json, networks_json
from controlplane.api.detach_keys import parse_detach_keys
from controlplane.api.errors import ApiError, bad_request
from controlplane.api.hijack import serve_stream, terminal_size, wanted_streams
from controlplane.api.images import image_id
from controlplane.api.logs import RAW_STREAM, STDERR, STDOUT, LogQuery, frame
from controlplane.api.networks import LOCAL_CONTAINERS
from controlplane.pb.logbroker_pb2 import LogMessage, LogStream

CONTAINERS: web.AppKey[StandaloneContainers] = web.AppKey("containers")
DEFAULT_STOP_TIMEOUT = 10.0  # dockerd's, when `t` is not given


def register(app: web.Application, registry: StandaloneContainers) -> web.Application:
    app[CONTAINERS] = registry
    app[LOCAL_CONTAINERS] = lambda name: local_network_containers(registry, name)
    add_route(app, "POST", "/containers/create", create)
    add_route(app, "GET", "/containers/json", list_containers)
    add_route(app, "GET", "/containers/{id}/json", inspect)
    add_route(app, "POST", "/containers/{id}/start", start)
    add_route(app, "POST", "/containers/{id}/attach", attach)
    add_route(app, "POST", "/containers/{id}/resize", resize)
    add_route(app, "GET", "/containers/{id}/top", top)
    add_route(app, "POST", "/containers/{id}/wait", wait)
    add_route(app, "GET", "/containers/{id}/logs", logs)
    add_route(app, "POST", "/containers/{id}/stop", stop)
    add_route(app, "POST", "/containers/{id}/kill", kill)
    add_route(app, "POST", "/containers/{id}/restart", restart)
    add_route(app, "POST", "/containers/{id}/rename", rename)
    add_route(app, "POST", "/containers/{id}/update", update)
    add_route(app, "DELETE", "/containers/{id}", remove)
    image_removal.register(app, registry)
    volumes.register(app, registry)
    prunes.register(app, registry)
    container_stats.register(app, registry)
    return network_connect.register(execs.register(app, registry), registry)


def _registry(request: web.Request) -> StandaloneContainers:
    return request.app[CONTAINERS]


# ---- create ----------------------------------------------------------------------------------


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{key} must be a list of strings, got {value!r}")
    return list(value)


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{key} must be an object, got {value!r}")
    return value


def _network(body: dict[str, Any]) -> tuple[str, tuple[str, ...], str]:
    """The container's network, its aliases and the address asked for there:
    `HostConfig.NetworkMode`, else the one entry of `NetworkingConfig.EndpointsConfig` (what
    `--network`, `--network-alias` and `--ip` send)."""
    mode = _object(body, "HostConfig").get("NetworkMode") or ""
    if not isinstance(mode, str):
        raise bad_request(f"HostConfig.NetworkMode must be a string, got {mode!r}")
    endpoints = _object(_object(body, "NetworkingConfig"), "EndpointsConfig")
    if len(endpoints) > 1:
        raise bad_request(
            "Container cannot be connected to network endpoints: "
            f"{', '.join(sorted(endpoints))}; give one network at create"
        )
    if endpoints and not mode:
        mode = next(iter(endpoints))
    config = endpoints.get(mode) or {}
    if not isinstance(config, dict):
        return mode, (), ""
    aliases = config.get("Aliases")
    return (
        mode,
        tuple(a for a in aliases or () if isinstance(a, str)),
        network_connect.requested_ipv4(config),
    )


async def create(request: web.Request) -> web.Response:
    body = await json_body(request)
    image = body.get("Image")
    if not image or not isinstance(image, str):
        raise bad_request("Config cannot be empty in order to create a container")
    labels = _object(body, "Labels")
    network, aliases, ipv4 = _network(body)
    try:
        healthcheck = HealthConfig.parse(body.get("Healthcheck"))
    except HealthConfigError as err:
        raise bad_request(str(err)) from None
    host_config = _object(body, "HostConfig")
    mount_objects = host_config.get("Mounts") or []
    if not isinstance(mount_objects, list) or not all(isinstance(m, dict) for m in mount_objects):
        raise bad_request(f"HostConfig.Mounts must be a list of objects, got {mount_objects!r}")
    try:
        mounts = container_mounts(
            _strings(host_config, "Binds"), mount_objects, list(_object(body, "Volumes"))
        )
    except MountError as err:
        raise bad_request(str(err)) from None
    config = ContainerConfig(
        image=image,
        command=_strings(body, "Entrypoint"),
        args=_strings(body, "Cmd"),
        env=_strings(body, "Env"),
        hostname=body.get("Hostname") or "",
        name=request.query.get("name", ""),
        labels={str(k): str(v) for k, v in labels.items()},
        tty=bool(body.get("Tty")),
        open_stdin=bool(body.get("OpenStdin")),
        stdin_once=bool(body.get("StdinOnce")),
        healthcheck=healthcheck,
        healthcheck_disabled=HealthConfig.disables(body.get("Healthcheck")),
        mounts=mounts,
    )
    auto_remove = bool(host_config.get("AutoRemove"))
    try:
        config.host_options = HostOptions.parse(host_config, auto_remove=auto_remove)
        config.config_echo = ConfigEcho.parse(body)
    except CreateOptionsError as err:
        raise bad_request(str(err)) from None
    ports = container_ports.port_request(body)
    try:
        container = _registry(request).create(
            config,
            network=network,
            aliases=aliases,
            ipv4=ipv4,
            auto_remove=auto_remove,
            ports=ports,
        )
    except Exception as err:
        raise container_error(err) from None
    rows, columns = container.config.host_options.console_size
    if container.stdio.tty and (rows or columns):  # as the CLI sends it with `-t`
        container.stdio.resize(rows, columns)
    warnings = [PORTS_DISCARDED_WARNING] if network == "host" and ports.bindings else []
    return json_response({"Id": container.id, "Warnings": warnings}, status=201)


# ---- start / wait / stop / kill / remove --------------------------------------------------


async def start(request: web.Request) -> web.Response:
    try:
        started = await _registry(request).start(request.match_info["id"])
    except Exception as err:
        raise container_error(err) from None
    return web.Response(status=204 if started else 304)


async def wait(request: web.Request) -> web.StreamResponse:
    registry = _registry(request)
    ref = request.match_info["id"]
    condition = request.query.get("condition", "")
    if condition not in WAIT_CONDITIONS:
        condition = "not-running"  # dockerd 20.10 reads any other condition, or none, so
    try:
        container = registry.get(ref)
        waiting = asyncio.ensure_future(registry.wait(container.id, condition))
    except Exception as err:
        raise container_error(err) from None
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b"")  # the headers now: the CLI starts the container after them
    error: dict[str, str] | None = None  # an error of the wait itself, not the container's
    try:
        status = await waiting
    except Exception as err:
        status, error = -1, {"Message": str(err)}
    await response.write(json.dumps({"Error": error, "StatusCode": status}).encode() + b"\n")
    await response.write_eof()
    return response


def _seconds(request: web.Request, default: float) -> float:
    text = request.query.get("t", "")
    if not text:
        return default
    try:
        return float(int(text))
    except ValueError:
        raise bad_request(f"invalid value for t: {text!r}: give a number of seconds") from None


async def stop(request: web.Request) -> web.Response:
    try:
        stopped = await _registry(request).stop(
            request.match_info["id"], _seconds(request, DEFAULT_STOP_TIMEOUT)
        )
    except Exception as err:
        raise container_error(err) from None
    return web.Response(status=204 if stopped else 304)


async def restart(request: web.Request) -> web.Response:
    try:
        await _registry(request).restart(
            request.match_info["id"], _seconds(request, DEFAULT_STOP_TIMEOUT)
        )
    except Exception as err:
        raise container_error(err) from None
    return web.Response(status=204)


async def rename(request: web.Request) -> web.Response:
    try:
        await _registry(request).rename(request.match_info["id"], request.query.get("name", ""))
    except Exception as err:
        raise container_error(err) from None
    return web.Response(status=204)


async def update(request: web.Request) -> web.Response:
    """`docker update`: its restart policy (`--restart`); the resource limits it can also
    send are refused unless unset (an emulated container has no cgroup to change)."""
    body = await json_body(request)
    registry = _registry(request)
    try:
        container = registry.get(request.match_info["id"])
    except Exception as err:
        raise container_error(err) from None
    limits = sorted(k for k, v in body.items() if k != "RestartPolicy" and v not in _UNSET)
    if limits:
        raise bad_request(
            f"Cannot update container {container.id}: {', '.join(limits)} cannot be updated in "
            "this emulated engine (a container has no cgroup); only the restart policy can"
        )
    try:
        policy = RestartPolicy.parse(body.get("RestartPolicy"))
    except CreateOptionsError as err:
        raise bad_request(str(err)) from None
    if policy.name:  # the CLI sends an unnamed policy without --restart: none to change
        try:
            registry.update_restart_policy(container.id, policy)
        except Exception as err:
            raise container_error(err) from None
    return json_response({"Warnings": None})


_UNSET: tuple[Any, ...] = (None, 0, "", [], {}, False)


async def kill(request: web.Request) -> web.Response:
    signal = request.query.get("signal", "KILL").upper().removeprefix("SIG")
    if signal not in ("KILL", "9", ""):
        raise bad_request(
            f"signal {signal} is not supported by this emulated engine: only KILL (use "
            "`docker stop` for TERM then KILL)"
        )
    try:
        await _registry(request).kill(request.match_info["id"])
    except Exception as err:
        raise container_error(err) from None
    return web.Response(status=204)


async def remove(request: web.Request) -> web.Response:
    force = request.query.get("force", "") in ("1", "true", "True")
    with_volumes = request.query.get("v", "") in ("1", "true", "True")  # `docker rm -v`
    try:
        await _registry(request).remove(
            request.match_info["id"], force=force, anonymous_volumes=with_volumes
        )
    except Exception as err:
        raise container_error(err) from None
    return web.Response(status=204)


# ---- output: attach and logs --------------------------------------------------------------


async def attach(request: web.Request) -> web.StreamResponse:
    try:
        container = _registry(request).get(request.match_info["id"])
    except Exception as err:
        raise container_error(err) from None
    keys = request.query.get("detachKeys", "")
    try:
        detach_keys = parse_detach_keys(keys)
    except ValueError:
        raise bad_request(f"Invalid detach keys ({keys}) provided") from None
    _registry(request).runtime.event("attach", container)
    return await serve_stream(
        request,
        container.stdio,
        streams=wanted_streams(dict(request.query)),
        stdin=request.query.get("stdin") in ("1", "true") and container.config.open_stdin,
        cursor=container.stdio.output.written,  # from now on: the CLI starts it meanwhile
        stdin_once=container.config.stdin_once,
        detach_keys=detach_keys,
    )


async def resize(request: web.Request) -> web.Response:
    rows, columns = terminal_size(request)
    registry = _registry(request)
    try:
        container = registry.get(request.match_info["id"])
        registry.runtime.process(container.id)  # it must be running
    except Exception as err:
        raise container_error(err) from None
    if container.stdio.tty:
        container.stdio.resize(rows, columns)
    return web.Response(status=200)


async def top(request: web.Request) -> web.Response:
    """`docker top CONTAINER [ps OPTIONS]` (`agent/top.py`)."""
    registry = _registry(request)
    try:
        table = await processes.top(
            registry.runtime,
            registry.execs,
            request.match_info["id"],
            request.query.get("ps_args", ""),
        )
    except Exception as err:
        raise container_error(err) from None
    return json_response(table.json())


async def logs(request: web.Request) -> web.StreamResponse:
    registry = _registry(request)
    query = LogQuery.parse(dict(request.query))
    try:
        container = registry.get(request.match_info["id"])
    except Exception as err:
        raise container_error(err) from None
    if not container.config.host_options.log_config.keeps_logs:
        raise ApiError(501, "configured logging driver does not support reading")
    response = web.StreamResponse(headers={"Content-Type": RAW_STREAM})
    await response.prepare(request)
    lines = registry.runtime.read_logs(
        container.id,
        since_ns=query.since_ns,
        tail=-1 if query.tail is None else query.tail,
        follow=query.follow,
    )
    with contextlib.suppress(ConnectionResetError):
        async for line in lines:
            message = LogMessage(
                stream=LogStream.LOG_STREAM_STDOUT
                if line.stream == "stdout"
                else LogStream.LOG_STREAM_STDERR,
                data=line.data,
                timestamp_ns=line.timestamp_ns,
            )
            if query.wants(message):
                payload = query.line(message)
                tty = container.config.tty
                await response.write(payload if tty else frame(_frame_of(line), payload))
        await response.write_eof()
    return response


def _frame_of(line: LogLine) -> int:
    return STDOUT if line.stream == "stdout" else STDERR


# ---- list and inspect ---------------------------------------------------------------------


def _ago(ns: int) -> str:
    """How long since `ns`, as `docker ps` shows it."""
    return human_duration(max(0, time.time_ns() - ns) / 1e9)


def human_duration(seconds: float) -> str:
    """Docker's `units.HumanDuration` (go-units): one unit, rounded down except hours, which
    round to the nearest; days from 48 hours, weeks from 14 days, months (30 days) from 60
    days, years (365 days) from 730 days."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole < 60:
        return "1 second" if whole == 1 else f"{whole} seconds"
    minutes = whole // 60
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 14:
        return f"{hours // 24} days"
    if hours < 24 * 60:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 730:
        return f"{hours // (24 * 30)} months"
    return f"{int(seconds / 3600) // (24 * 365)} years"


def _status(container: Container) -> str:
    if container.restarting:
        return f"Restarting ({container.exit_code}) {_ago(container.finished_at_ns)} ago"
    if container.state is ContainerState.RUNNING:
        health = f" {container.health.summary()}" if container.health is not None else ""
        return f"Up {_ago(container.started_at_ns)}{health}"
    if container.state is ContainerState.EXITED:
        return f"Exited ({container.exit_code}) {_ago(container.finished_at_ns)} ago"
    return "Created"


def _image_id(container: Container) -> str:
    return image_id(container.reference.repository)


def container_summary(registry: StandaloneContainers, container: Container) -> dict[str, Any]:
    return {
        "Id": container.id,
        "Names": [f"/{container.name}"],
        "Image": container.config.image,
        "ImageID": _image_id(container),
        "Command": " ".join(container.argv),
        "Created": container.created_at_ns // 1_000_000_000,
        "Ports": container_ports.summary_ports(registry, container),
        "Labels": dict(container.config.labels),
        "State": container.status,
        "Status": _status(container),
        "HostConfig": {"NetworkMode": registry.network_of(container) or "default"},
        "NetworkSettings": {"Networks": networks_json(registry, container)},
        "Mounts": mounts_json(registry, container),
    }


async def list_containers(request: web.Request) -> web.Response:
    registry = _registry(request)
    wanted = ContainerFilter.parse(request)
    found = [c for c in reversed(registry.containers()) if wanted.matches(c)]
    return json_response([container_summary(registry, c) for c in found])


async def inspect(request: web.Request) -> web.Response:
    registry = _registry(request)
    try:
        container = registry.get(request.match_info["id"])
    except Exception as err:
        raise container_error(err) from None
    return json_response(inspect_json(registry, container))
