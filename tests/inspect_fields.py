"""Raw `docker inspect` of a container, ours beside dockerd's (tests/compat/
container_inspect_dockerd.json, recorded by `bench/container_inspect.py --record`): the
commands of each case, and the differences between two inspect documents that are not on
purpose (used by tests/unit/test_container_inspect_cli.py and by the bench).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).parent / "compat" / "container_inspect_dockerd.json"

# Each case's command; its container is the one named `--name` (the service's task for
# `task`).
CASES: dict[str, list[str]] = {
    "plain": ["run", "-d", "--name", "plain", "busybox", "sleep", "1d"],
    "options": [
        "run", "-d", "--name", "opts", "--restart", "on-failure:3", "--shm-size", "128m",
        "--ipc", "shareable", "--log-opt", "max-size=10m", "--log-opt", "max-file=3",
        "-p", "8080:80", "-v", "vol1:/data", "-e", "A=b", "--hostname", "hh",
        "--label", "x=y", "-w", "/tmp", "-u", "1000", "busybox", "sleep", "1d",
    ],
    "task": ["service", "create", "-d", "--name", "svc", "busybox", "sleep", "1d"],
}  # fmt: skip

# What differs whatever the engine: ids, times, process ids, the host's folders, names,
# addresses (they depend on what ran before), and the recording machine's own: the image's
# PATH (its busybox was imported with PATH=/bin) and IPv6 (its dockerd also bound `::`).
# SandboxID/SandboxKey: an emulated container has no network namespace file.
VARYING = {
    "/Id", "/Created", "/State/Pid", "/State/StartedAt", "/Image", "/ResolvConfPath",
    "/HostnamePath", "/HostsPath", "/LogPath", "/Config/Hostname", "/Config/Env",
    "/NetworkSettings/SandboxID", "/NetworkSettings/SandboxKey",
    "/NetworkSettings/EndpointID", "/Mounts", "/NetworkSettings/Networks",
    "/Config/Labels", "/Name", "/NetworkSettings/Ports",
    "/NetworkSettings/IPAddress", "/NetworkSettings/MacAddress",
}  # fmt: skip
# Different on purpose (dockerd's, ours): the emulation's storage driver (`docker info`
# says swarmlab; no layer folders) and cgroup namespace mode (dockerd's default on cgroup v2,
# which the emulation's `docker info` reports; the recording machine was on v1).
ON_PURPOSE: dict[str, tuple[Any, Any]] = {
    "/Driver": ("overlay2", "swarmlab"),
    "/GraphDriver/Name": ("overlay2", "swarmlab"),
    "/HostConfig/CgroupnsMode": ("host", "private"),
}
_OBJECTS_AS_VALUES = (
    "Labels", "Networks", "Ports", "PortBindings", "ExposedPorts", "Volumes", "Data",
)  # fmt: skip


def recorded() -> dict[str, Any]:
    """dockerd's inspect document of each case."""
    cases: dict[str, Any] = json.loads(RECORDED.read_text())["cases"]
    return {name: case["inspect"] for name, case in cases.items()}


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every field's path in order, with its value where it is not an object (the objects
    whose keys are data: labels, networks, ports, volumes, a driver's data, are values)."""
    if isinstance(value, dict) and not path.endswith(_OBJECTS_AS_VALUES):
        out: list[tuple[str, Any]] = [(path, None)] if path else []
        for key, inner in value.items():
            out += leaves(inner, f"{path}/{key}")
        return out
    return [(path, value)]


def differences(case: str, dockerd: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """What in `ours` is not as in `dockerd`'s document, but for what differs on purpose."""
    theirs, mine = dict(leaves(dockerd)), dict(leaves(ours))
    if list(mine) != list(theirs):
        missing = [p for p in theirs if p not in mine]
        extra = [p for p in mine if p not in theirs]
        return [f"fields differ: dockerd's only {missing}, ours only {extra} (or the order)"]
    found = []
    for path, value in theirs.items():
        if path in VARYING or any(path.startswith(f"{v}/") for v in VARYING):
            continue
        if case == "task" and path.startswith("/NetworkSettings/"):
            continue  # dockerd puts a task on no network on docker0; the emulation does not
        if path == "/GraphDriver/Data":
            expected = {}  # the emulation's driver has no layer folders
        else:
            expected = ON_PURPOSE[path][1] if path in ON_PURPOSE else value
        if path in ON_PURPOSE and value != ON_PURPOSE[path][0]:
            found.append(f"{path}: dockerd {value!r}, expected {ON_PURPOSE[path][0]!r}")
        if mine[path] != expected:
            found.append(f"{path}: dockerd {value!r}, ours {mine[path]!r}")
    return found
