"""`docker exec`: another program run in a running container's context (its environment,
hostname, image files and network stacks), with streams of its own.

As dockerd, an exec is created first (checked: the container runs, a command is given), then
started once; its output goes to the client that started it, never to the container's logs.
A command the image lacks fails as runc fails it: the message on the exec's output and exit
status 126. When the container exits, its exec'd processes die with it (SIGKILL: 137).

With the kernel data path the command is a real busybox applet run in the container's
namespaces (`datapath/kernel/containers.py`: `nsenter` joins those of its PID 1 in the child,
the node process never forks itself), on a real pseudo-terminal with `-t`, a real pipe with
`-i` (`datapath/kernel/console.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from controlplane.agent import programs
from controlplane.agent.cpu_meter import charged_to
from controlplane.agent.health import PROBE_FAILED, ProbeResult, clip_output, go_duration
from controlplane.agent.process import EXIT_KILLED, Exec, ExecNotFoundError
from controlplane.agent.runtime import (
    ContainerRuntimeError,
    ContainerStateError,
    NoSuchContainerError,
    Runtime,
    kernel_stdin,
)
from controlplane.agent.stdio import STDERR, STDOUT, Stdio
from controlplane.agent.terminal import run_on
from controlplane.datapath.kernel import KernelError
from controlplane.datapath.kernel import containers as kernel_containers

log = logging.getLogger("controlplane.agent.exec_sessions")

EXIT_CANNOT_EXECUTE = 126  # dockerd's status for an exec whose command could not start


class NoSuchExecError(ContainerRuntimeError):
    pass


class InvalidExecError(ContainerRuntimeError):
    pass


@dataclass
class ExecSession:
    id: str
    container_id: str
    argv: list[str]
    env: list[str]
    stdio: Stdio
    attach_stdout: bool
    attach_stderr: bool
    detach_keys: str = ""  # `docker exec --detach-keys`, as given (the API parses it)
    pid: int = 0
    started_at_ns: int = 0
    running: bool = False
    exit_code: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class ExecSessions:
    """The node's exec sessions, over its runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._sessions: dict[str, ExecSession] = {}
        runtime.health_probe = self.probe  # healthchecks are execs, as dockerd runs them

    async def probe(self, container_id: str, argv: list[str], timeout: float) -> ProbeResult:
        """Run a healthcheck: `argv` as an exec (with its events), its output and exit code,
        or exit -1 when it could not start or ran past `timeout` (then it is killed). The
        session is forgotten afterwards: checks every second must not pile up."""
        start_ns = time.time_ns()
        try:
            session = self.create(container_id, argv)
            self.start(session.id)
        except ContainerRuntimeError as err:
            return ProbeResult(start_ns, time.time_ns(), PROBE_FAILED, str(err))
        try:
            async with asyncio.timeout(timeout):
                await session.done.wait()
        except TimeoutError:
            assert session.task is not None
            session.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.task
            output = f"Health check exceeded timeout ({go_duration(timeout)})"
            return ProbeResult(start_ns, time.time_ns(), PROBE_FAILED, output)
        finally:
            self._sessions.pop(session.id, None)
        assert session.exit_code is not None
        output = clip_output(session.stdio.output.kept())
        return ProbeResult(start_ns, time.time_ns(), session.exit_code, output)

    def create(
        self,
        container_ref: str,
        argv: list[str],
        *,
        tty: bool = False,
        open_stdin: bool = False,
        env: list[str] | None = None,
        attach_stdout: bool = True,
        attach_stderr: bool = True,
        detach_keys: str = "",
    ) -> ExecSession:
        """NoSuchContainerError, ContainerStateError (not running) or InvalidExecError (no
        command), with dockerd's words."""
        container = self.runtime.get(container_ref)
        self.runtime.process(container.id)  # it must be running
        if not argv:
            raise InvalidExecError("No exec command specified")
        session = ExecSession(
            id=secrets.token_hex(32),
            container_id=container.id,
            argv=list(argv),
            env=list(env or ()),
            stdio=Stdio(tty=tty, open_stdin=open_stdin),
            attach_stdout=attach_stdout,
            attach_stderr=attach_stderr,
            detach_keys=detach_keys,
        )
        self._sessions[session.id] = session
        self._event("exec_create", session)
        return session

    def _event(self, action: str, session: ExecSession, **attributes: str) -> None:
        """dockerd's exec events: `exec_create: CMD`, `exec_start: CMD`, then `exec_die`."""
        if action != "exec_die":
            action = f"{action}: {' '.join(session.argv)}"
        container = self.runtime.get(session.container_id)
        self.runtime.event(action, container, execID=session.id, **attributes)

    def get(self, exec_id: str) -> ExecSession:
        session = self._sessions.get(exec_id)
        if session is None:
            raise NoSuchExecError(f"No such exec instance: {exec_id}")
        return session

    def start(self, exec_id: str) -> ExecSession:
        """Run it now; ContainerStateError if it ran already or its container stopped."""
        session = self.get(exec_id)
        if session.running or session.exit_code is not None:
            raise ContainerStateError(f"Error: Exec command {exec_id} is already running")
        parent = self.runtime.process(session.container_id)
        env = dict(parent.env)
        for entry in session.env:
            key, _, value = entry.partition("=")
            env[key] = value
        process = dataclasses.replace(
            parent.child(),
            env=env,
            stdout=lambda data: session.stdio.write(STDOUT, data),
            stderr=lambda data: session.stdio.write(STDERR, data),
            stdio=session.stdio,
        )
        session.running = True
        # a kernel-mode exec's is the host's, once it runs in the container's namespaces
        in_kernel = self.runtime.get(session.container_id).netns is not None
        session.pid = 0 if in_kernel else self.runtime.next_pid()
        session.started_at_ns = time.time_ns()
        with charged_to(self.runtime.get(session.container_id).cpu):  # the container's CPU time
            session.task = asyncio.create_task(
                self._run(session, process), name=f"exec-{session.id[:12]}"
            )
        self._event("exec_start", session)
        return session

    async def _run(self, session: ExecSession, process: Exec) -> None:
        if self.runtime.get(session.container_id).netns is not None:
            status = await self._run_in_namespace(session, process)
        else:
            status = await self._run_emulated(session, process)
        session.exit_code = status & 0xFF
        session.running = False
        with contextlib.suppress(NoSuchContainerError):  # removed meanwhile: no event
            self._event("exec_die", session, exitCode=str(session.exit_code))
        session.stdio.close()
        session.done.set()
        log.info("event=exec_exited id=%s status=%d", session.id[:12], session.exit_code)

    async def _run_in_namespace(self, session: ExecSession, process: Exec) -> int:
        """The kernel data path's exec: busybox `argv` in the container's namespaces, once
        they are ready."""
        try:
            kernel_containers.check_command(session.argv)
        except KernelError as err:
            session.stdio.write(STDOUT, f"OCI runtime exec failed: {err}: unknown\n".encode())
            session.pid = 0
            return EXIT_CANNOT_EXECUTE
        init_pid = self.runtime.get(session.container_id).init_pid
        assert init_pid is not None
        stdio = session.stdio
        device = kernel_stdin(stdio, stdio.raw)
        streams = kernel_containers.Streams(process.stdout, process.stderr, device)

        async def running() -> int:
            await asyncio.wait([init_pid])
            if init_pid.cancelled():  # the container ended before its namespaces were ready
                return EXIT_KILLED
            return await kernel_containers.run_exec(
                init_pid.result(), session.argv, streams, process.env, started
            )

        def started(pid: int) -> None:
            session.pid = pid

        try:
            return await self._until_container_exits(session, running())
        finally:
            if device is not None:
                device.close()

    async def _run_emulated(self, session: ExecSession, process: Exec) -> int:
        status = EXIT_CANNOT_EXECUTE
        try:
            program = programs.resolve(process, session.argv)
        except ExecNotFoundError as err:
            session.stdio.write(
                STDOUT,
                (
                    "OCI runtime exec failed: exec failed: unable to start container process: "
                    f"{err}: unknown\n"
                ).encode(),
            )
            session.pid = 0
        else:
            session.stdio.connect(None)
            status = await self._until_container_exits(
                session, run_on(session.stdio.terminal, program(process, session.argv))
            )
        return status

    async def _until_container_exits(self, session: ExecSession, running: Awaitable[int]) -> int:
        program = asyncio.ensure_future(running)
        container_exit = asyncio.ensure_future(self.runtime.exit_status(session.container_id))
        try:
            await asyncio.wait((program, container_exit), return_when=asyncio.FIRST_COMPLETED)
        finally:
            container_exit.cancel()
        if program.done():
            try:
                return program.result()
            except Exception as err:  # a bug in an emulated program must not take the node down
                log.exception("event=exec_program_crashed id=%s", session.id[:12])
                session.stdio.write(STDERR, f"emulated program crashed: {err!r}\n".encode())
                return 1
        program.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await program
        return EXIT_KILLED

    def running(self, container_id: str) -> list[ExecSession]:
        """The container's execs running now."""
        return [s for s in self._sessions.values() if s.container_id == container_id and s.running]

    def resize(self, exec_id: str, rows: int, columns: int) -> None:
        self.get(exec_id).stdio.resize(rows, columns)

    def forget_container(self, container_id: str) -> None:
        """The container was removed: so are its exec sessions, as dockerd's."""
        for exec_id in [s.id for s in self._sessions.values() if s.container_id == container_id]:
            del self._sessions[exec_id]
