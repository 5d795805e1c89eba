"""The emulated `sh`'s builtins, with busybox ash's words for their errors.

Special builtins (their assignments stay, their errors end a script): `:`, `.`, `break`,
`continue`, `eval`, `exec`, `exit`, `export`, `readonly`, `return`, `set`, `shift`, `trap`,
`unset`;
the others: `cd`, `pwd`, `echo`, `printf`, `test` and `[` (`shell_test.py`), `read`, `local`,
`wait`, `kill` (of the shell's background jobs), `command`, `type`, `true`, `false`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable

from controlplane.agent import arithmetic, shell_test
from controlplane.agent.arithmetic import ShellArithmeticError
from controlplane.agent.byte_streams import as_text
from controlplane.agent.process import ExecNotFoundError, find_executable
from controlplane.agent.shell_run import (
    Builtin,
    FunctionReturn,
    LoopControl,
    Shell,
    ShellError,
    ShellExit,
)
from controlplane.agent.shell_words import DEFAULT_IFS, FieldBuilder

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_SET_OPTIONS = {
    "errexit": "e",
    "nounset": "u",
    "xtrace": "x",
    "noglob": "f",  # there is no globbing to turn off
    "pipefail": "pipefail",
}
EXIT_KILLED_BY_TERM = 128 + 15


def echo_text(args: list[str]) -> str:
    """busybox echo's output for `args`: `-n` (no newline), `-e` (backslash escapes, `\\c`
    stops), `-E`; the newline is included."""
    newline, escapes = True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        for flag in args[0][1:]:
            newline = newline and flag != "n"
            escapes = (escapes or flag == "e") and flag != "E"
        args = args[1:]
    text = " ".join(args)
    if escapes:
        text, stopped = _unescape(text)
        newline = newline and not stopped
    return text + ("\n" if newline else "")


def _unescape(text: str) -> tuple[str, bool]:
    """Backslash escapes as echo -e and printf's %b read them; True if `\\c` stopped it."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 >= len(text):
            out.append(ch)
            i += 1
            continue
        following = text[i + 1]
        if following == "c":
            return "".join(out), True
        if following in _ESCAPES:
            out.append(_ESCAPES[following])
            i += 2
        elif following == "\\":
            out.append("\\")
            i += 2
        elif following == "0" or following.isdigit():
            digits = re.match(r"0?[0-7]{0,3}", text[i + 1 :])
            assert digits is not None
            code = digits[0].removeprefix("0") if following == "0" else digits[0]
            out.append(_byte(int(code or "0", 8) & 0xFF))
            i += 1 + len(digits[0])
        elif following == "x" and re.match(r"[0-9a-fA-F]", text[i + 2 : i + 3]):
            digits = re.match(r"[0-9a-fA-F]{1,2}", text[i + 2 :])
            assert digits is not None
            out.append(_byte(int(digits[0], 16)))
            i += 2 + len(digits[0])
        else:
            out.append(ch)
            i += 1
    return "".join(out), False


def _byte(code: int) -> str:
    """The byte an escape (`\\377`, `\\xff`) stands for, as shell text: above 127 a raw
    byte, not a character (`byte_streams.as_text`)."""
    return as_text(bytes((code,)))


async def _colon(shell: Shell, argv: list[str]) -> int:
    return 0


async def _false(shell: Shell, argv: list[str]) -> int:
    return 1


def _number(name: str, text: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise ShellError(f"{name}: Illegal number: {text}")
    return int(text)


async def _exit(shell: Shell, argv: list[str]) -> int:
    status = shell.status if len(argv) < 2 else _number("exit", argv[1]) & 0xFF
    raise ShellExit(status)


async def _return(shell: Shell, argv: list[str]) -> int:
    status = shell.status if len(argv) < 2 else _number("return", argv[1]) & 0xFF
    raise FunctionReturn(status)


async def _loop_control(shell: Shell, argv: list[str]) -> int:
    levels = 1 if len(argv) < 2 else _number(argv[0], argv[1])
    if levels < 1:
        raise ShellError(f"{argv[0]}: Illegal number: {argv[1]}")
    if not shell.loop_depth:
        return 0  # ash ignores them outside a loop
    raise LoopControl(min(levels, shell.loop_depth), again=argv[0] == "continue")


def _name_checked(builtin: str, name: str) -> str:
    if _NAME.fullmatch(name) is None:
        raise ShellError(f"{builtin}: {name}: bad variable name")
    return name


async def _export(shell: Shell, argv: list[str]) -> int:
    args = argv[1:]
    if not args or args == ["-p"]:
        for name in sorted(shell.exported & set(shell.variables)):
            shell.out(f"export {name}={_quoted(shell.variables[name])}")
        return 0
    for arg in args:
        name, eq, value = arg.partition("=")
        _name_checked(argv[0], name)
        if eq:
            shell.set_variable(name, value)
        if argv[0] == "readonly":
            shell.readonly.add(name)
        else:
            shell.exported.add(name)
    return 0


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


async def _unset(shell: Shell, argv: list[str]) -> int:
    args = argv[1:]
    functions = bool(args) and args[0] == "-f"
    if args and args[0] in ("-f", "-v"):
        args = args[1:]
    for name in args:
        if functions:
            shell.functions.pop(name, None)
            continue
        if name in shell.readonly:
            raise ShellError(f"unset: {name}: is read only")
        shell.variables.pop(name, None)
        shell.exported.discard(name)
    return 0


async def _local(shell: Shell, argv: list[str]) -> int:
    if not shell.function_depth:
        raise ShellError("local: not in a function", 1, fatal=False)
    for arg in argv[1:]:
        name, eq, value = arg.partition("=")
        shell.make_local(_name_checked("local", name))
        if eq:
            shell.set_variable(name, value)
    return 0


async def _shift(shell: Shell, argv: list[str]) -> int:
    count = 1 if len(argv) < 2 else _number("shift", argv[1])
    if count > len(shell.positional):
        raise ShellError("shift: can't shift that many")
    shell.positional = shell.positional[count:]
    return 0


async def _set(shell: Shell, argv: list[str]) -> int:
    args = argv[1:]
    if not args:
        for name in sorted(shell.variables):
            shell.out(f"{name}={_quoted(shell.variables[name])}")
        return 0
    while args and args[0][:1] in ("-", "+") and args[0] not in ("-", "+"):
        flag = args.pop(0)
        if flag == "--":
            shell.positional = args
            return 0
        enable = flag[0] == "-"
        if flag[1:] == "o":
            if not args:
                for option, letter in _SET_OPTIONS.items():
                    shell.out(f"{option:<16}{'on' if letter in shell.options else 'off'}")
                return 0
            option = args.pop(0)
            if option not in _SET_OPTIONS:
                raise ShellError(f"set: illegal option -o {option}")
            letters = [_SET_OPTIONS[option]]
        else:
            letters = list(flag[1:])
        for letter in letters:
            if letter not in _SET_OPTIONS.values():
                raise ShellError(f"set: illegal option -{letter}")
            (shell.options.add if enable else shell.options.discard)(letter)
    if args:
        shell.positional = args[1:] if args[0] in ("-", "+") else args
    return 0


async def _eval(shell: Shell, argv: list[str]) -> int:
    return await shell.run_text(" ".join(argv[1:]))


async def _dot(shell: Shell, argv: list[str]) -> int:
    if len(argv) < 2:
        raise ShellError(f"{argv[0]}: missing filename")
    file = shell.process.container_files.get(shell.absolute(argv[1]))
    if file is None:
        raise ShellError(f"{argv[0]}: can't open '{argv[1]}': No such file or directory")
    saved = shell.positional
    if len(argv) > 2:
        shell.positional = argv[2:]
    try:
        return await shell.run_text(as_text(file.data))
    except FunctionReturn as returned:
        return returned.status
    finally:
        shell.positional = saved


async def _exec(shell: Shell, argv: list[str]) -> int:
    """`exec CMD...` runs CMD as the shell's own process, then the shell is done; `exec`
    alone keeps its redirections for the rest of the script."""
    if len(argv) == 1:
        shell.keep_streams()
        return 0
    raise ShellExit(await shell.spawn(argv[1:], {}, in_place=True))


async def _cd(shell: Shell, argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else shell.variables.get("HOME", "/")
    if target == "-":
        target = shell.variables.get("OLDPWD", "/")
    path = shell_test.normalized(shell.absolute(target))
    if not shell_test.is_folder(shell.process, path):
        raise ShellError(f"cd: can't cd to {target}: No such file or directory", 2, fatal=False)
    shell.variables["OLDPWD"] = shell.variables.get("PWD", "/")
    shell.variables["PWD"] = path
    shell.exported.add("PWD")  # the programs it runs find relative paths from there
    return 0


async def _pwd(shell: Shell, argv: list[str]) -> int:
    shell.out(shell.variables.get("PWD", "/"))
    return 0


async def _echo(shell: Shell, argv: list[str]) -> int:
    shell.write(echo_text(argv[1:]))
    return 0


async def _printf(shell: Shell, argv: list[str]) -> int:
    if len(argv) < 2:
        shell.error("printf: usage: printf FORMAT [ARGUMENT...]")
        return 1
    text, status = printf_text(argv[1], argv[2:], shell.error)
    shell.write(text)
    return status


def printf_text(form: str, args: list[str], report: Callable[[str], None]) -> tuple[str, int]:
    """printf's output: `form` applied to `args` (again while arguments remain), and its
    status (1 after an argument that is no number where one was needed)."""
    directive = re.compile(r"%([-+ #0]*)(\d*)(?:\.(\d*))?([diouxXcsbeEfgG%])")
    status = 0
    out: list[str] = []
    remaining = list(args)
    while True:
        position = 0
        used = 0
        for match in directive.finditer(form):
            out.append(_unescape(form[position : match.start()])[0])
            position = match.end()
            flags, width, precision, kind = match.groups()
            if kind == "%":
                out.append("%")
                continue
            arg = remaining.pop(0) if remaining else ""
            used += 1
            spec = f"%{flags}{width}{'.' + precision if precision is not None else ''}"
            if kind in "sb":
                value = _unescape(arg)[0] if kind == "b" else arg
                out.append((spec + "s") % value)
            elif kind == "c":
                out.append((spec + "s") % arg[:1])
            else:
                number: float = 0
                try:
                    number = _printf_number(arg, kind)
                except ValueError:
                    report(f"printf: invalid number '{arg}'")
                    status = 1
                out.append((spec + ("d" if kind in "iu" else kind)) % number)
        out.append(_unescape(form[position:])[0])
        if not remaining or not used:
            return "".join(out), status


def _printf_number(arg: str, kind: str) -> float:
    if not arg:
        return 0
    if arg[0] in "'\"" and len(arg) > 1:
        return ord(arg[1])
    if kind in "eEfgG":
        return float(arg)
    return int(arg, 0) if not re.fullmatch(r"[+-]?0\d+", arg) else int(arg, 8)


async def _read(shell: Shell, argv: list[str]) -> int:
    args = argv[1:]
    raw = False
    while args and args[0].startswith("-") and len(args[0]) > 1:
        option = args.pop(0)
        if option == "-r":
            raw = True
        elif option == "-p" and args:
            args.pop(0)  # the prompt goes to a terminal: there is none to show it on here
        else:
            raise ShellError(f"read: illegal option {option}", 2, fatal=False)
    names = [_name_checked("read", name) for name in args] or ["REPLY"]
    line = await shell.io.input.read_line()
    if line is None:
        for name in names:
            shell.set_variable(name, "")
        return 1
    status = 0 if line.endswith("\n") else 1  # a last line without its newline: read, 1
    line = line.removesuffix("\n")
    if not raw:
        line = re.sub(r"\\(.)", r"\1", line)
    ifs = shell.variables.get("IFS", DEFAULT_IFS)
    if len(names) == 1:
        shell.set_variable(names[0], line.strip(" \t\n") if names != ["REPLY"] else line)
        return status
    builder = FieldBuilder(ifs)
    builder.split(line.strip(" \t\n"))
    builder.end()
    fields = ["".join(chunk.text for chunk in field) for field in builder.fields]
    for index, name in enumerate(names):
        if index == len(names) - 1:
            rest = _rest_of_line(line, ifs, index)
            shell.set_variable(name, rest)
        else:
            shell.set_variable(name, fields[index] if index < len(fields) else "")
    return status


def _rest_of_line(line: str, ifs: str, skip: int) -> str:
    """What is left of `line` after its first `skip` fields (the last name of `read` takes
    it all, inner separators included)."""
    rest = line.strip(" \t\n")
    separators = re.escape(ifs) if ifs else " "
    for _ in range(skip):
        rest = re.sub(rf"^[^{separators}]*[{separators}]*", "", rest, count=1)
    return rest


async def _wait(shell: Shell, argv: list[str]) -> int:
    """`wait` for every job (status 0) or those named (the last one's status)."""
    pids = argv[1:] or list(shell.jobs)
    status = 0
    for pid in pids:
        job = shell.jobs.get(pid)
        if job is None:
            status = 127
            continue
        if not await _until_done_or_trapped(shell, job):
            return EXIT_KILLED_BY_TERM  # a trapped SIGTERM interrupts `wait`, as in ash
        status = EXIT_KILLED_BY_TERM if job.cancelled() else job.result()
        shell.jobs.pop(pid, None)
    return status if len(argv) > 1 else 0


async def _until_done_or_trapped(shell: Shell, job: asyncio.Task[int]) -> bool:
    """Wait for `job`; False if a SIGTERM the shell traps came first."""
    if not (shell.receives_term and shell.traps.get("TERM")):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(job)
        return True
    terminated = asyncio.ensure_future(shell.process.terminated.wait())
    try:
        await asyncio.wait((job, terminated), return_when=asyncio.FIRST_COMPLETED)
    finally:
        terminated.cancel()
    return job.done()


async def _kill(shell: Shell, argv: list[str]) -> int:
    args = argv[1:]
    if args and args[0] == "-s":
        args = args[2:]
    elif args and args[0].startswith("-"):
        args = args[1:]
    status = 0
    for pid in args:
        job = shell.jobs.get(pid.lstrip("%"))
        if job is None:
            shell.error(f"kill: can't kill pid {pid}: No such process")
            status = 1
            continue
        job.cancel()
    return status


async def _command(shell: Shell, argv: list[str]) -> int:
    args = argv[1:]
    if args[:1] in (["-v"], ["-V"]):
        verbose = args[0] == "-V"
        status = 0
        for name in args[1:]:
            found = _describe(shell, name, verbose)
            if found is None:
                status = 1
                if verbose:
                    shell.error(f"{name}: not found")
            else:
                shell.out(found)
        return status
    if not args:
        return 0
    builtin = shell.builtins.get(args[0])
    if builtin is not None:
        return await builtin(shell, args)
    return await shell.spawn(args, {})


async def _type(shell: Shell, argv: list[str]) -> int:
    status = 0
    for name in argv[1:]:
        found = _describe(shell, name, verbose=True)
        if found is None:
            shell.out(f"{name}: not found")
            status = 127
        else:
            shell.out(found)
    return status


def _describe(shell: Shell, name: str, verbose: bool) -> str | None:
    """What `command -v` (`-V`, `type`) says NAME is; None when it is nothing."""
    if name in shell.functions:
        return f"{name} is a function" if verbose else name
    if name in shell.special_builtins:
        return f"{name} is a special shell builtin" if verbose else name
    if name in shell.builtins:
        return f"{name} is a shell builtin" if verbose else name
    try:
        path = find_executable(shell.process.files, shell.variables.get("PATH", ""), name)
    except ExecNotFoundError:
        return None
    return f"{name} is {path}" if verbose else path


_SIGNALS = {"0": "EXIT", "1": "HUP", "2": "INT", "3": "QUIT", "9": "KILL", "10": "USR1",
            "12": "USR2", "13": "PIPE", "14": "ALRM", "15": "TERM"}  # fmt: skip


def _signal_name(text: str) -> str:
    name = _SIGNALS.get(text, text.upper().removeprefix("SIG"))
    if name not in _SIGNALS.values():
        raise ShellError(f"trap: {text}: bad trap", 1, fatal=False)
    return name


async def _trap(shell: Shell, argv: list[str]) -> int:
    """`trap [ACTION SIGNAL...]`: EXIT runs when the shell ends, TERM when a stop's SIGTERM
    comes to the shell as PID 1 (between commands, as ash); `-` resets, `''` ignores. The
    other signals are kept but never come: nothing sends them to an emulated container."""
    args = argv[1:]
    if not args or args == ["-p"]:
        for name, action in shell.traps.items():
            shell.out(f"trap -- {_quoted(action)} {name}")
        return 0
    action, names = args[0], [_signal_name(arg) for arg in args[1:]]
    if not names:
        raise ShellError("trap: usage: trap [ACTION SIGNAL...]", 1, fatal=False)
    for name in names:
        if name == "KILL":
            raise ShellError("trap: KILL: can't be trapped", 1, fatal=False)
        if action == "-":
            shell.traps.pop(name, None)
        else:
            shell.traps[name] = action
    return 0


async def _let(shell: Shell, argv: list[str]) -> int:
    """`let EXPRESSION...`: each evaluated; 1 if the last is 0."""
    if len(argv) < 2:
        raise ShellError("let: expression expected", 1, fatal=False)
    value = 0
    for expression in argv[1:]:
        try:
            value = arithmetic.evaluate(expression, shell.variables, shell.status)
        except ShellArithmeticError as err:
            raise ShellError(f"let: {err}", 1, fatal=False) from None
    return 0 if value else 1


async def _test(shell: Shell, argv: list[str]) -> int:
    try:
        return shell_test.evaluate(shell.process, argv, shell.absolute)
    except shell_test.TestError as err:
        raise ShellError(str(err), 2, fatal=False) from None


SPECIAL = frozenset(
    (":", ".", "break", "continue", "eval", "exec", "exit", "export", "readonly", "return",
     "set", "shift", "trap", "unset")
)  # fmt: skip

BUILTINS: dict[str, Builtin] = {
    ":": _colon,
    "true": _colon,
    "false": _false,
    ".": _dot,
    "source": _dot,
    "break": _loop_control,
    "continue": _loop_control,
    "eval": _eval,
    "exec": _exec,
    "exit": _exit,
    "export": _export,
    "readonly": _export,
    "return": _return,
    "set": _set,
    "shift": _shift,
    "unset": _unset,
    "local": _local,
    "cd": _cd,
    "pwd": _pwd,
    "echo": _echo,
    "printf": _printf,
    "read": _read,
    "wait": _wait,
    "kill": _kill,
    "command": _command,
    "type": _type,
    "test": _test,
    "[": _test,
    "[[": _test,
    "trap": _trap,
    "let": _let,
}
