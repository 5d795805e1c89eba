"""busybox `ls` in an emulated container: its secrets and configs with the owner and mode of
their references, in busybox's columns (as `ls -l /run/secrets` shows them under dockerd)."""

from __future__ import annotations

import asyncio
import time

from controlplane.agent.ls import ls
from controlplane.agent.process import Exec
from controlplane.agent.task_files import TaskFile

WRITTEN_NS = int(time.mktime((2026, 11, 28, 15, 44, 0, 0, 0, -1)) * 1e9)
FILES = {
    f.path: f.stamped(WRITTEN_NS)
    for f in (
        TaskFile("/etc/hostname", b"box\n", mode=0o644),
        TaskFile("/run/secrets/s1", b"hello", "1000", "1000", 0o400),
        TaskFile("/run/secrets/plain", b"two", mode=0o444),
        TaskFile("/run/secrets/zero", b"", mode=0),
        TaskFile("/etc/app/c2.conf", b"cfg", "5", "6", 0o600),
    )
}


def run_ls(*args: str) -> tuple[int, list[str], list[str]]:
    out = bytearray()
    err = bytearray()
    process = Exec(
        env={},
        hostname="box",
        files={},
        stdout=out.extend,
        stderr=err.extend,
        spawn=lambda p, a: asyncio.sleep(0, result=0),
        container_files=FILES,
    )
    status = asyncio.run(ls(process, ["ls", *args]))
    return status, out.decode().splitlines(), err.decode().splitlines()


def test_long_listing_shows_each_references_owner_and_mode_in_busybox_columns() -> None:
    status, out, err = run_ls("-l", "/run/secrets")
    assert (status, err) == (0, [])
    assert out == [
        "total 8",  # a tmpfs page for each non-empty file
        "-r--r--r--    1 root     root             3 Nov 28 15:44 plain",
        "-r--------    1 1000     1000             5 Nov 28 15:44 s1",
        "----------    1 root     root             0 Nov 28 15:44 zero",  # API Mode 0
    ]
    status, out, _ = run_ls("-ln", "/etc/app/c2.conf")
    assert out == ["-rw-------    1 5        6                3 Nov 28 15:44 /etc/app/c2.conf"]


def test_folders_names_several_paths_and_errors() -> None:
    assert run_ls("/run")[1] == ["secrets"]
    status, out, _ = run_ls("-la", "/etc")
    assert out[0] == "total 16"  # three folders and a file
    assert [line.split()[-1] for line in out[1:]] == [".", "..", "app", "hostname"]
    assert out[3].startswith("drwxr-xr-x    2 root     root          4096 ")
    status, out, err = run_ls("/run/secrets/s1", "/nope", "/etc/app")
    assert status == 1
    assert err == ["ls: /nope: No such file or directory"]
    assert out == ["/run/secrets/s1", "", "/etc/app:", "c2.conf"]
    status, _, err = run_ls("-Z")
    assert status == 1 and err[0] == "ls: unrecognized option: Z"
