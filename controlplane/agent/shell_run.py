"""The emulated `sh`'s interpreter: runs a syntax tree (`shell_syntax.py`) as busybox ash
does, on the emulated process model (`process.Exec`).

State is a `Shell`: variables (those exported go to the commands it runs), positional
parameters, functions, `$?`, options (`set -e`, `set -x`) and its standard streams. A
subshell (`( ... )`, each command of a pipeline, `$(...)`, a background job) runs on a copy,
so what it changes stays there. A pipeline's commands run at once, each its own task, joined
by byte `Pipe`s (`byte_streams.py`); its status is the last command's. Loops give the event
loop a turn at every iteration (and wait while their output pipe is full), so `while true;
do :; done` neither blocks the node nor escapes a stop: a container's stop cancels the task,
which ends wherever the script is.

Redirections: `<`, `>`, `>|`, `>>`, `<>` (read), `<<` and `<<-` here-documents, `N>&M`,
`N<&M`, `N>&-` for descriptors 0 to 2; `/dev/null`, `/dev/stdout`, `/dev/stderr` are known;
other files are the container's (`mounts.MountedFiles`: written ones are kept for its other
processes, in the volume's folder under a volume). Output is bytes, as the programs write
them: `printf a; printf b` writes `ab`, and `$(...)` drops only the trailing newlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace

from controlplane.agent import arithmetic, shell_syntax, shell_test
from controlplane.agent.arithmetic import ShellArithmeticError
from controlplane.agent.byte_streams import (
    EXIT_BROKEN_PIPE,
    BytesInput,
    Input,
    Pipe,
    Sink,
    as_bytes,
    as_text,
    discard,
    input_of,
    no_input,
)
from controlplane.agent.mounts import MountedFiles
from controlplane.agent.process import Exec
from controlplane.agent.shell_syntax import (
    AndOr,
    Arithmetic,
    BraceGroup,
    Case,
    Command,
    CommandList,
    CommandSubstitution,
    For,
    FunctionDefinition,
    HereDocument,
    If,
    Item,
    Literal,
    Loop,
    Parameter,
    Pipeline,
    Redirect,
    Redirected,
    SimpleCommand,
    Subshell,
    Word,
)
from controlplane.agent.shell_words import (
    DEFAULT_IFS,
    Chunk,
    FieldBuilder,
    expand_pathname,
    is_pattern,
    matches,
    remove_affix,
    replace_pattern,
)

EXIT_SYNTAX = 2
_PIDS = itertools.count(100)  # what `$$` of a child shell and `$!` say


class ShellExit(Exception):
    """`exit`, a fatal error of a non-interactive shell, or `set -e`: the shell ends."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ShellError(Exception):
    """An error that ends the command (the message, ash's, is printed with `sh: `): an
    expansion error, a bad redirection, a misused builtin."""

    def __init__(self, message: str, status: int = EXIT_SYNTAX, *, fatal: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.fatal = fatal  # a non-interactive shell exits on it (POSIX: expansion errors)


class LoopControl(Exception):
    """`break N` or `continue N`."""

    def __init__(self, levels: int, *, again: bool) -> None:
        super().__init__(levels)
        self.levels = levels
        self.again = again  # continue


class FunctionReturn(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class Streams:
    """A shell's (or one command's) standard input, output and error; `drain` waits while
    its output pipe is full."""

    input: Input
    out: Sink
    err: Sink
    drain: Callable[[], Awaitable[None]] | None = None


Builtin = Callable[["Shell", list[str]], Awaitable[int]]


class Shell:
    def __init__(
        self,
        process: Exec,
        name: str,
        args: list[str],
        builtins: Mapping[str, Builtin],
        special_builtins: frozenset[str],
    ) -> None:
        """A shell running as `process`, `$0` `name`, positional parameters `args`; its
        builtins (`shell_builtins.py`, which builds on this module) are given."""
        self.builtins = builtins
        self.special_builtins = special_builtins
        self.process = process
        self.variables: dict[str, str] = dict(process.env)
        self.exported: set[str] = set(process.env)
        self.name = name
        self.positional = list(args)
        self.functions: dict[str, Command] = {}
        self.status = 0
        self.io = Streams(input_of(process), process.stdout, process.stderr)
        self.options: set[str] = set()  # "e" (errexit), "u" (nounset), "x", "f", "pipefail"
        self.pid = 1 if process.pid1 else next(_PIDS)
        self.last_job_pid = ""
        self.jobs: dict[str, asyncio.Task[int]] = {}  # this shell's, by `$!`
        self.every_job: list[asyncio.Task[int]] = []  # its subshells' too (shared with them)
        self.interactive = False
        self.in_place = False  # the script is one command: it runs as the shell's process
        self.loop_depth = 0
        self.function_depth = 0
        self._checked = 0  # > 0 while in a condition, where `set -e` does not apply
        self._locals: list[dict[str, str | None]] = []  # saved values, per running function
        self.readonly: set[str] = set()
        self._substituted: int | None = None  # status of the command's last `$(...)`
        self._keeps_streams = False  # `exec` without a command: its redirections stay
        self.traps: dict[str, str] = {}  # signal name -> action ("" ignores it)
        self.receives_term = process.pid1  # only PID 1 gets the SIGTERM of a stop
        self._terminated_handled = False

    # -- state -----------------------------------------------------------------------------

    def fork(self) -> Shell:
        """A subshell: a copy of this shell's state (what it changes stays in it)."""
        child = Shell.__new__(Shell)
        child.__dict__.update(self.__dict__)
        child.variables = dict(self.variables)
        child.exported = set(self.exported)
        child.positional = list(self.positional)
        child.functions = dict(self.functions)
        child.options = set(self.options)
        child.jobs = {}
        child.interactive = False
        child.in_place = False
        child._locals = []
        child.readonly = set(self.readonly)
        child.traps = {name: "" for name, action in self.traps.items() if action == ""}
        child.receives_term = False  # a subshell is a process of its own, not PID 1
        return child

    def set_variable(self, name: str, value: str) -> None:
        if name in self.readonly:
            raise ShellError(f"{name}: is read only")
        self.variables[name] = value

    def keep_streams(self) -> None:
        """The running command's redirections stay the shell's (`exec >log`)."""
        self._keeps_streams = True

    def absolute(self, path: str) -> str:
        """`path` from the working directory (`cd` sets it)."""
        if path.startswith("/"):
            return path
        return f"{self.variables.get('PWD', '/').rstrip('/')}/{path}"

    def report(self, err: ShellError) -> int:
        """Print a command's error; a non-interactive shell ends on a fatal one."""
        self.error(str(err))
        if err.fatal and not self.interactive:
            raise ShellExit(err.status)
        return err.status

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {name: self.variables[name] for name in self.exported if name in self.variables}
        env.update(extra or {})
        return env

    def write(self, text: str) -> None:
        """`text` on the shell's standard output, as is."""
        self.io.out(as_bytes(text))

    def out(self, line: str) -> None:
        """One line on the shell's standard output."""
        self.io.out(as_bytes(line + "\n"))

    def error(self, message: str) -> None:
        self.io.err(as_bytes(f"sh: {message}\n"))

    def end_jobs(self) -> None:
        """Background jobs, its subshells' too, end with the shell, as a container's
        processes end with its PID 1."""
        for job in self.every_job:
            job.cancel()

    # -- traps -------------------------------------------------------------------------------

    async def take_signals(self) -> None:
        """Run the TERM trap once the stop's SIGTERM has come (ash runs a trap between
        commands: after the foreground command it came during). Without a trap, PID 1
        ignores SIGTERM."""
        if self.receives_term and not self._terminated_handled and self.process.terminated.is_set():
            self._terminated_handled = True
            action = self.traps.get("TERM")
            if action:
                await self._trap_action(action)

    async def run_exit_trap(self) -> int | None:
        """The EXIT trap, when the shell ends; the status an `exit` in it gives, if any."""
        action = self.traps.pop("EXIT", "")
        if not action:
            return None
        try:
            await self.run_text(action)
        except ShellExit as end:
            return end.status
        except (ShellError, LoopControl, FunctionReturn):
            pass
        return None

    async def _trap_action(self, action: str) -> None:
        status = self.status  # a trap leaves $? as it was
        try:
            await self.run_text(action)
        except ShellError as err:
            self.report(err)
        self.status = status

    async def run_text(self, text: str) -> int:
        """Run `text` as commands of this shell (`eval`, traps)."""
        try:
            script = shell_syntax.parse(text)
        except shell_syntax.ShellSyntaxError as err:
            raise ShellError(str(err)) from None
        return await self.run_list(script)

    # -- running -----------------------------------------------------------------------------

    async def run_script(self, script: shell_syntax.CommandList) -> int:
        """Run a whole script; ShellExit ends it early. Its status."""
        try:
            return await self.run_list(script)
        except ShellExit as end:
            return end.status
        except (LoopControl, FunctionReturn):  # outside a loop or function: they end it
            return self.status

    async def run_list(self, body: CommandList) -> int:
        for item in body.items:
            if item.background:
                self._background(item.command)
                self.status = 0
            else:
                self.status = await self._and_or(item.command)
        return self.status

    def _background(self, command: AndOr) -> None:
        job = self.fork()
        # ash: a job without job control reads /dev/null
        job.io = replace(self.io, input=no_input())
        pid = str(next(_PIDS))
        self.jobs[pid] = asyncio.ensure_future(job.run_script(CommandList((Item(command),))))
        self.every_job.append(self.jobs[pid])
        self.every_job[:] = [j for j in self.every_job if not j.done()]
        self.last_job_pid = pid

    async def _and_or(self, node: AndOr) -> int:
        pipelines = [("", node.first), *node.rest]
        status = self.status
        for index, (op, pipeline) in enumerate(pipelines):
            if (op == "&&" and status != 0) or (op == "||" and status == 0):
                continue
            last = index == len(pipelines) - 1
            self._checked += not last or pipeline.negated
            try:
                status = await self._pipeline(pipeline)
            finally:
                self._checked -= not last or pipeline.negated
            self.status = status
            await self.take_signals()
            if last and status != 0 and "e" in self.options and not self._checked:
                raise ShellExit(status)
        return status

    async def _pipeline(self, node: Pipeline) -> int:
        if len(node.commands) == 1:
            status = await self.run_command(node.commands[0])
        else:
            status = await self._pipe(node.commands)
        return int(status == 0) if node.negated else status

    async def _pipe(self, commands: tuple[Command, ...]) -> int:
        channels = [Pipe() for _ in commands[1:]]
        tasks: list[asyncio.Task[int]] = []
        for index, command in enumerate(commands):
            member = self.fork()
            reads = channels[index - 1] if index else self.io.input
            writes = channels[index] if index < len(channels) else None
            member.io = Streams(
                reads,
                writes.write if writes is not None else self.io.out,
                self.io.err,
                writes.drained if writes is not None else self.io.drain,
            )
            task = asyncio.ensure_future(member.run_member(command))
            if writes is not None:
                writes.writer = task
            task.add_done_callback(_closing(reads if index else None, writes))
            tasks.append(task)
        try:
            await asyncio.wait(tasks)
        finally:
            for task in tasks:
                task.cancel()
        statuses = [EXIT_BROKEN_PIPE if t.cancelled() else t.result() for t in tasks]
        if "pipefail" in self.options:  # the last command that failed says
            return next((s for s in reversed(statuses) if s), 0)
        return statuses[-1]

    async def run_member(self, command: Command) -> int:
        """One command of a pipeline, in its subshell."""
        try:
            return await self.run_command(command)
        except ShellExit as end:
            return end.status
        except (LoopControl, FunctionReturn):
            return self.status

    async def run_command(self, command: Command) -> int:
        if isinstance(command, SimpleCommand):
            return await self._simple(command)
        if isinstance(command, Redirected):
            try:
                io = await self._redirected(command.redirects)
            except ShellError as err:
                return self.report(err)
            saved, self.io = self.io, io
            try:
                return await self.run_command(command.command)
            finally:
                self.io = saved
        if isinstance(command, BraceGroup):
            return await self.run_list(command.body)
        if isinstance(command, Subshell):
            subshell = self.fork()
            status = await subshell.run_script(command.body)
            trapped = await subshell.run_exit_trap()
            return status if trapped is None else trapped
        if isinstance(command, If):
            return await self._if(command)
        if isinstance(command, Loop):
            return await self._loop(command)
        if isinstance(command, For):
            return await self._for(command)
        if isinstance(command, Case):
            return await self._case(command)
        assert isinstance(command, FunctionDefinition)
        self.functions[command.name] = command.body
        return 0

    async def condition(self, body: CommandList) -> int:
        self._checked += 1
        try:
            return await self.run_list(body)
        finally:
            self._checked -= 1

    async def _if(self, node: If) -> int:
        for condition, body in node.branches:
            if await self.condition(condition) == 0:
                return await self.run_list(body)
        if node.otherwise is not None:
            return await self.run_list(node.otherwise)
        return 0

    async def pace(self) -> None:
        """A loop's turn: other tasks run; a full output pipe is waited for."""
        await asyncio.sleep(0)
        if self.io.drain is not None:
            await self.io.drain()
        await self.take_signals()

    async def _iteration(self, body: CommandList) -> bool:
        """Run a loop's body once; False when `break` ends the loop."""
        try:
            await self.run_list(body)
        except LoopControl as control:
            if control.levels > 1:
                raise LoopControl(control.levels - 1, again=control.again) from None
            return control.again
        return True

    async def _loop(self, node: Loop) -> int:
        async def go_on() -> bool:
            await self.pace()
            return (await self.condition(node.condition) == 0) != node.until

        return await self._repeat(node.body, go_on)

    async def _for(self, node: For) -> int:
        if node.words is None:
            values = list(self.positional)
        else:
            values = []
            for word in node.words:
                values.extend(await self.fields(word))
        pending = iter(values)

        async def go_on() -> bool:
            value = next(pending, None)
            if value is None:
                return False
            await self.pace()
            self.set_variable(node.name, value)
            return True

        return await self._repeat(node.body, go_on)

    async def _repeat(self, body: CommandList, go_on: Callable[[], Awaitable[bool]]) -> int:
        """Run `body` while `go_on()` says so, or until a `break`: the loop's status (that of
        the last body run, 0 if none ran), `break` and `continue` counted in `loop_depth`."""
        status = 0
        self.loop_depth += 1
        try:
            while await go_on():
                went_on = await self._iteration(body)
                status = self.status
                if not went_on:
                    break
        finally:
            self.loop_depth -= 1
        return status

    async def _case(self, node: Case) -> int:
        subject = await self.string(node.word)
        for item in node.items:
            for pattern in item.patterns:
                if matches(await self.chunks(pattern), subject):
                    return await self.run_list(item.body) if item.body.items else 0
        return 0

    async def _simple(self, node: SimpleCommand) -> int:
        self._substituted = None
        try:
            argv: list[str] = []
            for word in node.words:
                argv.extend(await self.fields(word))
            assignments = {name: await self.string(value) for name, value in node.assignments}
            io = await self._redirected(node.redirects)
            if "x" in self.options:
                shown = [f"{name}={value}" for name, value in assignments.items()] + argv
                io.err(as_bytes("+ " + " ".join(shown) + "\n"))
            if not argv:  # assignments (and redirections) only
                for name, value in assignments.items():
                    self.set_variable(name, value)
                return self._substituted or 0
            saved, self.io = self.io, io
            try:
                return await self._dispatch(argv, assignments)
            finally:
                if not self._keeps_streams:
                    self.io = saved
                self._keeps_streams = False
        except ShellError as err:
            return self.report(err)

    async def _dispatch(self, argv: list[str], assignments: dict[str, str]) -> int:
        name = argv[0]
        if name in self.special_builtins:
            for key, value in assignments.items():  # they stay, after a special builtin
                self.set_variable(key, value)
            return await self.builtins[name](self, argv)
        function = self.functions.get(name)
        if function is not None:
            with self._temporarily(assignments):
                return await self.call(function, argv[1:])
        builtin = self.builtins.get(name)
        if builtin is not None:
            with self._temporarily(assignments):
                return await builtin(self, argv)
        return await self.spawn(argv, assignments)

    @contextlib.contextmanager
    def _temporarily(self, assignments: dict[str, str]) -> Iterator[None]:
        """`NAME=value CMD` for a function or builtin: the values hold while it runs."""
        saved = {name: self.variables.get(name) for name in assignments}
        self.variables.update(assignments)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    self.variables.pop(name, None)
                else:
                    self.variables[name] = value

    async def call(self, body: Command, args: list[str]) -> int:
        """Run a function with `args` as its positional parameters."""
        saved_positional, self.positional = self.positional, list(args)
        self.function_depth += 1
        self._locals.append({})
        try:
            return await self.run_command(body)
        except FunctionReturn as returned:
            return returned.status
        finally:
            for name, value in self._locals.pop().items():
                if value is None:
                    self.variables.pop(name, None)
                else:
                    self.variables[name] = value
            self.function_depth -= 1
            self.positional = saved_positional

    def make_local(self, name: str) -> None:
        """`local NAME`: its value comes back when the function returns."""
        saved = self._locals[-1]
        if name not in saved:
            saved[name] = self.variables.get(name)

    def command_process(self, env: dict[str, str], *, in_place: bool) -> Exec:
        """The process a command runs as: the shell's own (PID 1 stays PID 1 for `exec` and a
        one-command script) or a child, with the shell's streams."""
        io = self.io
        process = replace(
            self.process, env=env, stdout=io.out, stderr=io.err, input=io.input, stdin=b""
        )
        if not in_place:  # a child never sees the SIGTERM of a stop
            process.pid1, process.terminated = False, asyncio.Event()
        return process

    async def spawn(
        self, argv: list[str], assignments: dict[str, str], *, in_place: bool = False
    ) -> int:
        """Run a command of the image (`sh: NAME: not found`, 127, if it has none)."""
        env = self.environment(assignments)
        process = self.command_process(env, in_place=in_place or self.in_place)
        return await self.process.spawn(process, argv)

    # -- expansions ------------------------------------------------------------------------

    async def fields(self, word: Word) -> list[str]:
        """The fields a word expands to (after field splitting)."""
        builder = FieldBuilder(self.variables.get("IFS", DEFAULT_IFS))
        for part in self._tilde_expanded(word).parts:
            if isinstance(part, Literal):
                builder.add(part.text, real=part.quoted)
            elif isinstance(part, Parameter) and part.name == "@" and not part.op:
                self._positional_fields(builder, quoted=part.quoted)
            else:
                value = await self._expand_part(part)
                if part.quoted:
                    builder.add(value, real=True)
                else:
                    builder.split(value)
        builder.end()
        fields = []
        for chunks in builder.fields:
            if "f" not in self.options and is_pattern(chunks):
                cwd = self.variables.get("PWD", "/")
                fields.extend(expand_pathname(chunks, shell_test.known_paths(self.process), cwd))
            else:
                fields.append("".join(chunk.text for chunk in chunks))
        return fields

    def _positional_fields(self, builder: FieldBuilder, *, quoted: bool) -> None:
        """`"$@"`: each positional parameter a field of its own (none: no field)."""
        for index, value in enumerate(self.positional):
            if index:
                builder.end()
            if quoted:
                builder.add(value, real=True)
            else:
                builder.split(value)

    def _tilde_expanded(self, word: Word) -> Word:
        """A word that begins with an unquoted `~` (alone or before `/`) begins with $HOME."""
        first = word.parts[0] if word.parts else None
        if not isinstance(first, Literal) or first.quoted or not first.text.startswith("~"):
            return word
        if first.text != "~" and not first.text.startswith("~/"):
            return word
        home = Literal(self.variables.get("HOME", "/"), quoted=True)
        rest = Literal(first.text[1:], quoted=False)
        return Word((home, rest, *word.parts[1:]))

    async def string(self, word: Word) -> str:
        """A word's expansion as one string (no field splitting): assignments, redirection
        targets, `case` subjects, here-documents."""
        return "".join(chunk.text for chunk in await self.chunks(word))

    async def chunks(self, word: Word) -> list[Chunk]:
        """A word's expansion, in chunks that remember their quoting (patterns need it)."""
        out = []
        for part in self._tilde_expanded(word).parts:
            if isinstance(part, Literal):
                out.append(Chunk(part.text, part.quoted))
            else:
                out.append(Chunk(await self._expand_part(part), part.quoted, expanded=True))
        return out

    async def _expand_part(self, part: Parameter | Arithmetic | CommandSubstitution) -> str:
        if isinstance(part, Parameter):
            return await self._parameter(part)
        if isinstance(part, Arithmetic):
            expression = await self.string(part.expression)
            try:
                return str(arithmetic.evaluate(expression, self.variables, self.status))
            except ShellArithmeticError as err:
                raise ShellError(str(err)) from None
        return await self.substitute(part.body)

    async def substitute(self, body: CommandList) -> str:
        """`$(...)`: the output of `body`, run in a subshell, without its trailing newlines."""
        output: list[bytes] = []
        sub = self.fork()
        sub.io = Streams(self.io.input, output.append, self.io.err)
        self.status = self._substituted = await sub.run_script(body)
        return as_text(b"".join(output)).rstrip("\n")

    def value(self, name: str) -> str | None:
        """A parameter's value; None when unset."""
        if name.isdigit():
            index = int(name)
            if index == 0:
                return self.name
            return self.positional[index - 1] if index <= len(self.positional) else None
        special = {
            "?": lambda: str(self.status),
            "#": lambda: str(len(self.positional)),
            "@": lambda: " ".join(self.positional),
            "*": lambda: (self.variables.get("IFS", DEFAULT_IFS)[:1]).join(self.positional),
            "$": lambda: str(self.pid),
            "!": lambda: self.last_job_pid,
            "-": lambda: "".join(sorted(o for o in self.options if len(o) == 1)),
        }.get(name)
        if special is None and name == "RANDOM" and name not in self.variables:
            return str(random.randrange(32768))  # ash's, each time it is read
        return special() if special is not None else self.variables.get(name)

    async def _parameter(self, part: Parameter) -> str:
        value = self.value(part.name)
        op = part.op
        unset_checked = op in ("", "length", "#", "##", "%", "%%") and part.name not in "@*"
        if value is None and "u" in self.options and unset_checked:  # set -u
            raise ShellError(f"{part.name}: parameter not set")
        if op == "":
            return value or ""
        if op == "length":
            return str(len(value or ""))
        assert part.argument is not None
        if op in ("#", "##", "%", "%%"):
            return remove_affix(value or "", await self.chunks(part.argument), op)
        if op in ("/", "//"):
            replacement = await self.string(part.replacement) if part.replacement else ""
            return replace_pattern(
                value or "", await self.chunks(part.argument), replacement, every=op == "//"
            )
        if op == ":":
            return self._substring(value or "", await self.string(part.argument))
        missing = value is None or (op.startswith(":") and value == "")
        kind = op[-1]
        if kind == "-":
            return await self.string(part.argument) if missing else value or ""
        if kind == "+":
            return "" if missing else await self.string(part.argument)
        if kind == "=":
            if missing:
                if not (part.name[0].isalpha() or part.name[0] == "_"):
                    raise ShellError(f"${part.name}: cannot assign in this way")
                self.set_variable(part.name, await self.string(part.argument))
            return self.variables.get(part.name, "")
        if missing:  # ?
            message = await self.string(part.argument)
            raise ShellError(f"{part.name}: {message or 'parameter not set'}", 1)
        return value or ""

    def _substring(self, value: str, spec: str) -> str:
        """`${name:OFFSET[:LENGTH]}`, both arithmetic; a negative offset counts from the end,
        a negative length stops that far before the end."""
        offset_text, colon, length_text = spec.partition(":")
        try:
            offset = arithmetic.evaluate(offset_text, self.variables, self.status)
            length = (
                arithmetic.evaluate(length_text, self.variables, self.status)
                if colon
                else len(value)
            )
        except ShellArithmeticError as err:
            raise ShellError(str(err)) from None
        start = max(0, len(value) + offset) if offset < 0 else min(offset, len(value))
        end = start + length if length >= 0 else len(value) + length
        return value[start:end] if end > start else ""

    # -- redirections ----------------------------------------------------------------------

    async def _redirected(self, redirects: tuple[Redirect, ...]) -> Streams:
        """The streams with `redirects` applied (ShellError for one that cannot be)."""
        io = self.io
        for redirect in redirects:
            io = await self._redirect(io, redirect)
        return io

    async def _redirect(self, io: Streams, redirect: Redirect) -> Streams:
        fd, op = redirect.fd, redirect.op
        if isinstance(redirect.target, HereDocument):
            target = redirect.target.delimiter
        else:
            target = await self.string(redirect.target)
        if fd > 2:
            raise ShellError(
                f"{fd}{op}{target}: file descriptors above 2 are not supported by the emulated sh"
            )
        if isinstance(redirect.target, HereDocument):
            body = await self.string(redirect.target.body)
            return replace(io, input=BytesInput(as_bytes(body)))
        if op in (">&", "<&"):
            return self._duplicate(io, fd, target, op)
        if op == "&>":
            sink = self._write_file(target, append=False)
            return replace(io, out=sink, err=sink, drain=None)
        if op in ("<", "<>"):
            source = self._read_file(target)
            return _with_fd(io, fd, source=source)
        return _with_fd(io, fd, sink=self._write_file(target, append=op == ">>"))

    def _duplicate(self, io: Streams, fd: int, target: str, op: str) -> Streams:
        if target == "-":
            return _with_fd(io, fd, sink=discard, source=no_input())
        if target not in ("0", "1", "2"):
            raise ShellError(f"{target}: bad file descriptor", 1, fatal=False)
        if fd == 0 or target == "0":
            if fd == 0 and target == "0":
                return io
            raise ShellError(f"{fd}{op}{target}: only 0<&0, 1>&2 and 2>&1 are emulated", 1)
        return _with_fd(io, fd, sink=io.out if target == "1" else io.err)

    def _read_file(self, path: str) -> Input:
        if path == "/dev/null":
            return no_input()
        if path in ("/dev/stdin", "/proc/self/fd/0"):
            return self.io.input
        file = self.process.container_files.get(self.absolute(path))
        if file is None:
            raise ShellError(f"can't open '{path}': No such file or directory", 1, fatal=False)
        return BytesInput(file.data)

    def _write_file(self, path: str, *, append: bool) -> Sink:
        if path == "/dev/null":
            return discard
        if path in ("/dev/stdout", "/proc/self/fd/1"):
            return self.io.out
        if path in ("/dev/stderr", "/proc/self/fd/2"):
            return self.io.err
        files = self.process.container_files
        full = self.absolute(path)
        if not isinstance(files, MountedFiles):
            raise ShellError(f"can't create {path}: Read-only file system", 1, fatal=False)
        try:
            files.write(full, b"", append=append)
        except FileNotFoundError:
            raise ShellError(
                f"can't create {path}: nonexistent directory", 1, fatal=False
            ) from None
        except OSError as err:
            raise ShellError(f"can't create {path}: {err.strerror}", 1, fatal=False) from None

        def write(data: bytes) -> None:
            with contextlib.suppress(OSError):
                files.write(full, data, append=True)

        return write


def _closing(reads: Input | None, writes: Pipe | None) -> Callable[[object], None]:
    """What a pipeline's command ending does to its pipes: its reader gets end of input, its
    writer's next write kills it (SIGPIPE)."""

    def done(_: object) -> None:
        if writes is not None:
            writes.close_writer()
        if isinstance(reads, Pipe):
            reads.close_reader()

    return done


def _with_fd(
    io: Streams,
    fd: int,
    *,
    sink: Sink | None = None,
    source: Input | None = None,
) -> Streams:
    if fd == 0:
        return replace(io, input=source if source is not None else no_input())
    sink = sink if sink is not None else discard
    if fd == 1:
        return replace(io, out=sink, drain=None)
    return replace(io, err=sink)
