"""The first stage's mounting of a kernel-mode container's volumes (`containers.mount_script`,
`MOUNT_FUNCTIONS`), without root: the steps in order, parents first, quoted; and the shell
functions' rule for a missing target: made below a tree that is the container's own, never
below a shadow's host entries (run with busybox's sh on a temporary directory)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from controlplane.datapath.kernel.containers import (
    MOUNT_FUNCTIONS,
    ContainerMount,
    Mounts,
    mount_script,
)


def test_steps_mount_parents_first_each_target_made_then_owned() -> None:
    mounts = Mounts(
        Path("/stage"),
        (
            ContainerMount("/data/logs", Path("/vols/logs/_data")),
            ContainerMount("/my data", Path("/vols/d/_data"), read_only=True),
            ContainerMount("/data", Path("/vols/data/_data")),
            ContainerMount("/scratch"),
        ),
    )
    definitions, steps = mount_script(mounts, run_is_own=True)
    assert definitions.startswith("STAGE=/stage; shadows=0; shadowed=; owned=/run\n")
    assert MOUNT_FUNCTIONS in definitions
    assert steps.split(" && ")[:-1] == [
        "point /data", "mount -o bind /vols/data/_data /data", "own /data",
        "point /data/logs", "mount -o bind /vols/logs/_data /data/logs", "own /data/logs",
        "point '/my data'", "mount -o bind /vols/d/_data '/my data'",
        "mount -o remount,bind,ro '/my data'", "own '/my data'",
        "point /scratch", "mount -t tmpfs -o nosuid,nodev tmpfs /scratch", "own /scratch",
    ]  # fmt: skip
    assert mount_script(Mounts(Path("/stage"), ()), run_is_own=False) == ("", "")


def shell(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["busybox", "sh", "-c", f"{MOUNT_FUNCTIONS}\n{script}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox is not installed")
def test_a_missing_target_below_an_owned_tree_is_made_there(tmp_path: Path) -> None:
    (tmp_path / "vol" / "sub").mkdir(parents=True)
    done = shell(
        f"shadowed=; owned={tmp_path}/vol\n"
        f'point {tmp_path}/vol/sub/a/b && point {tmp_path}/vol/sub && echo "$owned"'
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "vol" / "sub" / "a" / "b").is_dir()
    assert done.stdout.split() == [f"{tmp_path}/vol", f"{tmp_path}/vol/sub/a"]


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox is not installed")
def test_ours_is_an_owned_tree_or_a_shadow_itself_not_its_entries(tmp_path: Path) -> None:
    done = shell(
        'shadowed="$nl/shadow"; owned="$nl/own"\n'
        "for d in /own /own/x /shadow /shadow/x /ownx /; do "
        'ours "$d" && echo "$d yes" || echo "$d no"; done'
    )
    assert done.stdout.splitlines() == [
        "/own yes", "/own/x yes", "/shadow yes", "/shadow/x no", "/ownx no", "/ no",
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox is not installed")
def test_a_target_that_is_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done = shell(f"point {tmp_path}/file")
    assert done.returncode == 1
    assert f"mount target {tmp_path}/file exists and is not a directory" in done.stderr
