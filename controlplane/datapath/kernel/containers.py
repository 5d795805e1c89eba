"""Containers of the kernel data path: each is the network namespace the backend made on its
first endpoint (`eth0`... on its overlays), running real commands, Debian's `busybox-static`
(`ping`, `wget`, `nslookup`, `httpd`, `nc`, `sh` as busybox applets).

Names: `ip netns exec` bind-mounts /etc/netns/<container>/resolv.conf (the backend writes
`nameserver 127.0.0.11`, Docker's) over /etc/resolv.conf, and `ContainerDns` serves the node's
embedded resolver (`datapath/dns.py`) on 127.0.0.11:53, UDP and TCP, from sockets the node
opens inside the container's namespace: the queries never leave the container's namespace, and
the resolver knows who asks (the networks of the namespace's container) without looking at
addresses. Chosen over a DNAT of 127.0.0.11 to a node address because the container has no
route to its node (only its overlays), as in Docker, where the resolver also listens inside
the container's namespace.

Processes: a container's command runs in a PID namespace of its own (`unshare --pid --fork
--kill-child`), so when it ends, or is stopped, everything it started ends with it (a shell
loop's `nc` included), and `setpriv --pdeathsig KILL` ends it if the node process dies. A stop
sends SIGTERM to the command, PID 1 of its namespace (a busybox shell ignores it, as in Docker;
the built-in servers of `agent/kernel_image.py` exit), the runtime's SIGKILL follows. The
filesystem, hostname and users are the host's: only the network is the container's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from controlplane.datapath.dns import DnsServer, Resolver
from controlplane.datapath.kernel.namespaces import KernelError, socket_in
from controlplane.datapath.resolvconf import DNS_PORT, EMBEDDED_RESOLVER

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def busybox() -> str:
    """The static busybox the containers run; KernelError saying how to install it."""
    found = shutil.which("busybox")
    if found is None:
        raise KernelError(
            "kernel-mode containers run Debian's busybox-static, which is not installed: "
            "apt-get install busybox-static"
        )
    return found


@functools.cache
def applets() -> frozenset[str]:
    """The programs busybox provides (`busybox --list`)."""
    listed = subprocess.run(
        [busybox(), "--list"], capture_output=True, text=True, timeout=30, check=True
    )
    return frozenset(listed.stdout.split())


def check_command(argv: Sequence[str]) -> None:
    """KernelError, before anything starts, when busybox cannot run `argv` (the built-in
    servers, nginx and the like, are not checked here: `agent/kernel_image.py` runs them)."""
    name = PurePosixPath(argv[0]).name if argv else ""
    if name not in applets():
        raise KernelError(
            f'exec: "{argv[0] if argv else ""}": kernel-mode containers run busybox applets and '
            f"this is none; run the node with --datapath userspace for the other programs of "
            "the built-in images"
        )


def command(netns: str, argv: Sequence[str], program: Sequence[str] = ()) -> list[str]:
    """The host command line running `argv` inside container `netns`, in a PID namespace of
    its own that dies with it (see the module docstring): a busybox applet, or `program`'s
    own command line with `argv` as its arguments (a built-in image's server,
    `agent/kernel_image.py`)."""
    if not argv and not program:
        raise KernelError("a container command needs at least the program's name")
    return [
        *("setpriv", "--pdeathsig", "KILL"),
        *("unshare", "--pid", "--fork", "--kill-child=KILL"),
        *(shutil.which("ip") or "ip", "netns", "exec", netns),
        *(program or (busybox(),)),
        *argv,
    ]


@dataclass(frozen=True)
class Finished:
    status: int
    stdout: str
    stderr: str


async def run(netns: str, argv: Sequence[str], timeout: float = 30.0) -> Finished:
    """Run `argv` in container `netns` to its end (killed after `timeout` seconds: status
    137, as a killed container)."""
    process = await start(netns, argv)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        return Finished(137, out.decode(errors="replace"), err.decode(errors="replace"))
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def start(
    netns: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    program: Sequence[str] = (),
) -> asyncio.subprocess.Process:
    """Start `argv` in container `netns` (a server: `httpd -f`, `nc -l`) with the container's
    environment `env` (default: a bare PATH); the caller ends it. `program` as `command`."""
    return await asyncio.create_subprocess_exec(
        *command(netns, argv, program),
        env=dict(env) if env is not None else {"PATH": DEFAULT_PATH},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # a process group: a stop's SIGTERM reaches the command
    )


class ContainerDns:
    """The node's resolver at 127.0.0.11:53 inside one container's namespace, answering as
    the container on `network_ids` asks."""

    def __init__(self, resolver: Resolver, netns: str, network_ids: Sequence[str]) -> None:
        self.netns = netns
        network_view = tuple(network_ids)
        self._server = DnsServer(resolver, EMBEDDED_RESOLVER, DNS_PORT, lambda _: network_view)

    async def start(self) -> None:
        udp = socket_in(self.netns, socket.SOCK_DGRAM)
        tcp = socket_in(self.netns, socket.SOCK_STREAM)
        try:
            udp.bind((EMBEDDED_RESOLVER, DNS_PORT))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((EMBEDDED_RESOLVER, DNS_PORT))
            tcp.listen(64)
            udp.setblocking(False)
            tcp.setblocking(False)
            await self._server.start(sockets=(udp, tcp))
        except OSError as err:
            udp.close()
            tcp.close()
            raise KernelError(
                f"cannot serve DNS at {EMBEDDED_RESOLVER}:{DNS_PORT} in container namespace "
                f"{self.netns!r}: {err.strerror}"
            ) from None

    async def close(self) -> None:
        await self._server.close()


async def run_streaming(
    netns: str,
    argv: Sequence[str],
    out: Callable[[str], None],
    err: Callable[[str], None],
    terminated: asyncio.Event,
    env: Mapping[str, str] | None = None,
    program: Sequence[str] = (),
) -> int:
    """Run `argv` in container `netns` as its PID 1 would: each output line to `out`/`err`,
    SIGTERM when `terminated` is set (a stop), SIGKILL when cancelled; its exit status
    (128 + signal when a signal ended it, as a shell reports it). `program` as `command`."""
    process = await start(netns, argv, env, program)
    assert process.stdout is not None and process.stderr is not None
    pumps = [
        asyncio.create_task(_pump(process.stdout, out)),
        asyncio.create_task(_pump(process.stderr, err)),
    ]
    stop = asyncio.create_task(terminated.wait())
    exited = asyncio.create_task(process.wait())
    try:
        await asyncio.wait([stop, exited], return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            # unshare blocks SIGTERM while it waits: the signal goes to the command too, its
            # namespace's PID 1, which (as in Docker) only sees it if it handles it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        status = await exited
        await asyncio.gather(*pumps)
    except asyncio.CancelledError:
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise
    finally:
        stop.cancel()
        for pump in pumps:
            pump.cancel()
    return status if status >= 0 else 128 - status


async def _pump(stream: asyncio.StreamReader, write: Callable[[str], None]) -> None:
    while line := await stream.readline():
        write(line.decode(errors="replace").rstrip("\n"))
