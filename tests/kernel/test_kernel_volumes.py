"""Volumes and tmpfs mounts of kernel-mode containers (1 manager at 127.77.247.x, its data
path on the underlay 10.201.247.0/24, namespaces `swf3...`) with the real docker CLI: what one
`docker run -v vol:/path` writes the next one reads, and so does a service's task mounting the
volume (its command and `docker exec` alike); `:ro` is read-only; a tmpfs mount is writable;
a volume below another gets its target made in the outer one, as in Docker;
targets missing from the host (top-level and deeper) are made in the container's mount
namespace only: the host's file system is left as it was."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from docker_cli import docker, ok
from kernel_testing import kernel_lab, skip_unless_kernel, unique_tag

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.lab.swarm_lab import until

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]
LAB = 247


def test_kernel_containers_share_volumes_without_touching_the_host(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    prefix = unique_tag("swf3")
    top = f"/{prefix}-data"  # missing on the host: made under the container's own root
    deep = f"/var/lib/{prefix}/cache"  # missing below an existing directory
    assert not Path(top).exists() and not Path(deep).parent.exists()
    assert not Path(f"/{prefix} spaced").exists()

    async def scenario() -> None:
        async with kernel_lab(tmp_path, LAB, prefix) as lab:
            node = lab.node("manager-1")
            ok(node, "network", "create", "-d", "overlay", "--attachable", "vn")
            run = ("run", "--rm", "--network", "vn")
            ok(node, *run, "-v", f"vol:{top}", "busybox", "sh", "-c",
               f"echo hello > {top}/greeting")  # fmt: skip
            assert ok(node, *run, "-v", f"vol:{top}:ro", "busybox", "cat",
                      f"{top}/greeting") == "hello\n"  # fmt: skip
            readonly = docker(node, *run, "-v", f"vol:{top}:ro", "busybox", "sh", "-c",
                              f"echo no > {top}/other")  # fmt: skip
            assert readonly.returncode == 1 and "Read-only file system" in readonly.stderr
            mountpoint = ok(node, "volume", "inspect", "-f", "{{.Mountpoint}}", "vol").strip()
            assert (Path(mountpoint) / "greeting").read_text() == "hello\n"
            script = f"echo t > /scratch/t && cat /scratch/t {deep}/greeting && ls /usr/bin/env"
            both = ok(node, *run, "-v", f"vol:{deep}", "--mount", "type=tmpfs,target=/scratch",
                      "busybox", "sh", "-c", script)  # fmt: skip
            assert both == "t\nhello\n/usr/bin/env\n"
            # a volume below another: its target made in the outer volume, as Docker does; a
            # target with a space
            nested = ok(node, *run, "-v", f"vol:{top}", "-v", f"logs:{top}/logs", "--mount",
                        f"type=tmpfs,target=/{prefix} spaced", "busybox", "sh", "-c",
                        f"echo l > {top}/logs/l && echo s > '/{prefix} spaced/s' && "
                        f"cat {top}/logs/l '/{prefix} spaced/s'")  # fmt: skip
            assert nested == "l\ns\n"
            logs = ok(node, "volume", "inspect", "-f", "{{.Mountpoint}}", "logs").strip()
            assert (Path(logs) / "l").read_text() == "l\n"
            assert (Path(mountpoint) / "logs").is_dir()

            ok(node, "service", "create", "-d", "--name", "reader", "--network", "vn",
               "--mount", f"type=volume,source=vol,target={top}", "busybox", "sh", "-c",
               f"cat {top}/greeting && exec sleep 1000")  # fmt: skip

            async def reader_running() -> str | None:
                found = ok(node, "ps", "-q", "--filter", "name=reader.").split()
                return found[0] if found else None

            task = await until(reader_running, 90, "the reader task's container running")

            async def logged() -> bool | None:
                return True if ok(node, "logs", task) == "hello\n" else None

            await until(logged, 60, "the task's command reading the volume")
            assert ok(node, "exec", task, "cat", f"{top}/greeting") == "hello\n"
            ok(node, "exec", task, "sh", "-c", f"echo from-task > {top}/reply")
            assert (Path(mountpoint) / "reply").read_text() == "from-task\n"
            ok(node, "service", "rm", "reader")

    asyncio.run(scenario())
    assert not Path(top).exists() and not Path(deep).parent.exists()
    assert not Path(f"/{prefix} spaced").exists()
