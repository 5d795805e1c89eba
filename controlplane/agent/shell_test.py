"""`test EXPRESSION`, `[ EXPRESSION ]` and ash's `[[ EXPRESSION ]]`, as busybox's: strings
(`-n`, `-z`, `=`, `!=`), integers (`-eq`, `-ne`, `-lt`, `-le`, `-gt`, `-ge`), files of the
emulated container (`-e`, `-f`, `-d`, `-s`, `-r`, `-w`, `-x`, `-h`/`-L`), `!`, `-a`, `-o`
and parentheses.

The emulated container's files are its image's executables, Docker's /etc files, its
secrets, configs and volumes, and what its programs wrote; its folders are those that hold
them and the usual ones of a Linux root (`/tmp`, `/etc`...). Errors carry busybox's words
(`missing ]`, `invalid number 'x'`, `x: unknown operand`) and status 2.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

from controlplane.agent.mounts import MountedFiles
from controlplane.agent.process import Exec

ROOT_FOLDERS = frozenset(
    ("/", "/bin", "/dev", "/etc", "/home", "/proc", "/root", "/run", "/sbin", "/sys", "/tmp",
     "/usr", "/usr/bin", "/usr/local", "/usr/local/bin", "/usr/sbin", "/var", "/var/log")
)  # fmt: skip
_UNARY = frozenset("nzefdsrwxhLt")
_INTEGER = {
    "-eq": lambda a, b: a == b,
    "-ne": lambda a, b: a != b,
    "-lt": lambda a, b: a < b,
    "-le": lambda a, b: a <= b,
    "-gt": lambda a, b: a > b,
    "-ge": lambda a, b: a >= b,
}
_STRING = {
    "=": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}


class TestError(Exception):
    """A malformed expression; the message is busybox's."""


def normalized(path: str) -> str:
    return posixpath.normpath(path).replace("//", "/")


def known_paths(process: Exec) -> set[str]:
    """Every file and folder of the emulated container (what pathname expansion matches)."""
    files = {*process.container_files, *process.files}
    folders = set(ROOT_FOLDERS)
    for path in files:
        parent = posixpath.dirname(path)
        while parent not in folders:
            folders.add(parent)
            parent = posixpath.dirname(parent)
    return (files | folders) - {"/"}


def is_folder(process: Exec, path: str) -> bool:
    path = normalized(path)
    if path in ROOT_FOLDERS:
        return True
    files = process.container_files
    if isinstance(files, MountedFiles) and files.is_folder(path):
        return True
    prefix = path.rstrip("/") + "/"
    return any(p.startswith(prefix) for p in (*files, *process.files))


def evaluate(process: Exec, argv: list[str], absolute: Callable[[str], str]) -> int:
    """The status of `test ARGS` or `[ ARGS ]` (argv[0] says which): 0 true, 1 false;
    TestError for a malformed expression."""
    args = argv[1:]
    closing = {"[": "]", "[[": "]]"}.get(argv[0])  # `[[` is ash's bash form: test, to `]]`
    if closing is not None:
        if not args or args[-1] != closing:
            raise TestError(f"missing {closing}")
        args = args[:-1]
    if not args:
        return 1
    parser = _Parser(process, args, absolute)
    value = parser.disjunction()
    if parser.at < len(args):
        raise TestError(f"{args[parser.at]}: unknown operand")
    return 0 if value else 1


class _Parser:
    def __init__(self, process: Exec, args: list[str], absolute: Callable[[str], str]) -> None:
        self.process = process
        self.args = args
        self.absolute = absolute
        self.at = 0

    def left(self) -> int:
        return len(self.args) - self.at

    def take(self) -> str:
        if self.at >= len(self.args):
            raise TestError("argument expected")
        self.at += 1
        return self.args[self.at - 1]

    def disjunction(self) -> bool:
        value = self.conjunction()
        while self.left() > 1 and self.args[self.at] == "-o":
            self.at += 1
            value = self.conjunction() or value
        return value

    def conjunction(self) -> bool:
        value = self.negation()
        while self.left() > 1 and self.args[self.at] == "-a":
            self.at += 1
            value = self.negation() and value
        return value

    def negation(self) -> bool:
        if self.left() > 1 and self.args[self.at] == "!":
            self.at += 1
            return not self.negation()
        return self.primary()

    def primary(self) -> bool:
        args, at = self.args, self.at
        if self.left() >= 3 and (args[at + 1] in _INTEGER or args[at + 1] in _STRING):
            left, op, right = args[at : at + 3]
            self.at += 3
            if op in _STRING:
                return bool(_STRING[op](left, right))
            return bool(_INTEGER[op](_integer(left), _integer(right)))
        if args[at] == "(" and self.left() >= 3:
            self.at += 1
            value = self.disjunction()
            if self.take() != ")":
                raise TestError("missing )")
            return value
        if self.left() >= 2 and re.fullmatch(r"-[A-Za-z]", args[at]):
            if args[at][1] not in _UNARY:
                raise TestError(f"{args[at]}: unknown operand")
            op = self.take()[1]
            return self.unary(op, self.take())
        return self.take() != ""

    def unary(self, op: str, operand: str) -> bool:
        if op == "n":
            return operand != ""
        if op == "z":
            return operand == ""
        if op == "t":
            stdio = self.process.stdio
            return stdio is not None and stdio.tty and _integer(operand) in (0, 1, 2)
        if op in "hL":
            return False  # the emulated files hold no symbolic links
        path = normalized(self.absolute(operand))
        if op == "d":
            return is_folder(self.process, path)
        file = self.process.container_files.get(path)
        executable = path in self.process.files
        if op == "f":
            return file is not None or executable
        if op == "s":
            return executable or (file is not None and len(file.data) > 0)
        if op == "x":
            return executable or is_folder(self.process, path)
        return file is not None or executable or is_folder(self.process, path)  # e, r, w


def _integer(text: str) -> int:
    stripped = text.strip()
    if re.fullmatch(r"[+-]?\d+", stripped) is None:
        raise TestError(f"invalid number '{text}'")
    return int(stripped)
