"""The agent's side of secrets and configs: what the session keeps from the assignments, the
files a task's container gets (and where), a task whose secret never came, and kernel-mode
containers' files on disk."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from log_texts import texts

from controlplane.agent.runtime import ContainerConfig, Runtime
from controlplane.agent.task_files import (
    MissingFileError,
    TaskFile,
    TaskFiles,
    remove_tree,
    write_tree,
)
from controlplane.agent.worker import Worker
from controlplane.node import NodeOptions, SwarmNode
from controlplane.pb.dispatcher_pb2 import Assignment, AssignmentChange
from controlplane.pb.objects_pb2 import Config, Network, Secret, Task
from tests.unit.test_worker import Reports, eventually, task


def secret(secret_id: str, data: bytes) -> Secret:
    s = Secret(id=secret_id)
    s.spec.annotations.name = f"name-{secret_id}"
    s.spec.data = data
    return s


def config(config_id: str, data: bytes) -> Config:
    c = Config(id=config_id)
    c.spec.annotations.name = f"name-{config_id}"
    c.spec.data = data
    return c


def update(assignment: Assignment) -> AssignmentChange:
    return AssignmentChange(action=AssignmentChange.ACTION_UPDATE, assignment=assignment)


def with_refs(t: Task) -> Task:
    ref = t.spec.container.secrets.add(secret_id="s1", secret_name="name-s1")
    ref.file.name, ref.file.uid, ref.file.gid, ref.file.mode = "db_pass", "1000", "1000", 0o400
    abs_ref = t.spec.container.secrets.add(secret_id="s2", secret_name="name-s2")
    abs_ref.file.name = "/etc/ssl/key.pem"
    abs_ref.file.mode = 0o400
    t.spec.container.configs.add(config_id="c1", config_name="name-c1").file.name = "app.conf"
    return t


def test_the_session_keeps_what_the_changes_say_and_paths_follow_docker() -> None:
    files = TaskFiles()
    assert files.apply(update(Assignment(secret=secret("s1", b"hunter2\n"))))
    assert files.apply(update(Assignment(secret=secret("s2", b"KEY"))))
    assert files.apply(update(Assignment(config=config("c1", b"listen 80;\n"))))
    assert not files.apply(update(Assignment(network=Network(id="n1"))))  # not ours
    t = with_refs(task("t1", "busybox"))
    assert files.files_for(t) == [
        TaskFile("/run/secrets/db_pass", b"hunter2\n", "1000", "1000", 0o400),
        TaskFile("/etc/ssl/key.pem", b"KEY", mode=0o400),
        # a relative config target is from the root; an API body's Mode 0 is 0000, as dockerd's
        TaskFile("/app.conf", b"listen 80;\n", mode=0),
    ]
    removed = AssignmentChange(
        action=AssignmentChange.ACTION_REMOVE, assignment=Assignment(secret=Secret(id="s2"))
    )
    assert files.apply(removed)
    with pytest.raises(MissingFileError, match=r"^secret name-s2 \(s2\) not found$"):
        files.files_for(t)
    files.clear()
    assert files.secrets == {} and files.configs == {}


def test_a_task_container_reads_its_files_and_a_task_without_them_is_rejected() -> None:
    async def scenario() -> None:
        files = TaskFiles()
        for assignment in (
            Assignment(secret=secret("s1", b"hunter2\n")),
            Assignment(secret=secret("s2", b"KEY")),
            Assignment(config=config("c1", b"listen 80;\n")),
        ):
            files.apply(update(assignment))
        reports = Reports()
        worker = Worker(Runtime(), reports, stop_grace=0.1, files=files)
        script = "cat /run/secrets/db_pass /app.conf /etc/hostname; cat /run/secrets/nope"
        reading = with_refs(task("t1", "busybox", "sh", "-c", script))
        orphan = task("t2", "busybox", "true")
        orphan.spec.container.secrets.add(secret_id="gone", secret_name="old")
        worker.reconcile({"t1": reading, "t2": orphan}, {})
        await eventually("t1 ended", lambda: "failed" in reports.states("t1"))
        container = worker.runtime.get(reports.last("t1").container_id)
        assert texts(container.logs) == [
            "hunter2",
            "listen 80;",
            container.hostname,
            "cat: can't open '/run/secrets/nope': No such file or directory",
        ]
        await eventually("t2 rejected", lambda: "rejected" in reports.states("t2"))
        assert reports.last("t2").err == "secret old (gone) not found"
        await worker.close()

    asyncio.run(scenario())


def test_kernel_mode_files_are_written_under_a_directory_of_their_own(tmp_path: Path) -> None:
    files = [
        TaskFile("/run/secrets/db_pass", b"hunter2\n", "1000", "1001", mode=0o400),
        TaskFile("/etc/app.conf", b"listen 80;\n"),
        TaskFile("/run/secrets/zero", b"z", mode=0),
    ]
    write_tree(files, tmp_path / "c1")
    secret_file = tmp_path / "c1" / "run" / "secrets" / "db_pass"
    assert secret_file.read_bytes() == b"hunter2\n"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o400
    assert stat.S_IMODE(os.stat(secret_file.with_name("zero")).st_mode) == 0
    if os.geteuid() == 0:  # the kernel data path's nodes run as root: the owner is the ref's
        owner = os.stat(secret_file)
        assert (owner.st_uid, owner.st_gid) == (1000, 1001)
    assert (tmp_path / "c1" / "etc" / "app.conf").read_bytes() == b"listen 80;\n"
    # private on the host; inside, Docker's folder modes, which a kernel container's copy keeps
    assert stat.S_IMODE(os.stat(tmp_path / "c1").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(secret_file.parent).st_mode) == 0o755
    remove_tree(tmp_path / "c1")
    assert not (tmp_path / "c1").exists()


def test_targets_stay_inside_the_container_root(tmp_path: Path) -> None:
    """A target climbing out with `..` lands where Docker puts it, inside the container's
    root: never outside the kernel-mode container's directory on the host."""
    files = TaskFiles()
    files.apply(update(Assignment(secret=secret("s1", b"hunter2\n"))))
    files.apply(update(Assignment(config=config("c1", b"x\n"))))
    t = task("t1", "busybox")
    t.spec.container.secrets.add(
        secret_id="s1", secret_name="name-s1"
    ).file.name = "../../../../../escaped-secret"
    t.spec.container.configs.add(
        config_id="c1", config_name="name-c1"
    ).file.name = "/etc/../../../../escaped-config"
    paths = [f.path for f in files.files_for(t)]
    assert paths == ["/escaped-secret", "/escaped-config"]
    climbing = [TaskFile("/run/secrets/../../../../../escaped", b"x"), TaskFile("//twice", b"y")]
    write_tree(climbing, tmp_path / "root" / "c1")
    assert (tmp_path / "root" / "c1" / "escaped").read_bytes() == b"x"
    assert (tmp_path / "root" / "c1" / "twice").read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["c1"]


def test_the_runtime_table_holds_etc_files_then_the_tasks() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        container = runtime.create(
            ContainerConfig(
                image="busybox",
                hostname="h1",
                files=[TaskFile("/etc/hostname", b"overridden\n")],
            )
        )
        assert container.container_files["/etc/hostname"].data == b"overridden\n"
        assert b"localhost" in container.container_files["/etc/hosts"].data

    asyncio.run(scenario())


def test_a_node_forgets_the_files_a_killed_process_left(tmp_path: Path) -> None:
    """Kernel-mode files of containers of a SIGKILLed node process (no exit path ran) are gone
    once the node starts again: its containers did not survive the process."""
    stale = tmp_path / "task-files" / "0123abcd" / "run" / "secrets" / "pw"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"hunter2\n")

    async def main() -> None:
        node = SwarmNode(NodeOptions(tmp_path, "127.77.175.1"))
        await node.start()
        try:
            assert not (tmp_path / "task-files").exists()
        finally:
            await node.stop()

    asyncio.run(main())
