"""The worker: makes what runs on this node match the tasks the dispatcher assigned to it.

`reconcile` is level-triggered: it is given the whole current assignment set each time and
starts the tasks it does not run yet, stops those whose desired state is past running or that
left the set. A task whose desired state is "ready" (a restart's or a rolling update's
replacement waiting to start) is prepared, its container created, and started only once the
managers move it on to running, as swarmkit's agent takes a task no further than its desired
state. Each task runs through Swarm's states, each one reported as it is reached:
accepted, preparing, ready, starting, running, then complete (exit 0), failed (with
`task: non-zero exit (N)`, or the start error), rejected (the image does not exist) or shutdown
(stopped on request). Messages are swarmkit's (`accepted`, `preparing`, `prepared`, `starting`,
`started`, `finished`, `shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.agent.create_options import ConfigEcho, HostOptions
from controlplane.agent.health import HealthConfig, HealthConfigError, HealthStatus
from controlplane.agent.images import ImageError
from controlplane.agent.mounts import MountError, parse_mount
from controlplane.agent.network_modes import TaskNetworkMode, task_network_mode
from controlplane.agent.runtime import (
    Container,
    ContainerConfig,
    NetworkAttachment,
    NoSuchContainerError,
    Runtime,
    StartError,
)
from controlplane.agent.task_files import MissingFileError, TaskFile, TaskFiles
from controlplane.agent.templates import TemplateError, expand, template_fields
from controlplane.agent.volumes import VolumeError
from controlplane.datapath.host_ports import HostPorts, bridge_endpoint_label
from controlplane.datapath.userspace.stack import IPv4Stack
from controlplane.node_local_networks import is_node_local
from controlplane.pb.objects_pb2 import Network, NodeDescription, Task, TaskStatus
from controlplane.store.kinds import name_of
from controlplane.taskstate import TaskState

log = logging.getLogger("controlplane.agent.worker")

Reporter = Callable[[str, TaskStatus], None]

# The cause swarmkit's container controller gives a task it stopped for being unhealthy.
UNHEALTHY = "dockerexec: unhealthy container"
_STOP, _EXITED = "stop", "exited"  # what ended a wait for the task's container (`_watch`)

# Swarm's default stop grace period (`--stop-grace-period`).
DEFAULT_STOP_GRACE = 10.0

_MESSAGES = {
    TaskState.ACCEPTED: "accepted",
    TaskState.PREPARING: "preparing",
    TaskState.READY: "prepared",
    TaskState.STARTING: "starting",
    TaskState.RUNNING: "started",
    TaskState.COMPLETE: "finished",
    TaskState.SHUTDOWN: "shutdown",
}


def container_config(
    task: Task, files: Sequence[TaskFile] = (), node: NodeDescription | None = None
) -> ContainerConfig:
    """The container a task runs, named and labelled as Swarm names its task containers, with
    `files` (its secrets and configs), its hostname and environment expanded as Swarm's
    templates on `node` (TemplateError when they name what there is not), its healthcheck
    (HealthConfigError for one the API should have refused), its mounts (MountError for one
    that is not emulated) and its resource limits."""
    spec = task.spec.container
    unmodelled = json.loads(spec.unmodelled_json) if spec.unmodelled_json else {}
    name = name_of(task)
    fields = template_fields(task, node or NodeDescription())
    return ContainerConfig(
        image=spec.image,
        command=list(spec.command),
        args=list(spec.args),
        env=[expand(entry, fields, "--env") for entry in spec.env],
        hostname=expand(spec.hostname, fields, "--hostname"),
        name=name,
        labels={
            **spec.labels,  # `--container-label`: the system labels below win, as in Docker
            "com.docker.swarm.node.id": task.node_id,
            "com.docker.swarm.service.id": task.service_id,
            "com.docker.swarm.service.name": task.spec.annotations.name,
            "com.docker.swarm.task": "",
            "com.docker.swarm.task.id": task.id,
            "com.docker.swarm.task.name": name,
        },
        tty=spec.tty,
        open_stdin=spec.open_stdin,
        networks=[
            NetworkAttachment(n.network_id, list(n.addresses), list(n.aliases))
            for n in task.networks
        ],
        files=list(files),
        healthcheck=HealthConfig.parse(unmodelled.get("Healthcheck"), "HealthConfig"),
        healthcheck_disabled=HealthConfig.disables(unmodelled.get("Healthcheck")),
        mounts=[parse_mount(m) for m in unmodelled.get("Mounts") or []],
        nano_cpus=task.spec.resources.limits.nano_cpus,
        memory_bytes=task.spec.resources.limits.memory_bytes,
        # what swarmkit's executor asks dockerd for: no restart policy (Swarm restarts the
        # task), the default isolation, `Init` as the spec says (false unless given)
        host_options=HostOptions(
            isolation="default", init=spec.init if spec.HasField("init") else False
        ),
        config_echo=ConfigEcho(user=spec.user, working_dir=spec.dir, stop_signal=spec.stop_signal),
    )


def may_start(task: Task) -> bool:
    """Whether the managers let the task start: not while it is desired "ready"."""
    return task.desired_state != TaskState.READY.value


def wants_stop(task: Task) -> bool:
    """Whether the task's desired state is past running (shutdown, remove, ...). A job's task
    is desired "complete": it runs until it exits by itself."""
    try:
        desired = TaskState(task.desired_state)
    except ValueError:
        return False  # an unknown desired state is no order to stop
    return desired.terminal and desired is not TaskState.COMPLETE


@dataclass(frozen=True)
class TaskContainer:
    task_id: str
    service_id: str
    container_id: str


@dataclass
class _Controller:
    """One assigned task on this node: its lifecycle coroutine and its last reported status."""

    task: Task
    status: TaskStatus
    stop: asyncio.Event
    go: asyncio.Event  # set once the task may start (`may_start`)
    runner: asyncio.Task[None] | None = None
    container_id: str = ""
    exit_code: int | None = None  # its container's, as the wait gave it (a restart may follow)

    @property
    def finished(self) -> bool:
        return TaskState(self.status.state).terminal


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        report: Reporter,
        stop_grace: float = DEFAULT_STOP_GRACE,
        files: TaskFiles | None = None,
        node: NodeDescription | None = None,
        bridge: HostPorts | None = None,
    ) -> None:
        """`files`: the secrets and configs the session received (none without it); `node`:
        this node, as its tasks' templates name it; `bridge`: the node's userspace default
        bridge (docker0), where a task on the swarm's `bridge` network gets its interface
        (the kernel data path puts a container on no overlay on the node's bridge itself)."""
        if stop_grace < 0:
            raise ValueError(f"stop_grace must not be negative, got {stop_grace}")
        self.runtime = runtime
        self._files = files or TaskFiles()
        self._report = report
        self._stop_grace = stop_grace
        self._node = node or NodeDescription()
        self._bridge = bridge
        self._controllers: dict[str, _Controller] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self.networks: dict[str, Network] = {}

    def task_containers(self) -> list[TaskContainer]:
        """The tasks of this node that have (or had) a container, for their logs."""
        return [
            TaskContainer(c.task.id, c.task.service_id, c.container_id)
            for c in self._controllers.values()
            if c.container_id
        ]

    def statuses(self) -> dict[str, TaskStatus]:
        """The last status of every task this worker knows, to report again to a new session
        (reports in flight when the old one broke may have been lost)."""
        return {task_id: c.status for task_id, c in self._controllers.items()}

    def reconcile(self, tasks: Mapping[str, Task], networks: Mapping[str, Network]) -> None:
        """Make the node run `tasks` (the complete assignment set)."""
        self.networks = dict(networks)
        for task_id, task in tasks.items():
            controller = self._controllers.get(task_id)
            if controller is None:
                self._adopt(task)
            else:
                controller.task = task
                if wants_stop(task):
                    controller.stop.set()
                if may_start(task):
                    controller.go.set()
        for task_id, controller in list(self._controllers.items()):
            if task_id in tasks:
                continue
            if controller.finished:
                del self._controllers[task_id]
                self._remove_container(controller)
            else:
                controller.stop.set()  # removed from the set: stop it, then forget it

    def _adopt(self, task: Task) -> None:
        state = _state_of(task)
        controller = _Controller(task, TaskStatus(), asyncio.Event(), asyncio.Event())
        controller.status.CopyFrom(task.status)
        if may_start(task):
            controller.go.set()
        self._controllers[task.id] = controller
        if state is None or state.terminal:
            return  # done already (an earlier run of this node), or nonsense: nothing to run
        if state.rank > TaskState.ASSIGNED.rank:
            # The managers think it runs here, but this node has no trace of it: the node
            # restarted and lost its containers. Say so, so the orchestrator replaces it.
            self._set(controller, TaskState.FAILED, "started", err="task lost: the node restarted")
            return
        if wants_stop(task):
            self._set(controller, TaskState.SHUTDOWN, "shutdown")
            return
        controller.runner = asyncio.create_task(self._run(controller), name=f"task-{task.id}")
        controller.runner.add_done_callback(lambda runner: self._on_crash(controller, runner))

    def _remove_container(self, controller: _Controller) -> None:
        """A finished task left the set: its container goes too (Swarm's task history
        cleanup removes the container with the task)."""
        if controller.container_id:
            cleanup = asyncio.create_task(self._remove_if_there(controller.container_id))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)

    async def _remove_if_there(self, container_id: str) -> None:
        """`docker rm -f` on the node may have removed it already."""
        with contextlib.suppress(NoSuchContainerError):
            await self.runtime.remove(container_id, force=True)

    async def _run(self, controller: _Controller) -> None:
        """The task's lifecycle, one reported state at a time."""
        task = controller.task
        for state in (TaskState.ACCEPTED, TaskState.PREPARING):
            self._set(controller, state)
        try:
            config = container_config(task, self._files.files_for(task), self._node)
            mode = self._network_mode(task, config)
            container = self.runtime.create(config)
        except (
            ImageError,
            MissingFileError,
            TemplateError,
            HealthConfigError,
            MountError,
            VolumeError,
        ) as err:
            self._set(controller, TaskState.REJECTED, "preparing", err=str(err))
            return
        controller.container_id = container.id
        if mode.refusal is not None:  # dockerd's, as its container joins the networks
            self._set(controller, TaskState.REJECTED, "preparing", err=mode.refusal)
            return
        self._set(controller, TaskState.READY)
        await _first_of(controller.go, controller.stop)
        if controller.stop.is_set():
            await self.runtime.remove(container.id)
            self._set(controller, TaskState.SHUTDOWN)
            return
        self._set(controller, TaskState.STARTING)
        if mode.bridge and self._bridge is not None:
            container.local_stacks = (await self._plug_bridge(container),)
        try:
            await self._run_started(controller, container)
        finally:
            if container.local_stacks and self._bridge is not None:
                self._bridge.release(container.id)  # as dockerd's endpoint goes at the exit
                container.local_stacks = ()

    async def _plug_bridge(self, container: Container) -> IPv4Stack:
        """The container's interface on the node's default bridge (its `eth0` there)."""
        assert self._bridge is not None
        label = bridge_endpoint_label(container.id, container.name)
        return await self._bridge.publish_endpoint(container.id, container.name, label, [])

    async def _run_started(self, controller: _Controller, container: Container) -> None:
        """Start the prepared container and follow it to its end."""
        task = controller.task
        try:
            await self.runtime.start(container.id)
        except StartError as err:
            self._set(
                controller, TaskState.FAILED, "starting", err=f"starting container failed: {err}"
            )
            return
        health = container.health
        if health is not None:  # swarmkit's controller: running once healthy
            outcome = await self._watch(controller, container, HealthStatus.HEALTHY)
            if outcome is HealthStatus.HEALTHY:
                self._set(controller, TaskState.RUNNING)
                outcome = await self._watch(controller, container)
        else:
            self._set(controller, TaskState.RUNNING)
            outcome = await self._watch(controller, container)
        if outcome is _STOP:
            code = await self.runtime.stop(container.id, self._grace(task))
            log.info("event=task_stopped task=%s exit_code=%s", task.id, code)
            self._set(controller, TaskState.SHUTDOWN)
            return
        cause = ""
        if outcome is HealthStatus.UNHEALTHY:
            cause = f": {UNHEALTHY}"
            log.info("event=task_unhealthy task=%s", task.id)
            with contextlib.suppress(NoSuchContainerError):  # `docker rm -f` killed it
                await self.runtime.stop(container.id, self._grace(task))
        code = controller.exit_code if outcome is _EXITED else container.exit_code
        message = "starting" if controller.status.state == TaskState.STARTING.value else "started"
        if code == 0 and not cause:
            self._set(controller, TaskState.COMPLETE)
        else:
            self._set(
                controller, TaskState.FAILED, message, err=f"task: non-zero exit ({code}){cause}"
            )

    def _network_mode(self, task: Task, config: ContainerConfig) -> TaskNetworkMode:
        """The task container's network mode from its networks (the node's own `host`
        shares the node's network, `runtime.host`); `config` keeps only its overlays."""
        networks = [self.networks.get(a.network_id) for a in task.networks]
        names = [n.spec.annotations.name if n is not None else "" for n in networks]
        local = {n.id for n in networks if n is not None and is_node_local(n)}
        config.networks = [a for a in config.networks if a.network_id not in local]
        mode = task_network_mode(names)
        if networks and is_node_local(networks[0]):  # swarmkit names the mode after it
            config.network_mode = mode.mode
        if mode.mode == "host":
            config.host_network = self.runtime.host
        return mode

    def _grace(self, task: Task) -> float:
        """Seconds between SIGTERM and SIGKILL: the service's `--stop-grace-period`, else
        this worker's."""
        spec = task.spec.container
        if spec.HasField("stop_grace_period_ns"):
            return spec.stop_grace_period_ns / 1e9
        return self._stop_grace

    async def _watch(
        self, controller: _Controller, container: Container, *statuses: HealthStatus
    ) -> str:
        """Wait until the container exits (_EXITED), turns unhealthy or reaches one of
        `statuses` (that status), or the task must stop (_STOP); in that order when several
        happened at once."""
        health = container.health
        exited = asyncio.ensure_future(self.runtime.wait(container.id))
        stop = asyncio.ensure_future(controller.stop.wait())
        waits: list[asyncio.Future[Any]] = [exited, stop]
        if health is not None:
            waits.append(asyncio.ensure_future(health.until(HealthStatus.UNHEALTHY, *statuses)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if exited.done() and not exited.cancelled():
            controller.exit_code = exited.result()
            return _EXITED
        if health is not None and health.status in (HealthStatus.UNHEALTHY, *statuses):
            return health.status
        return _STOP

    def _on_crash(self, controller: _Controller, runner: asyncio.Task[None]) -> None:
        """A runner that raised what it did not expect ends its task, as swarmkit's agent
        does with an executor error: rejected while preparing, failed once started. Left as
        it was, the task would sit in its last state for ever, its slot never replaced."""
        if runner.cancelled() or runner.exception() is None:
            return
        error = runner.exception()
        log.error("event=task_runner_crashed task=%s error=%r", controller.task.id, error)
        state = TaskState(controller.status.state)  # the runner's first step set it
        if state.terminal:
            return
        if state.rank < TaskState.READY.rank:
            self._set(controller, TaskState.REJECTED, "preparing", err=f"{error}")
        else:
            self._set(controller, TaskState.FAILED, "started", err=f"task: {error}")

    def _set(
        self, controller: _Controller, state: TaskState, message: str = "", err: str = ""
    ) -> None:
        """Report `state`; its container from starting on (swarmkit's controller shows no
        ContainerStatus for a task prepared but not started: its container only exists)."""
        status = TaskStatus(
            timestamp_ns=time.time_ns(),
            state=state.value,
            message=message or _MESSAGES.get(state, state.value),
            err=err,
        )
        if state.rank >= TaskState.STARTING.rank:
            status.container_id = controller.container_id
            self._container_status(controller, status)
        controller.status = status
        log.info(
            "event=task_state task=%s state=%s%s",
            controller.task.id,
            state.value,
            f" err={err!r}" if err else "",
        )
        self._report(controller.task.id, status)

    def _container_status(self, controller: _Controller, status: TaskStatus) -> None:
        """The container's PID while it runs and its exit code once it ended (the task's
        run's, even when `docker restart` ran it again since), as `docker inspect` shows
        them in Status.ContainerStatus."""
        if not controller.container_id:
            return
        try:
            container = self.runtime.get(controller.container_id)
        except NoSuchContainerError:
            return
        exit_code = (
            controller.exit_code if controller.exit_code is not None else container.exit_code
        )
        if exit_code is not None:
            status.exit_code = exit_code
        else:
            status.pid = container.pid

    async def close(self) -> None:
        """Kill and remove the task containers (the node leaves the swarm or changes role;
        the next agent's worker starts afresh) without reporting: the managers will see the
        node go down and reschedule. The runtime's standalone containers keep running."""
        runners = [c.runner for c in self._controllers.values() if c.runner is not None]
        for runner in runners:
            runner.cancel()
        for runner in runners:
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        for controller in self._controllers.values():
            if controller.container_id:
                await self._remove_if_there(controller.container_id)


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until one of `events` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


def _state_of(task: Task) -> TaskState | None:
    try:
        return TaskState(task.status.state) if task.status.state else TaskState.ASSIGNED
    except ValueError:
        log.warning("event=task_state_unknown task=%s state=%r", task.id, task.status.state)
        return None
