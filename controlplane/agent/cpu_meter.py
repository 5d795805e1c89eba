"""The CPU time a userspace-mode container's emulated processes use, measured.

A userspace container runs as coroutines in the node's process: its command, the tasks its
programs start (a web server's connections, a shell's background jobs) and its execs (its
healthchecks too). Each of them runs charged to the container's `CpuAccount` (a context
variable, which asyncio copies into every task they create), and the node's event loop gets
a task factory that meters such tasks: the thread CPU time of each of their steps is added
to the account, as the kernel charges a real container's processes to its cgroup (frames
the node's data path handles outside those steps are the node's, as softirq work is the
kernel's). A loop that already has another task factory is left alone: its containers' CPU
time is then not measured (`metering`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Generator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class CpuAccount:
    ns: int = 0  # thread CPU time used so far


_CHARGED: ContextVar[CpuAccount | None] = ContextVar("swarmlab_cpu_account", default=None)


class _Metered(Coroutine[Any, Any, T]):
    """`coro`, each step's CPU time added to `account`."""

    __slots__ = ("_account", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, T], account: CpuAccount) -> None:
        self._coro = coro
        self._account = account

    def send(self, value: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return self._coro.send(value)
        finally:
            self._account.ns += time.thread_time_ns() - started

    def throw(
        self,
        typ: Any,
        val: BaseException | object = None,
        tb: TracebackType | None = None,
    ) -> Any:
        started = time.thread_time_ns()
        try:
            return self._coro.throw(typ, val, tb)
        finally:
            self._account.ns += time.thread_time_ns() - started

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    def __repr__(self) -> str:
        return repr(self._coro)


def _metering_factory(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
) -> asyncio.Task[Any]:
    account = _CHARGED.get()
    if account is not None and asyncio.iscoroutine(coro):
        coro = _Metered(coro, account)
    return asyncio.Task(coro, loop=loop, **kwargs)


def metering() -> bool:
    """Meter the running loop's charged tasks from now on; False if the loop has a task
    factory of its own (nothing is measured then)."""
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    if factory is None:
        loop.set_task_factory(_metering_factory)  # type: ignore[arg-type]
        return True
    return factory is _metering_factory


@contextlib.contextmanager
def charged_to(account: CpuAccount | None) -> Iterator[None]:
    """Tasks created inside (and the tasks they create) are charged to `account` (None: to
    whatever they were charged to already)."""
    if account is None:
        yield
        return
    token = _CHARGED.set(account)
    try:
        yield
    finally:
        _CHARGED.reset(token)
