"""What containers write, as the docker CLI shows it: the cases compared byte for byte with a
real dockerd 20.10 (`bench/stream_bytes.py` runs them on both and records dockerd's outputs
in `tests/compat/stream_bytes_dockerd.json`; `tests/unit/test_stream_bytes_cli.py` plays them
against ours and compares).

Each case runs `busybox` with the real docker CLI in one of four ways: `run` (`docker run`,
attached from before the start, then `docker logs` and `docker logs -t`), `exec` (`docker
exec` in a running container), `start` (`docker create` then `docker start -a`), `attach`
(`docker attach` to a running `-i` container that waits for a line of input, so what it
writes comes after the attach; the input stays open until the container exits). The
`service_cases` need a swarm manager: a service's task runs to completion, then `docker
service logs` (with and without `-t`; `tests/integration/test_stream_bytes_services.py`).
Log timestamps are replaced by `<ts>`, a task's `NAME.1.ID@HOST   | ` prefix by `<task> | `.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")
TASK_PREFIX = re.compile(rb"bytes-service\.1\.[a-z0-9]+@\S+ *\| ")
TIMEOUT = 120.0


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "run" | "exec" | "start" | "attach" | "service"
    argv: list[str]
    tty: bool = False
    stdin: bytes | None = None  # given on the CLI's standard input (with -i)
    outputs: dict[str, bytes] = field(default_factory=dict)  # dockerd's, once recorded


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


_SCRIPTS = {
    "printf_ab": "printf a; printf b",
    "echo_n": "echo -n hi; echo -n ' there'",
    "carriage_returns": r"printf 'x\r'; printf 'y\r'; printf 'done\n'",
    "partial_last_line": r"printf 'one\ntwo'",
    "cat_file_without_newline": "printf abc > /tmp/f; cat /tmp/f",
    "wc_c_of_pipelines": r"printf 'a\nb\n' | wc -c; printf abc | wc -c; echo -n xy | wc -c",
    "substitution_strips_only_trailing_newlines": (
        r"""x=$(printf '\n\na\n\n\nb\n\n'); printf '[%s]' "$x" """
    ),
    "binary_bytes": r"printf '\377\000\001\n'",
    "invalid_utf8": r"printf '\303(\n'",
    "line_of_20k": r"printf '%20480s\n' x",
    "stdout_and_stderr": "echo out; echo err >&2; printf tail",
    "pipes_keep_partial_lines": (
        r"printf 'a\nb' | cat; printf 'c\nd' | grep d; printf 'e\nf' | head -n 5"
    ),
}

_STDIN = {
    "stdin_wc_c": (b"a\nb", ["wc", "-c"]),
    "stdin_binary_cat": (b"\xff\x00x\xc3(", ["cat"]),
    "stdin_read_then_cat": (b"l1\nl2", sh('read x; echo "[$x]"; cat')),
    "stdin_script_for_sh": (b"echo hi\nprintf tail", ["sh"]),
    "stdin_read_without_newline": (b"abc", sh('read x; echo "$? [$x]"')),
    "stdin_head_c": (b"abcdef", ["head", "-c", "3"]),
    "stdin_20k": (b"y" * 20000 + b"\n", ["wc", "-c"]),
}

_ATTACHED = r'printf "x\r"; printf "y\r"; echo done; echo err >&2; printf partial'


def cases() -> list[Case]:
    """Every case, without outputs."""
    out = []
    for name, script in _SCRIPTS.items():
        for tty in (False, True):
            suffix = "-tty" if tty else ""
            out.append(Case(f"run-{name}{suffix}", "run", sh(script), tty))
            out.append(Case(f"exec-{name}{suffix}", "exec", sh(script), tty))
    for name, (data, argv) in _STDIN.items():
        out.append(Case(f"run-{name}", "run", argv, stdin=data))
        out.append(Case(f"exec-{name}", "exec", argv, stdin=data))
    for tty in (False, True):
        out.append(Case(f"start-a{'-tty' if tty else ''}", "start", sh(_ATTACHED), tty))
    out.append(Case("attach", "attach", sh(f"read go; {_ATTACHED}"), stdin=b"go\n"))
    return out


_SERVICE = (
    r'printf a; printf b; echo; printf "x\r"; echo done; printf "%20480s\n" z; echo err >&2; '
    r'printf "\377(\n"; printf partial'
)


def service_cases() -> list[Case]:
    """The cases of a service's logs, without outputs."""
    return [
        Case(f"service{'-tty' if tty else ''}", "service", sh(_SERVICE), tty)
        for tty in (False, True)
    ]


def _environment(host: str) -> dict[str, str]:
    home = os.environ.get("HOME", "/tmp")
    return {"PATH": os.environ.get("PATH", ""), "HOME": home, "DOCKER_HOST": host}


def docker(host: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [DOCKER, *args],
        env=_environment(host),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def play(case: Case, host: str) -> dict[str, bytes]:
    """Run `case` with the CLI against the engine at `host` (a DOCKER_HOST); what it printed
    on each stream, by name."""
    name = f"bytes-{case.kind}"
    docker(host, "rm", "-f", name)
    flags = [*(["-t"] if case.tty else []), *(["-i"] if case.stdin is not None else [])]
    outputs: dict[str, bytes] = {}
    if case.kind == "service":
        return _service_logs(case, host, name, flags)
    try:
        if case.kind == "exec":
            docker(host, "run", "-d", "--name", name, "busybox", "sleep", "600")
            _keep(outputs, "", docker(host, "exec", *flags, name, *case.argv, stdin=case.stdin))
            return outputs
        if case.kind == "run":
            command = ["run", *flags, "--name", name, "busybox", *case.argv]
            _keep(outputs, "run_", docker(host, *command, stdin=case.stdin))
        elif case.kind == "start":
            docker(host, "create", *flags, "--name", name, "busybox", *case.argv)
            _keep(outputs, "start_", docker(host, "start", "-a", name))
        else:
            docker(host, "run", "-d", "-i", "--name", name, "busybox", *case.argv)
            _keep(outputs, "attach_", _attached(host, name, case.stdin or b""))
        docker(host, "wait", name)
        _keep(outputs, "logs_", docker(host, "logs", name))
        _keep(outputs, "logs_t_", docker(host, "logs", "-t", name))
        return outputs
    finally:
        docker(host, "rm", "-f", name)


def _service_logs(case: Case, host: str, name: str, flags: list[str]) -> dict[str, bytes]:
    """A service whose one task runs `case.argv` to completion; its logs."""
    docker(host, "service", "rm", name)
    created = docker(host, "service", "create", "-d", *flags, "--name", name,
                     "--restart-condition", "none", "busybox", *case.argv)  # fmt: skip
    assert created.returncode == 0, created.stderr
    outputs: dict[str, bytes] = {}
    try:
        deadline = time.monotonic() + TIMEOUT
        while not docker(
            host, "service", "ps", name, "--format", "{{.CurrentState}}"
        ).stdout.startswith(b"Complete"):
            assert time.monotonic() < deadline, f"{name}'s task did not complete"
            time.sleep(0.2)
        _keep(outputs, "logs_", docker(host, "service", "logs", name))
        _keep(outputs, "logs_t_", docker(host, "service", "logs", "-t", name))
        return outputs
    finally:
        docker(host, "service", "rm", name)


def _attached(host: str, name: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    """`docker attach NAME` given `data` on an input that stays open until it exits: its end
    would end the attach (dockerd closes a client's output when its input ends, unless the
    container has StdinOnce)."""
    with subprocess.Popen(
        [DOCKER, "attach", name],
        env=_environment(host),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as attach:
        assert attach.stdin is not None and attach.stdout is not None and attach.stderr
        attach.stdin.write(data)
        attach.stdin.flush()
        status = attach.wait(TIMEOUT)  # its output is small: the pipes never fill
        attach.stdin.close()
        return subprocess.CompletedProcess(
            attach.args, status, attach.stdout.read(), attach.stderr.read()
        )


def _keep(outputs: dict[str, bytes], prefix: str, done: subprocess.CompletedProcess[bytes]) -> None:
    for stream, printed in (("out", done.stdout), ("err", done.stderr)):
        outputs[f"{prefix}{stream}"] = TASK_PREFIX.sub(
            b"<task> | ", TIMESTAMP.sub(b"<ts>", printed)
        )
    outputs[f"{prefix}status"] = str(done.returncode).encode()
