"""The emulated container runtime: containers of the built-in images, run as asyncio tasks.

It keeps Docker's lifecycle and words: create (the image must exist: `No such image`), start
(the command must exist in the image: runc's `executable file not found in $PATH`), stop
(SIGTERM to PID 1, SIGKILL when the grace period ends: status 137), wait, remove. Each
container's output is bytes, as its programs write them, to whoever attaches (`stdio.py`) and
to its log, kept as dockerd's json-file log keeps it (`log_copier.py`: messages cut at
newlines, with timestamps), for `docker logs` and `docker service logs`; and its network
attachments (addresses per network): before its process starts, the node's data path gives it
the IPv4 stacks of its endpoints (`network.py`), as Docker joins a sandbox to its networks
before it runs the container's process. With the kernel data path, a container's command runs
for real instead (busybox applets, in the container's namespaces: `datapath/kernel/
containers.py`), on a real pseudo-terminal with `-t` or a real pipe with `-i`
(`datapath/kernel/console.py`).

Each step is also an engine event (`events`, what `docker events` shows), in dockerd's order:
create; connect (one per network, after the network's local create for the node's first
container on it), start; kill (with the signal), die (with the exit code), disconnect (and
the network's destroy after its last container), stop (after `docker stop`); destroy.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import NoReturn

from controlplane.agent import kernel_image, programs
from controlplane.agent.byte_streams import as_bytes
from controlplane.agent.container_dir import (
    EMBEDDED_DNS_RESOLV_CONF,
    ContainerDir,
    JsonFileLog,
    host_resolv_conf,
)
from controlplane.agent.cpu_meter import CpuAccount, charged_to, metering
from controlplane.agent.create_options import JSON_FILE, ConfigEcho, HostOptions
from controlplane.agent.health import (
    PROBE_FAILED,
    Health,
    HealthConfig,
    HealthStatus,
    ProbeResult,
    run_health_checks,
)
from controlplane.agent.host_stack import HostNetwork
from controlplane.agent.images import Image, Reference, resolve
from controlplane.agent.local_images import LocalImages
from controlplane.agent.log_copier import LogCopier, LogLine
from controlplane.agent.mounts import VOLUME, Mount, MountedFiles
from controlplane.agent.network import ContainerNetwork, KernelNetworking, Networking, Stack
from controlplane.agent.process import EXIT_KILLED, Exec, ExecNotFoundError, Program
from controlplane.agent.stdio import STDERR, STDOUT, Stdio
from controlplane.agent.task_files import TaskFile, remove_tree, stamp, write_tree
from controlplane.agent.terminal import run_on
from controlplane.agent.volumes import VolumeError, Volumes
from controlplane.datapath.kernel import KernelError
from controlplane.datapath.kernel import containers as kernel_containers
from controlplane.datapath.kernel.console import Console, StdinPipe
from controlplane.datapath.node_datapath import AttachError
from controlplane.datapath.userspace import DataPathError
from controlplane.event_hub import EventHub

log = logging.getLogger("controlplane.agent.runtime")

DEFAULT_LOG_LINES = 10_000
FILES_ENV = "SWARMLAB_FILES"


class ContainerRuntimeError(Exception):
    """Base of the runtime's errors; the message is Docker's where Docker has one."""


class NoSuchContainerError(ContainerRuntimeError):
    pass


class AmbiguousContainerError(ContainerRuntimeError):
    """A prefix of several ids: dockerd answers it as a server error (500)."""


class ContainerStateError(ContainerRuntimeError):
    pass


class StartError(ContainerRuntimeError):
    """The container could not start its command (the message is runc's, as Docker shows it)."""


@dataclass
class NetworkAttachment:
    """The container's place on one network: its addresses (CIDR form) and DNS aliases."""

    network_id: str
    addresses: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)


@dataclass
class ContainerConfig:
    """What to run. `command` replaces the image's entrypoint and `args` its command, as
    Docker's `--entrypoint` and positional arguments do."""

    image: str
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    hostname: str = ""
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    networks: list[NetworkAttachment] = field(default_factory=list)
    files: list[TaskFile] = field(default_factory=list)  # secrets and configs, by path
    tty: bool = False  # output goes raw to whoever attaches, not in stdout/stderr frames
    open_stdin: bool = False  # `-i`: attached clients' input is the program's stdin
    stdin_once: bool = False  # stdin ends when the first attached client's input does
    healthcheck: HealthConfig | None = None  # run while it runs (`health.py`)
    healthcheck_disabled: bool = False  # `--no-healthcheck`: none runs, inspect says NONE
    mounts: list[Mount] = field(default_factory=list)  # volumes made at create (`mounts.py`)
    nano_cpus: int = 0  # its CPU limit (a service's `--limit-cpu`), shown by inspect
    memory_bytes: int = 0  # its memory limit (`--limit-memory`), shown by inspect
    host_network: HostNetwork | None = None  # the node's, which it shares (`--network host`)
    host_options: HostOptions = field(default_factory=HostOptions)  # restart policy, logs
    config_echo: ConfigEcho = field(default_factory=ConfigEcho)  # `User`, ... as given
    network_mode: str = ""  # a task's on a node-local network first (`host`, `bridge`)


class RunExit(asyncio.Event):
    """Set when one run of a container ends, with that run's exit `status`: a waiter that
    wakes after a `docker restart` began the next run still gets the status of its own."""

    status = 0

    def ended(self, status: int) -> None:
        self.status = status
        self.set()


class ContainerState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


def command_line(image: Image, config: ContainerConfig) -> list[str]:
    """Docker's rule: entrypoint (the override, else the image's) followed by the arguments
    (given ones, else the image's command, which an entrypoint override discards)."""
    entrypoint = list(config.command) if config.command else list(image.entrypoint)
    if config.args:
        return entrypoint + list(config.args)
    return entrypoint + ([] if config.command else list(image.cmd))


class Container:
    def __init__(
        self,
        container_id: str,
        config: ContainerConfig,
        reference: Reference,
        image: Image,
        log_lines: int,
    ) -> None:
        self.id = container_id
        self.config = config
        self.name = config.name or container_id[:12]
        self.reference = reference
        self.image = image
        host = config.host_network
        # dockerd names a host-mode container after its host, and gives it the host's files
        self.hostname = config.hostname or (host.hostname if host else container_id[:12])
        self.argv = command_line(image, config)
        self.env = _environment(image, config, self.hostname)
        self.container_files: Mapping[str, TaskFile] = _file_table(
            self.hostname, config.files, host.hosts_file() if host else None
        )
        self.mounts: list[Mount] = []  # with their volumes' names, once made
        self.networks = {n.network_id: n for n in config.networks}
        self.state = ContainerState.CREATED
        self.pid = 0
        self.exit_code: int | None = None
        self.error = ""
        self.created_at_ns = time.time_ns()
        self.started_at_ns = 0
        self.finished_at_ns = 0
        self.logs: deque[LogLine] = deque(maxlen=log_lines)
        self.stdio = Stdio(tty=config.tty, open_stdin=config.open_stdin)  # what attach carries
        self.lines_written = 0  # ever, including those the bounded `logs` let go
        self._output = asyncio.Event()  # set (and replaced) at each line and at the exit
        self._exec: Exec | None = None
        self.netns: str | None = None  # its network namespace, with the kernel data path
        # what the node gives it besides its swarm networks (its default bridge interface)
        self.local_stacks: tuple[Stack, ...] = ()
        self.files_dir: Path | None = None  # its secrets and configs, with the kernel data path
        self.folder: ContainerDir | None = None  # its files on the node, once it has started
        self.log_file: JsonFileLog | None = None  # while it runs with the json-file driver
        self.restart_count = 0  # starts by its restart policy (`agent/standalone.py`)
        self.restarting = False  # exited, to be started again by its restart policy
        # with the kernel data path: the host PID of its PID 1 once its namespaces are ready
        self.init_pid: asyncio.Future[int] | None = None
        self.health: Health | None = None  # while it runs with a healthcheck, and after
        self.cpu: CpuAccount | None = None  # an emulated one's CPU time, when it is metered
        self._task: asyncio.Task[None] | None = None
        self._health_checks: asyncio.Task[None] | None = None
        self._exited = RunExit()
        self._log_copiers = {
            STDOUT: LogCopier("stdout", self._log),
            STDERR: LogCopier("stderr", self._log),
        }

    @property
    def status(self) -> str:
        """dockerd's State.Status: `restarting` while its restart policy waits to start it."""
        return "restarting" if self.restarting else self.state.value

    @property
    def failed_to_start(self) -> bool:
        """Its last start failed: it is `created` with an exit code and an error."""
        return self.state is ContainerState.CREATED and self._exited.is_set()

    def _again(self) -> None:
        """An exited container about to start again (`docker start`/`restart`): a new run
        with new streams for attach; its logs, name, networks and first start stay, and
        FinishedAt keeps the last exit until the next one, as dockerd's state does."""
        self.state = ContainerState.CREATED
        self.exit_code = None
        self.error = ""
        self.stdio = Stdio(tty=self.config.tty, open_stdin=self.config.open_stdin)
        self._exec = None
        self._task = None
        self._health_checks = None
        self._exited = RunExit()

    def write(self, stream: int, data: bytes) -> None:
        """What its program wrote on `stream` (STDOUT, STDERR): to attached clients and to
        its log, as the terminal shows it with a TTY."""
        stream, data = self.stdio.shown(stream, data)
        self.stdio.output.write(stream, data)
        self._log_copiers[stream].write(data)

    def _write_terminal(self, data: bytes) -> None:
        """A real terminal's output (kernel mode `-t`), as is."""
        self.stdio.raw(data)
        self._log_copiers[STDOUT].write(data)

    def _end_output(self) -> None:
        """Its program ended: the last lines, even without a newline, are logged."""
        for copier in self._log_copiers.values():
            copier.flush()

    def _log(self, line: LogLine) -> None:
        if not self.config.host_options.log_config.keeps_logs:
            return  # the `none` logging driver
        if self.log_file is not None:
            self.log_file.write(line)
        self.logs.append(line)
        self.lines_written += 1
        self._wake_readers()

    def _wake_readers(self) -> None:
        self._output.set()
        self._output = asyncio.Event()

    def _lines_after(self, cursor: int) -> list[LogLine]:
        """The kept lines written after the first `cursor` lines."""
        first_kept = self.lines_written - len(self.logs)
        return list(itertools.islice(self.logs, max(0, cursor - first_kept), None))


class Runtime:
    """One node's containers. Belongs to the event loop that calls it."""

    def __init__(
        self,
        log_lines: int = DEFAULT_LOG_LINES,
        networking: Networking | None = None,
        files_root: Path | None = None,
        events: EventHub | None = None,
        volumes_root: Path | None = None,
        containers_root: Path | None = None,
    ) -> None:
        """`networking` is the node's data path; without one, containers have no network.
        `files_root` holds kernel-mode containers' secrets and configs (default: under the
        system's temporary directory). `events` is the node's event hub (a runtime of its own
        otherwise). `volumes_root` keeps the node's volumes (default: a temporary directory
        of the runtime's own, removed by `close`). `containers_root` holds each container's folder
        (`container_dir.py`; default: a temporary directory removed by `close`)."""
        if log_lines < 1:
            raise ValueError(f"log_lines must be at least 1, got {log_lines}")
        self.networking = networking  # the node's data path, once it has one
        self.host: HostNetwork | None = None  # the node's network, which host mode shares
        self.files_root = files_root or Path(tempfile.gettempdir()) / "swarmlab-task-files"
        self.events = events or EventHub()
        self.images = LocalImages()  # the node's (`docker images`, `docker rmi`)
        self._own_volumes = volumes_root is None
        self.volumes = Volumes(volumes_root or Path(tempfile.mkdtemp(prefix="swarmlab-volumes-")))
        self._own_containers_root = containers_root is None
        if containers_root is not None:  # a new runtime has no container: a previous one's go
            shutil.rmtree(containers_root, ignore_errors=True)
        self.containers_root = containers_root or Path(
            tempfile.mkdtemp(prefix="swarmlab-containers-")
        )
        self._network_users: Counter[str] = Counter()  # running containers per network
        self._containers: dict[str, Container] = {}
        self._log_lines = log_lines
        self._pids = itertools.count(1000)
        # How a healthcheck runs in a container: as an exec, which the node's exec sessions
        # (`exec_sessions.py`) own; they set it.
        self.health_probe: Callable[[str, list[str], float], Awaitable[ProbeResult]] | None = None

    def create(self, config: ContainerConfig) -> Container:
        """A new container; raises images.ImageError (`No such image: ...`) for a bad image."""
        reference, image = resolve(config.image)
        self.images.pulled(reference)  # as an agent pulls a task's image
        container = Container(secrets.token_hex(32), config, reference, image, self._log_lines)
        self._mount(container)
        self._containers[container.id] = container
        log.debug("event=container_created id=%s image=%s", container.id[:12], reference.familiar)
        self.event("create", container)
        return container

    def _mount(self, container: Container) -> None:
        """Make the container's volumes (those it names, if new, and its anonymous ones) and
        show their folders in its files; VolumeError for one that cannot be made."""
        mounts = []
        for mount in container.config.mounts:
            if mount.type == VOLUME:
                volume = self.volumes.create(
                    mount.source,
                    driver=mount.driver,
                    labels=mount.labels,
                    options=mount.driver_options,
                )
                mount = replace(mount, source=volume.name)
            mounts.append(mount)
        container.mounts = mounts
        container.container_files = MountedFiles(
            container.container_files,
            [(m.target, self.volumes.mountpoint(m.source)) for m in mounts if m.type == VOLUME],
            read_only={m.target for m in mounts if m.type == VOLUME and m.read_only},
        )

    def volume_users(self, name: str) -> list[str]:
        """The ids of the containers (running or not) that mount volume `name`."""
        return [
            c.id
            for c in self.containers()
            if any(m.type == VOLUME and m.source == name for m in c.mounts)
        ]

    def event(self, action: str, container: Container, **attributes: str) -> None:
        """Publish a container event (`docker events`) for `container`."""
        self.events.container(
            action,
            container.id,
            container.name,
            container.config.image,
            container.config.labels,
            **attributes,
        )

    def network_connected(self, container: Container, network_id: str) -> None:
        """The `connect` event, after a local `create` when the container is the node's
        first on the network (dockerd makes an overlay on a node when a container needs it,
        and destroys it when the last one leaves)."""
        if not self._network_users[network_id]:
            self.events.network("create", network_id)
        self._network_users[network_id] += 1
        self.events.network("connect", network_id, container=container.id)

    def network_disconnected(self, container: Container, network_id: str) -> None:
        self.events.network("disconnect", network_id, container=container.id)
        self._network_users[network_id] -= 1
        if self._network_users[network_id] <= 0:
            del self._network_users[network_id]
            self.events.network("destroy", network_id)

    def get(self, container_id: str) -> Container:
        """By full id, then by name, then by unique id prefix: dockerd's order, so a name
        that happens to begin another container's id still finds its own container.
        NoSuchContainerError when nothing matches, AmbiguousContainerError when several
        ids begin with the prefix."""
        found = self._containers.get(container_id)
        if found is not None:
            return found
        named = next((c for c in self._containers.values() if c.name == container_id), None)
        if named is not None:
            return named
        matches = [c for c in self._containers.values() if c.id.startswith(container_id)]
        if not container_id or not matches:
            raise NoSuchContainerError(f"No such container: {container_id}")
        if len(matches) > 1:
            raise AmbiguousContainerError(
                f"Multiple IDs found with provided prefix: {container_id}"
            )
        return matches[0]

    def next_pid(self) -> int:
        """A process id for a container's PID 1 or an exec'd process, unique on the node."""
        return next(self._pids)

    def containers(self) -> list[Container]:
        return sorted(self._containers.values(), key=lambda c: c.created_at_ns)

    def next_run(self, container_id: str) -> None:
        """Make an exited container (or one whose start failed) ready to run again now, so
        that waiting for its exit (`exit_status`) from here on waits for the coming run's."""
        container = self.get(container_id)
        if container.state is ContainerState.EXITED or container.failed_to_start:
            container._again()

    async def start(self, container_id: str) -> None:
        """Start the container's command (again, if it has exited); StartError if the image
        has no such executable."""
        container = self.get(container_id)
        if container.state is ContainerState.RUNNING:
            raise ContainerStateError(f"container {container.id[:12]} is already running")
        if container.state is ContainerState.EXITED or container.failed_to_start:
            container._again()
        process = Exec(
            env=container.env,
            hostname=container.hostname,
            files=container.image.files,
            container_files=container.container_files,
            stdout=lambda data: container.write(STDOUT, data),
            stderr=lambda data: container.write(STDERR, data),
            spawn=programs.spawn,
            stdio=container.stdio,
        )
        try:
            program = programs.resolve(process, container.argv)
        except ExecNotFoundError as err:
            # dockerd's 127 for both of runc's words: not found in $PATH, or no such file.
            self._failed_start(
                container,
                127,
                "OCI runtime create failed: container_linux.go:380: starting container "
                f"process caused: {err}: unknown",
            )
        try:
            process.net = await self._attach(container)
            netns = self._kernel_netns(container)
        except (AttachError, DataPathError) as err:
            self._failed_start(container, 128, f"failed to attach the container's networks: {err}")
        if netns is not None:
            assert isinstance(self.networking, KernelNetworking)
            server = kernel_image.image_server(container.image.files, container.env, container.argv)
            try:
                if server is None:
                    kernel_containers.check_command(container.argv)
            except KernelError as err:
                self._failed_start(container, 127, f"OCI runtime create failed: {err}: unknown")
            stage = self.files_root / "mount-stages" / container.id
            mounts = kernel_mounts(container, self.volumes, stage)
            if mounts is not None:
                stage.mkdir(parents=True, exist_ok=True)
            program = _kernel_program(self.networking, container, netns, server, mounts)
            container.netns = netns
            self._write_kernel_files(container)
        else:
            container.stdio.connect(None)  # an emulated program reads the emulated input
            # its CPU time, from this start on (`cpu_meter.py`; a new cgroup's, in dockerd)
            container.cpu = CpuAccount() if metering() else None
        self._write_folder(container)
        container._exec = process
        container.pid = self.next_pid()
        container.state = ContainerState.RUNNING
        container.started_at_ns = time.time_ns()
        for network_id in container.networks:
            self.network_connected(container, network_id)
        self.event("start", container)
        with charged_to(container.cpu):
            container._task = asyncio.create_task(
                self._run(container, program, process), name=f"container-{container.id[:12]}"
            )
        if container.config.healthcheck is not None:
            self._check_health(container, container.config.healthcheck)
        # Let the program take its first step before the start answers, as dockerd answers
        # once the process runs: a task cancelled before its first step would skip `_run`'s
        # exit handling, and a kill right after the start would wait for an exit forever.
        await asyncio.sleep(0)

    def _write_folder(self, container: Container) -> None:
        """The container's files on the node, as dockerd writes them at each start: its
        /etc files and (json-file driver) its log, appended to across its runs."""
        folder = container.folder = ContainerDir(self.containers_root, container.id)
        files = container.container_files
        resolv_conf = EMBEDDED_DNS_RESOLV_CONF if container.networks else host_resolv_conf()
        folder.write_files(files["/etc/hostname"].data, files["/etc/hosts"].data, resolv_conf)
        if container.config.host_options.log_config.type == JSON_FILE:
            container.log_file = folder.open_log()

    def _check_health(self, container: Container, config: HealthConfig) -> None:
        """Start the container's healthchecks (from `starting` again at each start)."""
        container.health = Health(config, container.started_at_ns)

        async def probe(argv: list[str], timeout: float) -> ProbeResult:
            if self.health_probe is None:  # a runtime without a node around it (unit tests)
                now = time.time_ns()
                return ProbeResult(now, now, PROBE_FAILED, "no exec sessions to run the check in")
            return await self.health_probe(container.id, argv, timeout)

        def changed(status: HealthStatus) -> None:
            self.event(f"health_status: {status.value}", container)

        container._health_checks = asyncio.create_task(
            run_health_checks(container.health, probe, changed),
            name=f"health-{container.id[:12]}",
        )

    def fail(self, container_id: str, status: int, error: str) -> None:
        """A created container that could not start for a reason outside the runtime (its
        network): it exits with `status` and `error`, as `_failed_start` does."""
        with contextlib.suppress(StartError):
            self._failed_start(self.get(container_id), status, error)

    def _failed_start(self, container: Container, status: int, error: str) -> NoReturn:
        """As dockerd leaves a container whose start failed: still `created` (`docker ps -a`
        says Created, FinishedAt stays unset), with the exit code and the error, and no `die`
        event (it never ran); waiters for its exit are released."""
        container.exit_code = status
        container.error = error
        container.stdio.close()
        container._exited.ended(status)
        container._wake_readers()
        raise StartError(error) from None

    async def _attach(self, container: Container) -> ContainerNetwork:
        host = container.config.host_network
        if host is not None:
            return ContainerNetwork(stacks=(host.stack(),), host=host)
        network_ids = tuple(container.networks)
        if self.networking is None:
            return ContainerNetwork(stacks=container.local_stacks, node=self.host)
        stacks = await self.networking.attach(container.name, network_ids)
        # Docker's order: the default bridge's eth0 first, then its overlays', the gwbridge's
        return ContainerNetwork(
            network_ids, (*container.local_stacks, *stacks), self.networking, node=self.host
        )

    def _write_kernel_files(self, container: Container) -> None:
        """A kernel-mode container's secrets and configs, in a directory of its own that its
        commands find in $SWARMLAB_FILES while it runs (`/etc/motd` is
        `$SWARMLAB_FILES/etc/motd`); those under /run, its secrets, its PID 1 also finds at
        their paths (`run_files`)."""
        if not container.config.files:
            return
        container.files_dir = self.files_root / container.id
        write_tree(container.config.files, container.files_dir)
        container.env[FILES_ENV] = str(container.files_dir)

    def _kernel_netns(self, container: Container) -> str | None:
        """The container's namespace when the node's data path is the kernel's."""
        if not isinstance(self.networking, KernelNetworking):
            return None
        return self.networking.kernel_netns(container.name, tuple(container.networks))

    async def _run(self, container: Container, program: Program, process: Exec) -> None:
        try:
            status = await run_on(container.stdio.terminal, program(process, container.argv))
        except asyncio.CancelledError:
            status = EXIT_KILLED  # SIGKILL: we are the only one who cancels this task
        except Exception as err:  # a bug in an emulated program must not take the node down
            log.exception("event=program_crashed container=%s", container.id[:12])
            container.write(STDERR, as_bytes(f"emulated program crashed: {err!r}\n"))
            status = 1
        if container._health_checks is not None:
            container._health_checks.cancel()  # its health stays as it last was
        if container.files_dir is not None:  # as dockerd unmounts them when it exits
            remove_tree(container.files_dir)
        container._end_output()
        if container.log_file is not None:
            container.log_file.flush()
            container.log_file = None
        container.exit_code = status & 0xFF
        container.state = ContainerState.EXITED
        container.finished_at_ns = time.time_ns()
        self.event("die", container, exitCode=str(container.exit_code))
        for network_id in container.networks:
            self.network_disconnected(container, network_id)
        container.stdio.close()
        container._exited.ended(container.exit_code)
        container._wake_readers()

    def process(self, container_id: str) -> Exec:
        """The running container's PID 1, whose context `docker exec` runs in."""
        container = self.get(container_id)
        if container.state is not ContainerState.RUNNING or container._exec is None:
            raise ContainerStateError(f"Container {container.id} is not running")
        return container._exec

    async def exit_status(self, container_id: str) -> int:
        """Wait until the container has run and exited (even if it has not started yet);
        its exit status."""
        exited = self.get(container_id)._exited
        await exited.wait()
        return exited.status

    async def wait(self, container_id: str) -> int:
        """Wait until the container exits; its exit status."""
        container = self.get(container_id)
        if container.state is ContainerState.CREATED:
            raise ContainerStateError(f"container {container.id[:12]} was never started")
        exited = container._exited
        await exited.wait()
        return exited.status

    async def stop(self, container_id: str, grace: float) -> int | None:
        """SIGTERM to PID 1, SIGKILL after `grace` seconds; the exit status (None if it never
        started)."""
        container = self.get(container_id)
        if container.state is ContainerState.CREATED:
            return None
        if container.state is ContainerState.RUNNING:
            assert container._exec is not None and container._task is not None
            self.event("kill", container, signal="15")
            container._exec.terminated.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, grace)):
                    await container._exited.wait()
            if container.state is ContainerState.RUNNING:
                self.event("kill", container, signal="9")
                container._task.cancel()
                await container._exited.wait()
            self.event("stop", container)
        return container.exit_code

    async def kill(self, container_id: str) -> int | None:
        """SIGKILL to PID 1: it exits with 137 whatever its program does on SIGTERM (a
        swarm task killed so fails, as Docker's `task: non-zero exit (137)`)."""
        container = self.get(container_id)
        if container.state is ContainerState.RUNNING:
            assert container._task is not None
            self.event("kill", container, signal="9")
            container._task.cancel()
            await container._exited.wait()
        return container.exit_code

    async def remove(
        self, container_id: str, force: bool = False, anonymous_volumes: bool = False
    ) -> None:
        """With `anonymous_volumes` (`docker rm -v`, `--rm`), its anonymous volumes go too
        (those no other container mounts)."""
        container = self.get(container_id)
        if container.state is ContainerState.RUNNING:
            if not force:
                raise ContainerStateError(
                    f"You cannot remove a running container {container.id}. Stop the "
                    "container before attempting removal or force remove"
                )
            await self.kill(container.id)
        del self._containers[container.id]
        if container.folder is not None:
            container.folder.remove()
        if anonymous_volumes:
            for mount in container.mounts:
                if mount.type == VOLUME and not mount.named:
                    with contextlib.suppress(VolumeError):
                        self.volumes.remove(mount.source, self.volume_users(mount.source))
        self.event("destroy", container)

    def logs(self, container_id: str, since_ns: int = 0) -> list[LogLine]:
        return [line for line in self.get(container_id).logs if line.timestamp_ns >= since_ns]

    async def read_logs(
        self, container_id: str, *, since_ns: int = 0, tail: int = -1, follow: bool = False
    ) -> AsyncIterator[LogLine]:
        """The container's lines written at or after `since_ns` (only the last `tail` of them
        when `tail` >= 0), as `docker logs` gives them; with `follow`, then each new line as it
        is written, until the container has exited."""
        container = self.get(container_id)
        backlog = self.logs(container.id, since_ns)
        if tail >= 0:
            backlog = backlog[len(backlog) - tail :] if tail else []
        cursor = container.lines_written
        for line in backlog:
            yield line
        while follow:
            written = container._output
            if cursor == container.lines_written:
                if container.state is ContainerState.EXITED or container.failed_to_start:
                    return
                await written.wait()
                continue
            fresh = container._lines_after(cursor)
            cursor = container.lines_written
            for line in fresh:
                yield line

    async def close(self) -> None:
        """Kill every running container (the node is going away)."""
        for container in list(self._containers.values()):
            if container.state is ContainerState.RUNNING:
                await self.kill(container.id)
        if self._own_volumes:
            shutil.rmtree(self.volumes.root, ignore_errors=True)
        if self._own_containers_root:
            shutil.rmtree(self.containers_root, ignore_errors=True)


def kernel_stdin(stdio: Stdio, on_output: Callable[[bytes], None]) -> Console | StdinPipe | None:
    """A real process's standard input for `stdio` (plugged into it): a pseudo-terminal
    whose output goes to `on_output` with `-t`, a pipe with `-i`, else none (/dev/null)."""
    device: Console | StdinPipe | None = None
    if stdio.tty:
        device = Console(on_output)
    elif stdio.stdin is not None:
        device = StdinPipe()
    stdio.connect(device)
    return device


def _kernel_program(
    networking: KernelNetworking,
    container: Container,
    netns: str,
    server: list[str] | None,
    mounts: kernel_containers.Mounts | None,
) -> Program:
    """A kernel-mode container's PID 1: its command line run by busybox in its namespaces
    (`datapath/kernel/containers.py`), or a built-in image's `server` (`kernel_image.py`'s
    arguments), the node's resolver listening there; its standard streams are the
    container's, its host PID `container.init_pid` once its namespaces are ready."""
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    container.init_pid = ready

    def started(pid: int) -> None:
        container.pid = pid  # `docker inspect`'s State.Pid: the host's, as dockerd's
        ready.set_result(pid)

    async def run(process: Exec, argv: list[str]) -> int:
        device = kernel_stdin(container.stdio, container._write_terminal)
        identity = kernel_containers.Identity(
            container.hostname,
            tuple(
                address.partition("/")[0]
                for attachment in container.networks.values()
                for address in attachment.addresses
            ),
        )
        streams = kernel_containers.Streams(process.stdout, process.stderr, device)
        command, program = (server, kernel_image.entry_point()) if server else (argv, [])
        try:
            dns = await networking.serve_names(netns, tuple(container.networks))
            try:
                return await kernel_containers.run_container(
                    netns,
                    identity,
                    command,
                    streams,
                    process.terminated,
                    started,
                    process.env,
                    program,
                    run_files(container),
                    mounts,
                )
            finally:
                await dns.close()
                if mounts is not None:  # empty in the host's view: the mounts were the
                    shutil.rmtree(mounts.stage, ignore_errors=True)  # container's only
        finally:
            if device is not None:
                device.close()
            ready.cancel()  # it never got ready (no-op when it did)

    return run


def kernel_mounts(
    container: Container, volumes: Volumes, stage: Path
) -> kernel_containers.Mounts | None:
    """A kernel-mode container's volumes (their folders) and tmpfs mounts, with `stage`, the
    scratch directory their mounting needs; None if it has none."""
    if not container.mounts:
        return None
    return kernel_containers.Mounts(
        stage,
        tuple(
            kernel_containers.ContainerMount(
                m.target,
                volumes.mountpoint(m.source) if m.type == VOLUME else None,
                m.read_only,
            )
            for m in container.mounts
        ),
    )


def run_files(container: Container) -> Path | None:
    """The host directory of a kernel-mode container's files under /run (its secrets), which
    `kernel_containers.run_container` puts on a tmpfs over its /run; None if it has none."""
    if container.files_dir is None:
        return None
    under_run = container.files_dir / "run"
    return under_run if under_run.is_dir() else None


def _file_table(
    hostname: str, files: list[TaskFile], hosts: bytes | None = None
) -> dict[str, TaskFile]:
    """What the container's programs read (`cat`, `ls`): Docker's generated /etc files (its
    /etc/hosts is `hosts` when given: the node's, in host mode), then its secrets and
    configs, all written now."""
    generated = [
        TaskFile("/etc/hostname", f"{hostname}\n".encode(), mode=0o644),
        TaskFile(
            "/etc/hosts",
            hosts or b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            mode=0o644,
        ),
    ]
    return {f.path: f for f in stamp([*generated, *files])}


def _environment(image: Image, config: ContainerConfig, hostname: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in (*image.env, f"HOSTNAME={hostname}", *config.env):
        key, _, value = entry.partition("=")
        if key:
            env[key] = value
    env.setdefault("HOME", "/root")
    return env
