"""The emulated `sh`: busybox ash for what containers run in `sh -c "..."`.

`shell_syntax.py` reads a script into a syntax tree, `shell_run.py` runs it, with the
builtins of `shell_builtins.py` and `shell_test.py`. Supported: simple commands with
`NAME=value` prefixes, pipelines (`|`, `!`), `&&`, `||`, `;`, `&` (a background job ends
with the shell, as a container's processes end with its PID 1: `sh -c "nc -u -l -p 80 -e
hostname & httpd -f -p 80"` serves both until stopped), `{ ...; }`, `( ... )`, `if`,
`while`, `until`, `for`, `case`, functions, `break`/`continue`/`return`; quotes,
backslashes, `$name`, the `${name...}` forms, `$?`, `$#`, `$@`, `$*`, `$0`-`$9`, `$$`, `$!`,
`$((...))` (`arithmetic.py`), `$(...)` and backquotes, `~`, field splitting on IFS;
redirections of descriptors 0-2 (`>`, `>>`, `<`, `2>&1`, `2>/dev/null`, here-documents) on
the container's files; `set -e`, `set -u`, `set -x`, `set -o pipefail`; `trap` on EXIT and
TERM; and ash's bash forms `function NAME`, `[[ ... ]]` (test), `${x/a/b}`, `${x:1:2}`,
`&>`, `let`, `$RANDOM`; pathname expansion over the container's files (`for f in
/run/secrets/*`). Not done: job control, aliases, descriptors above 2 (refused, naming
them), arrays, `<<<`, `&>>`: syntax the parser does not know is a syntax error with ash's
words (`sh: syntax error: unexpected "("`), status 2.

A script that is one simple command runs it in place of the shell, as busybox and dash do
for `sh -c CMD`: so `sh -c "nginx -g 'daemon off;'"` is PID 1 and gets the stop's SIGTERM.
A shell that is PID 1 ignores SIGTERM, as Linux gives PID 1 no default action: a `while
true` script is killed when the stop's grace period ends, wherever it is, unless it traps
TERM (`trap 'exit 0' TERM`): the trap runs after the command running when the signal came,
or at once in `wait`.

`sh` with no script and an open standard input (`docker run -i`, `docker exec -i`, a pipe)
reads its commands from it; on a TTY (`-it`) it is busybox's interactive shell: the `/ # `
prompt (`> ` while a command is not complete), Ctrl-C interrupting the running command
(status 130) or the line being typed, Ctrl-D or `exit` ending it. The terminal's echo and
editing are in `terminal.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from controlplane.agent.byte_streams import Input, as_text, input_of
from controlplane.agent.process import Exec
from controlplane.agent.shell_builtins import BUILTINS, SPECIAL
from controlplane.agent.shell_run import (
    EXIT_SYNTAX,
    FunctionReturn,
    LoopControl,
    Shell,
    ShellExit,
)
from controlplane.agent.shell_syntax import (
    CommandList,
    ShellIncomplete,
    ShellSyntaxError,
    SimpleCommand,
    parse,
)
from controlplane.agent.stdio import STDOUT
from controlplane.agent.terminal import EXIT_INTERRUPTED, Interrupted, Terminal
from controlplane.agent.textutils import path_of

PROMPT = "/ # "  # busybox's default PS1 (`\w \$ `) for root in /
CONTINUATION_PROMPT = "> "  # PS2
_OPTIONS = "cesiux"


async def sh(process: Exec, argv: list[str]) -> int:
    """`sh [-ex] -c SCRIPT [NAME [ARGS...]]`, `sh [-ex] FILE [ARGS...]`, or `sh` reading
    commands from its standard input (with a prompt and Ctrl-C on a TTY). Without standard
    input, `sh` alone exits 0."""
    args = argv[1:]
    options: set[str] = set()
    while args and args[0].startswith("-") and len(args[0]) > 1 and args[0] != "--":
        flag = args.pop(0)
        unknown = set(flag[1:]) - set(_OPTIONS)
        if unknown:
            process.err(f"sh: -{min(unknown)}: invalid option")
            return EXIT_SYNTAX
        options.update(flag[1:])
    if args[:1] == ["--"]:
        args.pop(0)
    if "c" in options:
        if not args:
            process.err("sh: -c requires an argument")
            return EXIT_SYNTAX
        script, name, rest = args[0], args[1] if len(args) > 1 else "sh", args[2:]
    elif args and "s" not in options:
        file = process.container_files.get(path_of(process, args[0]))
        if file is None:
            process.err(f"sh: can't open '{args[0]}': No such file or directory")
            return EXIT_SYNTAX
        script, name, rest = as_text(file.data), args[0], args[1:]
    else:
        shell = Shell(process, "sh", args, BUILTINS, SPECIAL)
        shell.options.update(options & {"e", "u", "x"})
        return await _ending(shell, _read_commands(shell, input_of(process)))
    try:
        tree = parse(script)
    except ShellSyntaxError as err:
        process.err(f"sh: {err}")
        return EXIT_SYNTAX
    shell = Shell(process, name, rest, BUILTINS, SPECIAL)
    shell.options.update(options & {"e", "u", "x"})
    shell.in_place = _one_command(tree)
    return await _ending(shell, shell.run_script(tree))


async def _ending(shell: Shell, running: Awaitable[int]) -> int:
    """Run the shell's commands, then its EXIT trap (an `exit` there sets the status); its
    background jobs end with it."""
    try:
        status = await running
        trapped = await shell.run_exit_trap()
        return status if trapped is None else trapped
    finally:
        shell.end_jobs()


def _one_command(tree: CommandList) -> bool:
    """Whether the script is a single simple command (it then runs as the shell itself)."""
    if len(tree.items) != 1 or tree.items[0].background:
        return False
    and_or = tree.items[0].command
    pipeline = and_or.first
    return (
        not and_or.rest
        and not pipeline.negated
        and len(pipeline.commands) == 1
        and isinstance(pipeline.commands[0], SimpleCommand)
    )


async def _read_commands(shell: Shell, source: Input) -> int:
    """Read, run, repeat, until `exit` or end of input; the status of the last command."""
    terminal = source if isinstance(source, Terminal) else None
    if terminal is not None:
        terminal.catches_interrupt = True
    shell.interactive = terminal is not None
    while True:
        try:
            tree = await _next_command(shell, source, terminal)
        except Interrupted:
            _new_line(shell)
            shell.status = EXIT_INTERRUPTED
            continue
        except ShellSyntaxError as err:
            shell.error(str(err))
            shell.status = EXIT_SYNTAX
            if terminal is None:
                return EXIT_SYNTAX  # a script read from a pipe ends at its error
            continue
        if tree is None:
            if terminal is not None:
                _new_line(shell)
            return shell.status
        try:
            shell.status = await _foreground(shell, terminal, tree)
        except ShellExit as end:
            return end.status


async def _next_command(
    shell: Shell, source: Input, terminal: Terminal | None
) -> CommandList | None:
    """The next complete command (more lines are read while it is not); None at the end."""
    text = ""
    while True:
        prompt = PROMPT if not text else CONTINUATION_PROMPT
        line = await (terminal.read_line(prompt) if terminal is not None else source.read_line())
        if line is None:
            if text:
                parse(text)  # the error for what is left unfinished
            return None
        text += line
        try:
            return parse(text)
        except ShellIncomplete:
            continue


async def _foreground(shell: Shell, terminal: Terminal | None, tree: CommandList) -> int:
    """Run one command; on a TTY, Ctrl-C interrupts it (status 130)."""
    running = asyncio.ensure_future(_run_interactively(shell, tree))
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
    _new_line(shell)
    return EXIT_INTERRUPTED


def _new_line(shell: Shell) -> None:
    """After a Ctrl-C, the terminal's cursor goes to a new line (not a line of output)."""
    if shell.process.stdio is not None:
        shell.process.stdio.write(STDOUT, b"\n")


async def _run_interactively(shell: Shell, tree: CommandList) -> int:
    """A command of the interactive shell: `exit` ends the shell (ShellExit goes up), a
    stray `break` or `return` only ends the command."""
    try:
        return await shell.run_list(tree)
    except (LoopControl, FunctionReturn):
        return shell.status
