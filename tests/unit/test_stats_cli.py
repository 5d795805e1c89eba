"""`docker stats --no-stream` with the real docker CLI against a node's containers API on
127.77.218.3 (userspace mode: the emulated processes are counted and their CPU time metered,
memory is not measurable apart from the node and comes as dockerd's "no figures"), and the
kernel-mode
figures measured from a real process in a PID namespace of its own. Skipped without the
docker CLI (and the kernel part without root and unshare)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from served_api import DockerAt, served_containers, worker_port

from controlplane.agent.container_stats import kernel_sample
from controlplane.agent.standalone import StandaloneContainers

HOST, PORT = "127.77.218.3", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok
DEADLINE = 30.0
COLUMNS = (
    "CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT   MEM %     NET I/O   BLOCK I/O   PIDS"
)


@pytest.fixture
def node() -> Iterator[StandaloneContainers]:
    with served_containers(HOST, PORT) as registry:
        yield registry


def rows(*args: str) -> list[list[str]]:
    lines = ok("stats", "--no-stream", *args).splitlines()
    assert lines[0] == COLUMNS
    return [line.split() for line in lines[1:]]


def test_no_stream_lists_running_containers_with_what_is_measured(
    node: StandaloneContainers,
) -> None:
    web = ok("run", "-d", "--name", "web", "busybox", "sleep", "1000").strip()
    ok("run", "-d", "--name", "done", "busybox", "true")
    assert ok("wait", "done") == "0\n"
    # Real dockerd 20.10 for a running busybox: `ef0bd6e897fa c1b 0.00% 312KiB / 23.54GiB
    # 0.00% 806B / 0B 0B / 0B 1`; here a sleeping process uses no CPU, the memory is
    # dockerd's "no figures" (as for a stopped container), the one process is counted, the
    # container has no interface (the runtime has no data path).
    assert rows() == [[web[:12], "web", "0.00%", "0B", "/", "0B", "0.00%", "0B", "/", "0B",
                       "0B", "/", "0B", "1"]]  # fmt: skip
    # `-a` adds the exited one, with dockerd's zeros (real: `c2 0.00% 0B / 0B ... 0`).
    assert sorted(r[1] for r in rows("-a")) == ["done", "web"]
    assert rows("done")[0][2:] == ["0.00%", "0B", "/", "0B", "0.00%", "0B", "/", "0B", "0B",
                                   "/", "0B", "0"]  # fmt: skip


def test_an_exec_is_one_more_process(node: StandaloneContainers) -> None:
    ok("run", "-d", "--name", "web", "busybox", "sleep", "1000")
    ok("exec", "-d", "web", "sleep", "1000")
    deadline = time.monotonic() + DEADLINE
    while rows("web")[0][-1] != "2":
        assert time.monotonic() < deadline, "the exec was not counted"
        time.sleep(0.05)
    raw = json.loads(ok("stats", "--no-stream", "--format", "{{json .}}", "web"))
    assert raw["PIDs"] == "2" and raw["Name"] == "web"


def test_execs_cpu_time_is_the_containers(node: StandaloneContainers) -> None:
    """The CPU time of what runs in a container (its execs here) is charged to it, not to
    another container; the API's figures are dockerd's counters (nanoseconds, ever)."""
    ok("run", "-d", "--name", "busy", "busybox", "sleep", "1000")
    ok("run", "-d", "--name", "idle", "busybox", "sleep", "1000")
    for _ in range(5):
        ok("exec", "busy", "sh", "-c", "echo $((1 + 2 * 3)); hostname; cat /etc/hosts")

    def used(name: str) -> int:
        with urllib.request.urlopen(f"http://{HOST}:{PORT}/containers/{name}/stats?stream=0") as r:
            body = json.load(r)
        assert body["cpu_stats"]["system_cpu_usage"] > 0 and body["cpu_stats"]["online_cpus"] > 0
        assert body["memory_stats"] == {}  # not measurable apart from the node
        usage: int = body["cpu_stats"]["cpu_usage"]["total_usage"]
        return usage

    busy, idle = used("busy"), used("idle")
    assert busy > idle
    assert busy > 0


needs_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="measuring a process in a PID namespace of its own needs root and unshare",
)

_BURN = (
    "import time\n"
    "x = bytearray(64 * 1024 * 1024)\n"
    "while time.process_time() < 0.3: pass\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


@needs_unshare
def test_kernel_figures_are_the_namespace_processes_own() -> None:
    """A real process that used 0.3 s of CPU and holds 64 MiB, alone in its PID namespace."""
    launcher = subprocess.Popen(
        ["unshare", "--pid", "--fork", sys.executable, "-c", _BURN],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert launcher.stdout is not None and launcher.stdout.readline() == "ready\n"
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text()
        (init_pid,) = (int(pid) for pid in children.split())
        taken = kernel_sample(init_pid)
        assert taken.pids == 1
        # /proc counts whole clock ticks (10 ms): 0.3 s of CPU reads as at least 0.25 s.
        assert taken.cpu is not None and taken.cpu.container_ns >= 250_000_000
        assert taken.cpu.system_ns > taken.cpu.container_ns
        assert taken.memory_bytes is not None and taken.memory_bytes >= 64 * 1024 * 1024
        assert taken.memory_limit > taken.memory_bytes
        assert "lo" not in taken.networks
    finally:
        launcher.kill()
        launcher.wait()
