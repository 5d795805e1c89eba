"""Writes on `Control/WriteStream` through a leader SIGKILL (issue 2, real processes): three
manager processes, writers on streams to every manager (a follower forwards to the leader),
some with several writes in flight; the leader is killed mid-stream. Every write a stream
acknowledged is on both survivors afterwards, and on the killed manager once it is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from controlplane.client import ManagerClient, WriteStream, network_object
from controlplane.lab.processes import ManagerLab, ManagerProcess
from controlplane.pb import objects_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration

LAB = 239  # managers on 127.77.239.11-13 (this helper's range)
WRITERS = 6
IN_FLIGHT = 4  # writes one writer keeps on its stream at once
BEFORE_KILL = 60  # acknowledged writes, all writers together
AFTER_KILL = 60


def create(name: str) -> objects_pb2.StoreTransaction:
    action = objects_pb2.StoreAction(
        kind=objects_pb2.STORE_ACTION_CREATE, network=network_object(name)
    )
    return objects_pb2.StoreTransaction(actions=[action])


class StreamWriter:
    """Writes networks `s<writer>-<seq>` (a fresh name per attempt, so an attempt whose
    answer was lost never collides with a later one) with IN_FLIGHT writes on one stream; when
    the stream breaks it opens one on the next live manager. Keeps what was acknowledged."""

    def __init__(self, number: int, managers: list[ManagerProcess]) -> None:
        self.number = number
        self.managers = managers
        self.acknowledged: set[str] = set()
        self.after_kill = 0
        self.killed = False
        self.failures = 0
        self.last_error = ""
        self._seq = 0

    async def run(self, stop: asyncio.Event) -> None:
        turn = self.number
        while not stop.is_set():
            manager = self.managers[turn % len(self.managers)]
            turn += 1
            if not manager.alive():
                continue
            async with ManagerClient(manager.address) as client, client.write_stream() as stream:
                await asyncio.gather(*(self._write_on(stream, stop) for _ in range(IN_FLIGHT)))

    async def _write_on(self, stream: WriteStream, stop: asyncio.Event) -> None:
        """Write until told to stop or until the stream fails (then the caller reopens)."""
        while not stop.is_set():
            self._seq += 1
            name = f"s{self.number}-{self._seq}"
            try:
                await stream.write(create(name), timeout=5.0)
            except Exception as err:  # no leader yet, the stream cut: not acknowledged
                self.failures += 1
                self.last_error = f"{type(err).__name__}: {err}"
                await asyncio.sleep(0.05)
                return
            self.acknowledged.add(name)
            if self.killed:
                self.after_kill += 1


async def names_on(manager: ManagerProcess, linearizable: bool) -> set[str]:
    async with ManagerClient(manager.address) as client:
        listing = await client.list("network", linearizable=linearizable, timeout=10.0)
    return {n.spec.annotations.name for n in listing.objects.networks}


def test_streamed_writes_survive_a_leader_kill(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = ManagerLab(tmp_path, 3, lab=LAB)
        try:
            await lab.start()
            leader, status = await lab.wait_leader()
            writers = [StreamWriter(n, lab.managers) for n in range(WRITERS)]
            stop = asyncio.Event()
            running = [asyncio.create_task(w.run(stop)) for w in writers]

            def acknowledged(after_kill: bool = False) -> int:
                if any(task.done() for task in running):
                    raise AssertionError("a writer stopped early")
                if after_kill:
                    return sum(w.after_kill for w in writers)
                return sum(len(w.acknowledged) for w in writers)

            try:
                await eventually(
                    "writes before the kill", lambda: acknowledged() >= BEFORE_KILL, 60
                )
                for writer in writers:
                    writer.killed = True
                leader.kill()
                try:
                    await eventually(
                        "writes after the kill", lambda: acknowledged(True) >= AFTER_KILL, 90
                    )
                except AssertionError as err:
                    stats = [(w.number, w.after_kill, w.failures, w.last_error) for w in writers]
                    raise AssertionError(f"{err}; per writer: {stats}") from err
            finally:
                stop.set()
                await asyncio.gather(*running)
            written = set().union(*(w.acknowledged for w in writers))
            _, new_status = await lab.wait_leader(exclude=status.node_id)
            assert new_status.term > status.term
            survivors = [m for m in lab.managers if m is not leader]
            for manager in survivors:
                missing = written - await names_on(manager, linearizable=True)
                assert not missing, f"{manager.name} lost acknowledged writes: {sorted(missing)}"

            leader.start()
            await leader.wait_ready()
            deadline = time.monotonic() + 60
            while missing := written - await names_on(leader, linearizable=False):
                assert time.monotonic() < deadline, (
                    f"{leader.name} did not catch up: missing {sorted(missing)[:10]}"
                )
                await asyncio.sleep(0.1)
        finally:
            lab.stop()

    asyncio.run(scenario())
