"""Kernel-mode containers on no overlay and publishing no port (1 manager + 1 worker at
127.77.204.x, data paths on the underlay 10.201.204.0/24, namespaces `kb...`), with the real
docker CLI:

- `docker run -d busybox ...` on no network is a real process in a namespace of its own on
  the node's bridge (its pid in /proc, `docker top` shows it, `docker logs` and `exec`
  work), `docker inspect` gives its address, gateway and MAC on the node's default bridge
  (172.17.0.0/16, as dockerd's docker0), and it reaches that gateway and another node;
- connected to an overlay while running, it keeps its bridge (eth0) and gets eth1;
- `docker run --rm busybox ping` reaches the gateway and is gone after;
- `--network none` has a namespace with only its loopback;
- a service on no network runs its task the same way;
- `docker stop` / `rm` end the process and remove its namespace."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from docker_cli import docker, ok
from kernel_testing import kernel_lab, skip_unless_kernel, unique_tag

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel import namespaces
from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import until

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]
LAB = 204
GATEWAY = "172.17.0.1"  # the node's default bridge (Docker's docker0)
WORKER = "10.201.204.101"


def interfaces(pid: int) -> set[str]:
    """The network interfaces of process `pid`'s namespace (/proc/<pid>/net/dev)."""
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return {line.split(":")[0].strip() for line in lines}


async def running(node: NodeProcess, name: str, command: str) -> int:
    """The host pid of container `name`'s PID 1 once it runs `command` for real."""

    async def found() -> int | None:
        pid = int(ok(node, "inspect", "-f", "{{.State.Pid}}", name))
        comm = Path(f"/proc/{pid}/comm")
        return pid if pid and comm.exists() and comm.read_text().strip() == command else None

    return await until(found, 60, f"{name}'s {command} running as a host process")


async def gone(what: str, check: Callable[[], bool]) -> None:
    async def done() -> bool | None:
        return True if check() else None

    await until(done, 60, what)


def test_containers_on_no_network_are_processes_on_the_bridge(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    prefix = unique_tag("kb")

    async def scenario() -> None:
        async with kernel_lab(tmp_path, LAB, prefix, workers=1) as lab:
            node = lab.node("manager-1")
            node_netns = Path(f"/proc/{node.pid}/ns/net").resolve()

            ok(node, "run", "-d", "--name", "kbsleeper", "busybox",
               "sh", "-c", "echo started; exec sleep 1000")  # fmt: skip
            pid = await running(node, "kbsleeper", "sleep")
            assert Path(f"/proc/{pid}/ns/net").resolve() != node_netns
            assert interfaces(pid) == {"lo", "eth0"}
            top = ok(node, "top", "kbsleeper")
            assert any(line.split()[1] == str(pid) for line in top.splitlines()[1:]), top
            assert "started" in ok(node, "logs", "kbsleeper")

            settings = json.loads(ok(node, "inspect", "-f", "{{json .NetworkSettings}}",
                                     "kbsleeper"))  # fmt: skip
            bridge = settings["Networks"]["bridge"]
            assert bridge["Gateway"] == settings["Gateway"] == GATEWAY, settings
            assert bridge["IPAddress"] == settings["IPAddress"], settings
            assert settings["IPAddress"].startswith("172.17."), settings
            assert settings["IPPrefixLen"] == 16, settings
            assert settings["MacAddress"].startswith("02:42:ac:11:"), settings
            address = ok(node, "exec", "kbsleeper", "ip", "-o", "-4", "addr", "show", "eth0")
            assert f"{settings['IPAddress']}/16" in address, address
            ping = ok(node, "exec", "kbsleeper", "ping", "-c", "1", "-W", "5", GATEWAY)
            assert "1 packets received" in ping, ping
            # off the bridge: to another node, with this node's address (masqueraded)
            ping = ok(node, "exec", "kbsleeper", "ping", "-c", "1", "-W", "5", WORKER)
            assert "1 packets received" in ping, ping

            once = docker(node, "run", "--rm", "busybox", "ping", "-c", "1", "-W", "5",
                          GATEWAY)  # fmt: skip
            assert once.returncode == 0, once.stderr
            assert "1 packets received" in once.stdout, once.stdout

            ok(node, "run", "-d", "--name", "kbnone", "--network", "none", "busybox",
               "sleep", "1000")  # fmt: skip
            isolated = await running(node, "kbnone", "sleep")
            assert Path(f"/proc/{isolated}/ns/net").resolve() != node_netns
            assert interfaces(isolated) == {"lo"}
            none = json.loads(ok(node, "inspect", "-f", "{{json .NetworkSettings}}", "kbnone"))
            assert list(none["Networks"]) == ["none"], none
            assert none["IPAddress"] == "", none

            def left(name: str) -> list[str]:
                return [n for n in namespaces.listed() if n.startswith(prefix) and name in n]

            # connected to an overlay while running: the overlay is its eth1, eth0 stays
            ok(node, "network", "create", "-d", "overlay", "--attachable", "kbnet")
            ok(node, "network", "connect", "kbnet", "kbsleeper")

            async def on_both() -> set[str] | None:
                return interfaces(pid) if interfaces(pid) == {"lo", "eth0", "eth1"} else None

            await until(on_both, 60, "kbsleeper on the bridge and the overlay")
            overlay = ok(node, "exec", "kbsleeper", "ip", "-o", "-4", "addr", "show", "eth1")
            assert " inet 10.0." in overlay, overlay
            ping = ok(node, "exec", "kbsleeper", "ping", "-c", "1", "-W", "5", GATEWAY)
            assert "1 packets received" in ping, ping

            ok(node, "stop", "-t", "1", "kbsleeper")
            await gone("kbsleeper's process ended", lambda: not Path(f"/proc/{pid}").exists())
            await gone("kbsleeper's namespace removed at its exit", lambda: not left("kbsleeper"))
            assert "bridge" not in ok(node, "inspect", "-f", "{{json .NetworkSettings}}",
                                      "kbsleeper")  # fmt: skip
            ok(node, "rm", "kbsleeper")
            ok(node, "rm", "-f", "kbnone")
            await gone("kbnone's namespace removed", lambda: not left("kbnone"))

            ok(node, "service", "create", "-d", "--name", "kbsvc",
               "--constraint", "node.role==manager", "busybox", "sleep", "1000")  # fmt: skip

            async def task_container() -> str | None:
                names = ok(node, "ps", "-q", "--filter", "name=kbsvc").split()
                return names[0] if names else None

            task = await until(task_container, 60, "kbsvc's task container")
            task_pid = await running(node, task, "sleep")
            assert interfaces(task_pid) == {"lo", "eth0"}
            ping = ok(node, "exec", task, "ping", "-c", "1", "-W", "5", GATEWAY)
            assert "1 packets received" in ping, ping
            ok(node, "service", "rm", "kbsvc")
            await gone("kbsvc's task ended", lambda: not Path(f"/proc/{task_pid}").exists())
            await gone("kbsvc's namespace removed", lambda: not left("kbsvc"))

    asyncio.run(scenario())
