"""The node's standalone containers (`docker run`, not a service's tasks): their registry and
lifecycle on top of the emulated runtime, and their overlay attachments.

A container names one network (`HostConfig.NetworkMode`). The engine-local modes (`default`,
`bridge`, `host`, `none`) give it no overlay: the emulation has no bridge driver, so such a
container has only its loopback. Any other name is a swarm network: at start the node asks the
managers for an attachment (`network_attach.py`; the leader checks the network is attachable
and allocates the address), publishes the endpoint in NetworkDB like a task's and gives the
container the same stack and resolver as tasks. When the container exits, the endpoint is
withdrawn and the attachment released, as dockerd releases a stopped container's network; with
`--rm` (AutoRemove) the container is then removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import Protocol

from controlplane.agent.network_attach import NetworkAttachError
from controlplane.agent.runtime import (
    Container,
    ContainerConfig,
    ContainerRuntimeError,
    ContainerState,
    NetworkAttachment,
    Runtime,
)
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.dispatcher_pb2 import AttachNetworkResponse
from controlplane.pb.objects_pb2 import Network

log = logging.getLogger("controlplane.agent.standalone")

LOCAL_NETWORK_MODES = frozenset({"", "default", "bridge", "host", "none"})
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
ATTACH_FAILED_STATUS = 128  # dockerd's exit code of a container whose start failed this way
_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


class NameConflictError(ContainerRuntimeError):
    pass


class InvalidConfigError(ContainerRuntimeError):
    pass


class NetworkNotFoundError(ContainerRuntimeError):
    pass


class NotRunningError(ContainerRuntimeError):
    pass


class Attacher(Protocol):
    """The managers' side of attachments (`network_attach.NetworkAttacher`)."""

    async def attach(
        self, container_id: str, name: str, target: str, aliases: list[str]
    ) -> AttachNetworkResponse: ...

    async def detach(self, attachment_id: str) -> None: ...


class EndpointPublisher(Protocol):
    """Where this node publishes its endpoints (`datapath.attachments.DataPathState`)."""

    def container_attached(self, key: str, network: Network, record: EndpointRecord) -> None: ...

    def container_detached(self, key: str) -> None: ...


@dataclass(frozen=True)
class Swarm:
    """What a node in a swarm gives its standalone containers."""

    node_id: str
    attacher: Attacher
    endpoints: EndpointPublisher


@dataclass
class _Standalone:
    network: str
    aliases: list[str]
    auto_remove: bool
    endpoints: list[tuple[str, str]] = field(default_factory=list)  # (attachment id, key)
    networks: dict[str, Network] = field(default_factory=dict)  # attached now, by id
    removed: asyncio.Event = field(default_factory=asyncio.Event)
    supervisor: asyncio.Task[None] | None = None


class StandaloneContainers:
    """See the module docstring. `swarm` is set while the node is in a swarm."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.swarm: Swarm | None = None
        self._extra: dict[str, _Standalone] = {}

    # ---- create / start ---------------------------------------------------------------------

    def create(
        self,
        config: ContainerConfig,
        *,
        network: str = "",
        aliases: tuple[str, ...] = (),
        auto_remove: bool = False,
    ) -> Container:
        """A created container; images.ImageError for a bad image, NameConflictError (409)
        for a name in use, NetworkNotFoundError when no swarm holds the network."""
        if config.name:
            if not _NAME.match(config.name):
                raise InvalidConfigError(
                    f"Invalid container name ({config.name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                    "are allowed"
                )
            config.name = config.name.removeprefix("/")
            for other in self.runtime.containers():
                if other.name == config.name:
                    raise NameConflictError(
                        f'Conflict. The container name "/{config.name}" is already in use by '
                        f'container "{other.id}". You have to remove (or rename) that '
                        "container to be able to reuse that name."
                    )
        if network not in LOCAL_NETWORK_MODES and self.swarm is None:
            raise NetworkNotFoundError(f"network {network} not found")
        container = self.runtime.create(config)
        self._extra[container.id] = _Standalone(network, list(aliases), auto_remove)
        return container

    def get(self, ref: str) -> Container:
        return self.runtime.get(ref)

    def network_of(self, container: Container) -> str:
        extra = self._extra.get(container.id)
        return extra.network if extra is not None else ""

    def networks_of(self, container: Container) -> dict[str, Network]:
        """The swarm networks the container is attached to now, by id."""
        extra = self._extra.get(container.id)
        return dict(extra.networks) if extra is not None else {}

    def auto_remove(self, container: Container) -> bool:
        extra = self._extra.get(container.id)
        return extra is not None and extra.auto_remove

    async def start(self, ref: str) -> bool:
        """Attach its network and start it; False if it was running already (dockerd's 304).
        StartError or NetworkAttachError (the container then exits with 128) otherwise."""
        container = self.runtime.get(ref)
        if container.state is ContainerState.RUNNING:
            return False
        extra = self._extra[container.id]
        extra.supervisor = asyncio.create_task(
            self._supervise(container, extra), name=f"standalone-{container.id[:12]}"
        )
        try:
            if extra.network not in LOCAL_NETWORK_MODES:
                await self._attach(container, extra)
        except NetworkAttachError as err:
            self.runtime.fail(container.id, ATTACH_FAILED_STATUS, str(err))
            raise
        await self.runtime.start(container.id)
        return True

    async def _attach(self, container: Container, extra: _Standalone) -> None:
        if self.swarm is None:
            raise NetworkAttachError(
                f"Could not attach to network {extra.network}: this node left the swarm"
            )
        aliases = [*extra.aliases, container.id[:12]]  # dockerd's short-id alias
        answer = await self.swarm.attacher.attach(
            container.id, container.name, extra.network, aliases
        )
        attachment = answer.attachment
        key = f"{answer.attachment_id}.{attachment.network_id}"
        record = EndpointRecord(
            name=container.name,
            ip=attachment.addresses[0].partition("/")[0],
            node_id=self.swarm.node_id,
            aliases=list(attachment.aliases),
            task_id=answer.attachment_id,
        )
        self.swarm.endpoints.container_attached(key, answer.network, record)
        extra.endpoints.append((answer.attachment_id, key))
        extra.networks[attachment.network_id] = answer.network
        container.networks[attachment.network_id] = NetworkAttachment(
            attachment.network_id, list(attachment.addresses), list(attachment.aliases)
        )

    async def _supervise(self, container: Container, extra: _Standalone) -> None:
        """After the exit: release the network, and remove the container with `--rm`."""
        await self.runtime.exit_status(container.id)
        await self._release(extra)
        if extra.auto_remove:
            with contextlib.suppress(ContainerRuntimeError):
                await self.remove(container.id, force=True)

    async def _release(self, extra: _Standalone) -> None:
        endpoints, extra.endpoints = extra.endpoints, []
        extra.networks.clear()
        for attachment_id, key in endpoints:
            if self.swarm is not None:
                self.swarm.endpoints.container_detached(key)
                await self.swarm.attacher.detach(attachment_id)

    # ---- wait / stop / kill / remove -------------------------------------------------------

    async def wait(self, ref: str, condition: str = "not-running") -> int:
        """dockerd's conditions: `not-running` (a created or exited container answers at
        once), `next-exit`, `removed`."""
        if condition not in WAIT_CONDITIONS:
            raise InvalidConfigError(
                f"invalid condition: {condition!r}; use one of {', '.join(WAIT_CONDITIONS)}"
            )
        container = self.runtime.get(ref)
        extra = self._extra.get(container.id)
        if condition == "not-running" and container.state is not ContainerState.RUNNING:
            return container.exit_code or 0
        status = await self.runtime.exit_status(container.id)
        if condition == "removed" and extra is not None:
            await extra.removed.wait()
        return status

    async def stop(self, ref: str, grace: float) -> bool:
        """False if it was not running (dockerd's 304)."""
        container = self.runtime.get(ref)
        if container.state is not ContainerState.RUNNING:
            return False
        await self.runtime.stop(container.id, grace)
        return True

    async def kill(self, ref: str) -> None:
        container = self.runtime.get(ref)
        if container.state is not ContainerState.RUNNING:
            raise NotRunningError(
                f"Cannot kill container: {ref}: Container {container.id} is not running"
            )
        await self.runtime.stop(container.id, grace=0)

    async def remove(self, ref: str, force: bool = False) -> None:
        container = self.runtime.get(ref)
        await self.runtime.remove(container.id, force=force)
        extra = self._extra.pop(container.id, None)
        if extra is not None:
            if extra.supervisor is not None and extra.supervisor is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError):
                    await extra.supervisor  # the network is released before the answer
            extra.removed.set()
        log.info("event=container_removed id=%s name=%s", container.id[:12], container.name)

    def containers(self) -> list[Container]:
        return self.runtime.containers()

    async def close(self) -> None:
        """The node is going away: kill every container and release its networks."""
        await self.runtime.close()
        for extra in list(self._extra.values()):
            if extra.supervisor is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(extra.supervisor, 5.0)
