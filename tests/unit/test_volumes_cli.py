"""`docker volume create/ls/inspect/rm` and volumes mounted by `docker run` (`-v NAME:/path`,
`--mount type=volume`, anonymous `-v /path`) with the real docker CLI against a node's API
on 127.77.218.4; what a real dockerd 20.10 printed for the same commands is quoted in each
test. And the node's volumes kept in its state directory across a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from served_api import DockerAt, served_containers, worker_port

from controlplane.agent.standalone import StandaloneContainers
from controlplane.agent.volumes import Volumes

HOST, PORT = "127.77.218.4", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok
refused = docker.refused


@pytest.fixture
def node() -> Iterator[StandaloneContainers]:
    with served_containers(HOST, PORT) as registry:
        yield registry


def inspect(*args: str) -> Any:
    return json.loads(ok(*args))


def test_create_ls_inspect_rm_as_dockerd(node: StandaloneContainers) -> None:
    assert ok("volume", "create", "data") == "data\n"  # real: the name
    assert ok("volume", "create", "--label", "a=b", "--opt", "size=1m", "lab2") == "lab2\n"
    assert ok("volume", "create", "data") == "data\n"  # an existing name: the same volume
    # Real: "DRIVER    VOLUME NAME" then "local     data" ...
    assert ok("volume", "ls") == "DRIVER    VOLUME NAME\nlocal     data\nlocal     lab2\n"
    (data,) = inspect("volume", "inspect", "data")
    assert list(data) == [
        "CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"
    ]  # fmt: skip
    assert (data["Driver"], data["Labels"], data["Options"], data["Scope"]) == (
        "local", None, None, "local"
    )  # fmt: skip
    assert data["Mountpoint"] == str(node.runtime.volumes.root / "data" / "_data")
    assert Path(data["Mountpoint"]).is_dir()
    (lab2,) = inspect("volume", "inspect", "lab2")
    assert (lab2["Labels"], lab2["Options"]) == ({"a": "b"}, {"size": "1m"})
    assert ok("volume", "ls", "-q", "--filter", "label=a=b") == "lab2\n"
    # Real: "Error response from daemon: get nosuch: no such volume" (inspect and rm).
    assert "Error response from daemon: get nosuch: no such volume" in refused(
        "volume", "inspect", "nosuch"
    )
    assert "get nosuch: no such volume" in refused("volume", "rm", "nosuch")
    assert ok("volume", "rm", "-f", "nosuch") == "nosuch\n"  # real: the name, exit 0
    assert "includes invalid characters for a local volume name" in refused(
        "volume", "create", "bad name"
    )
    assert ok("volume", "rm", "lab2") == "lab2\n"
    assert ok("volume", "ls", "-q") == "data\n"


def test_containers_mount_and_share_volumes(node: StandaloneContainers) -> None:
    v1 = ok("run", "-d", "--name", "v1", "-v", "data:/data", "busybox", "sleep", "1000").strip()
    # Real inspect of `-v data:/data`: Mounts [{"Type":"volume","Name":"data","Source":
    # "<root>/volumes/data/_data","Destination":"/data","Driver":"local","Mode":"z",
    # "RW":true,"Propagation":""}], HostConfig.Binds ["data:/data"].
    (mount,) = inspect("inspect", "--format", "{{json .Mounts}}", "v1")
    source = str(node.runtime.volumes.root / "data" / "_data")
    assert mount == {
        "Type": "volume", "Name": "data", "Source": source, "Destination": "/data",
        "Driver": "local", "Mode": "z", "RW": True, "Propagation": "",
    }  # fmt: skip
    assert inspect("inspect", "--format", "{{json .HostConfig.Binds}}", "v1") == ["data:/data"]
    # What is in the volume, every container that mounts it reads.
    Path(source, "f").write_text("hello\n")
    assert ok("run", "--rm", "-v", "data:/d", "busybox", "cat", "/d/f") == "hello\n"
    assert ok("run", "--rm", "--mount", "type=volume,source=data,target=/m,readonly",
              "busybox", "ls", "/m") == "f\n"  # fmt: skip
    assert ok("exec", "v1", "cat", "/data/f") == "hello\n"
    # A new volume is an empty folder (real: `ls` prints nothing, exit 0).
    assert ok("run", "--rm", "-v", "empty:/e", "busybox", "ls", "/e") == ""
    Path(source, "logs").mkdir()
    Path(source, "logs", "today").write_text("x\n")
    assert (
        ok("exec", "v1", "ls", "/data", "/data/logs") == "/data:\nf\nlogs\n\n/data/logs:\ntoday\n"
    )
    # Real: "Error response from daemon: remove data: volume is in use - [<id>]".
    assert f"remove data: volume is in use - [{v1}]" in refused("volume", "rm", "data")
    assert "volume is in use" in refused("volume", "rm", "-f", "data")  # real: -f too
    ok("rm", "-f", "v1")
    assert ok("volume", "rm", "data") == "data\n"
    assert not Path(source).exists()


def test_anonymous_volumes_go_with_rm_v_and_with_rm(node: StandaloneContainers) -> None:
    ok("run", "-d", "--name", "anon", "-v", "/anon", "busybox", "sleep", "1000")
    (mount,) = inspect("inspect", "--format", "{{json .Mounts}}", "anon")
    # Real: an anonymous volume is named by 64 hex digits and shows mode "".
    assert len(mount["Name"]) == 64 and mount["Mode"] == "" and mount["Destination"] == "/anon"
    assert inspect("inspect", "--format", "{{json .Config.Volumes}}", "anon") == {"/anon": {}}
    assert ok("volume", "ls", "-q") == f"{mount['Name']}\n"
    ok("rm", "-f", "-v", "anon")
    assert ok("volume", "ls", "-q") == ""
    ok("run", "--rm", "-v", "/scratch", "-v", "kept:/kept", "busybox", "true")
    assert ok("volume", "ls", "-q") == "kept\n"  # the named one stays


def test_bind_mounts_and_bad_mounts_are_refused_with_a_reason(
    node: StandaloneContainers,
) -> None:
    assert "Swarmlab does not emulate bind mounts of host paths" in refused(
        "run", "-v", "/etc:/host-etc", "busybox", "true"
    )
    # Real: "docker: Error response from daemon: Duplicate mount point: /x".
    assert "Error response from daemon: Duplicate mount point: /x" in refused(
        "run", "-v", "aa:/x", "--mount", "type=volume,source=bb,target=/x", "busybox", "true"
    )
    # Real: "create b: volume name is too short, names should be at least two alphanumeric
    # characters".
    assert "create b: volume name is too short" in refused("volume", "create", "b")


def test_volumes_are_kept_in_the_nodes_state_directory(tmp_path: Path) -> None:
    """A node restarted on the same state directory finds its volumes and their content."""
    first = Volumes(tmp_path / "volumes")
    volume = first.create("data", labels={"team": "blue"})
    (volume.mountpoint / "f").write_text("kept\n")
    again = Volumes(tmp_path / "volumes")
    (found,) = again.listed()
    assert (found.name, found.labels, found.created_at_ns) == (
        "data", {"team": "blue"}, volume.created_at_ns
    )  # fmt: skip
    assert (found.mountpoint / "f").read_text() == "kept\n"
