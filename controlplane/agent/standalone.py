"""The node's standalone containers (`docker run`, not a service's tasks): their registry and
lifecycle on top of the emulated runtime, their overlay attachments, `docker exec` sessions.

A container names one network at create (`HostConfig.NetworkMode`). The engine-local modes
(`default`, `bridge`, `host`, `none`) give it no overlay: in userspace mode the emulation has
no bridge driver, so such a container has only its loopback; in kernel mode it is a real
process in a namespace of its own, on the node's bridge (`default`, `bridge`: plugged as a
container publishing ports is, with or without any) or with only its loopback (`none`);
`host` runs emulated. Any other name is a swarm network: at start the
node asks the managers for an attachment (`network_attach.py`; the leader checks the network
is attachable and allocates the address), publishes the endpoint in NetworkDB like a task's
and gives the container the same stack and resolver as tasks. `docker network connect` adds
another swarm network (at once to a running container's processes, else at its start),
`disconnect` withdraws one. When the container exits, its endpoints are withdrawn and the
attachments released, as dockerd releases a stopped container's network; with `--rm`
(AutoRemove) the container is then removed.

The runtime is the node's one runtime: the swarm tasks' containers run in it too (`docker ps`,
`exec`, `logs`, `kill`, `rm -f` work on them), but only `docker run`'s can be started or
connected here. Attachments are recorded in an `AttachmentLedger`: those a previous run of the
node left behind (it died with its containers) are released when the node is back in a swarm.

Published ports (`docker run -p 8080:80`, `-P`): as Docker, a container on a swarm overlay is
also on the node's docker_gwbridge and its ports are published on this node only
(`datapath/host_ports.py`, the same mapping host-mode task ports use). They are bound at the
start, after the networks: a port already taken fails the start with dockerd's error (the
container exits with 128 and never runs), and they close when the container exits (stop,
kill, rm -f). A container on no overlay gets only the gwbridge, in userspace mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass, field, replace
from typing import Protocol

from controlplane.agent.attachment_ledger import AttachmentLedger
from controlplane.agent.create_options import RestartPolicy
from controlplane.agent.exec_sessions import ExecSessions
from controlplane.agent.local_network_ids import LocalNetworkIds
from controlplane.agent.network_attach import NetworkAttachError
from controlplane.agent.network_modes import HOST_MODE_REFUSAL, local_mode_refusal
from controlplane.agent.runtime import (
    Container,
    ContainerConfig,
    ContainerRuntimeError,
    ContainerState,
    ContainerStateError,
    NetworkAttachment,
    Runtime,
    StartError,
)
from controlplane.datapath.host_ports import (
    HostBinding,
    HostPortError,
    HostPorts,
    bridge_endpoint_label,
)
from controlplane.datapath.kernel.host_ports import BridgeEndpoint
from controlplane.datapath.node_datapath import AttachError
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.dispatcher_pb2 import AttachNetworkResponse
from controlplane.pb.objects_pb2 import Network

log = logging.getLogger("controlplane.agent.standalone")

LOCAL_NETWORK_MODES = frozenset({"", "default", "bridge", "host", "none"})
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
ATTACH_FAILED_STATUS = 128  # dockerd's exit code of a container whose start failed this way
_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
STALE_RETRY = 2.0  # seconds between tries to release a previous run's attachments
# dockerd's restart manager: the first restart after 100 ms, each next one after twice the
# last delay (at most a minute), from 100 ms again once a run lasted 10 s
RESTART_FIRST_DELAY = 0.1
RESTART_MAX_DELAY = 60.0
RESTART_RESET_AFTER = 10.0


class NameConflictError(ContainerRuntimeError):
    pass


class InvalidConfigError(ContainerRuntimeError):
    pass


class NetworkNotFoundError(ContainerRuntimeError):
    pass


class NotRunningError(ContainerRuntimeError):
    pass


class AlreadyConnectedError(ContainerRuntimeError):
    pass


class TaskContainerError(ContainerRuntimeError):
    pass


class NotConnectedError(ContainerRuntimeError):
    pass


class PortsNotPublishedError(StartError):
    """The container's ports could not be published: it did not start (dockerd's 500)."""


class Attacher(Protocol):
    """The managers' side of attachments (`network_attach.NetworkAttacher`)."""

    async def attach(
        self, container_id: str, name: str, target: str, aliases: list[str], ipv4: str = ""
    ) -> AttachNetworkResponse: ...

    async def detach(self, attachment_id: str) -> bool: ...


class EndpointPublisher(Protocol):
    """Where this node publishes its endpoints (`datapath.attachments.DataPathState`)."""

    def container_attached(self, key: str, network: Network, record: EndpointRecord) -> None: ...

    def container_detached(self, key: str) -> None: ...

    def networks(self) -> list[Network]:
        """The swarm networks this node's containers are on (tasks' included)."""
        ...


class PortPublisher(Protocol):
    """Where this node publishes its containers' ports (`datapath.node_datapath.NodeDataPath`)."""

    def expect_ports(
        self,
        owner: str,
        endpoint_name: str,
        endpoint: str,
        bindings: list[HostBinding],
        isolated: bool = False,
    ) -> None: ...

    def published_ports(self, owner: str) -> list[HostBinding]: ...

    def bridge_endpoint(self, endpoint_name: str) -> BridgeEndpoint | None: ...

    def gateway_endpoint(self, endpoint_name: str) -> BridgeEndpoint | None: ...

    def release_ports(self, owner: str) -> None: ...


@dataclass(frozen=True)
class Swarm:
    """What a node in a swarm gives its standalone containers (`ports`: none, no data path)."""

    node_id: str
    attacher: Attacher
    endpoints: EndpointPublisher
    ports: PortPublisher | None = None


@dataclass(frozen=True)
class PortRequest:
    """The ports `docker run` asked to publish: `HostConfig.PortBindings` (each container
    port `80/tcp` with its host bindings), `PublishAllPorts` (`-P`) and the exposed ports
    (the image's and `Config.ExposedPorts`), which `-P` publishes on ports the node picks."""

    bindings: tuple[tuple[str, tuple[HostBinding, ...]], ...] = ()
    publish_all: bool = False
    exposed: tuple[str, ...] = ()

    def to_publish(self) -> list[HostBinding]:
        bound = {port for port, _ in self.bindings}
        picked = [
            HostBinding(port.partition("/")[2] or "tcp", int(port.partition("/")[0]))
            for port in self.exposed
            if self.publish_all and port not in bound
        ]
        return [b for _, host in self.bindings for b in host] + picked


@dataclass(frozen=True)
class _Attached:
    """One swarm network the running container is on: its attachment and NetworkDB key."""

    network: Network
    attachment_id: str
    key: str
    record: EndpointRecord  # as published in NetworkDB


@dataclass(frozen=True)
class EndpointRequest:
    """A swarm network a container is to be on, as the user named it (`--network`, `network
    connect`), its aliases there and the IPv4 address asked for (`--ip`; "" for any)."""

    target: str
    aliases: tuple[str, ...] = ()
    ipv4: str = ""


@dataclass
class _Standalone:
    network: str  # HostConfig.NetworkMode
    auto_remove: bool
    wanted: list[EndpointRequest]  # its swarm networks
    ports: PortRequest
    local_ip: str = ""  # `--ip` with a network mode of this node's (dockerd refuses the start)
    attached: dict[str, _Attached] = field(default_factory=dict)  # while running, by id
    restarting: bool = False  # stopped by `docker restart`: `--rm` does not remove it
    removed: asyncio.Event = field(default_factory=asyncio.Event)
    supervisor: asyncio.Task[None] | None = None
    left_bridge: bool = False  # disconnected from the default bridge: not on it at starts
    left_none: bool = False  # disconnected from `none` (its mode): inspect shows no network
    stopped_by_user: bool = False  # `docker stop`/`kill`/`rm -f`: its restart policy waits
    restart_delay: float = 0.0  # the last wait before a restart by its policy
    pending_restart: asyncio.Task[None] | None = None  # the restart its policy has planned
    # disconnected from `host` while stopped: still in host mode, but with no endpoint there
    left_host: bool = False


def _names(network: Network, target: str) -> bool:
    """Whether `target` names `network` as dockerd looks networks up: id, name, id prefix."""
    return target in (network.id, network.spec.annotations.name) or (
        bool(target) and network.id.startswith(target)
    )


class StandaloneContainers:
    """See the module docstring. `swarm` is set while the node is in a swarm."""

    def __init__(
        self,
        runtime: Runtime,
        ledger: AttachmentLedger | None = None,
        bridge: HostPorts | None = None,
        local_network_ids: LocalNetworkIds | None = None,
    ) -> None:
        """`ledger` keeps the attachments across a restart of the node (none: not kept);
        `bridge` is the node's default bridge in userspace mode (docker0: `DEFAULT_BRIDGE`),
        where a container on no other network gets its interface and publishes its ports;
        `local_network_ids` the node's ids of its local networks (none: this process's)."""
        self.runtime = runtime
        self.bridge = bridge
        self.local_network_ids = local_network_ids or LocalNetworkIds()
        self.execs = ExecSessions(runtime)
        self._swarm: Swarm | None = None
        self._extra: dict[str, _Standalone] = {}
        self._ledger = ledger
        # A new process runs no container yet: every attachment recorded is a dead one's.
        self._stale: set[str] = ledger.ids() if ledger is not None else set()
        self._releasing: asyncio.Task[None] | None = None
        self._closing = False  # the node is going away: no restart by a policy

    @property
    def swarm(self) -> Swarm | None:
        return self._swarm

    @swarm.setter
    def swarm(self, swarm: Swarm | None) -> None:
        """Joining a swarm (the node's agent has its session) also releases the attachments
        a previous run of the node left in the managers' store."""
        self._swarm = swarm
        if swarm is not None and self._stale and self._releasing is None:
            self._releasing = asyncio.create_task(
                self._release_stale(), name="standalone-release-stale"
            )

    async def _release_stale(self) -> None:
        """Until each is removed (or the node left the swarm: the next join retries)."""
        try:
            while self._stale and self._swarm is not None:
                attachment_id = min(self._stale)
                if await self._swarm.attacher.detach(attachment_id):
                    self._stale.discard(attachment_id)
                    self._forget(attachment_id)
                    log.info("event=stale_attachment_released attachment=%s", attachment_id)
                else:
                    await asyncio.sleep(STALE_RETRY)
        finally:
            self._releasing = None

    def _forget(self, attachment_id: str) -> None:
        if self._ledger is not None:
            self._ledger.discard(attachment_id)

    # ---- create / start ---------------------------------------------------------------------

    def create(
        self,
        config: ContainerConfig,
        *,
        network: str = "",
        aliases: tuple[str, ...] = (),
        ipv4: str = "",
        auto_remove: bool = False,
        ports: PortRequest | None = None,
    ) -> Container:
        """A created container; images.ImageError for a bad image, NameConflictError (409)
        for a name in use, NetworkNotFoundError when no swarm holds the network,
        InvalidConfigError for a bad name. In `host` mode it shares the node's network
        (`runtime.host`) and its ports are not published (`PORTS_DISCARDED_WARNING`)."""
        self.runtime.images.require(config.image)  # `docker rmi` may have removed it
        if config.name:
            config.name = self._free_name(config.name)
        if network not in LOCAL_NETWORK_MODES and self.swarm is None:
            raise NetworkNotFoundError(f"network {network} not found")
        shared = config.host_options.ipc_container  # `--ipc container:NAME`
        if shared and not any(shared in (c.id, c.name) for c in self.runtime.containers()):
            # dockerd's words, as a bad parameter (a 404 would make the CLI pull the image)
            raise InvalidConfigError(f"No such container: {shared}")
        ports = ports or PortRequest()
        if network == "host":
            config.host_network = self.runtime.host
        container = self.runtime.create(config)
        local = network in LOCAL_NETWORK_MODES
        wanted = [] if local else [EndpointRequest(network, aliases, ipv4)]
        exposed = tuple(dict.fromkeys((*container.image.exposed_ports, *ports.exposed)))
        ports = replace(ports, exposed=exposed)
        extra = _Standalone(network, auto_remove, wanted, ports, local_ip=ipv4 if local else "")
        self._extra[container.id] = extra
        return container

    def _free_name(self, name: str) -> str:
        """`name` without its leading slash, if it is valid and no container has it:
        InvalidConfigError or NameConflictError (dockerd's words) otherwise."""
        if not _NAME.fullmatch(name):
            raise InvalidConfigError(
                f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )
        name = name.removeprefix("/")
        for other in self.runtime.containers():
            if other.name == name:
                raise NameConflictError(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{other.id}". You have to remove (or rename) that container to be able '
                    "to reuse that name."
                )
        return name

    def get(self, ref: str) -> Container:
        """Any container of the node: standalone or a swarm task's (the runtime is shared)."""
        return self.runtime.get(ref)

    def _standalone(self, container: Container, action: str) -> _Standalone:
        """What `docker run` gave it; a task container is the orchestrator's to run."""
        extra = self._extra.get(container.id)
        if extra is None:
            raise TaskContainerError(
                f"cannot {action} container {container.name}: it runs a swarm service's task; "
                "update the service (`docker service update`) instead"
            )
        return extra

    def network_of(self, container: Container) -> str:
        """Its network mode as `docker run` named it; a task container's is its first
        network's name when that is the node's own (`host`, `bridge`), "" otherwise."""
        extra = self._extra.get(container.id)
        return extra.network if extra is not None else container.config.network_mode

    def left_network_mode(self, container: Container) -> bool:
        """Whether it was disconnected from the network of its mode (`none`; `host` while
        stopped: dockerd keeps the mode, and the container's processes the node's network)."""
        extra = self._extra.get(container.id)
        return extra is not None and (extra.left_none or extra.left_host)

    def networks_of(self, container: Container) -> dict[str, Network]:
        """The swarm networks the container is attached to now, by id (a task container's
        are those of its task, as the node's data path knows them)."""
        extra = self._extra.get(container.id)
        if extra is not None:
            return {nid: a.network for nid, a in extra.attached.items()}
        if self.swarm is None:
            return {}
        return {n.id: n for n in self.swarm.endpoints.networks() if n.id in container.networks}

    def auto_remove(self, container: Container) -> bool:
        extra = self._extra.get(container.id)
        return extra is not None and extra.auto_remove

    def port_request(self, container: Container) -> PortRequest:
        """What `docker run` asked to publish (nothing for a task's container)."""
        extra = self._extra.get(container.id)
        return extra.ports if extra is not None else PortRequest()

    def bridge_endpoint(self, container: Container) -> BridgeEndpoint | None:
        """Where the running container is on the node's bridge (no overlay: the userspace
        bridge's interface, or the kernel's)."""
        bridge = self.bridge
        stack = bridge.stack_of(container.id) if bridge is not None else None
        if bridge is not None and stack is not None:
            gateway = str(bridge.subnet[1])
            return BridgeEndpoint(stack.ip, stack.network.prefixlen, gateway, stack.mac)
        swarm = self._swarm
        if swarm is None or swarm.ports is None:
            return None
        return swarm.ports.bridge_endpoint(container.name)

    def gateway_endpoint(self, name: str) -> BridgeEndpoint | None:
        """Where container (or sandbox) `name` is on the node's userspace docker_gwbridge."""
        swarm = self._swarm
        if swarm is None or swarm.ports is None:
            return None
        return swarm.ports.gateway_endpoint(name)

    def published_ports(self, container: Container) -> list[HostBinding]:
        """What the running container has bound on this node (none once it exited)."""
        if self.bridge is not None and self.bridge.stack_of(container.id) is not None:
            return self.bridge.bound(container.id)
        swarm = self._swarm
        if swarm is None or swarm.ports is None or container.id not in self._extra:
            return []
        return swarm.ports.published_ports(container.id)

    async def start(self, ref: str, *, by_policy: bool = False) -> bool:
        """Attach its networks and start it (again, once it has exited: `docker start`);
        False if it was running already (dockerd's 304). StartError, NetworkAttachError or
        InvalidConfigError (`--ip` without a swarm network): the start failed, the container
        stays created with exit code 128. A start not `by_policy` (its restart policy's)
        begins the policy's delays again from the first, as dockerd's start resets its
        restart manager."""
        container = self.runtime.get(ref)
        if container.state is ContainerState.RUNNING:
            return False
        if container.id not in self._extra and container.state is ContainerState.EXITED:
            await self._rerun_task_container(container)
            return True
        extra = self._standalone(container, "start")
        self._cancel_restart(extra)
        extra.stopped_by_user = False
        if not by_policy:
            extra.restart_delay = 0.0
        if extra.supervisor is not None:  # the last run's networks and ports are released
            await extra.supervisor
        self.runtime.next_run(container.id)  # the supervisor waits for this run's exit
        extra.supervisor = asyncio.create_task(
            self._supervise(container, extra), name=f"standalone-{container.id[:12]}"
        )
        try:
            if extra.local_ip:  # dockerd accepts it at create and refuses the start
                raise InvalidConfigError(
                    "user specified IP address is supported on user defined networks only"
                )
            refusal = container.config.host_options.start_refusal()
            if refusal is not None:
                raise InvalidConfigError(refusal)
            for endpoint in extra.wanted:
                await self._attach(container, extra, endpoint)
            if self._on_bridge(extra):
                await self._plug_bridge(container, extra)
            else:
                self._expect_ports(container, extra)
        except (NetworkAttachError, InvalidConfigError) as err:
            self.runtime.fail(container.id, ATTACH_FAILED_STATUS, str(err))
            raise
        except HostPortError as err:  # the bridge's ports: dockerd's words as they are
            self.runtime.fail(container.id, ATTACH_FAILED_STATUS, str(err))
            raise PortsNotPublishedError(str(err)) from None
        try:
            await self.runtime.start(container.id)
        except HostPortError as err:
            # libnetwork's words for the gateway endpoint's join (default_gateway.go).
            error = f"container {container.id}: endpoint join on GW Network failed: {err}"
            self.runtime.fail(container.id, ATTACH_FAILED_STATUS, error)
            raise PortsNotPublishedError(error) from None
        return True

    def _on_bridge(self, extra: _Standalone) -> bool:
        """Whether the container goes on the node's userspace default bridge: it names no
        other network (`--network` unset, `default` or `bridge`), as dockerd puts it on
        docker0."""
        return (
            self.bridge is not None
            and extra.network in ("", "default", "bridge")
            and not extra.left_bridge
        )

    async def _plug_bridge(self, container: Container, extra: _Standalone) -> None:
        """Its interface on the default bridge, its ports published from there (dockerd's
        refusal, naming its endpoint there, when a port is taken)."""
        assert self.bridge is not None
        stack = await self.bridge.publish_endpoint(
            container.id,
            container.name,
            bridge_endpoint_label(container.id, container.name),
            extra.ports.to_publish(),
        )
        container.local_stacks = (stack,)

    def _expect_ports(self, container: Container, extra: _Standalone) -> None:
        """Tell the data path the ports to publish when the container attaches: on its
        gwbridge endpoint, named as libnetwork names it (`gateway_` + the short id). Told
        with no port too: in kernel mode a container on no overlay is on the node's bridge
        all the same, and one in `none` mode has a namespace with only its loopback."""
        isolated = extra.network == "none"
        bindings = [] if isolated else extra.ports.to_publish()
        swarm = self._swarm
        if extra.network == "host" or (not bindings and (swarm is None or swarm.ports is None)):
            return
        if swarm is None or swarm.ports is None:
            raise NetworkAttachError(
                "cannot publish ports: they are published through the node's docker_gwbridge, "
                "which this emulated engine has only in a swarm (docker swarm init or join)"
            )
        endpoint_id = hashlib.sha256(f"gateway/{container.id}".encode()).hexdigest()
        endpoint = f"gateway_{container.id[:12]} ({endpoint_id})"
        swarm.ports.expect_ports(container.id, container.name, endpoint, bindings, isolated)

    async def _attach(
        self, container: Container, extra: _Standalone, endpoint: EndpointRequest
    ) -> _Attached:
        target = endpoint.target
        if self.swarm is None:
            raise NetworkAttachError(
                f"Could not attach to network {target}: this node left the swarm"
            )
        aliases = [*endpoint.aliases, container.id[:12]]  # dockerd's short-id alias
        answer = await self.swarm.attacher.attach(
            container.id, container.name, target, aliases, endpoint.ipv4
        )
        attachment = answer.attachment
        if self._ledger is not None:
            self._ledger.add(answer.attachment_id)
        key = f"{answer.attachment_id}.{attachment.network_id}"
        record = EndpointRecord(
            name=container.name,
            ip=attachment.addresses[0].partition("/")[0],
            node_id=self.swarm.node_id,
            aliases=list(attachment.aliases),
            task_id=answer.attachment_id,
        )
        self.swarm.endpoints.container_attached(key, answer.network, record)
        attached = _Attached(answer.network, answer.attachment_id, key, record)
        extra.attached[attachment.network_id] = attached
        container.networks[attachment.network_id] = NetworkAttachment(
            attachment.network_id, list(attachment.addresses), list(attachment.aliases)
        )
        return attached

    async def _supervise(self, container: Container, extra: _Standalone) -> None:
        """After the exit: release the ports and networks, and remove the container with
        `--rm`."""
        await self.runtime.exit_status(container.id)
        if self._swarm is not None and self._swarm.ports is not None:
            self._swarm.ports.release_ports(container.id)
        if self.bridge is not None:
            self.bridge.release(container.id)
            container.local_stacks = ()
        for network_id in list(extra.attached):
            await self._detach(container, extra, network_id)
        if extra.auto_remove and not extra.restarting:
            with contextlib.suppress(ContainerRuntimeError):
                await self.remove(container.id, force=True, anonymous_volumes=True)
        policy = container.config.host_options.restart_policy
        if (
            not extra.stopped_by_user
            and not self._closing
            and container.state is ContainerState.EXITED
            and policy.restarts_after(container.exit_code or 0, container.restart_count)
        ):
            ran = (container.finished_at_ns - container.started_at_ns) / 1e9
            extra.restart_delay = (
                RESTART_FIRST_DELAY
                if ran >= RESTART_RESET_AFTER or not extra.restart_delay
                else min(2 * extra.restart_delay, RESTART_MAX_DELAY)
            )
            container.restarting = True
            extra.pending_restart = asyncio.create_task(
                self._restart_by_policy(container, extra), name=f"restart-{container.id[:12]}"
            )

    async def _restart_by_policy(self, container: Container, extra: _Standalone) -> None:
        """Start the container again after its delay, as dockerd's restart manager does
        (`docker ps` says Restarting meanwhile); a start that fails ends the restarts."""
        await asyncio.sleep(extra.restart_delay)
        extra.pending_restart = None
        container.restarting = False
        container.restart_count += 1
        try:
            await self.start(container.id, by_policy=True)
        except ContainerRuntimeError as err:
            log.warning("event=restart_failed id=%s error=%s", container.id[:12], err)
        else:
            log.info(
                "event=container_restarted id=%s count=%d",
                container.id[:12],
                container.restart_count,
            )

    def _cancel_restart(self, extra: _Standalone) -> None:
        """A restart its policy planned does not happen (the user stopped, started or removed
        the container meanwhile)."""
        pending, extra.pending_restart = extra.pending_restart, None
        if pending is not None and pending is not asyncio.current_task():
            pending.cancel()

    def _stopped_by_user(self, container: Container) -> None:
        """`docker stop`, `kill`, `rm -f`: its restart policy does not start it again (dockerd's
        "manually stopped"), and a restart it planned is called off."""
        extra = self._extra.get(container.id)
        if extra is not None:
            extra.stopped_by_user = True
            self._cancel_restart(extra)
            container.restarting = False

    async def _detach(self, container: Container, extra: _Standalone, network_id: str) -> None:
        attached = extra.attached.pop(network_id)
        container.networks.pop(network_id, None)
        if self.swarm is not None:
            self.swarm.endpoints.container_detached(attached.key)
            if await self.swarm.attacher.detach(attached.attachment_id):
                self._forget(attached.attachment_id)
                return
        self._stale.add(attached.attachment_id)  # released at the next join

    # ---- network connect / disconnect ------------------------------------------------------

    async def connect(self, ref: str, endpoint: EndpointRequest) -> None:
        """`docker network connect`: a running container gets the endpoint now (its programs
        see the new stack, others resolve its name there); a stopped one at its next start.
        Errors in dockerd's words: NetworkNotFoundError, InvalidConfigError (a container in
        `none`/`host` mode), AlreadyConnectedError, NetworkAttachError (the managers')."""
        container, target = self.runtime.get(ref), endpoint.target
        extra = self._standalone(container, "connect")
        refusal = local_mode_refusal(extra.network, target)
        if refusal is not None:
            raise InvalidConfigError(refusal)
        if extra.network == target == "host":  # on it already: a stopped one says nothing
            if extra.left_host or container.state is not ContainerState.RUNNING:
                extra.left_host = False  # its endpoint there again, as dockerd's
                return
            raise AlreadyConnectedError(
                f"endpoint with name {container.name} already exists in network host"
            )
        if target == "bridge" and self.bridge_endpoint(container) is not None:
            raise AlreadyConnectedError(
                f"endpoint with name {container.name} already exists in network bridge"
            )
        if target in LOCAL_NETWORK_MODES or self.swarm is None:
            raise NetworkNotFoundError(
                f"network {target} not found: this emulated engine connects containers to "
                "attachable swarm overlays only"
                if target in LOCAL_NETWORK_MODES
                else f"network {target} not found"
            )
        connected = [a.network for a in extra.attached.values() if _names(a.network, target)]
        if connected or any(wanted.target == target for wanted in extra.wanted):
            name = connected[0].spec.annotations.name if connected else target
            raise AlreadyConnectedError(f"{container.name} is already attached to network {name}")
        if container.state is ContainerState.RUNNING:
            attached = await self._attach(container, extra, endpoint)
            try:
                await self._plug(container, attached.network.id)
            except NetworkAttachError:
                await self._detach(container, extra, attached.network.id)
                raise
        extra.wanted.append(endpoint)
        log.info("event=container_connected id=%s network=%s", container.id[:12], target)

    async def _plug(self, container: Container, network_id: str) -> None:
        """Give the running container's processes (and later exec's) the network's stack."""
        networking = self.runtime.networking
        if networking is None:
            raise NetworkAttachError("this node has no data path (it left the swarm)")
        try:
            stacks = await networking.attach(container.name, [network_id])
        except AttachError as err:
            raise NetworkAttachError(f"failed to attach the container's network: {err}") from None
        net = self.runtime.process(container.id).net
        end = len(container.local_stacks) + len(net.network_ids)
        # The overlay's stack after its default bridge's and overlays' (attach hands back the
        # gwbridge's too: the container has it, and it stays last, where `_unplug` expects it).
        net.stacks = (*net.stacks[:end], *stacks[:1], *net.stacks[end:])
        net.network_ids = (*net.network_ids, network_id)
        net.networking = networking
        self.runtime.network_connected(container, network_id)

    async def disconnect(self, ref: str, target: str, force: bool = False) -> None:
        """`docker network disconnect [-f]`: the endpoint is withdrawn (its name stops
        resolving) and the address released. As dockerd: a running container and a network
        this node has no container on is NetworkNotFoundError (with `force` the network is
        not looked up); NotConnectedError when the container is not on it (a host-mode one
        leaves no network: dockerd's refusal); a container in `none` mode leaves `none`
        once (its inspect shows no network from then on)."""
        container = self.runtime.get(ref)
        extra = self._standalone(container, "disconnect")
        running = container.state is ContainerState.RUNNING
        if extra.network == target == "host":
            if running:
                raise InvalidConfigError(HOST_MODE_REFUSAL)
            if extra.left_host:
                raise NotConnectedError(
                    f"container {container.id} is not connected to the network host"
                )
            # dockerd takes a stopped one's endpoint away; it still runs in host mode
            extra.left_host = True
            log.info("event=container_disconnected id=%s network=host", container.id[:12])
            return
        if extra.network == target == "none" and not extra.left_none:
            extra.left_none = True
            log.info("event=container_disconnected id=%s network=none", container.id[:12])
            return
        if target == "bridge" and self._on_bridge(extra):
            self._leave_bridge(container, extra)
            return
        if target == "bridge" and self.bridge_endpoint(container) is not None:
            raise InvalidConfigError(
                f"{container.name} cannot leave the bridge network: this emulated engine keeps "
                "a kernel-mode container on no overlay on the node's bridge (swdocker0) until "
                "it stops; run it with --network none to have no bridge"
            )
        found = [nid for nid, a in extra.attached.items() if _names(a.network, target)]
        names = {target, *(extra.attached[nid].network.spec.annotations.name for nid in found)}
        if not found and not any(wanted.target in names for wanted in extra.wanted):
            local = self.swarm.endpoints.networks() if self.swarm is not None else []
            known = target in LOCAL_NETWORK_MODES or any(_names(n, target) for n in local)
            if running and not known and not force:
                raise NetworkNotFoundError(f"network {target} not found")
            the = "" if running and known else "the "  # dockerd's two wordings
            raise NotConnectedError(
                f"container {container.id} is not connected to {the}network {target}"
            )
        for network_id in found:
            if running:
                self._unplug(container, network_id)
            await self._detach(container, extra, network_id)
        extra.wanted = [w for w in extra.wanted if w.target not in names]
        log.info("event=container_disconnected id=%s network=%s", container.id[:12], target)

    def _leave_bridge(self, container: Container, extra: _Standalone) -> None:
        """Off the userspace default bridge: its interface goes now (a running one's
        programs lose it, its ports close) and it is not put back at its next start."""
        extra.left_bridge = True
        if container.state is ContainerState.RUNNING:
            net = self.runtime.process(container.id).net
            net.stacks = tuple(s for s in net.stacks if s not in container.local_stacks)
        container.local_stacks = ()
        if self.bridge is not None:
            self.bridge.release(container.id)
        log.info("event=container_disconnected id=%s network=bridge", container.id[:12])

    def _unplug(self, container: Container, network_id: str) -> None:
        net = self.runtime.process(container.id).net
        first = len(container.local_stacks)
        end = first + len(net.network_ids)
        overlays = zip(net.network_ids, net.stacks[first:end], strict=True)
        kept = [(n, s) for n, s in overlays if n != network_id]
        net.network_ids = tuple(n for n, _ in kept)
        # its default bridge's and gwbridge's stay
        net.stacks = (*net.stacks[:first], *(s for _, s in kept), *net.stacks[end:])
        self.runtime.network_disconnected(container, network_id)

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
        restarting = container.restarting
        self._stopped_by_user(container)
        if container.state is not ContainerState.RUNNING:
            return restarting  # a restart called off is a stop (dockerd's 204)
        await self.runtime.stop(container.id, grace)
        return True

    async def restart(self, ref: str, grace: float) -> None:
        """`docker restart`: stop it if it runs (TERM, KILL after `grace` seconds), start it
        again; dockerd's `restart` event after the start. A task's container too, as
        dockerd does (`_rerun_task_container`)."""
        container = self.runtime.get(ref)
        if container.id not in self._extra:
            await self.stop(container.id, grace)
            await self._rerun_task_container(container)
            self.runtime.event("restart", container)
            return
        extra = self._standalone(container, "restart")
        extra.restarting = True  # a `--rm` container stays, as dockerd keeps it
        try:
            await self.stop(container.id, grace)
            await self.start(container.id)
        finally:
            extra.restarting = False
        self.runtime.event("restart", container)

    async def _rerun_task_container(self, container: Container) -> None:
        """Start an exited task container again, as dockerd 20.10 does (measured: `docker
        restart` of a task's container prints its id): its task saw the exit and ended with
        it (`task: non-zero exit (137)` after a stop's SIGKILL), Swarm put a new task in its
        place, and this container runs on outside its service until the old task's removal
        takes it (`Worker._remove_container`). Its task's network endpoints ended with the
        task, so it runs again on no network (dockerd would join it again to its networks)."""
        container.networks.clear()
        await self.runtime.start(container.id)

    async def rename(self, ref: str, new_name: str) -> None:
        """`docker rename`, dockerd's checks and words; a running container's endpoints are
        published again under the new name (its DNS name follows, as libnetwork renames
        the endpoint). Any container of the node, a task's too, as dockerd allows."""
        if not ref or not new_name:
            raise InvalidConfigError("Neither old nor new names may be empty")
        container = self.runtime.get(ref)
        if new_name.removeprefix("/") == container.name:
            raise InvalidConfigError("Renaming a container with the same name as its current name")
        try:
            name = self._free_name(new_name if new_name.startswith("/") else f"/{new_name}")
        except ContainerRuntimeError as err:
            raise type(err)(f"Error when allocating new name: {err}") from None
        old_name, container.name = container.name, name
        extra = self._extra.get(container.id)
        if extra is not None and self.swarm is not None:
            for attached in extra.attached.values():
                record = EndpointRecord()
                record.CopyFrom(attached.record)
                record.name = name
                self.swarm.endpoints.container_attached(attached.key, attached.network, record)
        self.runtime.event("rename", container, oldName=f"/{old_name}")
        log.info("event=container_renamed id=%s from=%s to=%s", container.id[:12], old_name, name)

    def update_restart_policy(self, ref: str, policy: RestartPolicy) -> None:
        """`docker update --restart`: the policy from its next exit on (dockerd's refusal for
        a `--rm` container, in its words)."""
        container = self.runtime.get(ref)
        extra = self._standalone(container, "update")
        if extra.auto_remove and policy.restarts:
            raise InvalidConfigError(
                f"Cannot update container {container.id}: Restart policy cannot be updated "
                "because AutoRemove is enabled for the container"
            )
        options = container.config.host_options
        container.config.host_options = replace(options, restart_policy=policy)
        log.info("event=restart_policy_updated id=%s policy=%s", container.id[:12], policy.name)

    async def kill(self, ref: str) -> None:
        container = self.runtime.get(ref)
        self._stopped_by_user(container)
        if container.state is not ContainerState.RUNNING:
            raise NotRunningError(
                f"Cannot kill container: {ref}: Container {container.id} is not running"
            )
        await self.runtime.kill(container.id)

    async def remove(self, ref: str, force: bool = False, anonymous_volumes: bool = False) -> None:
        """`docker rm [-f] [-v]`: with `anonymous_volumes`, its anonymous volumes too."""
        container = self.runtime.get(ref)
        if container.restarting and not force:
            raise ContainerStateError(
                f"You cannot remove a restarting container {container.id}. Stop the container "
                "before attempting removal or force remove"
            )
        if force or container.state is not ContainerState.RUNNING:
            self._stopped_by_user(container)
        await self.runtime.remove(container.id, force=force, anonymous_volumes=anonymous_volumes)
        self.execs.forget_container(container.id)
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
        self._closing = True
        for extra in self._extra.values():
            self._cancel_restart(extra)
        if self._releasing is not None:
            self._releasing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._releasing
        await self.runtime.close()
        for extra in list(self._extra.values()):
            if extra.supervisor is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(extra.supervisor, 5.0)
        if self.bridge is not None:
            self.bridge.close()
