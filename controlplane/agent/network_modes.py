"""A container's network mode and dockerd's refusals of the networks it cannot join with it.

dockerd gives a container its first network as its mode (`HostConfig.NetworkMode`) and
connects it to the others one by one: `host` and `none` refuse company (a `docker network
connect` says so, and a swarm task whose networks mix them is rejected with the same words,
at its preparation). A task's networks are its attachments in the allocator's order (the
ingress network first when it publishes ports there, then its spec's), so `--network host
-p 8080:80` is refused as a container on `ingress` connected to `host`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HOST_MODE_REFUSAL = (
    "container cannot be disconnected from host network or connected to host network"
)
SHARED_NAMESPACE_REFUSAL = (
    "container sharing network namespace with another container or host cannot be "
    "connected to any other network"
)
PORTS_DISCARDED_WARNING = "Published ports are discarded when using host network mode"


def local_mode_refusal(mode: str, target: str) -> str | None:
    """dockerd's refusal to connect a container in network mode `mode` to `target` where
    `host` or `none` forbids it, in dockerd's order (the host network first, then the
    container's network namespace), or None. `host` to a host-mode container is no refusal:
    it is on it already."""
    if target == "host" and mode != "host":
        return HOST_MODE_REFUSAL
    if mode == "host" and target != "host":
        return SHARED_NAMESPACE_REFUSAL
    if "none" in (mode, target):
        return (
            "container cannot be connected to multiple networks with one of the networks in "
            "private (none) mode"
        )
    return None


@dataclass(frozen=True)
class TaskNetworkMode:
    """How a task's container is networked: `mode` its first network's name (`host`,
    `bridge`, or an overlay's), `refusal` dockerd's words if it cannot join the others,
    `bridge` whether it is on the node's default bridge (beside its overlays, if any)."""

    mode: str
    refusal: str | None = None
    bridge: bool = False


def task_network_mode(names: Sequence[str]) -> TaskNetworkMode:
    """The mode of a container joining networks `names` in that order (none: `default`)."""
    if not names:
        return TaskNetworkMode("default")
    mode, *others = names
    for target in others:
        refusal = local_mode_refusal(mode, target)
        if refusal is not None:
            return TaskNetworkMode(mode, refusal)
    return TaskNetworkMode(mode, bridge="bridge" in names)
