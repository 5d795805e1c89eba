"""The aiohttp application: routing under every API version, Docker's error bodies and
headers, and the system endpoints the CLI calls first (`/_ping`, `/version`, `/info`)."""

from __future__ import annotations

import os
import platform
import re
import time
from collections import Counter
from typing import Any

from aiohttp import web

from controlplane.agent.create_options import DEFAULT_RUNTIME, LOG_DRIVER_OPTIONS, RUNTIMES
from controlplane.api import configs, images, networks, nodes, secrets, services, swarm, tasks
from controlplane.api.backend import EngineBackend, NodeInfo, SwarmControl
from controlplane.api.common import (
    API_VERSION,
    BACKEND,
    CONTAINER_STATES,
    MIN_API_VERSION,
    add_route,
    backend,
    check_api_version,
    go_time,
    json_response,
)
from controlplane.api.errors import ApiError, from_exception
from controlplane.api.swarm import cluster_json
from controlplane.store import Store

_HEADERS: web.AppKey[dict[str, str]] = web.AppKey("docker_headers")  # Docker's headers


def create_app(backend: EngineBackend, control: SwarmControl | None = None) -> web.Application:
    """The API over `backend`; `control` adds swarm init/join/leave (a node process has it,
    a Raft-only lab and the tests' local backend do not)."""
    app = web.Application(middlewares=[_errors], client_max_size=16 * 1024 * 1024)
    app[BACKEND] = backend
    app[_HEADERS] = {}  # filled on the first response
    app.on_response_prepare.append(_docker_headers)
    add_route(app, "GET", "/_ping", _ping)  # aiohttp adds HEAD for GET routes
    add_route(app, "GET", "/version", _version)
    add_route(app, "GET", "/info", _info)
    networks.register(app)
    nodes.register(app)
    swarm.register(app, control)
    services.register(app)
    tasks.register(app)
    images.register(app)
    secrets.register(app)
    configs.register(app)
    return app


@web.middleware
async def _errors(request: web.Request, handler: networks.Handler) -> web.StreamResponse:
    """Every failure becomes `{"message": ...}` with Docker's status code."""
    try:
        check_api_version(request.match_info.get("version"))
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if e.status in (404, 405):
            return json_response({"message": _not_emulated(request)}, status=404)
        return json_response({"message": e.text or e.reason}, status=e.status)
    except Exception as e:  # the API answers every error with a JSON body
        err = from_exception(e)
        return json_response({"message": err.message}, status=err.status)


def _not_emulated(request: web.Request) -> str:
    """dockerd's "page not found" for a route it lacks, saying that Swarmlab lacks it: a user
    running a familiar command learns it is not emulated rather than suspecting the daemon."""
    path = re.sub(r"^/v[0-9]+\.[0-9]+(?=/)", "", request.path)
    return f"page not found: Swarmlab does not emulate {request.method} {path}"


async def _docker_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Docker's headers on every response. They name the engine's version and OS, fixed for
    the process: worked out on the first response, not from a `node_info()` (which reads the
    store's nodes) on every one."""
    headers = request.app[_HEADERS]
    if not headers:
        info = request.app[BACKEND].node_info()
        headers["Api-Version"] = API_VERSION
        headers["Docker-Experimental"] = "false"
        headers["Ostype"] = info.os
        headers["Server"] = f"Docker/{info.engine_version} ({info.os})"
    response.headers.update(headers)


def _swarm_header(info: NodeInfo) -> str:
    """`Swarm` header of /_ping (API 1.44+ clients read it; harmless for older ones)."""
    if info.local_node_state != "active":
        return info.local_node_state
    return f"active/{info.role}"


async def _ping(request: web.Request) -> web.Response:
    info = backend(request).node_info()
    return web.Response(
        text="OK",
        content_type="text/plain",
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache, no-store, must-revalidate",
            "Pragma": "no-cache",
            "Swarm": _swarm_header(info),
        },
    )


# The runtime parts the emulated runtime stands in for, at the versions dockerd 20.10.24's
# release bundles (its `docker version` lists them after the Engine; `docker info` shows
# their commits): ours name the emulation, as the engine's version does.
EMULATED_COMPONENTS = (("containerd", "1.6.20-swarmlab"), ("runc", "1.1.5-swarmlab"))
EMULATED_COMMIT = {"ID": "swarmlab", "Expected": "swarmlab"}


async def _version(request: web.Request) -> web.Response:
    info = backend(request).node_info()
    arch = _go_arch(info.architecture)
    details = {
        "ApiVersion": API_VERSION,
        "Arch": arch,
        "BuildTime": "",
        "Experimental": "false",
        "GitCommit": "swarmlab",
        "GoVersion": "python" + platform.python_version(),
        "KernelVersion": info.kernel_version or platform.release(),
        "MinAPIVersion": MIN_API_VERSION,
        "Os": info.os,
    }
    return json_response(
        {
            "Platform": {"Name": ""},
            "Components": [
                {"Name": "Engine", "Version": info.engine_version, "Details": details},
                *(
                    {"Name": name, "Version": version, "Details": {"GitCommit": "swarmlab"}}
                    for name, version in EMULATED_COMPONENTS
                ),
            ],
            "Version": info.engine_version,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "swarmlab",
            "GoVersion": details["GoVersion"],
            "Os": info.os,
            "Arch": arch,
            "KernelVersion": details["KernelVersion"],
            "BuildTime": "",
        }
    )


def _go_arch(machine: str) -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


async def _info(request: web.Request) -> web.Response:
    b = backend(request)
    info = b.node_info()
    counting = request.app.get(CONTAINER_STATES)
    states = counting() if counting is not None else Counter[str]()
    return json_response(
        {
            "ID": info.engine_id or info.node_id,
            "Containers": states.total(),
            "ContainersRunning": states["running"],
            "ContainersPaused": 0,
            "ContainersStopped": states.total() - states["running"],
            "Images": len(images.image_summaries(request.app[images.LOCAL_IMAGES])),
            "Driver": "swarmlab",
            "DriverStatus": [],
            "Plugins": {
                "Volume": ["local"],
                # the local networks' drivers (`predefined_networks.py`) and the swarm's
                "Network": ["bridge", "host", "null", "overlay"],
                "Authorization": None,
                "Log": sorted(d for d in LOG_DRIVER_OPTIONS if d != "none"),  # as dockerd's list
            },
            "MemoryLimit": True,
            "SwapLimit": True,
            "KernelMemory": False,
            "KernelMemoryTCP": False,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "IPv4Forwarding": True,
            "BridgeNfIptables": True,
            "BridgeNfIp6tables": True,
            "Debug": False,
            "NFd": 0,
            "OomKillDisable": False,
            "NGoroutines": 0,
            "SystemTime": go_time(time.time_ns()),
            "LoggingDriver": "json-file",
            "CgroupDriver": "none",
            "CgroupVersion": "2",
            "NEventsListener": 0,
            "KernelVersion": info.kernel_version or platform.release(),
            "OperatingSystem": "Swarmlab",
            "OSVersion": "",
            "OSType": info.os,
            "Architecture": info.architecture,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": None,
            "NCPU": info.ncpu or (os.cpu_count() or 1),
            "MemTotal": info.mem_total,
            "GenericResources": None,
            "DockerRootDir": "",
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "Name": info.hostname,
            "Labels": list(info.labels),
            "ExperimentalBuild": False,
            "ServerVersion": info.engine_version,
            "Runtimes": {name: {"path": "runc"} for name in RUNTIMES},
            "DefaultRuntime": DEFAULT_RUNTIME,
            "Swarm": _swarm_info(info, b.store),
            "LiveRestoreEnabled": False,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": dict(EMULATED_COMMIT),
            "RuncCommit": dict(EMULATED_COMMIT),
            "InitCommit": {"ID": "", "Expected": ""},
            "SecurityOptions": [],
            "Warnings": list(info.warnings) or None,
        }
    )


def _swarm_info(info: NodeInfo, store: Store) -> dict[str, Any]:
    swarm: dict[str, Any] = {
        "NodeID": info.node_id if info.local_node_state != "inactive" else "",
        "NodeAddr": info.addr if info.local_node_state != "inactive" else "",
        "LocalNodeState": info.local_node_state,
        "ControlAvailable": info.is_manager and info.local_node_state == "active",
        "Error": info.error,
        "RemoteManagers": [{"NodeID": m.node_id, "Addr": m.addr} for m in info.managers] or None,
    }
    if swarm["ControlAvailable"]:
        swarm["Nodes"] = info.nodes
        swarm["Managers"] = len(info.managers)
        swarm["Cluster"] = cluster_json(info, store)
    return swarm


__all__ = ["ApiError", "create_app"]
