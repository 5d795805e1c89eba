"""The emulated sh's interpreter (`shell_run.py`, `shell_builtins.py`, `shell_test.py`) and
the text applets, run by a container of the emulated runtime: outputs (both streams, in
order) and exit statuses as busybox ash gives them; loops that yield, stop and do not starve
other containers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from log_texts import text_of, texts
from polling import eventually

from controlplane.agent.mounts import parse_bind
from controlplane.agent.runtime import Container, ContainerConfig, ContainerState, Runtime
from controlplane.agent.task_files import TaskFile

WAIT = 30.0


T = TypeVar("T")


def on_runtime(scenario: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run `scenario` on a fresh runtime, closed afterwards (its containers stopped)."""

    async def main() -> T:
        runtime = Runtime()
        try:
            return await scenario(runtime)
        finally:
            await runtime.close()

    return asyncio.run(main())


async def run_script(
    runtime: Runtime, script: str, *args: str, image: str = "busybox"
) -> tuple[int, list[str]]:
    container = runtime.create(ContainerConfig(image=image, args=["sh", "-c", script, *args]))
    await runtime.start(container.id)
    code = await asyncio.wait_for(runtime.wait(container.id), WAIT)
    return code, texts(container.logs)


@pytest.mark.parametrize(
    ("script", "code", "output"),
    [
        # loops, conditionals, functions
        ("for i in 1 2 3; do echo $i; done", 0, ["1", "2", "3"]),
        ("i=0; while [ $i -lt 3 ]; do i=$((i+1)); echo $i; done", 0, ["1", "2", "3"]),
        ("n=0; until [ $n -ge 2 ]; do n=$((n+1)); done; echo $n", 0, ["2"]),
        (
            "if ping -c1 web; then echo up; else echo down; fi",
            0,
            ["ping: bad address 'web'", "down"],
        ),
        ("if false; then echo a; elif true; then echo b; else echo c; fi", 0, ["b"]),
        ("if false; then echo a; fi; echo $?", 0, ["0"]),
        (
            "for i in 1 2 3 4; do [ $i = 2 ] && continue; [ $i = 4 ] && break; echo $i; done",
            0,
            ["1", "3"],
        ),
        (
            "for i in 1 2; do for j in a b; do [ $j = b ] && break 2; echo $i$j; done; done",
            0,
            ["1a"],
        ),
        ("while true; do break; done; echo out", 0, ["out"]),
        ("case abc in x*) echo x;; a*|b*) echo ab;; *) echo other;; esac", 0, ["ab"]),
        ("case 'a*' in 'a*') echo quoted;; esac; case ab in 'a*') echo no;; esac", 0, ["quoted"]),
        ("case x in [!a-c]) echo class;; esac", 0, ["class"]),
        ('f() { echo "f:$1:$#"; return 3; }; f a b; echo $?; echo "$1"', 0, ["f:a:2", "3", ""]),
        ("f() { local x=in; echo $x; }; x=out; f; echo $x", 0, ["in", "out"]),
        ("f() { echo $1; shift; echo $1; }; f a b", 0, ["a", "b"]),
        # groups and subshells
        ("( exit 4 ); echo $?", 0, ["4"]),
        ("x=1; ( x=2 ); echo $x; { x=3; }; echo $x", 0, ["1", "3"]),
        ("{ echo a; echo b; } | wc -l", 0, ["2"]),
        ("exit 3; echo never", 3, []),
        # pipes
        ("echo a | grep a && echo found; echo b | grep a || echo none", 0, ["a", "found", "none"]),
        ("seq 1 5 | head -2; seq 3 | tail -1", 0, ["1", "2", "3"]),
        ("while true; do echo x; done | head -3", 0, ["x", "x", "x"]),
        ("echo a | false; echo $?; false | echo b; echo $?", 0, ["1", "b", "0"]),
        ("! echo a | grep -q b; echo $?", 0, ["0"]),
        ("set -o pipefail; false | true; echo $?", 0, ["1"]),
        ("echo a b c | tr a-z A-Z | cut -d' ' -f2", 0, ["B"]),
        ("printf 'b\\na\\nb\\n' | sort | uniq -c", 0, ["      1 a", "      2 b"]),
        ("seq 3 | while read n; do echo n$n; done", 0, ["n1", "n2", "n3"]),
        ("echo x | read v; echo \"[$v]\"", 0, ["[]"]),  # a pipeline's commands are subshells
        # redirections
        ("echo hi > /tmp/x; cat /tmp/x; echo more >> /tmp/x; cat /tmp/x", 0, ["hi", "hi", "more"]),
        ("echo one > /f; echo two > /f; cat < /f", 0, ["two"]),
        ("nosuch 2>&1 | tr a-z A-Z", 0, ["SH: NOSUCH: NOT FOUND"]),
        ("nosuch 2>/dev/null; echo $?", 0, ["127"]),
        ("echo to-err >&2", 0, ["to-err"]),
        ("cat < /nope; echo $?", 0, ["sh: can't open '/nope': No such file or directory", "1"]),
        ("cat <<EOF\nhello $HOSTNAME $((1+1))\nEOF", 0, ["hello box 2"]),
        ("cat <<'EOF'\n$HOME\nEOF", 0, ["$HOME"]),
        ("while read a b; do echo \"$b-$a\"; done <<EOF\n1 2\n3 4 5\nEOF", 0, ["2-1", "4 5-3"]),
        ("exec > /log; echo quiet; cat /log >&2", 0, ["quiet"]),
        (
            "echo a 3>/x",
            2,
            ["sh: 3>/x: file descriptors above 2 are not supported by the emulated sh"],
        ),
        # expansions
        ('echo "$(hostname)" `echo back`', 0, ["box back"]),
        ("x=$(echo a; echo b); echo \"$x\"", 0, ["a", "b"]),
        ("x=$(false); echo $?", 0, ["1"]),
        ("for n in $(seq 3); do echo n$n; done", 0, ["n1", "n2", "n3"]),
        # pathname expansion, over the container's files
        ("echo /etc/host* /nope/* '/etc/*'; x=/etc/h*; echo $x", 0, [
            "/etc/hostname /etc/hosts /nope/* /etc/*", "/etc/hostname /etc/hosts",
        ]),
        ("cd /etc; echo h*; echo /bin/s[eo]*; set -f; echo /etc/*", 0, [
            "hostname hosts", "/bin/sed /bin/seq /bin/sort", "/etc/*",
        ]),
        ("echo > /tmp/.hidden; echo /tmp/*; echo /tmp/.h*", 0, ["/tmp/*", "/tmp/.hidden"]),
        ("echo ~ ~/x '~' a~; d=~/y; echo $d", 0, ["/root /root/x ~ a~", "/root/y"]),
        (
            'x="a b  c"; for w in $x; do echo "[$w]"; done; echo "$x"',
            0,
            ["[a]", "[b]", "[c]", "a b  c"],
        ),
        ("IFS=:; x=a:b; for w in $x; do echo $w; done", 0, ["a", "b"]),
        (
            'echo ${U:-default} ${U-unset} ${E:+alt} ${#HOME} ${H%%.*} ${H#*.} ${H##*.} ${H%.*}',
            0,
            ["default unset 5 www example.com com www.example"],
        ),
        ("echo ${U:=set}; echo $U", 0, ["set", "set"]),
        ("echo ${U:?is needed}; echo never", 1, ["sh: U: is needed"]),
        ("echo $((1/0)); echo after", 2, ["sh: divide by zero"]),
        ("echo $(( 7 % 3 )) $((x += 2)) $x", 0, ["1 2 2"]),
        (
            "A=1 sh -c 'echo $A'; B=2; sh -c 'echo [$B]'; export B; sh -c 'echo $B'",
            0,
            ["1", "[]", "2"],
        ),
        # builtins
        (
            "printf '%s-%d\\n' a 1 b 2; printf '%5.1f|%x|%c\\n' 3.14159 255 xyz",
            0,
            ["a-1", "b-2", "  3.1|ff|x"],
        ),
        ("printf '%d\\n' abc", 1, ["sh: printf: invalid number 'abc'", "0"]),
        ("echo -e 'a\\tb'; echo -n x; echo", 0, ["a\tb", "x"]),
        ("read a b <<EOF\none two three\nEOF\necho \"$a|$b\"", 0, ["one|two three"]),
        (
            "[ -f /etc/hostname ] && [ -d /etc ] && [ ! -e /nope ] && [ -x /bin/sh ] && echo files",
            0,
            ["files"],
        ),
        ("[ abc = abc -a 2 -gt 1 ] && test -n x -o -z x && echo ok", 0, ["ok"]),
        ("[ 1 -eq 1", 2, ["sh: missing ]"]),
        ("[ a -eq 1 ]; echo $?", 0, ["sh: invalid number 'a'", "2"]),
        ("set -- x y z; echo $# $2 \"$@\"; shift 2; echo $1", 0, ["3 y x y z", "z"]),
        ("set -e; false; echo never", 1, []),
        ("set -e; false || true; if false; then :; fi; echo survived", 0, ["survived"]),
        ("set -x; echo traced", 0, ["+ echo traced", "traced"]),
        ("set -eu; echo ${U:-ok} $#; echo $U; echo never", 2, ["ok 0", "sh: U: parameter not set"]),
        ("eval 'echo $((1+2))'", 0, ["3"]),
        (
            "command -v sh; command -v nosuch; echo $?; type cd",
            0,
            ["/bin/sh", "1", "cd is a shell builtin"],
        ),
        (
            "cd /nope; echo $?; cd /etc; pwd; cat hostname",
            0,
            ["sh: cd: can't cd to /nope: No such file or directory", "2", "/etc", "box"],
        ),
        ("sleep 1000 & [ -n \"$!\" ]; kill $!; wait $!; echo $?", 0, ["143"]),
        ("exit x", 2, ["sh: exit: Illegal number: x"]),
        ("readonly R=1; R=2; echo never", 2, ["sh: R: is read only"]),
        ("local x", 1, ["sh: local: not in a function"]),
        ("shift 5", 2, ["sh: shift: can't shift that many"]),
        ("trap 'echo bye' EXIT; echo hi", 0, ["hi", "bye"]),
        ("trap 'echo bye; exit 5' EXIT; exit 1", 5, ["bye"]),
        ("(trap 'echo sub' EXIT; echo s); echo main", 0, ["s", "sub", "main"]),
        ("trap 'echo x' INT TERM; trap; trap - INT; trap", 0, [
            "trap -- 'echo x' INT", "trap -- 'echo x' TERM", "trap -- 'echo x' TERM",
        ]),
        ("trap 'x' BOGUS; echo $?", 0, ["sh: trap: BOGUS: bad trap", "1"]),
        # ash's bash forms
        (
            "x=hello.world.txt; echo ${x/o/0} ${x//o/0} ${x/#hello/bye} ${x/%txt/md}",
            0,
            ["hell0.world.txt hell0.w0rld.txt bye.world.txt hello.world.md"],
        ),
        ("x=hello.world; echo ${x:6} ${x:0:5} ${x: -3} ${x:1:-6}", 0, ["world hello rld ello"]),
        ("function f { echo fn $1; }; f a", 0, ["fn a"]),
        ("nosuch &> /z; cat /z", 0, ["sh: nosuch: not found"]),
        ("let x=2+3 'y=x*2'; echo $x $y; let 0; echo $?", 0, ["5 10", "1"]),
        ("[[ a = a ]] && [[ 1 -lt 2 ]] && echo yes", 0, ["yes"]),
        ('[ "$RANDOM" -ge 0 ] && [ "$RANDOM" -lt 32768 ] && echo random', 0, ["random"]),
        # text applets
        (
            "seq 3 | wc -l; printf 'a b\\nc\\n' | wc -w; seq 2 | wc",
            0,
            ["3", "3", "      2       2       4"],
        ),
        ("seq -s , 1 2 7; seq -w 8 10; seq 3 -1 2", 0, ["1,3,5,7", "08", "09", "10", "3", "2"]),
        ("printf 'Apple\\nbanana\\n' | grep -i -n A", 0, ["1:Apple", "2:banana"]),
        ("printf 'a\\nb\\n' | grep -v a; printf 'a\\n' | grep -c x; echo $?", 0, ["b", "0", "1"]),
        ("echo 'x(1)' | grep -E 'x\\(1\\)' && echo 'ab' | grep 'a\\|z'", 0, ["x(1)", "ab"]),
        ("grep x /nope; echo $?", 0, ["grep: /nope: No such file or directory", "2"]),
        ("head -z", 1, ["head: invalid option -- 'z'"]),
        ("echo hello | tr -d l; echo aaa | tr -s a", 0, ["heo", "a"]),
        ("echo a:b:c | cut -d: -f2-; echo abcdef | cut -c2-3", 0, ["b:c", "bc"]),
        ("seq 3 | tee /t | tail -n 1; cat /t | head -n 1", 0, ["3", "1"]),
        ("printf '3\\n10\\n2\\n' | sort -n -r", 0, ["10", "3", "2"]),
        ("echo hello world | sed 's/o/0/g; s/h/H/'", 0, ["Hell0 w0rld"]),
        ("echo abc | sed -e 's/\\(a\\)b/\\1[&]/'", 0, ["a[ab]c"]),
        ("echo aaa | sed 's/a/b/2'; echo x | sed -n 's/x/y/p'", 0, ["aba", "y"]),
        ("echo x | sed d", 1, ["sed: only the s command is emulated: 'd'"]),
        ("date +%Y | grep -c '^20[0-9][0-9]$'; date | grep -c UTC", 0, ["1", "1"]),
    ],
)  # fmt: skip
def test_scripts_run_as_ash_runs_them(script: str, code: int, output: list[str]) -> None:
    async def scenario(runtime: Runtime) -> tuple[int, list[str]]:
        container = runtime.create(
            ContainerConfig(
                image="busybox",
                args=["sh", "-c", script],
                hostname="box",
                env=["H=www.example.com", "E="],
            )
        )
        await runtime.start(container.id)
        status = await asyncio.wait_for(runtime.wait(container.id), WAIT)
        return status, texts(container.logs)

    assert on_runtime(scenario) == (code, output)


def test_positional_parameters_of_sh_c() -> None:
    async def scenario() -> tuple[int, list[str]]:
        return await run_script(
            Runtime(), 'echo "$0|$1|$#"; for a; do echo "<$a>"; done', "me", "x y", "z"
        )

    assert asyncio.run(scenario()) == (0, ["me|x y|2", "<x y>", "<z>"])


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("while true; do echo; done; done", 'sh: syntax error: unexpected "done"'),
        ("echo $(", 'sh: syntax error: unexpected end of file (expecting ")")'),
        ("f() echo", "sh: syntax error: unexpected word"),
        ("echo ${x^^}", "sh: syntax error: bad substitution"),
    ],
)
def test_syntax_errors_run_nothing(script: str, message: str) -> None:
    async def scenario() -> tuple[int, list[str]]:
        return await run_script(Runtime(), f"echo first; {script}")

    assert asyncio.run(scenario()) == (2, [message])


def test_a_script_from_a_pipe_and_from_a_file() -> None:
    async def scenario(runtime: Runtime) -> None:
        code, lines = await run_script(
            runtime, "printf 'echo from $0 $1\\n' > /s.sh; sh /s.sh arg; echo 'echo piped' | sh"
        )
        assert (code, lines) == (0, ["from /s.sh arg", "piped"])
        code, lines = await run_script(runtime, "sh /missing.sh")
        assert (code, lines) == (2, ["sh: can't open '/missing.sh': No such file or directory"])

    on_runtime(scenario)


def test_writes_are_seen_by_the_containers_other_processes() -> None:
    async def scenario(runtime: Runtime) -> None:
        container = runtime.create(
            ContainerConfig(image="busybox", args=["sh", "-c", "echo kept > /tmp/f; sleep 1000"])
        )
        await runtime.start(container.id)
        await eventually(
            "the write", lambda: "/tmp/f" in runtime.process(container.id).container_files
        )
        output = bytearray()
        reader = runtime.process(container.id).child()
        reader.stdout = output.extend
        assert await reader.spawn(reader, ["cat", "/tmp/f"]) == 0
        assert output == b"kept\n"

    on_runtime(scenario)


async def _started(runtime: Runtime, script: str) -> Container:
    container = runtime.create(ContainerConfig(image="busybox", args=["sh", "-c", script]))
    await runtime.start(container.id)
    return container


def test_a_while_true_loop_is_stopped() -> None:
    """As in Docker: sh as PID 1 ignores the SIGTERM and is killed at the grace period's end
    (137), wherever its loop is: in a builtin, or in a child program."""

    async def scenario(runtime: Runtime) -> None:
        busy = await _started(runtime, "while true; do :; done")
        for _ in range(3):  # the loop goes round, giving the event loop turns
            await asyncio.sleep(0)
        assert busy.state is ContainerState.RUNNING
        assert await asyncio.wait_for(runtime.stop(busy.id, grace=0.1), WAIT) == 137
        printing = await _started(runtime, "while true; do echo hello; sleep 0.05; done")
        await eventually("two lines", lambda: len(printing.logs) >= 2)
        assert await asyncio.wait_for(runtime.stop(printing.id, grace=0.1), WAIT) == 137
        assert set(texts(printing.logs)) == {"hello"}

    on_runtime(scenario)


@pytest.mark.parametrize(
    ("script", "code", "output"),
    [
        ("trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.05; done", 0, ["got TERM"]),
        ("trap 'echo stopping; exit 3' TERM; sleep 1000 & wait", 3, ["stopping"]),
        ("trap '' TERM; while true; do sleep 0.05; done", 137, []),
    ],
)
def test_a_trapped_sigterm_ends_the_loop(script: str, code: int, output: list[str]) -> None:
    """A TERM trap runs between commands (or ends a `wait`), within the stop's grace."""

    async def scenario(runtime: Runtime) -> tuple[int | None, list[str]]:
        container = await _started(runtime, script)
        await asyncio.sleep(0.05)  # the loop is under way (the trap works either way)
        grace = 0.5 if code == 137 else 5.0  # a trap that exits is well within 5 s
        status = await asyncio.wait_for(runtime.stop(container.id, grace=grace), WAIT)
        return status, texts(container.logs)

    assert on_runtime(scenario) == (code, output)


def test_a_busy_loop_does_not_starve_the_others() -> None:
    """`while true; do :; done` gives the event loop a turn each iteration: another
    container's loop keeps printing and a plain coroutine keeps sleeping and waking."""

    async def scenario(runtime: Runtime) -> None:
        busy = await _started(runtime, "while true; do :; done")
        printer = await _started(runtime, "i=0; while [ $i -lt 50 ]; do i=$((i+1)); echo $i; done")
        for _ in range(5):
            await asyncio.sleep(0.001)
        assert await asyncio.wait_for(runtime.wait(printer.id), WAIT) == 0
        assert text_of(printer.logs[-1]) == "50"
        assert busy.state is ContainerState.RUNNING
        assert await asyncio.wait_for(runtime.kill(busy.id), WAIT) == 137

    on_runtime(scenario)


def test_a_pipes_commands_run_at_once() -> None:
    """The reader shows a line while its writer still runs; killing the container ends
    both."""

    async def scenario(runtime: Runtime) -> None:
        container = await _started(runtime, "(echo first; sleep 1000) | cat")
        await eventually(
            "the line through the pipe",
            lambda: texts(container.logs) == ["first"],
        )
        assert container.state is ContainerState.RUNNING
        assert await asyncio.wait_for(runtime.kill(container.id), WAIT) == 137

    on_runtime(scenario)


def test_an_endless_writer_ends_with_its_reader() -> None:
    """A pipe holds a bounded number of lines: the writer of an endless loop waits while its
    reader is behind, and is killed (SIGPIPE) once the reader is done."""

    async def scenario(runtime: Runtime) -> None:
        code, lines = await run_script(
            runtime, "while true; do echo x; done | (sleep 0.2; head -n 2); echo $?"
        )
        assert (code, lines) == (0, ["x", "x", "0"])

    on_runtime(scenario)


def test_redirections_into_volumes() -> None:
    """A write under a volume lands in its folder (another container mounting it reads it);
    a `:ro` mount refuses it with the kernel's words."""

    async def scenario(runtime: Runtime) -> None:
        writer = runtime.create(
            ContainerConfig(
                image="busybox",
                args=["sh", "-c", "echo hello > /data/greeting; echo again >> /data/greeting"],
                mounts=[parse_bind("vol:/data")],
            )
        )
        await runtime.start(writer.id)
        assert await asyncio.wait_for(runtime.wait(writer.id), WAIT) == 0
        reader = runtime.create(
            ContainerConfig(
                image="busybox",
                args=["sh", "-c", "cat /data/greeting; echo no > /data/x; echo $?"],
                mounts=[parse_bind("vol:/data:ro")],
            )
        )
        await runtime.start(reader.id)
        assert await asyncio.wait_for(runtime.wait(reader.id), WAIT) == 0
        assert texts(reader.logs) == [
            "hello",
            "again",
            "sh: can't create /data/x: Read-only file system",
            "1",
        ]

    on_runtime(scenario)


def test_jobs_of_subshells_end_with_the_container() -> None:
    async def scenario(runtime: Runtime) -> None:
        container = await _started(
            runtime, "(while true; do echo tick; sleep 0.01; done &); sleep 1000"
        )
        await eventually("the job ticking", lambda: len(container.logs) >= 2)
        assert await asyncio.wait_for(runtime.kill(container.id), WAIT) == 137
        written = container.lines_written
        for _ in range(3):  # the job had its turns to tick again, had it survived
            await asyncio.sleep(0.02)
        assert container.lines_written == written

    on_runtime(scenario)


def test_a_loop_over_the_secrets() -> None:
    async def scenario(runtime: Runtime) -> tuple[int, list[str]]:
        container = runtime.create(
            ContainerConfig(
                image="busybox",
                args=["sh", "-c", 'for f in /run/secrets/*; do echo "$f=$(cat $f)"; done'],
                files=[
                    TaskFile("/run/secrets/db", b"pw\n"),
                    TaskFile("/run/secrets/api", b"k\n"),
                ],
            )
        )
        await runtime.start(container.id)
        status = await asyncio.wait_for(runtime.wait(container.id), WAIT)
        return status, texts(container.logs)

    assert on_runtime(scenario) == (0, ["/run/secrets/api=k", "/run/secrets/db=pw"])


async def run_bytes(runtime: Runtime, script: str) -> tuple[int, bytes, bytes]:
    """The script's status and what it wrote on each stream, as logged."""
    container = runtime.create(ContainerConfig(image="busybox", args=["sh", "-c", script]))
    await runtime.start(container.id)
    code = await asyncio.wait_for(runtime.wait(container.id), WAIT)
    out = b"".join(line.data for line in container.logs if line.stream == "stdout")
    err = b"".join(line.data for line in container.logs if line.stream == "stderr")
    return code, out, err


@pytest.mark.parametrize(
    ("script", "code", "out", "err"),
    [
        ("printf a; printf b", 0, b"ab", b""),
        ("echo -n a; echo b", 0, b"ab\n", b""),
        (r"printf '\377\000\001' | wc -c", 0, b"3\n", b""),
        (r"""x=$(printf '\303\251\n\n'); printf %s "$x" | wc -c""", 0, b"2\n", b""),
        (r"""x=$(printf '\n\na\n\nb\n\n'); printf '[%s]' "$x" """, 0, b"[\n\na\n\nb]", b""),
        (r"printf 'ab\ncd' | sed s/c/C/", 0, b"ab\nCd", b""),
        (r"printf 'ab\ncd' | grep c", 0, b"cd\n", b""),
        (r"printf 'ab\ncd' | tail -n 1", 0, b"cd", b""),
        (r"printf 'ab\ncd' | sort -r", 0, b"cd\nab\n", b""),
        (r"printf 'ab\ncd' | tr a-z A-Z", 0, b"AB\nCD", b""),
        ("printf abcdef | head -c 4", 0, b"abcd", b""),
        ('printf abc | { read x; echo "$? $x"; }', 0, b"1 abc\n", b""),
        (
            "printf 'a\\nb' > /tmp/f; cat /tmp/f; tee /tmp/g < /tmp/f >/dev/null; cat /tmp/g",
            0,
            b"a\nba\nb",
            b"",
        ),
        ("printf '\\303(' >&2", 0, b"", "\ufffd(".encode()),  # the log keeps what JSON keeps
        ("head -c 4x", 1, b"", b"head: invalid number '4x'\n"),
        ("printf %20000s x | wc -c", 0, b"20000\n", b""),
    ],
)
def test_streams_are_bytes_as_written(script: str, code: int, out: bytes, err: bytes) -> None:
    async def scenario(runtime: Runtime) -> None:
        assert await run_bytes(runtime, script) == (code, out, err)

    on_runtime(scenario)
