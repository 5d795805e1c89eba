"""Secrets and configs of kernel-mode task containers (1 manager + 1 worker at 127.77.168.x,
data paths on the underlay 10.201.168.0/24): the container's real commands, PID 1 and execs,
read its secrets and its configs under /run at Docker's paths, on a tmpfs over /run in the
container's mount namespace (the host's /run untouched), with the reference's mode and owner;
its other configs under $SWARMLAB_FILES; and they go when the task's container exits."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from docker_cli import ok
from kernel_testing import kernel_lab, skip_unless_kernel, unique_tag

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.lab.swarm_lab import until

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]
LAB = 168


def host_run_mounts() -> list[str]:
    """The host's mounts on /run itself (other tests' namespaces come and go under /run/netns)."""
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line for line in mountinfo if line.split()[4] == "/run"]


def test_kernel_task_reads_its_secrets_at_docker_paths(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    prefix = unique_tag("swf")
    host_mounts = host_run_mounts()
    target = f"key-{prefix}"  # no other test's file, were one to leak to the host

    async def scenario() -> None:
        async with kernel_lab(tmp_path, LAB, prefix, workers=1) as lab:
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            ok(manager, "network", "create", "-d", "overlay", "filesnet")
            ok(manager, "secret", "create", "api_key", "-", stdin="k3y\n")
            ok(manager, "config", "create", "motd", "-", stdin="hello\n")
            ok(manager, "config", "create", "settings", "-", stdin="mode=fast\n")
            ok(
                manager, "service", "create", "-d", "--name", "app", "--network", "filesnet",
                "--constraint", "node.role==worker",
                "--secret", f"src=api_key,target={target},mode=0400,uid=1000,gid=1001",
                "--config", "src=motd,target=/etc/motd",
                "--config", f"src=settings,target=/run/{target}/settings",
                "busybox", "sh", "-c", f"cat /run/secrets/{target} && exec sleep 1d",
            )  # fmt: skip

            async def running_container() -> str | None:
                found = ok(worker, "ps", "-q", "--filter", "name=app.").split()
                return found[0] if found else None

            container = await until(running_container, 90, "the task's container running")

            async def pid1_read_it() -> bool | None:
                return True if ok(worker, "logs", container) == "k3y\n" else None

            await until(pid1_read_it, 90, "the container's command printing its secret")
            script = f'cat /run/secrets/{target} /run/{target}/settings "$SWARMLAB_FILES/etc/motd"'
            assert ok(worker, "exec", container, "sh", "-c", script) == "k3y\nmode=fast\nhello\n"
            modes = ok(
                worker, "exec", container, "stat", "-c", "%a %u:%g %n", f"/run/secrets/{target}"
            )
            assert modes == f"400 1000:1001 /run/secrets/{target}\n"  # the reference's, as dockerd
            assert not Path(f"/run/secrets/{target}").exists()
            assert not Path(f"/run/{target}").exists()
            assert host_run_mounts() == host_mounts
            # its /etc files (`ip netns exec`'s) still there under the tmpfs: names resolve
            looked = ok(worker, "exec", container, "nslookup", "app")
            assert "Server:\t\t127.0.0.11" in looked and "Name:\tapp" in looked
            shown = ok(worker, "exec", container, "sh", "-c", "echo $SWARMLAB_FILES")
            directory = Path(shown.strip())
            assert directory.parent == tmp_path / "worker-1" / "task-files"

            ok(manager, "service", "rm", "app")

            async def files_gone() -> bool | None:
                return True if not directory.exists() else None

            await until(files_gone, 90, "the container's files removed when it exits")

    asyncio.run(scenario())
