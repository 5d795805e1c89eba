"""Kernel-mode processes start with every signal at its default action (`containers._spawn`),
as runc starts a container's init: a node started under `nohup` ignores SIGHUP (and one from a
non-interactive shell's background job SIGINT and SIGQUIT), and exec would pass that on."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from signal_masks import ignored_signals

from controlplane.datapath.kernel import containers

IGNORED = (signal.SIGHUP, signal.SIGQUIT, signal.SIGINT)
pytestmark = pytest.mark.skipif(shutil.which("setsid") is None, reason="util-linux setsid")


@pytest.fixture
def nohup_like() -> Iterator[None]:
    """This process ignores SIGHUP, SIGQUIT and SIGINT for the test, as a node under nohup."""
    before = {number: signal.signal(number, signal.SIG_IGN) for number in IGNORED}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_spawned_process_ignores_nothing_its_parent_ignores(nohup_like: None) -> None:
    async def scenario() -> set[int]:
        process = await containers._spawn(["sleep", "30"], None, None)
        try:
            async with asyncio.timeout(30):  # env and setsid exec in turn: wait for sleep
                while Path(f"/proc/{process.pid}/comm").read_text().strip() != "sleep":
                    await asyncio.sleep(0.01)
            return ignored_signals(process.pid)
        finally:
            process.kill()
            await process.wait()

    parent = ignored_signals(os.getpid())
    assert set(IGNORED) <= parent  # the parent does ignore them
    assert asyncio.run(scenario()) == set()


def test_spawned_process_dies_of_sighup(nohup_like: None) -> None:
    async def scenario() -> int:
        process = await containers._spawn(["sh", "-c", "kill -HUP $$; sleep 30"], None, None)
        async with asyncio.timeout(30):
            return await process.wait()

    assert asyncio.run(scenario()) == -signal.SIGHUP
