"""A watch reader on the API's event loop takes a write's events only after the writer (whose
proposal the apply completes right after pushing them) has resumed."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.manager.watch_reading import next_events
from controlplane.pb.objects_pb2 import Network
from controlplane.store import Store, Transaction


def network(nid: str) -> Network:
    net = Network(id=nid)
    net.spec.annotations.name = f"net-{nid}"
    return net


def test_the_writer_resumes_before_the_reader_and_the_reader_gets_every_buffered_event() -> None:
    async def scenario() -> list[str]:
        store = Store()
        watch = store.watch()
        order: list[str] = []

        async def reader() -> None:
            events = await next_events(watch)
            order.append("reader: " + ", ".join(f"{e.action.value} {e.index}" for e in events))

        async def writer(answered: asyncio.Future[None]) -> None:
            await answered
            order.append("writer")

        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tasks = [asyncio.create_task(reader()), asyncio.create_task(writer(answered))]
        await asyncio.sleep(0)  # both waiting, the reader first, as the leader's loops are
        # What the Raft driver's apply does: the store pushes the events, then the proposal
        # is completed.
        store.apply(1, Transaction().create(network("n1")).encode())
        store.apply(2, Transaction().create(network("n2")).encode())
        answered.set_result(None)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["writer", "reader: created 1, created 2"]


def test_a_closed_watch_ends_the_reading() -> None:
    async def scenario() -> None:
        watch = Store().watch()
        watch.close()
        with pytest.raises(StopAsyncIteration):
            await next_events(watch)

    asyncio.run(scenario())
