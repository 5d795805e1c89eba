"""What `docker stats` shows of a container, measured, never made up.

A kernel-mode container is real processes in namespaces of their own: its CPU time is the sum
of theirs (user + system, with their waited-for children's) from /proc/PID/stat, its memory
the sum of their resident sets (/proc/PID/status VmRSS; dockerd reads its cgroup's usage,
there is no cgroup here), its block I/O their storage reads and writes (/proc/PID/io), its
PIDs how many there are, its network the counters of its namespace's interfaces
(/proc/PID/net/dev, loopback left out as dockerd leaves it out).

A userspace-mode container is coroutines inside the node's process: its processes (PID 1 and
its running execs), their CPU time (`cpu_meter.py`) and its interfaces' frames and bytes
(`userspace/stack.py` counts them) are measured, and it does no block I/O (its files are in
memory); its memory cannot be told apart from the node's, so it is None and the API reports
it as dockerd reports a container it has no figures for (empty memory stats: the CLI's
`0B / 0B`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.agent.exec_sessions import ExecSessions
from controlplane.agent.runtime import Container, ContainerState, Runtime
from controlplane.agent.top import pids_in_namespace
from controlplane.datapath.userspace.stack import InterfaceCounters

PROC = Path("/proc")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    container_ns: int  # CPU time the container's processes used, ever
    system_ns: int  # the machine's CPU time (all CPUs, idle included), as dockerd's
    online_cpus: int


@dataclass(frozen=True)
class StatsSample:
    read_ns: int  # 0: the container is not running (dockerd's zero time)
    cpu: CpuSample | None = None  # None: not measurable apart from the node
    memory_bytes: int | None = None
    memory_limit: int = 0
    pids: int | None = None  # None: not running
    block_read: int = 0
    block_write: int = 0
    networks: dict[str, InterfaceCounters] = field(default_factory=dict)


def sample(runtime: Runtime, execs: ExecSessions, container: Container) -> StatsSample:
    """The container's figures now (nothing while it does not run, as dockerd)."""
    if container.state is not ContainerState.RUNNING:
        return StatsSample(read_ns=0)
    init = container.init_pid
    if init is not None:
        if not init.done() or init.cancelled():
            return StatsSample(read_ns=time.time_ns(), pids=0)
        return kernel_sample(init.result())
    net = runtime.process(container.id).net
    account = container.cpu
    return StatsSample(
        read_ns=time.time_ns(),
        cpu=(
            CpuSample(account.ns, system_cpu_ns(), os.cpu_count() or 1)
            if account is not None
            else None
        ),
        pids=1 + len(execs.running(container.id)),
        networks={f"eth{i}": stack.counters for i, stack in enumerate(net.stacks)},
    )


def kernel_sample(init_pid: int) -> StatsSample:
    """The figures of the real processes in the PID namespace of host process `init_pid`."""
    read_ns = time.time_ns()
    pids = pids_in_namespace(init_pid)
    cpu_ticks = memory = read = written = alive = 0
    for pid in pids:
        try:
            ticks, resident, (pid_read, pid_written) = (
                _cpu_ticks(pid),
                _resident_bytes(pid),
                _storage_io(pid),
            )
        except (OSError, ValueError, IndexError, KeyError):  # it ended meanwhile
            continue
        cpu_ticks, memory, alive = cpu_ticks + ticks, memory + resident, alive + 1
        read, written = read + pid_read, written + pid_written
    return StatsSample(
        read_ns=read_ns,
        cpu=CpuSample(_ticks_to_ns(cpu_ticks), system_cpu_ns(), os.cpu_count() or 1),
        memory_bytes=memory,
        memory_limit=_memory_total(),
        pids=alive,
        block_read=read,
        block_write=written,
        networks=interface_counters(PROC / str(init_pid) / "net" / "dev"),
    )


def _ticks_to_ns(ticks: int) -> int:
    return ticks * 1_000_000_000 // _CLOCK_TICKS


def _cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of /proc/PID/stat (fields 14 to 17)."""
    text = (PROC / str(pid) / "stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command may hold blanks and parens
    return sum(int(v) for v in fields[11:15])


def _resident_bytes(pid: int) -> int:
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0  # a kernel thread or a zombie: no memory of its own


def _storage_io(pid: int) -> tuple[int, int]:
    """read_bytes and write_bytes of /proc/PID/io: what reached the storage layer."""
    values = dict(line.split(": ", 1) for line in (PROC / str(pid) / "io").read_text().splitlines())
    return int(values["read_bytes"]), int(values["write_bytes"])


def system_cpu_ns() -> int:
    """The machine's CPU time so far, the first line of /proc/stat (dockerd's
    `system_cpu_usage`: user to steal, in nanoseconds)."""
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("cpu "):
            return _ticks_to_ns(sum(int(v) for v in line.split()[1:9]))
    return 0


def _memory_total() -> int:
    for line in (PROC / "meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def interface_counters(net_dev: Path) -> dict[str, InterfaceCounters]:
    """The interfaces of a /proc/PID/net/dev but loopback, by name."""
    try:
        lines = net_dev.read_text().splitlines()[2:]
    except OSError:
        return {}
    found = {}
    for line in lines:
        name, _, rest = line.partition(":")
        values = rest.split()
        if name.strip() == "lo" or len(values) < 10:
            continue
        found[name.strip()] = InterfaceCounters(
            rx_bytes=int(values[0]),
            rx_packets=int(values[1]),
            tx_bytes=int(values[8]),
            tx_packets=int(values[9]),
        )
    return found
