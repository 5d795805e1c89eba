"""The emulated `sh`: enough of a POSIX shell for the commands a lab runs in `sh -c "..."`.

Supported: simple commands chained with `;`, `&&`, `||` and newlines, and run in the
background with `&` (a job ends with the shell, as a container's processes end with its PID 1:
`sh -c "nc -u -l -p 80 -e hostname & httpd -f -p 80"` serves both until stopped); single and
double quotes and backslash escapes; `$VAR`, `${VAR}` and `$?` expansion, arithmetic
expansion `$((...))` (`arithmetic.py`); `VAR=value` and
`export`; the builtins `exit`, `true`, `false`, `:`, `cd`, `exec`, `export`; other commands
run from the image's files. Anything else (pipes, redirections, command substitution, control
flow) is refused with a message naming it and status 2, as a shell's syntax error: the
emulation would rather fail loudly than guess.

A script that is one simple command runs it in place of the shell, as busybox and dash do for
`sh -c CMD`: so `sh -c "nginx -g 'daemon off;'"` is PID 1 and gets the stop's SIGTERM.

`sh` with no arguments and an open standard input (`docker run -i`, `docker exec -i`) reads
its commands from it, one line at a time; on a TTY (`-it`) it is busybox's interactive shell:
the `/ # ` prompt, Ctrl-C interrupting the running command (status 130) or the line being
typed, Ctrl-D or `exit` ending it. The terminal's echo and editing are in `terminal.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from controlplane.agent import arithmetic
from controlplane.agent.arithmetic import ShellArithmeticError
from controlplane.agent.process import Exec
from controlplane.agent.stdio import Input
from controlplane.agent.terminal import EXIT_INTERRUPTED, Interrupted, Terminal

_OPERATORS = (";", "&&", "||", "\n")
_REFUSED = {
    "|": "pipes",
    ">": "redirections",
    "<": "redirections",
    "`": "command substitution",
    "$(": "command substitution",
    "(": "subshells",
}
_KEYWORDS = {"if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case"}
_BUILTINS = {"exit", "true", "false", ":", "cd", "exec", "export"}


class ShellSyntaxError(Exception):
    pass


# What a word's part is: text as is, a variable's name, or an arithmetic expression.
_TEXT, _VARIABLE, _ARITHMETIC = "text", "variable", "arithmetic"


@dataclass
class _Word:
    """Parts of one word: (text, kind), and whether the word holds anything quoted (a
    quoted empty string is still a word)."""

    parts: list[tuple[str, str]] = field(default_factory=list)
    quoted: bool = False
    bare_variable: bool = True  # only an unquoted $VAR: its value is split on spaces


@dataclass
class _Command:
    connector: str  # how it follows the previous command: ";", "&&" or "||"
    words: list[_Word]
    background: bool = False  # ended by `&`: the shell goes on without waiting


def parse(script: str) -> list[_Command]:
    """Split a script into simple commands; ShellSyntaxError for what is not supported."""
    commands: list[_Command] = []
    words: list[_Word] = []
    connector = ";"
    word: _Word | None = None
    i = 0

    def finish_word() -> None:
        nonlocal word
        if word is not None:
            words.append(word)
            word = None

    def finish_command(next_connector: str) -> None:
        nonlocal words, connector
        finish_word()
        if words:
            commands.append(_Command(connector, words))
        elif next_connector in ("&&", "||"):
            raise ShellSyntaxError(f"syntax error: unexpected {next_connector!r}")
        words, connector = [], next_connector

    while i < len(script):
        ch = script[i]
        two = script[i : i + 2]
        if two in ("&&", "||"):
            finish_command(two)
            i += 2
            continue
        if ch in (";", "\n"):
            finish_command(";")
            i += 1
            continue
        if ch == "&":
            before = len(commands)
            finish_command(";")
            if len(commands) == before:
                raise ShellSyntaxError("syntax error: unexpected '&'")
            commands[-1].background = True
            i += 1
            continue
        if script.startswith("$((", i):
            if word is None:
                word = _Word()
            i = _variable(script, i, word, quoted=False)
            continue
        for token, what in _REFUSED.items():
            if script.startswith(token, i):
                raise ShellSyntaxError(f"{what} ({token!r}) are not supported by the emulated sh")
        if ch in " \t":
            finish_word()
            i += 1
            continue
        if ch == "#" and word is None:
            end = script.find("\n", i)
            i = len(script) if end < 0 else end
            continue
        if word is None:
            word = _Word()
        if ch == "'":
            end = script.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("syntax error: unterminated quoted string")
            word.parts.append((script[i + 1 : end], _TEXT))
            word.quoted, word.bare_variable = True, False
            i = end + 1
        elif ch == '"':
            i = _double_quoted(script, i + 1, word)
        elif ch == "\\":
            word.parts.append((script[i + 1 : i + 2], _TEXT))
            word.bare_variable = False
            i += 2
        elif ch == "$":
            i = _variable(script, i, word, quoted=False)
        else:
            word.parts.append((ch, _TEXT))
            word.bare_variable = False
            i += 1
    if connector in ("&&", "||") and word is None and not words:
        raise ShellSyntaxError(f"syntax error: unexpected end of file after {connector!r}")
    finish_command(";")
    return commands


def _double_quoted(script: str, i: int, word: _Word) -> int:
    word.quoted, word.bare_variable = True, False
    while i < len(script):
        ch = script[i]
        if ch == '"':
            return i + 1
        if ch == "\\" and script[i + 1 : i + 2] in ('"', "\\", "$", "`"):
            word.parts.append((script[i + 1], _TEXT))
            i += 2
        elif ch == "$":
            i = _variable(script, i, word, quoted=True)
        elif ch == "`":
            raise ShellSyntaxError("command substitution is not supported by the emulated sh")
        else:
            word.parts.append((ch, _TEXT))
            i += 1
    raise ShellSyntaxError("syntax error: unterminated quoted string")


def _variable(script: str, i: int, word: _Word, quoted: bool) -> int:
    """Read `$NAME`, `${NAME}`, `$?` or `$((EXPRESSION))` at `i`; a lone `$` is literal."""
    if script.startswith("$((", i):
        end = _arithmetic_end(script, i + 3)
        word.parts.append((script[i + 3 : end], _ARITHMETIC))
        word.bare_variable = word.bare_variable and not quoted
        return end + 2
    if script.startswith("$(", i):
        raise ShellSyntaxError("command substitution is not supported by the emulated sh")
    if script.startswith("${", i):
        end = script.find("}", i)
        if end < 0:
            raise ShellSyntaxError("syntax error: bad substitution")
        name = script[i + 2 : end]
        if not (name == "?" or name.replace("_", "a").isalnum()):
            raise ShellSyntaxError(f"syntax error: bad substitution ${{{name}}}")
        word.parts.append((name, _VARIABLE))
        return end + 1
    if script[i + 1 : i + 2] == "?":
        word.parts.append(("?", _VARIABLE))
        return i + 2
    j = i + 1
    while j < len(script) and (script[j].isalnum() or script[j] == "_"):
        j += 1
    if j == i + 1:
        word.parts.append(("$", _TEXT))
        word.bare_variable = False
    else:
        word.parts.append((script[i + 1 : j], _VARIABLE))
        if quoted:
            word.bare_variable = False
    return j


def _arithmetic_end(script: str, i: int) -> int:
    """Where the `))` closing an arithmetic expansion whose expression starts at `i` is
    (parentheses inside it nest)."""
    depth = 0
    while i < len(script):
        if script[i] == "(":
            depth += 1
        elif script[i] == ")":
            if depth == 0:
                if script.startswith("))", i):
                    return i
                break
            depth -= 1
        i += 1
    raise ShellSyntaxError("syntax error: missing '))'")


def _expand(words: list[_Word], env: dict[str, str], status: int) -> list[str]:
    """The words' text with their expansions done; ShellArithmeticError for an arithmetic
    expansion without a value."""
    argv: list[str] = []
    for word in words:
        text = "".join(_expand_part(value, kind, env, status) for value, kind in word.parts)
        if word.bare_variable and not word.quoted:
            argv.extend(text.split())
        else:
            argv.append(text)
    return argv


def _expand_part(value: str, kind: str, env: dict[str, str], status: int) -> str:
    if kind == _VARIABLE:
        return str(status) if value == "?" else env.get(value, "")
    if kind == _ARITHMETIC:
        return str(arithmetic.evaluate(value, env, status))
    return value


PROMPT = "/ # "  # busybox's default PS1 (`\w \$ `) for root in /


@dataclass(frozen=True)
class _Outcome:
    status: int
    exited: bool = False  # `exit` or `exec`: the shell ends with `status`


async def sh(process: Exec, argv: list[str]) -> int:
    """`sh -c SCRIPT [NAME [ARGS...]]`, or `sh` reading commands from its standard input
    (`-i`; with a prompt and Ctrl-C on a TTY). Without stdin, `sh` alone exits 0."""
    args = argv[1:]
    if not args:
        stdin = process.stdio.stdin if process.stdio is not None else None
        return await _interactive(process, stdin) if stdin is not None else 0
    if args[0] != "-c":
        if args[0].startswith("-"):
            process.err(f"sh: {args[0]}: the emulated sh only supports -c")
            return 2
        process.err(f"sh: can't open '{args[0]}': No such file or directory")
        return 2
    if len(args) < 2:
        process.err("sh: -c requires an argument")
        return 2
    try:
        commands = parse(args[1])
    except ShellSyntaxError as err:
        process.err(f"sh: {err}")
        return 2
    jobs: list[asyncio.Task[int]] = []
    try:
        # `sh -c CMD` runs CMD in its place (it stays PID 1); in a chain each is a child.
        in_place = len(commands) == 1 and not commands[0].background
        return (await _execute(process, commands, 0, jobs, in_place=in_place)).status
    finally:
        _end_jobs(jobs)


def _end_jobs(jobs: list[asyncio.Task[int]]) -> None:
    """Background jobs end with their shell."""
    for job in jobs:
        job.cancel()


async def _interactive(process: Exec, stdin: Input) -> int:
    """Read, run, repeat, until `exit` or end of input; the status of the last command."""
    assert process.stdio is not None
    terminal = stdin if isinstance(stdin, Terminal) else None
    if terminal is not None:
        terminal.catches_interrupt = True
    status = 0
    jobs: list[asyncio.Task[int]] = []
    try:
        while True:
            try:
                line = await (stdin.read_line() if terminal is None else terminal.read_line(PROMPT))
            except Interrupted:
                process.stdio.write("\n")
                status = EXIT_INTERRUPTED
                continue
            if line is None:
                if terminal is not None:
                    process.stdio.write("\n")
                return status
            try:
                commands = parse(line)
            except ShellSyntaxError as err:
                process.err(f"sh: {err}")
                status = 2
                continue
            outcome = await _foreground(process, terminal, commands, status, jobs)
            if outcome.exited:
                return outcome.status
            status = outcome.status
    finally:
        _end_jobs(jobs)


async def _foreground(
    process: Exec,
    terminal: Terminal | None,
    commands: list[_Command],
    status: int,
    jobs: list[asyncio.Task[int]],
) -> _Outcome:
    """Run one line's commands; on a TTY, Ctrl-C interrupts them (status 130)."""
    running = asyncio.ensure_future(_execute(process, commands, status, jobs, in_place=False))
    if terminal is None:
        return await running
    interrupt = asyncio.ensure_future(terminal.until_interrupted())
    try:
        await asyncio.wait((running, interrupt), return_when=asyncio.FIRST_COMPLETED)
    finally:
        interrupt.cancel()
    if running.done():
        return running.result()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert process.stdio is not None
    process.stdio.write("\n")
    return _Outcome(EXIT_INTERRUPTED)


async def _execute(
    process: Exec,
    commands: list[_Command],
    status: int,
    jobs: list[asyncio.Task[int]],
    *,
    in_place: bool,
) -> _Outcome:
    env = process.env
    for command in commands:
        if (command.connector == "&&" and status != 0) or (
            command.connector == "||" and status == 0
        ):
            continue
        try:
            words = _expand(command.words, env, status)
        except ShellArithmeticError as err:  # ash: the command does not run, status 2
            process.err(f"sh: {err}")
            return _Outcome(2)
        if not words:
            continue
        if words[0] in _KEYWORDS:
            process.err(f"sh: {words[0]}: control flow is not supported by the emulated sh")
            return _Outcome(2)
        assignments = 0
        while assignments < len(words) and _is_assignment(words[assignments]):
            assignments += 1
        if assignments == len(words):
            for assignment in words:
                name, _, value = assignment.partition("=")
                env[name] = value
            status = 0
            continue
        if assignments:
            process.err("sh: VAR=value before a command is not supported by the emulated sh")
            return _Outcome(2)
        name = words[0]
        if command.background:
            jobs.append(asyncio.ensure_future(process.spawn(process.child(), words)))
            status = 0
            continue
        if name == "exit":
            return _Outcome(_exit_status(process, words, status), exited=True)
        if name == "exec":
            exec_status = await process.spawn(process, words[1:]) if len(words) > 1 else 0
            return _Outcome(exec_status, exited=len(words) > 1)
        if name in _BUILTINS:
            status = _builtin(process, words)
            continue
        status = await process.spawn(process if in_place else process.child(), words)
    return _Outcome(status)


def _is_assignment(word: str) -> bool:
    name, eq, _ = word.partition("=")
    return bool(eq) and bool(name) and name.replace("_", "a").isalnum() and not name[0].isdigit()


def _exit_status(process: Exec, words: list[str], status: int) -> int:
    if len(words) == 1:
        return status
    try:
        return int(words[1]) & 0xFF
    except ValueError:
        process.err(f"sh: exit: Illegal number: {words[1]}")
        return 2


def _builtin(process: Exec, words: list[str]) -> int:
    name, args = words[0], words[1:]
    if name == "false":
        return 1
    if name == "export":
        for arg in args:
            key, eq, value = arg.partition("=")
            if eq:
                process.env[key] = value
        return 0
    return 0  # true, ":" and cd (the emulated filesystem has no directories to enter)
