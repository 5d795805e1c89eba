"""Interactive containers with the real docker CLI on a pseudo-terminal, in a lab of 1 manager
and 2 workers (127.77.186.x): the seed's `docker run -it --network my-net busybox sh` (prompt,
echo, line editing, Ctrl-C, exit status; ping, nslookup, wget and ip addr inside the
container's network), `docker run -i` with piped input, `docker exec [-it]`, `docker
attach`, `docker stop` of an interactive container, and `docker network connect|disconnect`
with Docker's errors for the bad cases."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from docker_cli import Pty, docker, needs_docker_cli, ok

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]

DEADLINE = 60.0
LAB = 186


def fails(node: NodeProcess, *args: str) -> str:
    result = docker(node, *args)
    assert result.returncode != 0, (args, result.stdout)
    return result.stderr.strip()


def test_interactive_containers_exec_attach_and_network_connect(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=LAB)
        try:
            await lab.up()
            manager, w1, w2 = (lab.node(n) for n in ("manager-1", "worker-1", "worker-2"))
            ok(manager, "network", "create", "-d", "overlay", "--attachable", "my-net")
            ok(manager, "network", "create", "-d", "overlay", "noattach")
            ok(w1, "run", "-d", "--name", "web", "--network", "my-net", "nginx")
            [web] = json.loads(ok(w1, "inspect", "web"))
            web_ip = web["NetworkSettings"]["Networks"]["my-net"]["IPAddress"]

            async def reachable() -> bool | None:
                run = docker(w2, "run", "--rm", "--network", "my-net", "busybox",
                             "ping", "-c", "1", "web")  # fmt: skip
                return True if run.returncode == 0 else None

            await until(reachable, DEADLINE, "web answering pings from worker-2")
            await asyncio.to_thread(seed_shell, w2, web_ip)
            await asyncio.to_thread(piped_and_exec, w1)
            await asyncio.to_thread(connect_and_disconnect, w1, w2)
            await asyncio.to_thread(attach_and_stop, w1)
        finally:
            lab.stop()

    asyncio.run(scenario())


def seed_shell(node: NodeProcess, web_ip: str) -> None:
    shell = Pty(node, "run", "-it", "--network", "my-net", "--name", "shell", "busybox", "sh")
    shell.expect(b"/ # ")
    shell.type(b"ping -c 1 web\r")
    assert f"64 bytes from {web_ip}".encode() in shell.expect(b"1 packets received")
    shell.type(b"nslookup web\r")
    shell.expect(f"Address: {web_ip}".encode())
    shell.type(b"wget -qO- http://web\r")
    shell.expect(b"Welcome to nginx!")
    shell.expect(b"</html>\r\n/ # ")
    shell.type(b"ip addr show eth0\r")
    shell.expect(b"mtu 1450 qdisc noqueue")
    shell.expect(f"inet {web_ip.rpartition('.')[0]}.".encode())
    shell.type(b"hostnamx\x7fe\r")  # a typo erased with Backspace
    shell.expect(b"hostnamx\x08\x1b[Je\r\n")
    shell.expect(b"\r\n/ # ")
    shell.type(b"sleep 1000\r")
    shell.expect(b"sleep 1000\r\n")
    shell.type(b"\x03")
    shell.expect(b"^C\r\n/ # ")
    shell.type(b"echo status $?\r")
    shell.expect(b"status 130\r\n/ # ")
    shell.type(b"exit 3\r")
    assert shell.wait() == 3
    assert ok(node, "inspect", "-f", "{{.State.ExitCode}}", "shell") == "3\n"
    ok(node, "rm", "shell")


def piped_and_exec(node: NodeProcess) -> None:
    hostname = ok(node, "run", "-i", "--rm", "busybox", "sh", stdin="hostname\nexit 0\n")
    assert len(hostname.strip()) == 12
    ok(node, "run", "-d", "--name", "lonely", "busybox", "sleep", "1000")
    hostname = ok(node, "inspect", "-f", "{{.Config.Hostname}}", "lonely")
    assert ok(node, "exec", "lonely", "hostname") == hostname
    failing = docker(node, "exec", "lonely", "sh", "-c", "echo out; echo err; exit 5")
    assert (failing.returncode, failing.stdout) == (5, "out\nerr\n")
    missing = docker(node, "exec", "lonely", "nosuch")
    assert missing.returncode == 126
    assert 'exec: "nosuch": executable file not found in $PATH' in missing.stdout
    assert ok(node, "exec", "-e", "X=42", "lonely", "printenv", "X") == "42\n"
    assert ok(node, "exec", "-i", "lonely", "sh", stdin="echo piped\n") == "piped\n"
    inner = Pty(node, "exec", "-it", "lonely", "sh")
    inner.expect(b"/ # ")
    inner.type(b"hostname\r")
    inner.expect(b"\r\n/ # ")
    inner.type(b"exit 4\r")
    assert inner.wait() == 4
    stopped = ok(node, "create", "busybox", "true").strip()
    assert fails(node, "exec", stopped, "true") == (
        f"Error response from daemon: Container {stopped} is not running"
    )
    assert (
        fails(node, "exec", "nope", "true") == "Error response from daemon: No such container: nope"
    )


def connect_and_disconnect(w1: NodeProcess, w2: NodeProcess) -> None:
    lost = docker(w1, "exec", "lonely", "ping", "-c", "1", "web")
    assert (lost.returncode, lost.stderr) == (1, "ping: bad address 'web'\n")
    ok(w1, "network", "connect", "--alias", "buddy", "my-net", "lonely")
    assert "1 packets received" in ok(w1, "exec", "lonely", "ping", "-c", "1", "web")
    [lonely] = json.loads(ok(w1, "inspect", "lonely"))
    lonely_ip = lonely["NetworkSettings"]["Networks"]["my-net"]["IPAddress"]
    for name in ("lonely", "buddy"):
        found = ok(w2, "run", "--rm", "--network", "my-net", "busybox", "nslookup", name)
        assert f"Address: {lonely_ip}" in found

    daemon = "Error response from daemon: "
    assert fails(w1, "network", "connect", "my-net", "lonely") == (
        f"{daemon}lonely is already attached to network my-net"
    )
    assert fails(w1, "network", "connect", "noattach", "lonely") == (
        f"{daemon}Could not attach to network noattach: rpc error: code = PermissionDenied "
        "desc = network noattach not manually attachable"
    )
    assert fails(w1, "network", "connect", "nonet", "lonely") == (
        f"{daemon}Could not attach to network nonet: rpc error: code = NotFound "
        "desc = network nonet not found"
    )
    assert fails(w1, "network", "connect", "my-net", "nope") == f"{daemon}No such container: nope"

    ok(w1, "network", "disconnect", "my-net", "lonely")
    gone = docker(w1, "exec", "lonely", "ping", "-c", "1", "web")
    assert (gone.returncode, gone.stderr) == (1, "ping: bad address 'web'\n")
    unknown = docker(w2, "run", "--rm", "--network", "my-net", "busybox", "nslookup", "lonely")
    assert unknown.returncode == 1 and "NXDOMAIN" in unknown.stdout
    assert fails(w1, "network", "disconnect", "my-net", "lonely") == (
        f"{daemon}container {lonely['Id']} is not connected to network my-net"
    )
    assert fails(w1, "network", "disconnect", "my-net", "nope") == (
        f"{daemon}No such container: nope"
    )


def attach_and_stop(node: NodeProcess) -> None:
    ok(node, "run", "-dit", "--name", "ish", "busybox", "sh")
    attached = Pty(node, "attach", "ish")
    attached.expect(b"/ # ")  # the shell redraws its prompt when the CLI sets the size
    attached.type(b"echo attached\r")
    attached.expect(b"attached\r\n/ # ")
    attached.type(b"exit 7\r")
    assert attached.wait() == 7
    ok(node, "run", "-dit", "--name", "ish2", "busybox", "sh")
    ok(node, "stop", "-t", "1", "ish2")  # sh as PID 1 ignores SIGTERM: killed
    assert ok(node, "inspect", "-f", "{{.State.ExitCode}}", "ish2") == "137\n"
