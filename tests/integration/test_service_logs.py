"""`docker service logs` with the real docker CLI against a lab (2 managers + 1 worker on
127.77.232.x): every replica's lines with the CLI's `web.<slot>.<task>@<node>    | ` prefix,
`--tail`, `--timestamps`, `--follow`, a task's logs, from a follower manager too, and the
errors (unknown service or task, a worker's engine)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from docker_cli import docker, needs_docker_cli, ok

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]

SCRIPT = "echo hello from $HOSTNAME; echo second line; sleep 1000"
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"


def test_docker_service_logs(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=2, workers=1, lab=232)
        try:
            await lab.up()
            leader = lab.node("manager-1")
            ok(leader, "service", "create", "-d", "--name", "web", "--replicas", "3",
               "busybox", "sh", "-c", SCRIPT)  # fmt: skip

            async def written() -> list[dict[str, str]] | None:
                out = ok(leader, "service", "ps", "--format", "{{json .}}", "web")
                rows = [json.loads(line) for line in out.splitlines()]
                running = [r for r in rows if r["CurrentState"].startswith("Running")]
                if len(running) != 3:
                    return None
                logs = ok(leader, "service", "logs", "web")
                return rows if logs.count("second line") == 3 else None

            rows = await until(written, 90, "3 running replicas with their lines")
            tasks = {r["Name"]: r for r in rows}  # web.1 ... web.3
            ids = {r["Name"]: r["ID"] for r in rows}  # 12 characters, as the prefix shows
            await check_all_lines(leader, tasks, ids)
            await check_options(leader, tasks, ids)
            await check_follow(leader)
            # A follower manager forwards the subscription to the leader.
            follower_out = ok(lab.node("manager-2"), "service", "logs", "--tail", "1", "web")
            assert sorted(follower_out.splitlines()) == sorted(
                f"{prefix(n, ids[n], tasks[n]['Node'])}    | second line" for n in tasks
            )
            await check_errors(leader, lab.node("worker-1"))
        finally:
            lab.stop()

    asyncio.run(scenario())


def prefix(name: str, task_id: str, node: str) -> str:
    return f"{name}.{task_id[:12]}@{node}"


async def check_all_lines(
    leader: NodeProcess, tasks: dict[str, dict[str, str]], ids: dict[str, str]
) -> None:
    result = docker(leader, "service", "logs", "web")
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 6, lines
    nodes = set()
    for name, row in tasks.items():
        head = f"{prefix(name, ids[name], row['Node'])}    | "
        mine = [line[len(head) :] for line in lines if line.startswith(head)]
        assert len(mine) == 2, (head, lines)
        assert re.fullmatch(r"hello from [0-9a-f]{12}", mine[0]), mine
        assert mine[1] == "second line"
        nodes.add(row["Node"])
    assert len(nodes) == 3  # the replicas run on both managers and the worker


async def check_options(
    leader: NodeProcess, tasks: dict[str, dict[str, str]], ids: dict[str, str]
) -> None:
    tail = ok(leader, "service", "logs", "--tail", "1", "web").splitlines()
    assert sorted(tail) == sorted(
        f"{prefix(n, ids[n], tasks[n]['Node'])}    | second line" for n in tasks
    )
    stamped = ok(leader, "service", "logs", "--timestamps", "--tail", "1", "web").splitlines()
    assert len(stamped) == 3
    for line in stamped:
        assert re.fullmatch(rf"{TIMESTAMP} web\.\d\.\w{{12}}@\S+    \| second line", line), line
    no_ids = ok(leader, "service", "logs", "--no-task-ids", "--tail", "1", "web").splitlines()
    assert sorted(no_ids) == sorted(f"{n}@{tasks[n]['Node']}    | second line" for n in tasks)
    # A task's logs: `docker service logs <task id>` (the CLI finds no such service).
    task = ok(leader, "service", "logs", ids["web.2"]).splitlines()
    head = f"{prefix('web.2', ids['web.2'], tasks['web.2']['Node'])}    | "
    assert [line[: len(head)] for line in task] == [head, head]
    assert task[1].endswith("second line")
    raw = ok(leader, "service", "logs", "--raw", ids["web.2"]).splitlines()
    assert raw[1] == "second line"


async def check_follow(leader: NodeProcess) -> None:
    """`--follow` keeps the stream open: read the lines, then stop the CLI ourselves."""
    command = ["docker", "-H", f"tcp://{leader.api}", "service", "logs", "--follow", "web"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while len(lines) < 6 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert len(lines) == 6, lines
        assert process.poll() is None  # still following
    finally:
        process.terminate()
        process.wait(timeout=30)


async def check_errors(leader: NodeProcess, worker: NodeProcess) -> None:
    result = docker(leader, "service", "logs", "nope")
    assert result.returncode == 1
    assert result.stderr.strip() == "no such task or service: nope"
    result = docker(worker, "service", "logs", "web")
    assert result.returncode == 1
    assert "This node is not a swarm manager." in result.stderr
