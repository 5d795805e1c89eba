"""Kernel-mode containers that behave like containers, with the real docker CLI on a
pseudo-terminal against a kernel-mode lab of one manager (127.77.107.x, underlay
10.201.107.0/24, namespaces `swf...`): `docker run -it` and `docker exec -it` on a real TTY
(prompt, line editing, Ctrl-C, resize, exit status; attach and stop), `-i`
with piped input, the container's own hostname, /etc/hosts, /etc/hostname and resolv.conf,
execs in the container's namespaces (their `Pid` the host's), and `docker top` with the
container's real processes, named as under dockerd (`sleep 1000`, not busybox's path)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import struct
import termios
import time
import urllib.request
from pathlib import Path

import pytest
from docker_cli import SCREEN_DEADLINE, Pty, docker, needs_docker_cli, ok
from kernel_testing import kernel_lab, skip_unless_kernel, unique_tag

from controlplane.datapath.kernel import containers as kcontainers
from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import until

pytestmark = [pytest.mark.timeout(240), needs_docker_cli]
LAB = 107


def test_interactive_containers_hostnames_files_and_top_in_kernel_mode(tmp_path: Path) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    prefix = unique_tag("swf")

    async def scenario() -> None:
        async with kernel_lab(tmp_path, LAB, prefix, workers=0) as lab:
            node = lab.node("manager-1")
            ok(node, "network", "create", "-d", "overlay", "--attachable", "kn")
            ok(node, "run", "-d", "--name", "web", "--network", "kn", "nginx")

            async def web_answers() -> bool | None:
                got = docker(node, "exec", "web", "wget", "-qO-", "http://127.0.0.1/")
                return True if "Welcome to nginx!" in got.stdout else None

            await until(web_answers, 60, "nginx answering in web's namespace")
            await asyncio.to_thread(seed_shell_on_a_tty, node)
            await asyncio.to_thread(exec_on_a_tty_and_piped, node)
            await asyncio.to_thread(attach_and_stop, node)
            await asyncio.to_thread(top_lists_the_container_processes, node)

    asyncio.run(scenario())


def until_size(shell: Pty, size: bytes) -> None:
    """Ask the shell for its terminal's size until it is `size` (a resize is asynchronous)."""
    deadline = time.monotonic() + SCREEN_DEADLINE
    while True:
        asked = shell.matched
        shell.type(b"stty size\r")
        shell.expect(b"\r\n/ # ")
        if b"\r\n" + size + b"\r\n" in shell.screen[asked : shell.matched]:
            return
        assert time.monotonic() < deadline, f"the terminal never got the size {size!r}"


def seed_shell_on_a_tty(node: NodeProcess) -> None:
    shell = Pty(
        node, "run", "-it", "--name", "shell", "--hostname", "box", "--network", "kn",
        "busybox", "sh",
    )  # fmt: skip
    shell.expect(b"/ # ")
    shell.type(b"tty; hostname; cat /etc/hostname\r")
    shell.expect(b"/dev/pts/")
    shell.expect(b"\r\nbox\r\nbox\r\n/ # ")
    [inspected] = json.loads(ok(node, "inspect", "shell"))
    address = inspected["NetworkSettings"]["Networks"]["kn"]["IPAddress"]
    shell.type(b"cat /etc/hosts /etc/resolv.conf\r")
    shell.expect(f"{address}\tbox\r\n".encode())
    shell.expect(b"nameserver 127.0.0.11")
    shell.expect(b"/ # ")
    shell.type(b"wget -qO- http://web\r")
    shell.expect(b"Welcome to nginx!")
    shell.expect(b"</html>\r\n/ # ")
    shell.type(b"ps -o pid,args\r")  # its own PID namespace, with its own /proc
    shell.expect(b"    1 sh\r\n")  # busybox applets, named as the command names them
    shell.expect(b"/ # ")
    assert b"nginx" not in shell.screen[shell.screen.rindex(b"ps -o pid,args") :]
    until_size(shell, b"24 80")  # the create's ConsoleSize
    fcntl.ioctl(shell.master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    os.kill(shell.process.pid, signal.SIGWINCH)  # the CLI sends the new size to the node
    until_size(shell, b"30 100")  # POST /containers/{id}/resize, then TIOCSWINSZ
    shell.type(b"echo typo\x7f\x7f\x7f\x7fok\r")  # erased by busybox's line editor
    shell.expect(b"\r\nok\r\n/ # ")
    shell.type(b"sleep 1000\r")
    shell.expect(b"sleep 1000\r\n")
    deadline = time.monotonic() + SCREEN_DEADLINE
    while "sleep 1000" not in ok(node, "top", "shell"):  # Ctrl-C before it runs is just input
        assert time.monotonic() < deadline, "sleep 1000 never showed in docker top"
    shell.type(b"\x03")
    shell.expect(b"^C")
    shell.expect(b"/ # ")
    shell.type(b"echo status $?\r")
    shell.expect(b"status 130\r\n/ # ")
    shell.type(b"exit 3\r")
    assert shell.wait() == 3
    assert ok(node, "inspect", "-f", "{{.State.ExitCode}}", "shell") == "3\n"
    assert "box" in ok(node, "logs", "shell")  # a TTY's output is the container's log too
    ok(node, "rm", "shell")


def exec_on_a_tty_and_piped(node: NodeProcess) -> None:
    short_id = json.loads(ok(node, "inspect", "web"))[0]["Id"][:12]
    inner = Pty(node, "exec", "-it", "web", "sh")
    inner.expect(b"/ # ")
    # PID 1's whole command line (busybox's ps cuts args at 80 columns: a long checkout path
    # would push the image's name out of them).
    inner.type(b"hostname; tr '\\0' ' ' </proc/1/cmdline; echo\r")
    inner.expect(f"\r\n{short_id}\r\n".encode())
    inner.expect(b"controlplane.agent.kernel_image nginx")  # web's PID 1, seen from the exec
    inner.expect(b"/ # ")
    until_size(inner, b"24 80")  # the CLI sends the exec's size (POST /exec/{id}/resize)
    inner.type(b"exit 4\r")
    assert inner.wait() == 4
    piped = ok(node, "exec", "-i", "web", "sh", stdin="echo piped; hostname\n")
    assert piped == f"piped\n{short_id}\n"
    ran = ok(node, "run", "-i", "--rm", "--network", "kn", "busybox", "sh",
             stdin="cat /etc/hostname\nexit 0\n")  # fmt: skip
    assert len(ran.strip()) == 12, ran
    printed = ok(node, "run", "-t", "--name", "printer", "--network", "kn", "busybox",
                 "sh", "-c", "echo -n no newline")  # fmt: skip
    assert printed == "no newline"
    assert ok(node, "logs", "printer") == "no newline"  # as dockerd: no newline added
    ok(node, "rm", "printer")


def attach_and_stop(node: NodeProcess) -> None:
    ok(node, "run", "-dit", "--name", "ish", "--network", "kn", "busybox", "sh")
    attached = Pty(node, "attach", "ish")
    attached.type(b"echo attached\r")
    attached.expect(b"attached\r\n/ # ")
    attached.type(b"exit 7\r")
    assert attached.wait() == 7
    ok(node, "rm", "ish")
    ok(node, "run", "-dit", "--name", "ish2", "--network", "kn", "busybox", "sh")
    ok(node, "stop", "-t", "1", "ish2")  # sh as PID 1 ignores SIGTERM: killed
    assert ok(node, "inspect", "-f", "{{.State.ExitCode}}", "ish2") == "137\n"
    ok(node, "rm", "ish2")


def top_lists_the_container_processes(node: NodeProcess) -> None:
    ok(node, "run", "-d", "--name", "sleeper", "--network", "kn", "busybox", "sleep", "1000")
    ok(node, "exec", "-d", "sleeper", "sleep", "999")

    def table(*args: str) -> list[str]:
        return ok(node, "top", "sleeper", *args).splitlines()

    deadline = time.monotonic() + SCREEN_DEADLINE
    rows = table()
    while len(rows) < 3:  # `exec -d` returns before its process exists
        assert time.monotonic() < deadline, f"the exec never showed in docker top: {rows}"
        rows = table()
    assert rows[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    commands = sorted(row.split(None, 7)[7] for row in rows[1:])
    assert commands == ["sleep 1000", "sleep 999"], rows  # as under dockerd: no busybox path
    [inspected] = json.loads(ok(node, "inspect", "sleeper"))
    pid = inspected["State"]["Pid"]
    assert str(pid) in [row.split()[1] for row in rows[1:]]  # State.Pid: PID 1's host PID
    [exec_id] = inspected["ExecIDs"]  # the running exec
    with urllib.request.urlopen(f"http://{node.api}/v1.41/exec/{exec_id}/json") as answer:
        exec_pid = json.load(answer)["Pid"]
    brief = table("-o", "pid,comm")
    assert brief[0].split() == ["PID", "COMMAND"]
    assert sorted(" ".join(row.split()) for row in brief[1:]) == sorted(
        [f"{pid} sleep", f"{exec_pid} sleep"]  # the exec's Pid: its host PID, as dockerd's
    )
    assert [row.split()[0] for row in table("aux")[1:]] == ["root", "root"]
    missing = docker(node, "top", "nope")
    assert missing.stderr.strip() == "Error response from daemon: No such container: nope"
    bad = docker(node, "top", "sleeper", "--no-such-option")
    assert bad.stderr.strip() == "Error response from daemon: ps: error: unknown gnu long option"
    ok(node, "rm", "-f", "sleeper")
