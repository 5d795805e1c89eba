"""`docker restart`, `docker start` of an exited container and `docker rename` with the real
docker CLI against a node's containers API on 127.77.218.1; each test says what a real
dockerd 20.10 answered for the same commands. Skipped without the docker CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from served_api import DockerAt, served_containers, worker_port

from controlplane.agent.standalone import StandaloneContainers

HOST, PORT = "127.77.218.1", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok
refused = docker.refused
DEADLINE = 30.0


@pytest.fixture
def node() -> Iterator[StandaloneContainers]:
    with served_containers(HOST, PORT) as registry:
        yield registry


def state(ref: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(ok("inspect", "--format", "{{json .State}}", ref))
    return found


def eventually(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)


def actions(node: StandaloneContainers, name: str) -> list[str]:
    return [
        e.action
        for e in node.runtime.events.kept()
        if e.type == "container" and e.attributes.get("name") == name
    ]


def test_restart_stops_and_starts_a_running_container_keeping_its_logs(
    node: StandaloneContainers,
) -> None:
    ok("run", "-d", "--name", "r1", "busybox", "sh", "-c", "echo up; sleep 1000")
    eventually("the first line", lambda: ok("logs", "r1") == "up\n")
    first = state("r1")
    # Real: prints the name given, exit 0; the container runs again, RestartCount stays 0
    # (it counts restart-policy restarts only), the logs of both runs are kept.
    assert ok("restart", "-t", "1", "r1") == "r1\n"
    again = state("r1")
    assert again["Status"] == "running" and again["Running"] is True
    assert again["StartedAt"] > first["StartedAt"] and again["Pid"] != first["Pid"]
    assert ok("inspect", "--format", "{{.RestartCount}}", "r1") == "0\n"
    eventually("the second run's line", lambda: ok("logs", "r1") == "up\nup\n")
    # Real dockerd's events for a restart of a running container, in this order.
    assert actions(node, "r1")[-5:] == ["kill", "die", "stop", "start", "restart"]


def test_an_exited_container_starts_again_with_start_or_restart(
    node: StandaloneContainers,
) -> None:
    ok("run", "-d", "--name", "once", "busybox", "echo", "hello")
    eventually("the exit", lambda: state("once")["Status"] == "exited")
    assert ok("start", "once") == "once\n"
    eventually("two runs", lambda: ok("logs", "once") == "hello\nhello\n")
    eventually("the second exit", lambda: state("once")["Status"] == "exited")
    assert ok("restart", "once") == "once\n"
    eventually("three runs", lambda: ok("logs", "once") == "hello\nhello\nhello\n")
    # Real: a restart of a stopped container is a start then `restart` (no kill/stop).
    assert actions(node, "once")[-3:-1] == ["start", "restart"]
    assert state("once")["ExitCode"] == 0


def test_restart_keeps_a_container_run_with_rm(node: StandaloneContainers) -> None:
    # Real: `docker run -d --rm` then `docker restart`: it runs again ("Up 1 second").
    ok("run", "-d", "--rm", "--name", "gone-later", "busybox", "sleep", "1000")
    assert ok("restart", "-t", "1", "gone-later") == "gone-later\n"
    assert state("gone-later")["Status"] == "running"
    ok("stop", "-t", "1", "gone-later")  # a stop still removes it
    eventually("the removal", lambda: docker("inspect", "gone-later").returncode != 0)


def test_restart_of_a_missing_container_says_so() -> None:
    with served_containers(HOST, PORT):
        assert "Error response from daemon: No such container: nosuch" in refused(
            "restart", "nosuch"
        )


def test_rename_changes_the_name_everywhere_and_refuses_what_dockerd_refuses(
    node: StandaloneContainers,
) -> None:
    c1 = ok("run", "-d", "--name", "c1", "busybox", "sleep", "1000").strip()
    c2 = ok("run", "-d", "--name", "c2", "busybox", "sleep", "1000").strip()
    assert ok("rename", "c1", "c1b") == ""  # real: no output, exit 0
    assert ok("inspect", "--format", "{{.Name}}", c1) == "/c1b\n"
    assert sorted(ok("ps", "--format", "{{.Names}}").split()) == ["c1b", "c2"]
    renamed = [e for e in node.runtime.events.kept() if e.action == "rename"]
    assert [(e.attributes["name"], e.attributes["oldName"]) for e in renamed] == [("c1b", "/c1")]
    # Real dockerd 20.10's answers, word for word (the CLI adds its own last line).
    assert (
        "Error response from daemon: Error when allocating new name: Conflict. The container "
        f'name "/c2" is already in use by container "{c2}". You have to remove (or rename) '
        "that container to be able to reuse that name." in refused("rename", "c1b", "c2")
    )
    assert "Renaming a container with the same name as its current name" in refused(
        "rename", "c1b", "c1b"
    )
    assert "Error response from daemon: No such container: nosuch" in refused(
        "rename", "nosuch", "x"
    )
    assert (
        "Error when allocating new name: Invalid container name (/bad name), only "
        "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed" in refused("rename", "c1b", "bad name")
    )
    # The old name is free again, the new one taken.
    ok("run", "-d", "--name", "c1", "busybox", "true")
    assert "is already in use" in refused("run", "-d", "--name", "c1b", "busybox", "true")
