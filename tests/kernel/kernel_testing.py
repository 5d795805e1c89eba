"""Hosts for the kernel tests: an underlay (a bridge in its own namespace, <net>.<lab>.0/24)
and one namespace per node plugged into it, all named `swk<tag>-...` and removed afterwards."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.datapath.kernel import KernelBackend, kernel_datapath_unavailable, namespaces
from controlplane.lab.swarm_lab import SwarmLab

_tags = itertools.count()
DEADLINE = 90.0  # seconds a whole scenario may take on a loaded machine


def skip_unless_kernel() -> None:
    reason = kernel_datapath_unavailable()
    if reason:
        pytest.skip(f"kernel data path tests: {reason}")


@dataclass(frozen=True)
class Host:
    netns: str
    address: str


@dataclass(frozen=True)
class Underlay:
    tag: str  # every namespace of this test starts with it
    netns: str
    hosts: tuple[Host, ...]


def unique_tag(prefix: str = "swk") -> str:
    return f"{prefix}{os.getpid() % 100000}x{next(_tags)}"


@contextmanager
def underlay(hosts: int, lab: int, net: str = "10.201", prefix: str = "swk") -> Iterator[Underlay]:
    """`hosts` node namespaces at <net>.<lab>.(1..hosts) on one bridge, plus a client at
    <net>.<lab>.100 (the last host); every namespace's name starts with `prefix`."""
    tag = unique_tag(prefix)
    made: list[str] = []
    try:
        bridge_ns = f"{tag}-ul"
        namespaces.create(bridge_ns)
        made.append(bridge_ns)
        namespaces.run_in(bridge_ns, ["ip", "link", "add", "ul0", "type", "bridge"])
        namespaces.run_in(bridge_ns, ["ip", "link", "set", "ul0", "up"])
        made_hosts = []
        for i in range(1, hosts + 2):
            last = i == hosts + 1
            name = f"{tag}-client" if last else f"{tag}-n{i}"
            address = f"{net}.{lab}.{100 if last else i}"
            namespaces.create(name)
            made.append(name)
            for argv in (
                ["ip", "link", "add", f"ul{i}", "type", "veth", "peer", "eth0", "netns", name],
                ["ip", "link", "set", f"ul{i}", "master", "ul0", "up"],
            ):
                namespaces.run_in(bridge_ns, argv)
            namespaces.run_in(name, ["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
            namespaces.run_in(name, ["ip", "link", "set", "eth0", "up"])
            made_hosts.append(Host(name, address))
        yield Underlay(tag, bridge_ns, tuple(made_hosts))
    finally:
        for name in made:
            namespaces.remove(name)
        for leftover in namespaces.listed():
            if leftover.startswith(f"{tag}-"):
                namespaces.remove(leftover)


def run(netns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`argv` in namespace `netns` (as `ip netns exec`, so /etc/netns files apply)."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def scenario(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(DEADLINE):
            await body()

    asyncio.run(bounded())


@asynccontextmanager
async def backends(ul: Underlay) -> AsyncIterator[tuple[KernelBackend, KernelBackend]]:
    made = [
        KernelBackend(host.address, node_netns=host.netns, prefix=f"{ul.tag}-{i}-")
        for i, host in enumerate(ul.hosts[:2])
    ]
    try:
        for backend in made:
            await backend.start()
        yield made[0], made[1]
    finally:
        for backend in made:
            backend.close()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@asynccontextmanager
async def kernel_lab(
    tmp_path: Path, lab: int, prefix: str, workers: int = 0
) -> AsyncIterator[SwarmLab]:
    """A lab of one manager (and `workers`) on the kernel data path, up; on exit its node
    processes are stopped and none of its namespaces (named after `prefix`) is left."""
    swarm = SwarmLab(
        tmp_path, managers=1, workers=workers, lab=lab, datapath="kernel", kernel_prefix=prefix
    )
    try:
        await swarm.up()
        yield swarm
    finally:
        swarm.stop()
    assert not [n for n in namespaces.listed() if n.startswith(f"{prefix}-")]
