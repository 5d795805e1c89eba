"""Named network namespaces (as `ip netns` makes them, under /run/netns), the only way the
kernel backend touches the host: it creates, enters and removes namespaces by name, and opens
netlink and ordinary sockets inside them.

Why a worker thread (`NetlinkWorker`): pyroute2's synchronous `IPRoute` drives its own event
loop, which cannot run inside the node's running asyncio loop; the backend's netlink work runs
on one dedicated thread (one at a time, in order), and its callers wait for the result.

Why no fork: the node process runs gRPC, whose threads do not survive a fork (the child
aborts, and pyroute2's namespace helpers fork a Python child). A socket inside a namespace is
made by a thread that enters the namespace (`setns` moves only the calling thread), creates
the socket (it stays in that namespace for life) and comes back; namespaces are made and
removed with `ip netns` (fork+exec, which gRPC tolerates).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute

NETNS_RUN = Path("/run/netns")  # where `ip netns` keeps its named namespaces
NETNS_ETC = Path("/etc/netns")  # `ip netns exec NAME` bind-mounts /etc/netns/NAME/* on /etc
CLONE_NEWNET = 0x40000000
_T = TypeVar("_T")
_libc = ctypes.CDLL(None, use_errno=True)


class KernelError(RuntimeError):
    """The kernel (or the host) refused what the kernel backend needs; says what to do."""


def kernel_datapath_unavailable() -> str:
    """Why this host cannot run the kernel data path ('' when it can): root and network
    namespaces are needed."""
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        return "the kernel data path needs Linux network namespaces (no /proc/self/ns/net)"
    if os.geteuid() != 0:
        return "the kernel data path needs root (network namespaces, VXLAN and bridge devices)"
    if shutil.which("ip") is None:
        return "the kernel data path needs iproute2's `ip` (apt-get install iproute2)"
    return ""


def listed() -> list[str]:
    """The names of every named namespace on the host."""
    try:
        return sorted(os.listdir(NETNS_RUN))
    except FileNotFoundError:
        return []


def exists(name: str) -> bool:
    return name in listed()


def create(name: str) -> None:
    """A fresh namespace `name` with its loopback up (a stale one of that name is replaced)."""
    if exists(name):
        remove(name)
    _ip(["netns", "add", name])
    run_in(name, ["ip", "link", "set", "lo", "up"])


def remove(name: str) -> None:
    """Remove namespace `name` and its /etc/netns files; nothing if there is none."""
    if exists(name):
        _ip(["netns", "delete", name])
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def _ip(argv: list[str]) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise KernelError(f"`ip {' '.join(argv)}` failed: {done.stderr.strip()}")


@contextmanager
def entered(name: str | None) -> Iterator[None]:
    """The calling thread inside namespace `name` for the block (None: where it is)."""
    if name is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(NETNS_RUN / name, os.O_RDONLY)
        except FileNotFoundError:
            raise KernelError(f"no network namespace named {name!r}") from None
        try:
            _setns(target, name)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home, "the thread's own")
    finally:
        os.close(home)


def _setns(fd: int, name: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise KernelError(f"cannot enter network namespace {name}: {os.strerror(code)}")


def write_etc(name: str, filename: str, text: str) -> Path:
    """A file `ip netns exec NAME` shows at /etc/`filename` (resolv.conf, hosts)."""
    directory = NETNS_ETC / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(text)
    return path


def socket_in(name: str | None, kind: socket.SocketKind) -> socket.socket:
    """An IPv4 socket living in namespace `name` (the current one for None), made by a
    short-lived thread so the caller's thread never changes namespace."""

    def make() -> socket.socket:
        with entered(name):
            return socket.socket(socket.AF_INET, kind)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netns-socket") as one:
        return one.submit(make).result()


def run_in(name: str | None, argv: Sequence[str], check: bool = True) -> str:
    """Run `argv` inside namespace `name` (`ip netns exec`); its stdout. KernelError with
    its stderr when it fails and `check`."""
    full = ["ip", "netns", "exec", name, *argv] if name else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise KernelError(f"`{' '.join(full)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def sysctl(name: str | None, key: str, value: str) -> None:
    run_in(name, ["sysctl", "-q", "-w", f"{key}={value}"])


class NetlinkWorker:
    """One thread doing netlink calls, with one `IPRoute` per namespace kept open."""

    def __init__(self, thread_name: str) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=thread_name)
        self._handles: dict[str | None, IPRoute] = {}

    def call(self, work: Callable[[], _T]) -> _T:
        """Run `work` on the worker thread and wait for its result (or its exception)."""
        return self._executor.submit(work).result()

    def ipr(self, name: str | None) -> IPRoute:
        """The netlink handle of namespace `name` (worker thread only)."""
        handle = self._handles.get(name)
        if handle is None:
            with entered(name):
                handle = IPRoute()
            self._handles[name] = handle
        return handle

    def forget(self, name: str) -> None:
        """Close the handle of a namespace about to go away (worker thread only)."""
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.close()

    def close(self) -> None:
        def close_all() -> None:
            for handle in self._handles.values():
                handle.close()
            self._handles.clear()

        self.call(close_all)
        self._executor.shutdown(wait=True)
