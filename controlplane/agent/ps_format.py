"""The columns procps' `ps` prints for a set of options, and their values for an emulated
process, so `docker top CONTAINER [ps OPTIONS]` on a userspace container answers with the
table dockerd would get from the host's `ps` (`-ef`, `aux`, `x`, `-o pid,comm`, `-eo
pid,user,args`...).

Options are read as procps reads them: a word starting with `-` holds UNIX options, any other
BSD ones; `o`/`-o` take a format list (the rest of the word, else the next word) whose
specifiers may rename their column (`pid=ID`). Options that only choose processes (`-e`,
`-A`, `a`, `x`...) or the output width change nothing here: `docker top` keeps the
container's processes whatever `ps` selected. Anything else (`--forest`, `l`, a specifier
outside `SPECIFIERS`) is an `UnsupportedOptions` naming what is emulated; options the host's
`ps` itself refuses are checked against it first (`top.py`), for procps' own words.

An emulated process uses no memory or CPU of its own (the node's process runs them all):
%CPU, %MEM, VSZ, RSS and TIME are zeros, as `ps` shows them for a process that has done
nothing yet.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class UnsupportedOptions(ValueError):
    """`ps` options valid for procps that the emulation does not render."""


@dataclass(frozen=True)
class EmulatedProcess:
    """One process of a userspace container: its PID, its parent's, when it started, whether
    it runs on a TTY, and its command line."""

    pid: int
    ppid: int
    started_at_ns: int
    tty: bool
    argv: Sequence[str]


def _elapsed(p: EmulatedProcess) -> int:
    return max(0, int(time.time() - p.started_at_ns / 1e9))


def _etime(p: EmulatedProcess) -> str:
    """procps' ELAPSED: [[DD-]hh:]mm:ss."""
    days, rest = divmod(_elapsed(p), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = (
        f"{hours:02d}:{minutes:02d}:{seconds:02d}"
        if days or hours
        else f"{minutes:02d}:{seconds:02d}"
    )
    return f"{days}-{clock}" if days else clock


def _today(p: EmulatedProcess) -> bool:
    return time.strftime("%Y%m%d", time.localtime(p.started_at_ns / 1e9)) == time.strftime("%Y%m%d")


def _stime(p: EmulatedProcess) -> str:
    """STIME and `u`'s START: the time of day when it started today, else the month and day."""
    return time.strftime("%H:%M" if _today(p) else "%b%d", time.localtime(p.started_at_ns / 1e9))


def _started(p: EmulatedProcess) -> str:
    """`-o start`'s STARTED: the time with seconds today, else the month and day."""
    return time.strftime(
        "%H:%M:%S" if _today(p) else "%b %d", time.localtime(p.started_at_ns / 1e9)
    )


def _stat(p: EmulatedProcess) -> str:
    """Sleeping, a session leader (the command and each exec are), in the foreground of its
    terminal when it has one."""
    return "Ss+" if p.tty else "Ss"


def _comm(p: EmulatedProcess) -> str:
    return os.path.basename(p.argv[0])[:15] if p.argv else ""


Value = Callable[[EmulatedProcess], str]
_ARGS: Value = lambda p: " ".join(p.argv)  # noqa: E731
_ROOT: Value = lambda p: "root"  # noqa: E731
_ZERO: Value = lambda p: "0"  # noqa: E731
_PID: Value = lambda p: str(p.pid)  # noqa: E731

# specifier -> (procps' column title, value)
SPECIFIERS: dict[str, tuple[str, Value]] = {
    "pid": ("PID", _PID),
    "ppid": ("PPID", lambda p: str(p.ppid)),
    "pgid": ("PGID", _PID),
    "sid": ("SID", _PID),
    "user": ("USER", _ROOT),
    "euser": ("EUSER", _ROOT),
    "uname": ("USER", _ROOT),
    "uid": ("UID", _ZERO),
    "euid": ("EUID", _ZERO),
    "group": ("GROUP", _ROOT),
    "gid": ("GID", _ZERO),
    "comm": ("COMMAND", _comm),
    "ucmd": ("CMD", _comm),
    "args": ("COMMAND", _ARGS),
    "command": ("COMMAND", _ARGS),
    "cmd": ("CMD", _ARGS),
    "tty": ("TT", lambda p: "pts/0" if p.tty else "?"),
    "tt": ("TT", lambda p: "pts/0" if p.tty else "?"),
    "stat": ("STAT", _stat),
    "s": ("S", lambda p: "S"),
    "state": ("S", lambda p: "S"),
    "time": ("TIME", lambda p: "00:00:00"),
    "cputime": ("TIME", lambda p: "00:00:00"),
    "stime": ("STIME", _stime),
    "start_time": ("START", _stime),
    "start": ("STARTED", _started),
    "etime": ("ELAPSED", _etime),
    "etimes": ("ELAPSED", lambda p: str(_elapsed(p))),
    "c": ("C", _ZERO),
    "pcpu": ("%CPU", lambda p: "0.0"),
    "%cpu": ("%CPU", lambda p: "0.0"),
    "pmem": ("%MEM", lambda p: "0.0"),
    "%mem": ("%MEM", lambda p: "0.0"),
    "vsz": ("VSZ", _ZERO),
    "rss": ("RSS", _ZERO),
    "nlwp": ("NLWP", lambda p: "1"),
    "ni": ("NI", _ZERO),
    "pri": ("PRI", lambda p: "19"),
}

# The formats procps picks when no list is given, as (title, value) columns.
_Column = tuple[str, Value]
_UNIX_DEFAULT: list[_Column] = [
    ("PID", _PID),
    ("TTY", SPECIFIERS["tty"][1]),
    ("TIME", SPECIFIERS["time"][1]),
    ("CMD", _comm),
]
_UNIX_FULL: list[_Column] = [
    ("UID", _ROOT),
    ("PID", _PID),
    ("PPID", SPECIFIERS["ppid"][1]),
    ("C", _ZERO),
    ("STIME", _stime),
    ("TTY", SPECIFIERS["tty"][1]),
    ("TIME", SPECIFIERS["time"][1]),
    ("CMD", _ARGS),
]
_BSD_DEFAULT: list[_Column] = [
    ("PID", _PID),
    ("TTY", SPECIFIERS["tty"][1]),
    ("STAT", _stat),
    ("TIME", lambda p: "0:00"),
    ("COMMAND", _ARGS),
]
_BSD_USER: list[_Column] = [
    ("USER", _ROOT),
    ("PID", _PID),
    ("%CPU", SPECIFIERS["pcpu"][1]),
    ("%MEM", SPECIFIERS["pmem"][1]),
    ("VSZ", _ZERO),
    ("RSS", _ZERO),
    ("TTY", SPECIFIERS["tty"][1]),
    ("STAT", _stat),
    ("START", _stime),
    ("TIME", lambda p: "0:00"),
    ("COMMAND", _ARGS),
]

_UNIX_SELECTION = set("eAaNdgrTxw")  # which processes, how wide: nothing to change here
_BSD_SELECTION = set("axgrTw")
SUPPORTED = "-e/-A, -f, -o/-eo LIST, a, u, x, o LIST, w"


def _format_list(text: str) -> list[_Column]:
    """A format list's columns: `pid,comm`; a `=` renames its column with the rest of the
    list (`pid=ID,ppid` is one column titled `ID,ppid`), as procps reads it."""
    columns = []
    rest = text
    while rest:
        item, comma, rest = rest.partition(",")
        name, renamed, title = item.partition("=")
        known = SPECIFIERS.get(name.lower())
        if known is None and name:
            raise UnsupportedOptions(
                f"format specifier {name!r} is not emulated for a userspace container; "
                f"use {', '.join(sorted(SPECIFIERS))}"
            )
        if known is not None:
            columns.append((title + comma + rest if renamed else known[0], known[1]))
        if renamed:
            break
    return columns


def columns(words: Sequence[str]) -> list[_Column]:
    """The columns `ps` prints for option words `words`; UnsupportedOptions for what the
    emulation does not render (see the module docstring)."""
    listed: list[_Column] = []
    full = user = bsd = False
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word:
            continue
        if word.startswith("--"):
            raise UnsupportedOptions(f"ps option {word!r} is not emulated")
        unix = word.startswith("-")
        letters = word[1:] if unix else word
        bsd = bsd or not unix
        for position, letter in enumerate(letters):
            if letter == "o":
                rest = letters[position + 1 :]
                if not rest and index < len(words):
                    rest, index = words[index], index + 1
                listed.extend(_format_list(rest))
                break
            if unix and letter == "f":
                full = True
            elif not unix and letter == "u":
                user = True
            elif letter not in (_UNIX_SELECTION if unix else _BSD_SELECTION):
                raise UnsupportedOptions(
                    f"ps option {letter!r} (in {word!r}) is not emulated for a userspace "
                    f"container; use {SUPPORTED}"
                )
    if listed:
        return listed
    if user:
        return _BSD_USER
    if full:
        return _UNIX_FULL
    return _BSD_DEFAULT if bsd else _UNIX_DEFAULT


def table(
    words: Sequence[str], processes: Sequence[EmulatedProcess]
) -> tuple[list[str], list[list[str]]]:
    """`ps`'s titles and rows (by PID) for `processes` under option words `words`."""
    chosen = columns(words)
    rows = [[value(p) for _, value in chosen] for p in sorted(processes, key=lambda p: p.pid)]
    return [title for title, _ in chosen], rows
