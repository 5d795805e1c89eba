"""Standard streams as bytes (`agent/byte_streams.py`) and the container log cut as dockerd's
copier cuts it (`agent/log_copier.py`)."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.agent.byte_streams import (
    PIPE_CAPACITY,
    BytesInput,
    Pipe,
    as_bytes,
    as_text,
    read_all,
)
from controlplane.agent.log_copier import MAX_MESSAGE, LogCopier, LogLine, as_json_string

DEADLINE = 5.0


def test_text_and_bytes_go_both_ways_without_loss() -> None:
    for data in (b"plain", "é".encode(), b"\xff\x00\x01", b"\xc3(", bytes(range(256))):
        assert as_bytes(as_text(data)) == data


def test_lines_keep_their_newline_and_the_last_may_have_none() -> None:
    async def main() -> None:
        source = BytesInput(b"one\n\ntwo")
        assert [await source.read_line() for _ in range(4)] == ["one\n", "\n", "two", None]

    asyncio.run(main())


def test_readers_taking_turns_share_what_was_read_ahead() -> None:
    async def main() -> None:
        source = BytesInput(b"first\nrest\nof it")
        assert await source.read_line() == "first\n"
        assert await read_all(source) == b"rest\nof it"

    asyncio.run(main())


def test_pipe_carries_bytes_as_written_then_ends() -> None:
    async def main() -> None:
        pipe = Pipe()
        pipe.write(b"one\ntw")
        pipe.write(b"o\nla")
        assert await pipe.read_line() == "one\n"
        assert await pipe.read_line() == "two\n"
        pipe.write(b"st")
        pipe.close_writer()
        pipe.write(b"after the end\n")
        assert await pipe.read_line() == "last"
        assert await pipe.read_line() is None
        assert await pipe.read() == b""

    asyncio.run(main())


def test_a_writer_waits_on_a_full_pipe_and_dies_writing_to_no_reader() -> None:
    async def main() -> None:
        pipe = Pipe()

        async def writer() -> int:
            while True:  # as the shell's loops: a turn for the others, a wait on a full pipe
                pipe.write(b"x" * 4096)
                await asyncio.sleep(0)
                await pipe.drained()

        task = asyncio.ensure_future(writer())
        pipe.writer = task
        for _ in range(100):  # turns enough to write far more than a pipe holds
            await asyncio.sleep(0)
        held = await pipe.read()
        assert PIPE_CAPACITY <= len(held) < PIPE_CAPACITY + 4096  # it filled it, then waited
        pipe.close_reader()
        with pytest.raises(asyncio.CancelledError):  # SIGPIPE
            await asyncio.wait_for(task, DEADLINE)

    asyncio.run(main())


def copied(*writes: bytes, flush: bool = True) -> list[bytes]:
    logged: list[LogLine] = []
    copier = LogCopier("stdout", logged.append)
    for data in writes:
        copier.write(data)
    if flush:
        copier.flush()
    assert {line.stream for line in logged} <= {"stdout"}
    return [line.data for line in logged]


def test_the_log_is_cut_at_newlines_whatever_the_writes() -> None:
    assert copied(b"a", b"b") == [b"ab"]  # `printf a; printf b`: one message, no newline
    assert copied(b"a", b"b", flush=False) == []  # a partial line waits for its end
    assert copied(b"one\ntw", b"o\n\nthree") == [b"one\n", b"two\n", b"\n", b"three"]
    assert copied(b"x\r", b"y\rdone\n") == [b"x\ry\rdone\n"]  # CR ends no line
    assert copied(b"") == []


def test_a_long_line_is_logged_in_16k_pieces() -> None:
    line = b"x" * (MAX_MESSAGE + 4000) + b"\n"
    assert copied(line) == [b"x" * MAX_MESSAGE, b"x" * 4000 + b"\n"]
    exact = b"y" * MAX_MESSAGE + b"\n"  # the buffer fills before the newline comes
    assert copied(exact[:100], exact[100:]) == [b"y" * MAX_MESSAGE, b"\n"]
    fits = b"z" * (MAX_MESSAGE - 1) + b"\n"
    assert copied(fits) == [fits]


def test_bytes_that_are_not_utf8_come_back_as_json_gives_them() -> None:
    assert as_json_string(b"\xff\x00\x01\n") == "\ufffd\x00\x01\n".encode()
    assert as_json_string(b"\xc3(") == "\ufffd(".encode()
    assert as_json_string(b"\xe2\x82(") == "\ufffd\ufffd(".encode()  # one for each byte
    assert as_json_string("é€".encode()) == "é€".encode()
    assert copied(b"\xff\n") == ["\ufffd\n".encode()]
