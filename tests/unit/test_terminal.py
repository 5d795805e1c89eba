"""The emulated TTY and standard streams (`agent/terminal.py`, `agent/stdio.py`), and the
emulated sh reading its commands from them, as `docker run -it` / `-i` drive a container."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from log_texts import texts
from polling import eventually

from controlplane.agent.runtime import Container, ContainerConfig, ContainerState, Runtime
from controlplane.agent.stdio import STDERR, STDOUT, OutputBuffer, Stdio
from controlplane.agent.terminal import EXIT_INTERRUPTED, Interrupted, Terminal, run_on

DEADLINE = 5.0


def screen_of(stdio: Stdio) -> bytes:
    """What a terminal attached from the start would show."""
    return b"".join(data for _, data in stdio.output._chunks)


def terminal() -> tuple[Terminal, list[bytes]]:
    echoed: list[bytes] = []
    return Terminal(echoed.append), echoed


def test_echo_backspace_kill_line_and_enter() -> None:
    async def main() -> None:
        tty, echoed = terminal()
        tty.feed(b"ecx\x7fho hi\r")
        assert await tty.read_line() == "echo hi\n"
        assert b"".join(echoed) == b"ecx\x08\x1b[Jho hi\r\n"
        tty.feed(b"abc\x15ls\n")
        assert await tty.read_line() == "ls\n"
        tty.feed(b"\x7f\r")  # backspace on an empty line erases nothing
        assert await tty.read_line() == "\n"

    asyncio.run(main())


def test_escape_sequences_are_ignored_and_utf8_is_kept() -> None:
    async def main() -> None:
        tty, echoed = terminal()
        tty.feed(b"a\x1b[A\x1b[1;5Cb\x1bOPc\xc3")
        tty.feed(b"\xa9\r")  # a character split across two reads
        assert await tty.read_line() == "abcé\n"
        assert b"".join(echoed) == "abcé\r\n".encode()

    asyncio.run(main())


def test_ctrl_c_interrupts_the_read_and_ctrl_d_is_end_of_input() -> None:
    async def main() -> None:
        tty, echoed = terminal()
        reading = asyncio.ensure_future(tty.read_line("/ # "))
        await asyncio.sleep(0)
        tty.feed(b"abc\x03")
        with pytest.raises(Interrupted):
            await reading
        assert b"".join(echoed) == b"/ # abc^C"
        tty.feed(b"x\x04")  # Ctrl-D after some text hands it over, without a newline
        assert await tty.read() == b"x"
        tty.feed(b"y\x04\x04")  # a line read takes it, up to the end of input
        assert await tty.read_line() == "y"
        tty.feed(b"\x15\x04")  # on an empty line: end of input
        assert await tty.read_line() is None
        tty.feed(b"more\r")  # a TTY's end of input ends one read (`cat`), not the terminal
        assert await tty.read_line() == "more\n"

    asyncio.run(main())


def test_ctrl_c_right_after_enter_flushes_the_line_not_yet_handed_over() -> None:
    async def main() -> None:
        for steps in range(3):  # Ctrl-C before, while and after the line is taken
            tty, _ = terminal()
            reading = asyncio.ensure_future(tty.read_line())
            await asyncio.sleep(0)
            tty.feed(b"sleep 1000\r")
            for _ in range(steps):
                await asyncio.sleep(0)
            tty.feed(b"\x03")
            with pytest.raises(Interrupted):
                await reading
            tty.feed(b"next\r")
            assert await tty.read_line() == "next\n"

    asyncio.run(main())


def test_resize_redraws_the_prompt_of_a_pending_read() -> None:
    async def main() -> None:
        tty, echoed = terminal()
        reading = asyncio.ensure_future(tty.read_line("/ # "))
        await asyncio.sleep(0)
        tty.feed(b"ho")
        tty.resize(25, 81)
        tty.resize(25, 81)  # the same size: nothing to redraw
        assert b"".join(echoed) == b"/ # ho\r/ # ho\x1b[J"
        tty.feed(b"\r")
        assert await reading == "ho\n"
        tty.resize(24, 80)  # nobody reads: no prompt to redraw
        assert (tty.rows, tty.columns) == (24, 80)
        assert b"".join(echoed) == b"/ # ho\r/ # ho\x1b[J\r\n"

    asyncio.run(main())


def test_run_on_kills_a_program_on_ctrl_c_unless_it_catches_it() -> None:
    async def main() -> None:
        tty, _ = terminal()
        running = asyncio.ensure_future(run_on(tty, asyncio.sleep(1000, result=0)))
        await asyncio.sleep(0)
        tty.feed(b"\x03")
        assert await running == EXIT_INTERRUPTED

        tty.catches_interrupt = True
        running = asyncio.ensure_future(run_on(tty, asyncio.sleep(0.2, result=5)))
        await asyncio.sleep(0)
        tty.feed(b"\x03")
        assert await running == 5
        assert await run_on(None, asyncio.sleep(0, result=3)) == 3

    asyncio.run(main())


def test_output_buffer_followers_from_their_cursor() -> None:
    async def main() -> None:
        output = OutputBuffer()
        output.write(STDOUT, b"before\n")
        cursor = output.written
        got: list[tuple[int, bytes]] = []

        async def follow() -> None:
            async for chunk in output.follow(cursor):
                got.append(chunk)

        following = asyncio.ensure_future(follow())
        await asyncio.sleep(0)
        output.write(STDERR, b"err\n")
        output.write(STDOUT, b"")  # nothing: not a chunk
        output.write(STDOUT, b"out\n")
        output.close()
        output.write(STDOUT, b"after the close\n")
        await asyncio.wait_for(following, DEADLINE)
        assert got == [(STDERR, b"err\n"), (STDOUT, b"out\n")]

    asyncio.run(main())


def test_stdio_without_a_tty_keeps_streams_apart_and_with_one_rewrites_newlines() -> None:
    plain = Stdio(tty=False, open_stdin=False)
    plain.write(STDOUT, b"a\n")
    plain.write(STDERR, b"b\n")
    assert list(plain.output._chunks) == [(STDOUT, b"a\n"), (STDERR, b"b\n")]
    assert plain.stdin is None
    tty = Stdio(tty=True, open_stdin=True)
    tty.write(STDERR, b"oops\n")
    tty.write(STDOUT, b"x\ny")
    assert list(tty.output._chunks) == [(STDOUT, b"oops\r\n"), (STDOUT, b"x\r\ny")]
    assert tty.stdin is tty.terminal


ShellTest = Callable[[Runtime, Container], Awaitable[None]]


def with_shell(test: ShellTest, *, tty: bool, argv: tuple[str, ...] = ("sh",)) -> None:
    async def main() -> None:
        runtime = Runtime()
        config = ContainerConfig(image="busybox", args=list(argv), tty=tty, open_stdin=True)
        container = runtime.create(config)
        await runtime.start(container.id)
        try:
            await test(runtime, container)
        finally:
            await runtime.close()

    asyncio.run(main())


def test_interactive_shell_on_a_tty() -> None:
    async def test(runtime: Runtime, container: Container) -> None:
        stdio = container.stdio
        await eventually("the prompt", lambda: screen_of(stdio) == b"/ # ")
        stdio.feed(b"hostname\r")
        await eventually("the second prompt", lambda: screen_of(stdio).endswith(b"\r\n/ # "))
        assert screen_of(stdio) == f"/ # hostname\r\n{container.hostname}\r\n/ # ".encode()
        stdio.feed(b"sleep 1000\r")
        await eventually("sleep running", lambda: screen_of(stdio).endswith(b"sleep 1000\r\n"))
        stdio.feed(b"\x03")
        await eventually("sleep interrupted", lambda: screen_of(stdio).endswith(b"^C\r\n/ # "))
        stdio.feed(b"echo $?\r")
        await eventually("$? after Ctrl-C", lambda: screen_of(stdio).endswith(b"130\r\n/ # "))
        stdio.feed(b"echo 'open\r")  # an open quote asks for more (PS2), as ash does
        await eventually("the continuation prompt", lambda: screen_of(stdio).endswith(b"\r\n> "))
        stdio.feed(b"closed'\r")
        await eventually("the whole line", lambda: b"open\r\nclosed\r\n/ # " in screen_of(stdio))
        stdio.feed(b"for i in 1 2; do\r")
        await eventually("the loop's next line", lambda: screen_of(stdio).endswith(b"\r\n> "))
        stdio.feed(b"echo n$i; done\r")
        await eventually("the loop", lambda: screen_of(stdio).endswith(b"n1\r\nn2\r\n/ # "))
        stdio.feed(b"done\r")
        await eventually("syntax error", lambda: b'unexpected "done"' in screen_of(stdio))
        stdio.feed(b"cat\r")  # cat reads the terminal until Ctrl-D; the shell goes on
        await eventually("cat reading", lambda: screen_of(stdio).endswith(b"cat\r\n"))
        stdio.feed(b"typed\r\x04")
        await eventually("cat's echo", lambda: screen_of(stdio).endswith(b"typed\r\n/ # "))
        stdio.feed(b"exit 3\r")
        assert await asyncio.wait_for(runtime.wait(container.id), DEADLINE) == 3
        assert stdio.output.closed

    with_shell(test, tty=True)


def test_ctrl_d_ends_the_shell_with_the_last_status() -> None:
    async def test(runtime: Runtime, container: Container) -> None:
        container.stdio.feed(b"false\r\x04")
        assert await asyncio.wait_for(runtime.wait(container.id), DEADLINE) == 1
        assert screen_of(container.stdio).endswith(b"/ # \r\n")

    with_shell(test, tty=True)


def test_shell_reading_a_pipe_has_no_prompt_and_ends_at_eof() -> None:
    async def test(runtime: Runtime, container: Container) -> None:
        container.stdio.feed(b"hostname\necho hi; false")
        container.stdio.close_stdin()
        assert await asyncio.wait_for(runtime.wait(container.id), DEADLINE) == 1
        assert list(container.stdio.output._chunks) == [
            (STDOUT, f"{container.hostname}\n".encode()),
            (STDOUT, b"hi\n"),
        ]
        assert texts(container.logs) == [container.hostname, "hi"]

    with_shell(test, tty=False)


def test_a_program_on_a_tty_dies_of_ctrl_c() -> None:
    async def test(runtime: Runtime, container: Container) -> None:
        await asyncio.sleep(0)
        assert container.state is ContainerState.RUNNING
        container.stdio.feed(b"\x03")
        assert await asyncio.wait_for(runtime.wait(container.id), DEADLINE) == EXIT_INTERRUPTED

    with_shell(test, tty=True, argv=("sleep", "1000"))
