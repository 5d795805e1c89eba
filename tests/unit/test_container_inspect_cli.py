"""Raw `docker inspect` of a container with the real docker CLI, side by side with what a
real dockerd 20.10 printed for the same commands (tests/compat/container_inspect_dockerd.json,
recorded with the same CLI against a dockerd in a network namespace of its own): the same
fields in the same order, the same values but for what differs on purpose (asserted as
such); the settings tools read with `--format`, the json-file log at `LogPath`, restart
policies, and dockerd's refusals. Standalone containers on 127.77.188.1 (a node's containers
API in-process), a service's task container on an in-process node at 127.77.188.2+."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from served_api import DockerAt, docker_at, served_containers, worker_port

from controlplane.agent.standalone import StandaloneContainers
from controlplane.datapath.host_ports import DEFAULT_BRIDGE, HostPorts
from tests.unit.in_process_node import run_manager

HOST, PORT = "127.77.188.1", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok
DEADLINE = 30.0
RECORDED = Path(__file__).parent.parent / "compat" / "container_inspect_dockerd.json"
CASES: dict[str, Any] = json.loads(RECORDED.read_text())["cases"]

# What differs on purpose, by path: ids, times, process ids, the host's folders, and
# the emulation's own storage driver (`docker info` says swarmlab), cgroup namespace mode
# (dockerd's default on cgroup v2, which the emulation's `docker info` says; the recording
# machine was on v1) and the image's PATH (the recorded busybox was imported with PATH=/bin).
# SandboxID/SandboxKey: an emulated container has no network namespace file.
VARYING = {
    "/Id", "/Created", "/State/Pid", "/State/StartedAt", "/Image", "/ResolvConfPath",
    "/HostnamePath", "/HostsPath", "/LogPath", "/Config/Hostname", "/Config/Env",
    "/NetworkSettings/SandboxID", "/NetworkSettings/SandboxKey",
    "/NetworkSettings/EndpointID", "/Mounts", "/NetworkSettings/Networks",
    "/Config/Labels", "/Name",
    "/NetworkSettings/Ports",  # the recording dockerd published on :: too (IPv4 only here)
    "/NetworkSettings/IPAddress", "/NetworkSettings/MacAddress",  # what else ran before
}  # fmt: skip
ON_PURPOSE = {
    "/Driver": ("overlay2", "swarmlab"),
    "/GraphDriver/Name": ("overlay2", "swarmlab"),
    "/HostConfig/CgroupnsMode": ("host", "private"),
}


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every field's path in order, with its value where it is not an object (the objects
    whose keys are data, ports, labels, networks, log options, are leaves too)."""
    if isinstance(value, dict) and not path.endswith(
        ("Labels", "Networks", "Ports", "PortBindings", "ExposedPorts", "Volumes", "Data")
    ):
        out: list[tuple[str, Any]] = [(path, None)] if path else []
        for key, inner in value.items():
            out += leaves(inner, f"{path}/{key}")
        return out
    return [(path, value)]


def compare_with_dockerd(case: str, ours: dict[str, Any]) -> None:
    theirs = dict(leaves(CASES[case]["inspect"]))
    mine = dict(leaves(ours))
    assert list(mine) == list(theirs), f"{case}: fields or their order differ"
    for path, value in theirs.items():
        if path in VARYING or any(path.startswith(f"{v}/") for v in VARYING):
            continue
        if case == "task" and path.startswith("/NetworkSettings/"):
            continue  # dockerd puts a task on no network on docker0; the emulation does not
        if path == "/GraphDriver/Data":  # the emulation's driver has no layer folders
            assert mine[path] == {}
            continue
        if path in ON_PURPOSE:
            assert (value, mine[path]) == ON_PURPOSE[path], path
            continue
        assert mine[path] == value, f"{case}: {path}: dockerd {value!r}, ours {mine[path]!r}"


def inspect(ref: str) -> dict[str, Any]:
    [found] = json.loads(ok("inspect", ref))
    assert isinstance(found, dict)
    return found


def eventually(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)


@pytest.fixture
def node() -> Iterator[StandaloneContainers]:
    with served_containers(HOST, PORT, HostPorts(HOST, DEFAULT_BRIDGE)) as registry:
        ok("pull", "busybox")  # as the recording machine had it
        yield registry


def test_a_plain_run_inspects_as_in_dockerd(node: StandaloneContainers) -> None:
    argv = CASES["plain"]["argv"]
    ok(*argv)
    ours = inspect("plain")
    compare_with_dockerd("plain", ours)
    # its files are in its folder, named as dockerd names them
    folder = Path(ours["LogPath"]).parent
    assert folder.name == ours["Id"] and Path(ours["LogPath"]).name == f"{ours['Id']}-json.log"
    assert Path(ours["HostnamePath"]).read_text() == f"{ours['Id'][:12]}\n"
    assert "localhost" in Path(ours["HostsPath"]).read_text()
    assert Path(ours["ResolvConfPath"]).is_file()


def test_the_create_options_show_back_as_in_dockerd(node: StandaloneContainers) -> None:
    argv = CASES["options"]["argv"]
    ok(*argv)
    compare_with_dockerd("options", inspect("opts"))
    shown = ok(
        "inspect",
        "--format",
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}} "
        "{{.HostConfig.ShmSize}} {{.HostConfig.IpcMode}} {{.HostConfig.LogConfig}} "
        "{{.HostConfig.Runtime}} {{.Config.User}} {{.Config.WorkingDir}}",
        "opts",
    )
    # what the same template printed against dockerd
    dockerd_printed = "on-failure 3 134217728 shareable {json-file map[max-file:3 max-size:10m]}"
    assert shown == f"{dockerd_printed} runc 1000 /tmp\n"


def test_file_paths_are_empty_until_the_first_start(node: StandaloneContainers) -> None:
    ok("create", "--name", "fresh", "busybox", "true")
    template = "{{.ResolvConfPath}}|{{.HostnamePath}}|{{.HostsPath}}|{{.LogPath}}"
    assert ok("inspect", "--format", template, "fresh") == "|||\n"
    ok("start", "fresh")
    assert all(ok("inspect", "--format", template, "fresh").strip().split("|"))


def test_log_path_is_the_json_file_log_and_goes_with_the_container(
    node: StandaloneContainers,
) -> None:
    ok("run", "-d", "--name", "talker", "busybox", "sh", "-c", "echo hi; echo err >&2; sleep 1d")
    log_path = Path(ok("inspect", "--format", "{{.LogPath}}", "talker").strip())

    def lines() -> list[dict[str, str]]:
        text = log_path.read_text() if log_path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    eventually("two lines in the log file", lambda: len(lines()) == 2)
    first, second = lines()
    assert (first["log"], first["stream"], second["log"], second["stream"]) == (
        "hi\n",
        "stdout",
        "err\n",
        "stderr",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", first["time"])
    assert list(first) == ["log", "stream", "time"]  # dockerd's order
    ok("rm", "-f", "talker")
    assert not log_path.parent.exists()


def test_restart_policies_restart_as_dockerd(node: StandaloneContainers) -> None:
    """Measured against dockerd: on-failure:2 of a command exiting 3 ends exited after 2
    restarts; `always` restarts a command that exits 0 until `docker stop`; a `docker kill`
    is not followed by a restart."""
    ok("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 3")
    template = "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}"
    eventually(
        "two restarts, then exited",
        lambda: ok("inspect", "--format", template, "flaky") == "exited 2 3\n",
    )
    ok("run", "-d", "--name", "again", "--restart", "always", "busybox", "true")
    eventually(
        "a restart",
        lambda: int(ok("inspect", "--format", "{{.RestartCount}}", "again")) >= 2,
    )
    # between runs: restarting, and running as dockerd counts it (`docker ps` without -a)
    eventually(
        "docker ps shows it restarting",
        lambda: ok(
            "ps", "--filter", "status=restarting", "--format", "{{.Names}} {{.Status}}"
        ).startswith("again Restarting (0) "),
    )
    assert "again" in ok("ps", "--format", "{{.Names}}").split()
    ok("stop", "-t", "1", "again")
    stopped = ok("inspect", "--format", "{{.State.Status}} {{.RestartCount}}", "again")
    time.sleep(0.5)  # no restart follows (it would, within 0.4 s: its delays are 0.1 s doubled)
    assert ok("inspect", "--format", "{{.State.Status}} {{.RestartCount}}", "again") == stopped
    assert stopped.startswith("exited ")
    ok("run", "-d", "--name", "killed", "--restart", "always", "busybox", "sleep", "1d")
    ok("kill", "killed")
    time.sleep(0.5)
    assert ok("inspect", "--format", template, "killed") == "exited 0 137\n"


def test_bad_settings_are_refused_as_by_dockerd(node: StandaloneContainers) -> None:
    refusals = {
        ("--restart", "bogus"): "invalid restart policy 'bogus'",
        (
            "--restart",
            "always:3",
        ): "maximum retry count cannot be used with restart policy 'always'",
        ("--restart", "on-failure:-1"): "maximum retry count cannot be negative",
        ("--ipc", "container:nope"): "No such container: nope",
        ("--runtime", "nope"): "Unknown runtime specified nope",
        ("--log-driver", "nope"): 'error looking up logging plugin nope: plugin "nope" not found',
        ("--log-opt", "foo=bar"): "unknown log opt 'foo' for json-file log driver",
    }
    for args, words in refusals.items():
        assert docker.refused("create", *args, "busybox", "true") == (
            f"Error response from daemon: {words}\n"
        ), args
    # accepted at create, refused at start
    ok("create", "--name", "ipc", "--ipc", "bogus", "busybox", "true")
    assert "Invalid IPC mode: bogus" in docker.refused("start", "ipc")
    ok("create", "--name", "size", "--log-opt", "max-size=abc", "busybox", "true")
    assert "failed to initialize logging driver: invalid size: 'abc'" in docker.refused(
        "start", "size"
    )
    ok("run", "-d", "--name", "quiet", "--log-driver", "none", "busybox", "echo", "hi")
    assert docker.refused("logs", "quiet") == (
        "Error response from daemon: configured logging driver does not support reading\n"
    )
    assert ok("inspect", "--format", "{{.LogPath}}", "quiet") == "\n"


def test_a_task_container_inspects_as_dockerd_shows_one(tmp_path: Path) -> None:
    address = f"127.77.188.{2 + worker_port(0)}"

    async def scenario(api: str) -> None:
        host, _, port = api.partition(":")

        def cli(*args: str) -> str:
            done = docker_at(host, int(port), *args)
            assert done.returncode == 0, (args, done.stderr)
            return done.stdout

        await asyncio.to_thread(cli, *CASES["task"]["argv"])
        deadline = time.monotonic() + DEADLINE
        while not (ids := (await asyncio.to_thread(cli, "ps", "-q")).split()):
            assert time.monotonic() < deadline, "no task container"
            await asyncio.sleep(0.1)
        [ours] = json.loads(await asyncio.to_thread(cli, "inspect", ids[0]))
        compare_with_dockerd("task", ours)
        assert Path(ours["LogPath"]).is_relative_to(tmp_path / "containers")

    run_manager(tmp_path, address, scenario)
