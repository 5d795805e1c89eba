"""Containers' log messages as tests compare them: text, without their newlines."""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.agent.log_copier import LogLine


def text_of(line: LogLine) -> str:
    return line.data.decode(errors="replace").removesuffix("\n")


def texts(lines: Iterable[LogLine]) -> list[str]:
    return [text_of(line) for line in lines]


def written_lines(lines: Iterable[LogLine]) -> list[str]:
    """What a container wrote on both streams, joined and cut at its newlines."""
    return b"".join(line.data for line in lines).decode().splitlines()
