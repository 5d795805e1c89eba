"""Raw `docker inspect` of a container with the real docker CLI, side by side with what a
real dockerd 20.10 printed for the same commands (tests/compat/container_inspect_dockerd.json,
recorded by `bench/container_inspect.py --record`): the same fields in the same order, the
same values but for what differs on purpose (`tests/inspect_fields.py`); the settings tools
read with `--format`, the json-file log at `LogPath`, restart policies, and dockerd's
refusals. Standalone containers on 127.77.188.1 (a node's containers API in-process), a
service's task container on an in-process node at 127.77.188.2+."""

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
from tests.inspect_fields import CASES, differences, recorded
from tests.unit.in_process_node import run_manager

HOST, PORT = "127.77.188.1", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok
DEADLINE = 30.0
DOCKERD = recorded()


def compare_with_dockerd(case: str, ours: dict[str, Any]) -> None:
    assert differences(case, DOCKERD[case], ours) == []


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
    ok(*CASES["plain"])
    ours = inspect("plain")
    compare_with_dockerd("plain", ours)
    # its files are in its folder, named as dockerd names them
    folder = Path(ours["LogPath"]).parent
    assert folder.name == ours["Id"] and Path(ours["LogPath"]).name == f"{ours['Id']}-json.log"
    assert Path(ours["HostnamePath"]).read_text() == f"{ours['Id'][:12]}\n"
    assert "localhost" in Path(ours["HostsPath"]).read_text()
    assert Path(ours["ResolvConfPath"]).is_file()


def test_the_create_options_show_back_as_in_dockerd(node: StandaloneContainers) -> None:
    ok(*CASES["options"])
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

        await asyncio.to_thread(cli, *CASES["task"])
        deadline = time.monotonic() + DEADLINE
        while not (ids := (await asyncio.to_thread(cli, "ps", "-q")).split()):
            assert time.monotonic() < deadline, "no task container"
            await asyncio.sleep(0.1)
        [ours] = json.loads(await asyncio.to_thread(cli, "inspect", ids[0]))
        compare_with_dockerd("task", ours)
        assert Path(ours["LogPath"]).is_relative_to(tmp_path / "containers")

    run_manager(tmp_path, address, scenario)


def test_update_changes_the_restart_policy_as_dockerd(node: StandaloneContainers) -> None:
    """`docker update --restart`: shown at once, acted on at the next exit; dockerd's
    refusals for a `--rm` container, a bad policy and an unknown container; a limit the
    emulation cannot change is refused naming it."""
    plain = ok("run", "-d", "--name", "plain", "busybox", "sleep", "1d").strip()
    assert ok("update", "--restart", "always", "plain") == "plain\n"
    shown = ok("inspect", "--format", "{{json .HostConfig.RestartPolicy}}", "plain")
    assert shown == '{"Name":"always","MaximumRetryCount":0}\n'
    removed = ok("run", "-d", "--rm", "--name", "gone", "busybox", "sleep", "1d").strip()
    assert docker.refused("update", "--restart", "always", "gone") == (
        f"Error response from daemon: Cannot update container {removed}: Restart policy "
        "cannot be updated because AutoRemove is enabled for the container\n"
    )
    assert docker.refused("update", "--restart", "bogus", "plain") == (
        "Error response from daemon: invalid restart policy 'bogus'\n"
    )
    assert docker.refused("update", "--restart", "always", "nosuch") == (
        "Error response from daemon: No such container: nosuch\n"
    )
    assert f"Cannot update container {plain}: Memory cannot be updated" in docker.refused(
        "update", "--memory", "64m", "plain"
    )
    ok("run", "-d", "--name", "failing", "busybox", "sh", "-c", "exit 2")
    eventually(
        "it exited",
        lambda: ok("inspect", "--format", "{{.State.Status}}", "failing") == "exited\n",
    )
    ok("update", "--restart", "on-failure:1", "failing")
    ok("start", "failing")
    template = "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}"
    eventually(
        "one restart, then exited",
        lambda: ok("inspect", "--format", template, "failing") == "exited 1 2\n",
    )


def test_the_image_s_command_and_workdir_show_as_dockerd_merges_them(
    node: StandaloneContainers,
) -> None:
    """dockerd fills Config from the image: its Cmd when none is given (and no entrypoint
    is), its Entrypoint, its WORKDIR (the httpd image's /usr/local/apache2)."""
    template = "{{json .Config.Cmd}} {{json .Config.Entrypoint}} {{json .Config.WorkingDir}}"
    ok("create", "--name", "web", "nginx")
    assert ok("inspect", "--format", template, "web") == (
        '["nginx","-g","daemon off;"] ["/docker-entrypoint.sh"] ""\n'
    )
    ok("create", "--name", "echoer", "nginx", "echo", "hi")
    assert ok("inspect", "--format", template, "echoer") == (
        '["echo","hi"] ["/docker-entrypoint.sh"] ""\n'
    )
    ok("create", "--name", "own", "--entrypoint", "sleep", "nginx")
    assert ok("inspect", "--format", template, "own") == 'null ["sleep"] ""\n'
    ok("create", "--name", "apache", "httpd")
    assert ok("inspect", "--format", template, "apache") == (
        '["httpd-foreground"] null "/usr/local/apache2"\n'
    )
