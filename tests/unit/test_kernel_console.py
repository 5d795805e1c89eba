"""The standard input of kernel-mode processes (`datapath/kernel/console.py`) with real
processes and no namespaces: a pseudo-terminal that is the process's controlling terminal
(echo, sizes, SIGINT from Ctrl-C, end of output when it exits), and a pipe whose
end comes after the bytes written before it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import pytest

from controlplane.datapath.kernel.console import Console, StdinPipe

DEADLINE = 30.0
pytestmark = pytest.mark.skipif(shutil.which("setsid") is None, reason="util-linux setsid")


async def _on_console(script: str) -> tuple[Console, list[bytes], asyncio.subprocess.Process]:
    screen: list[bytes] = []
    console = Console(screen.append)
    # SIGINT back to its default first: a test run started as a background job of a
    # non-interactive shell ignores it, the shell would inherit that, and a non-interactive sh
    # cannot trap a signal ignored on entry (what made the Ctrl-C test time out in CI).
    process = await asyncio.create_subprocess_exec(
        "env", "--default-signal=INT", "setsid", "--ctty", "sh", "-c", script,
        stdin=console.slave, stdout=console.slave, stderr=console.slave,
    )  # fmt: skip
    console.spawned()
    return console, screen, process


async def _until_shown(screen: list[bytes], wanted: bytes) -> None:
    async with asyncio.timeout(DEADLINE):
        while wanted not in b"".join(screen):
            await asyncio.sleep(0.05)


def _signal_state(pid: int, screen: list[bytes]) -> str:
    """Why Ctrl-C may not have ended the shell: its signal masks (blocked, ignored, caught,
    inherited from this process), the terminal's foreground group, and the screen."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError as err:
        return f"the shell is gone ({err}); screen: {b''.join(screen)!r}"
    masks = [
        line for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt"))
    ]
    own = [line for line in Path("/proc/self/status").read_text().splitlines()
           if line.startswith(("SigBlk", "SigIgn"))]  # fmt: skip
    return (
        f"shell {pid}: {masks}, pgrp {stat[2]}, tty foreground group {stat[5]}; "
        f"this process: {own}; screen: {b''.join(screen)!r}"
    )


def test_a_console_is_the_process_terminal_with_echo_and_ctrl_c() -> None:
    async def main() -> None:
        console, screen, process = await _on_console(
            "read line; echo got $line; trap 'echo interrupted; exit 5' INT; "
            "echo ready; while :; do sleep 0.1; done"
        )
        console.feed(b"hello\r")
        await _until_shown(screen, b"got hello\r\n")
        assert b"hello\r\n" in b"".join(screen)  # echoed by the line discipline
        await _until_shown(screen, b"ready")
        # Ctrl-C, again each second as a user would: the shell can take a SIGINT that lands
        # while it forks the next `sleep` without running its trap (seen once in CI).
        try:
            async with asyncio.timeout(DEADLINE):
                while process.returncode is None:
                    console.feed(b"\x03")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(process.wait(), 1.0)
        except TimeoutError:  # say what the shell had: its signal masks, its terminal
            raise AssertionError(_signal_state(process.pid, screen)) from None
        assert process.returncode == 5
        await console.drained(DEADLINE)
        assert b"interrupted" in b"".join(screen)
        console.close()
        console.close()  # closing twice is harmless

    asyncio.run(main())


def test_a_console_reports_its_size_to_the_process() -> None:
    async def main() -> None:
        screen: list[bytes] = []
        console = Console(screen.append)
        console.resize(33, 120)
        process = await asyncio.create_subprocess_exec(
            "setsid", "--ctty", "stty", "size",
            stdin=console.slave, stdout=console.slave, stderr=console.slave,
        )  # fmt: skip
        console.spawned()
        assert await asyncio.wait_for(process.wait(), DEADLINE) == 0
        await console.drained(DEADLINE)
        assert b"".join(screen) == b"33 120\r\n"
        console.close()

    asyncio.run(main())


def test_a_stdin_pipe_ends_after_what_was_fed() -> None:
    async def main() -> None:
        pipe = StdinPipe()
        process = await asyncio.create_subprocess_exec(
            "wc", "-c", stdin=pipe.reader, stdout=asyncio.subprocess.PIPE
        )
        pipe.spawned()
        pipe.feed(b"x" * 200_000)  # more than a pipe holds: the rest waits for the reader
        pipe.close_stdin()
        out, _ = await asyncio.wait_for(process.communicate(), DEADLINE)
        assert out.strip() == b"200000"
        pipe.close()

    asyncio.run(main())
