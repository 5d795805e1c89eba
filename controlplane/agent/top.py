"""`docker top CONTAINER [ps OPTIONS]`: a running container's processes in `ps`'s table, as
dockerd answers it (`{"Titles": [...], "Processes": [[...], ...]}`).

dockerd splits the options on single blanks, refuses a column renamed to PID by any
specifier but `pid` (`specifying "x=PID" is not allowed`), runs the host's `ps OPTIONS -q
PIDS` (again without `-q` when `ps` refuses the pair, as with forest listings), answers `ps`'s
refusal with its first line (`ps: error: unknown gnu long option`, a 500), and keeps the rows
whose PID is one of the container's (`Couldn't find PID field in ps output` without one).
A kernel-mode container's processes are real: those in the PID namespace of its PID 1 (read
from /proc), listed that way (`kernel_top`). A userspace container's processes are emulated:
its command and its running execs, each with the PID the runtime gave it; the host's `ps`
still judges the options (for procps' own words), then `ps_format` lays out the columns
procps would (`emulated_top`).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from controlplane.agent import ps_format
from controlplane.agent.exec_sessions import ExecSessions
from controlplane.agent.ps_format import EmulatedProcess, UnsupportedOptions
from controlplane.agent.runtime import ContainerRuntimeError, ContainerStateError, Runtime

DEFAULT_PS_ARGS = "-ef"
# dockerd's check: a column titled PID... must be the pid column
_RENAMED_TO_PID = re.compile(r"\s+(\S*)=\s*(PID\S*)")


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


def ps_words(ps_args: str) -> list[str]:
    """The options as dockerd passes them to `ps`: split on single blanks (`-ef` by
    default); TopError for a column renamed to PID, in dockerd's words, and for a NUL byte,
    which no program argument can carry (dockerd's exec fails with EINVAL)."""
    if "\x00" in ps_args:
        raise TopError(f"Error running ps: the options {ps_args!r} hold a NUL byte")
    for key, value in _RENAMED_TO_PID.findall(ps_args):
        if key != "pid":
            raise TopError(f'specifying "{key}={value}" is not allowed')
    return (ps_args or DEFAULT_PS_ARGS).split(" ")


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
    words = ps_words(ps_args)
    await run_ps(words, {node})  # procps judges the options first, in its words
    return emulated_top([main, *running], words)


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
    """The host's `ps` rows of the processes of the container whose PID 1 is host process
    `init_pid`, as dockerd gets them; TopError with `ps`'s words when it fails."""
    pids = pids_in_namespace(init_pid)
    return parse_ps(await run_ps(ps_words(ps_args), pids), pids)


async def run_ps(words: Sequence[str], pids: set[int]) -> str:
    """The output of the host's `ps words -q pids`, else `ps words`; TopError with the first
    line `ps` wrote on its error output when both fail."""
    quick = ["-q", ",".join(str(pid) for pid in sorted(pids))] if pids else []
    ok, out = await _ps([*words, *quick])
    if not ok and quick:
        ok, out = await _ps(words)
    if not ok:
        raise TopError(f"ps: {out}")
    return out


async def _ps(args: Sequence[str]) -> tuple[bool, str]:
    """(True, its output) or (False, the first line of its error output)."""
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
        first = err.decode(errors="replace").split("\n", 1)[0]
        return False, first or f"exit status {ps.returncode}"
    return True, out.decode(errors="replace")


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


def emulated_top(processes: Sequence[EmulatedProcess], words: Sequence[str]) -> ProcessTable:
    """`ps words`'s table of a userspace container's emulated processes; TopArgumentsError
    naming what is emulated for options procps takes but the emulation does not render."""
    try:
        titles, rows = ps_format.table(words, processes)
    except UnsupportedOptions as err:
        raise TopArgumentsError(
            f"{err}: a container of the userspace data path runs emulated processes; "
            "run the node with --datapath kernel for every ps option"
        ) from None
    if "PID" not in titles:
        raise TopError("Couldn't find PID field in ps output")
    return ProcessTable(titles, rows)
