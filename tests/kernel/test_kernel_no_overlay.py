"""Kernel-mode tasks and containers on no overlay network (1 manager + 1 worker at
127.77.246.x, data paths on the underlay 10.201.246.0/24, namespaces `swf3...`), with the
real docker CLI, on nodes started as under `nohup` (SIGHUP, SIGQUIT and SIGRTMIN+2 ignored):

- a service whose only network is its host-mode port (`--publish mode=host`) runs, as Docker
  runs it on the node's bridge, and answers on its node's address from another node;
- `docker run -p` on no network runs its command for real in a namespace of its own, and
  that process ignores no signal (runc resets every disposition for a container's init);
- the namespaces go with the containers (`kernel_lab` checks that none is left)."""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from docker_cli import docker, ok
from kernel_testing import kernel_lab, skip_unless_kernel, unique_tag
from signal_masks import ignored_signals

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel import namespaces
from controlplane.lab.swarm_lab import until

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]
LAB = 246
WORKER = "10.201.246.101"
# nohup's SIGHUP, a background job's SIGQUIT, and a real-time signal: uvloop's spawn resets
# 1-31 in the child by itself, not this one
NOHUP = (int(signal.SIGHUP), int(signal.SIGQUIT), signal.SIGRTMIN + 2)


@contextmanager
def ignoring(*signals: int) -> Iterator[None]:
    """`signals` ignored by this process (and so by what it starts) for the block."""
    before = {number: signal.signal(number, signal.SIG_IGN) for number in signals}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


async def fetch(client: str, url: str) -> str | None:
    got = await kcontainers.run(client, ["timeout", "5", "wget", "-qO-", url])
    return got.stdout if got.status == 0 else None


def test_tasks_and_containers_on_no_overlay(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    prefix = unique_tag("swf3")

    async def scenario() -> None:
        with ignoring(*NOHUP):  # the node processes start ignoring them, as under nohup
            lab_context = kernel_lab(tmp_path, LAB, prefix, workers=1)
            lab = await lab_context.__aenter__()
        try:
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            client = f"{prefix}-m1"
            node_pid = worker.pid
            assert set(NOHUP) <= ignored_signals(node_pid)

            ok(manager, "service", "create", "-d", "--name", "hostweb",
               "--constraint", "node.role==worker",
               "--publish", "mode=host,published=8091,target=80", "nginx")  # fmt: skip

            async def hostweb_answers() -> bool | None:
                page = await fetch(client, f"http://{WORKER}:8091/")
                return True if page and "Welcome to nginx!" in page else None

            await until(hostweb_answers, 90, "hostweb (no overlay) on the worker's 8091")
            listed = ok(manager, "service", "ps", "hostweb", "--format", "{{.CurrentState}}")
            assert listed.startswith("Running"), listed

            ok(worker, "run", "-d", "--name", "sleeper", "-p", "8092:8092", "busybox",
               "sleep", "1000")  # fmt: skip

            async def sleeping() -> int | None:  # a real process, once it has exec'd
                pid = int(ok(worker, "inspect", "-f", "{{.State.Pid}}", "sleeper"))
                comm = Path(f"/proc/{pid}/comm")
                return pid if comm.exists() and comm.read_text().strip() == "sleep" else None

            pid = await until(sleeping, 60, "sleeper's sleep running as a host process")
            assert ignored_signals(pid) == set()
            own = Path(f"/proc/{pid}/ns/net").resolve()
            assert own != Path(f"/proc/{node_pid}/ns/net").resolve()
            sleeper_ns = [n for n in namespaces.listed() if n.startswith(f"{prefix}-w1-")]
            assert any("sleeper" in n for n in sleeper_ns), sleeper_ns

            ok(worker, "rm", "-f", "sleeper")

            async def namespace_gone() -> bool | None:
                left = [n for n in namespaces.listed() if "sleeper" in n]
                return True if not left else None

            await until(namespace_gone, 60, "sleeper's namespace removed")
            stopped = docker(manager, "service", "rm", "hostweb")
            assert stopped.returncode == 0, stopped.stderr
        finally:
            await lab_context.__aexit__(None, None, None)

    asyncio.run(scenario())
