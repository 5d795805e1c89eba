"""The emulated programs the built-in images hold, and how a command line is run.

Each program behaves like the real one for what a lab does with it: output, exit status,
and what it does on the SIGTERM of a stop (servers exit cleanly; `sleep` and `sh` as PID 1
ignore it and are killed when the grace period ends, as in Docker). The network tools are in
`nettools.py`, what the web images serve in `webservers.py`.
"""

from __future__ import annotations

import asyncio
import math
import re
import time

from controlplane.agent import iproute, nettools, shell_test, textutils, webservers
from controlplane.agent.byte_streams import input_of
from controlplane.agent.ifconfig import ifconfig
from controlplane.agent.ls import ls
from controlplane.agent.process import (
    EXIT_NOT_FOUND,
    Exec,
    ExecNotFoundError,
    Program,
    find_executable,
)
from controlplane.agent.shell import sh
from controlplane.agent.shell_builtins import echo_text, printf_text
from controlplane.numbers import is_number

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


async def _sleep(process: Exec, argv: list[str]) -> int:
    if len(argv) < 2:
        process.err("sleep: missing operand")
        return 1
    total = 0.0
    for arg in argv[1:]:
        if arg in ("inf", "infinity"):
            total = math.inf
            continue
        match = _DURATION.fullmatch(arg)
        if match is None:
            process.err(f"sleep: invalid number '{arg}'")
            return 1
        total += float(match[1]) * _UNIT_SECONDS[match[2]]
    if math.isinf(total):
        await asyncio.Event().wait()
    else:
        await asyncio.sleep(total)
    return 0


async def _echo(process: Exec, argv: list[str]) -> int:
    process.write(echo_text(argv[1:]))
    return 0


async def _printf(process: Exec, argv: list[str]) -> int:
    if len(argv) < 2:
        process.err("printf: usage: printf FORMAT [ARGUMENT...]")
        return 1
    text, status = printf_text(argv[1], argv[2:], process.err)
    process.write(text)
    return status


async def _test(process: Exec, argv: list[str]) -> int:
    try:
        return shell_test.evaluate(process, argv, lambda path: textutils.path_of(process, path))
    except shell_test.TestError as err:
        process.err(f"{argv[0]}: {err}")
        return 2


async def _date(process: Exec, argv: list[str]) -> int:
    """busybox `date [-u] [+FORMAT]`: now, in the container's zone (UTC, as an image's
    without /etc/localtime)."""
    form = "%a %b %e %H:%M:%S %Z %Y"
    for arg in argv[1:]:
        if arg.startswith("+"):
            form = arg[1:]
        elif arg not in ("-u", "-R") and arg != "--utc":
            process.err(f"date: invalid date '{arg}'")
            return 1
    if "-R" in argv:
        form = "%a, %d %b %Y %H:%M:%S +0000"
    form = form.replace("%Z", "UTC").replace("%N", "000000000")
    process.write(time.strftime(form, time.gmtime()) + "\n")
    return 0


async def _true(process: Exec, argv: list[str]) -> int:
    return 0


async def _false(process: Exec, argv: list[str]) -> int:
    return 1


async def _hostname(process: Exec, argv: list[str]) -> int:
    """`hostname`, and `hostname -i`: the addresses /etc/hosts gives the name (Docker writes
    the container's first address there; in host mode the node's file names its address;
    in `none` mode the name has none: busybox's lookup failure)."""
    if "-i" not in argv[1:]:
        process.out(process.hostname)
        return 0
    host = process.net.host
    addresses = [host.address] if host is not None else [s.ip for s in process.net.stacks[:1]]
    if not addresses:
        process.err(f"hostname: {process.hostname}: Host name lookup failure")
        return 1
    process.out(" ".join(addresses))
    return 0


async def _cat(process: Exec, argv: list[str]) -> int:
    """Standard input (`-`, or no file), or the container's files (its /etc files, secrets,
    configs, volumes and what its programs wrote), byte for byte, input as it comes."""
    status = 0
    for name in argv[1:] or ["-"]:
        if name == "-":
            source = input_of(process)
            while data := await source.read():
                process.stdout(data)
            continue
        file = process.container_files.get(textutils.path_of(process, name))
        if file is None:
            process.err(f"cat: can't open '{name}': No such file or directory")
            status = 1
            continue
        process.stdout(file.data)
    return status


async def _env(process: Exec, argv: list[str]) -> int:
    if len(argv) > 1 and argv[0] == "printenv":
        values = [process.env.get(name) for name in argv[1:]]
        for value in values:
            if value is not None:
                process.out(value)
        return 0 if all(v is not None for v in values) else 1
    if len(argv) > 1:
        process.err(f"{argv[0]}: running a command through env is not supported")
        return 125
    for key, value in process.env.items():
        process.out(f"{key}={value}")
    return 0


async def _nginx(process: Exec, argv: list[str]) -> int:
    if "-v" in argv or "-V" in argv:
        process.err(f"nginx version: nginx/{process.env.get('NGINX_VERSION', '1.25.3')}")
        return 0
    globals_ = argv[argv.index("-g") + 1] if "-g" in argv[:-1] else ""
    if "daemon off" not in globals_:
        return 0  # nginx forks into the background: the foreground process is done
    return await webservers.nginx(process)


async def _entrypoint(process: Exec, argv: list[str]) -> int:
    """nginx's /docker-entrypoint.sh: configuration messages, then exec of its arguments."""
    if len(argv) > 1 and argv[1] in ("nginx", "nginx-debug"):
        for line in (
            "/docker-entrypoint.sh: /docker-entrypoint.d/ is not empty, will attempt to "
            "perform configuration",
            "/docker-entrypoint.sh: Launching /docker-entrypoint.d/10-listen-on-ipv6-by-default.sh",
            "/docker-entrypoint.sh: Configuration complete; ready for start up",
        ):
            process.out(line)
    return await process.spawn(process, argv[1:]) if len(argv) > 1 else 0


async def _busybox_httpd(process: Exec, argv: list[str]) -> int:
    """busybox `httpd -f [-p [IP:]PORT] [-h DIR]`."""
    if "-f" not in argv:
        return 0  # without -f busybox httpd daemonizes
    port_text = argv[argv.index("-p") + 1] if "-p" in argv[:-1] else "80"
    port_text = port_text.rpartition(":")[2]
    if not is_number(port_text) or not 0 < int(port_text) < 65536:
        process.err(f"httpd: invalid port '{port_text}'")
        return 1
    return await webservers.busybox_httpd(process, int(port_text))


async def _apache(process: Exec, argv: list[str]) -> int:
    if "-v" in argv:
        version = process.env.get("HTTPD_VERSION", "2.4.58")
        process.out(f"Server version: Apache/{version} (Unix)")
        return 0
    if "-DFOREGROUND" not in argv:
        return 0
    process.err(
        "AH00558: httpd: Could not reliably determine the server's fully qualified domain "
        "name. Set the 'ServerName' directive globally to suppress this message"
    )
    process.err("[mpm_event:notice] AH00489: Apache configured -- resuming normal operations")
    return await webservers.apache(process)


async def _httpd_foreground(process: Exec, argv: list[str]) -> int:
    return await process.spawn(process, ["httpd", "-DFOREGROUND", *argv[1:]])


async def _whoami(process: Exec, argv: list[str]) -> int:
    """`/whoami [--port PORT]` (also WHOAMI_PORT_NUMBER), as traefik/whoami."""
    port_text = process.env.get("WHOAMI_PORT_NUMBER", "80")
    for flag in ("--port", "-port"):
        if flag in argv[:-1]:
            port_text = argv[argv.index(flag) + 1]
    if not is_number(port_text) or not 0 < int(port_text) < 65536:
        process.err(f'invalid value "{port_text}" for flag -port: parse error')
        return 2
    return await webservers.whoami(process, int(port_text))


PROGRAMS: dict[str, Program] = {
    "sh": sh,
    "bash": sh,
    "sleep": _sleep,
    "echo": _echo,
    "true": _true,
    "false": _false,
    "hostname": _hostname,
    "cat": _cat,
    "env": _env,
    "printenv": _env,
    "nginx": _nginx,
    "docker-entrypoint.sh": _entrypoint,
    "httpd": _busybox_httpd,
    "apache2": _apache,
    "httpd-foreground": _httpd_foreground,
    "whoami": _whoami,
    "ping": nettools.ping,
    "wget": nettools.wget,
    "nslookup": nettools.nslookup,
    "nc": nettools.nc,
    "ip": iproute.ip,
    "ifconfig": ifconfig,
    "ls": ls,
    "printf": _printf,
    "test": _test,
    "[": _test,
    "grep": textutils.grep,
    "head": textutils.head,
    "tail": textutils.tail,
    "wc": textutils.wc,
    "seq": textutils.seq,
    "tr": textutils.tr,
    "cut": textutils.cut,
    "sort": textutils.sort,
    "uniq": textutils.uniq,
    "tee": textutils.tee,
    "sed": textutils.sed,
    "date": _date,
}


def resolve(process: Exec, argv: list[str]) -> Program:
    """The program `argv[0]` runs in this image; ExecNotFoundError (runc's words) if none."""
    if not argv or not argv[0]:
        raise ExecNotFoundError('exec: "": executable file not found in $PATH')
    path = find_executable(process.files, process.env.get("PATH", ""), argv[0])
    return PROGRAMS[process.files[path]]


async def spawn(process: Exec, argv: list[str]) -> int:
    """Run `argv` in `process`'s context; a missing command is the shell's `not found` (127)."""
    try:
        program = resolve(process, argv)
    except ExecNotFoundError:
        process.err(f"sh: {argv[0] if argv else ''}: not found")
        return EXIT_NOT_FOUND
    return await program(process, argv)
