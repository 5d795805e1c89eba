"""Secrets and configs of kernel-mode task containers (1 manager + 1 worker at 127.77.168.x,
data paths on the underlay 10.201.168.0/24): the container's real commands find them under
$SWARMLAB_FILES at Docker's paths (until a mount namespace puts them at the paths
themselves), with the reference's mode, and they go when the task's container exits."""

from __future__ import annotations

import asyncio
import shutil
import stat
from pathlib import Path

import pytest
from docker_cli import ok
from kernel_testing import skip_unless_kernel, unique_tag

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]
LAB = 168


def test_kernel_task_reads_its_secret_and_config_from_its_own_directory(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    prefix = unique_tag("swf")

    async def scenario() -> None:
        lab = SwarmLab(
            tmp_path, managers=1, workers=1, lab=LAB, datapath="kernel", kernel_prefix=prefix
        )
        try:
            await lab.up()
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            ok(manager, "network", "create", "-d", "overlay", "filesnet")
            ok(manager, "secret", "create", "api_key", "-", stdin="k3y\n")
            ok(manager, "config", "create", "motd", "-", stdin="hello\n")
            ok(
                manager, "service", "create", "-d", "--name", "app", "--network", "filesnet",
                "--constraint", "node.role==worker",
                "--secret", "src=api_key,target=key,mode=0400",
                "--config", "src=motd,target=/etc/motd",
                "busybox", "sleep", "1d",
            )  # fmt: skip

            async def running_container() -> str | None:
                found = ok(worker, "ps", "-q", "--filter", "name=app.").split()
                return found[0] if found else None

            container = await until(running_container, 90, "the task's container running")
            script = 'cat "$SWARMLAB_FILES/run/secrets/key" "$SWARMLAB_FILES/etc/motd"'
            assert ok(worker, "exec", container, "sh", "-c", script) == "k3y\nhello\n"
            shown = ok(worker, "exec", container, "sh", "-c", "echo $SWARMLAB_FILES")
            directory = Path(shown.strip())
            assert directory.parent == tmp_path / "worker-1" / "task-files"
            secret_file = directory / "run" / "secrets" / "key"
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o400

            ok(manager, "service", "rm", "app")

            async def files_gone() -> bool | None:
                return True if not directory.exists() else None

            await until(files_gone, 90, "the container's files removed when it exits")
        finally:
            lab.stop()

    asyncio.run(scenario())
