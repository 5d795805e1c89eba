"""`docker top CONTAINER [ps OPTIONS]`: a running container's processes in `ps`'s table, as
dockerd answers it (`{"Titles": [...], "Processes": [[...], ...]}`).

dockerd runs the host's `ps` with the client's arguments (`-ef` by default) and keeps the rows
whose PID is one of the container's. A kernel-mode container's processes are real: those in
the PID namespace of its PID 1 (read from /proc), and the host's `ps` lists them the same way
(`kernel_top`). A userspace container's processes are emulated: its command and its running
execs, each with the PID the runtime gave it, shown in `ps -ef`'s columns (`emulated_top`);
other `ps` options need real processes and are refused, naming the one that works.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from controlplane.agent.exec_sessions import ExecSessions
from controlplane.agent.runtime import ContainerRuntimeError, ContainerStateError, Runtime

DEFAULT_PS_ARGS = "-ef"
PS_EF_TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]


class TopError(ContainerRuntimeError):
    """`ps` could not list the processes with those arguments (dockerd's 500)."""


class TopArgumentsError(ContainerRuntimeError):
    """`ps` options an emulated container cannot honour (a client error)."""


@dataclass(frozen=True)
class ProcessTable:
    titles: list[str]
    processes: list[list[str]]

    def json(self) -> dict[str, list[str] | list[list[str]]]:
        return {"Titles": self.titles, "Processes": self.processes}


@dataclass(frozen=True)
class EmulatedProcess:
    """One process of a userspace container: its PID, its parent's, when it started, whether
    it runs on a TTY, and its command line."""

    pid: int
    ppid: int
    started_at_ns: int
    tty: bool
    argv: Sequence[str]


async def top(runtime: Runtime, execs: ExecSessions, ref: str, ps_args: str) -> ProcessTable:
    """The table of running container `ref` (NoSuchContainerError, ContainerStateError when
    it is not running, with dockerd's words)."""
    container = runtime.get(ref)
    runtime.process(container.id)  # it must be running
    if container.init_pid is not None:
        await asyncio.wait([container.init_pid])
        if container.init_pid.cancelled():
            raise ContainerStateError(f"Container {container.id} is not running")
        return await kernel_top(container.init_pid.result(), ps_args)
    node = os.getpid()  # the emulated processes' parent, as a shim is a container's
    main = EmulatedProcess(
        container.pid, node, container.started_at_ns, container.config.tty, container.argv
    )
    running = [
        EmulatedProcess(s.pid, node, s.started_at_ns, s.stdio.tty, s.argv)
        for s in execs.running(container.id)
    ]
    return emulated_top([main, *running], ps_args)


def pids_in_namespace(init_pid: int) -> set[int]:
    """The host PIDs of the processes in the PID namespace of host process `init_pid`."""
    try:
        namespace = os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return set()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == namespace:
                    found.add(int(entry.name))
            except OSError:  # it ended meanwhile
                continue
    return found


async def kernel_top(init_pid: int, ps_args: str) -> ProcessTable:
    """The host's `ps ps_args` rows of the processes of the container whose PID 1 is host
    process `init_pid`; TopError with `ps`'s words when it fails or shows no PID column."""
    pids = pids_in_namespace(init_pid)
    args = shlex.split(ps_args or DEFAULT_PS_ARGS)
    try:
        ps = await asyncio.create_subprocess_exec(
            "ps",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise TopError("Error running ps: the host has no `ps` (apt-get install procps)") from None
    out, err = await ps.communicate()
    if ps.returncode != 0:
        raise TopError(f"ps: exit status {ps.returncode}: {err.decode(errors='replace').strip()}")
    return parse_ps(out.decode(errors="replace"), pids)


def parse_ps(output: str, pids: set[int]) -> ProcessTable:
    """The rows of `ps` output whose PID is in `pids`, split on blanks as dockerd splits
    them (the last column, the command, keeps its blanks)."""
    lines = output.splitlines()
    titles = lines[0].split() if lines else []
    if "PID" not in titles:
        raise TopError("Couldn't find PID field in ps output")
    pid_column = titles.index("PID")
    rows = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) <= pid_column:
            continue
        try:
            pid = int(fields[pid_column])
        except ValueError:
            continue
        if pid in pids:
            last = len(titles) - 1
            rows.append([*fields[:last], " ".join(fields[last:])])
    return ProcessTable(titles, rows)


def emulated_top(processes: Sequence[EmulatedProcess], ps_args: str) -> ProcessTable:
    """`ps -ef`'s table of a userspace container's emulated processes."""
    if ps_args.strip() not in ("", DEFAULT_PS_ARGS):
        raise TopArgumentsError(
            f"ps options {ps_args!r} need real processes: a container of the userspace data "
            f"path runs emulated ones, listed as `ps {DEFAULT_PS_ARGS}` lists them; run "
            "`docker top CONTAINER` without options, or the node with --datapath kernel"
        )
    return ProcessTable(
        list(PS_EF_TITLES),
        [
            [
                "root",
                str(p.pid),
                str(p.ppid),
                "0",
                _start_time(p.started_at_ns),
                "pts/0" if p.tty else "?",
                "00:00:00",
                " ".join(p.argv),
            ]
            for p in sorted(processes, key=lambda p: p.pid)
        ],
    )


def _start_time(ns: int) -> str:
    """`ps`'s STIME: the time of day when it started today, else the month and day."""
    started = time.localtime(ns / 1e9)
    if time.strftime("%Y%m%d", started) == time.strftime("%Y%m%d"):
        return time.strftime("%H:%M", started)
    return time.strftime("%b%d", started)
