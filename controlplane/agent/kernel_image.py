"""The built-in web images (nginx, httpd, traefik/whoami) as real processes, for kernel-mode
containers: `python -m controlplane.agent.kernel_image nginx|httpd|whoami [--port N]`, run by
the kernel container runner inside the container's network namespace
(`datapath/kernel/containers.py`). It answers what the emulated images answer
(`webservers.py`'s handlers, `http11.answer`) on real sockets at 0.0.0.0, logs as they do on
stdout (so `docker logs` shows the requests) and exits on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from controlplane.agent import http11 as http
from controlplane.agent import webservers
from controlplane.agent.host_stack import SocketConnection
from controlplane.agent.process import ExecNotFoundError, find_executable

MODULE = "controlplane.agent.kernel_image"
SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class Server:
    """One image's server: its handler, `Server:` header, request log and SIGTERM status."""

    handler: http.Handler
    banner: str
    access_line: Callable[[http.Request, http.Response], str] | None
    exit_on_sigterm: int
    startup: str = ""


def image_server(
    files: Mapping[str, str], env: Mapping[str, str], argv: Sequence[str]
) -> list[str] | None:
    """The entry point's arguments when the container's command `argv` runs one of the
    built-in servers (its program as the image's files name it), else None (a busybox
    command)."""
    if not argv:
        return None
    try:
        program = files[find_executable(files, env.get("PATH", ""), argv[0])]
    except ExecNotFoundError:  # not in the image: busybox decides (and refuses in its words)
        return None
    if program == "docker-entrypoint.sh" and len(argv) > 1:
        program = PurePosixPath(argv[1]).name
    if program == "nginx":
        return ["nginx"]
    if program in ("httpd-foreground", "apache2"):
        return ["httpd"]
    if program == "whoami":
        port = env.get("WHOAMI_PORT_NUMBER", "80")
        for flag in ("--port", "-port"):
            if flag in argv[:-1]:
                port = argv[list(argv).index(flag) + 1]
        return ["whoami", "--port", port]
    return None


def entry_point() -> list[str]:
    """The host command line of this entry point (its arguments as `image_server` gives)."""
    return [sys.executable, "-m", MODULE]


def interface_addresses() -> list[str]:
    """The IPv4 address of each interface of this namespace but loopback (whoami lists them)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            except OSError:  # an interface without an IPv4 address
                continue
            found.append(socket.inet_ntoa(answer[20:24]))
    return found


def _server(image: str, env: Mapping[str, str], port: int) -> Server:
    if image == "nginx":
        version = env.get("NGINX_VERSION", webservers.NGINX_VERSION)
        return Server(
            webservers.nginx_handler(version), f"nginx/{version}", webservers.nginx_access_line, 0
        )
    if image == "httpd":
        version = env.get("HTTPD_VERSION", webservers.HTTPD_VERSION)
        return Server(webservers.apache_handler(), f"Apache/{version} (Unix)", None, 0)
    hostname = env.get("HOSTNAME") or socket.gethostname()
    return Server(
        webservers.whoami_handler(hostname, interface_addresses()),
        "whoami",
        None,
        webservers.WHOAMI_EXIT_ON_SIGTERM,
        startup=f"Starting up on port {port}",
    )


async def serve(image: str, port: int, env: Mapping[str, str]) -> int:
    """Serve `image` on 0.0.0.0:`port` until SIGTERM; its exit status."""
    server = _server(image, env, port)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)

    def log(request: http.Request, response: http.Response) -> None:
        if server.access_line is not None:
            print(server.access_line(request, response), flush=True)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await http.answer(SocketConnection(reader, writer), server.handler, server.banner, log)

    try:
        listening = await asyncio.start_server(connected, "0.0.0.0", port, reuse_address=True)
    except OSError as err:
        print(
            f"{image}: bind() to 0.0.0.0:{port} failed ({err.errno}: {err.strerror})",
            file=sys.stderr,
            flush=True,
        )
        return 1
    if server.startup:
        print(server.startup, flush=True)
    async with listening:
        await stopped.wait()
    return server.exit_on_sigterm


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.splitlines()[0])
    parser.add_argument("image", choices=("nginx", "httpd", "whoami"))
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: a TCP port is 1..65535")
    return asyncio.run(serve(args.image, args.port, os.environ))


if __name__ == "__main__":
    sys.exit(main())
