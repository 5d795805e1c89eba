"""datapath/node_datapath.py on real sockets (127.77.251.5x): a task that starts gets its stack
and its name, its service's names once it runs, the counters follow the segment, and the
failures say what went wrong (a VTEP address already bound, a container with no endpoint)."""

from __future__ import annotations

import asyncio

import pytest
from datapath_testing import FakeGossip, network, task
from dnslib import DNSRecord

from controlplane.datapath.attachments import ENDPOINT_TABLE
from controlplane.datapath.node_datapath import AttachError, NodeDataPath, render_counters
from controlplane.datapath.program import NodeView
from controlplane.datapath.userspace import DataPathError
from controlplane.gossip.networkdb_types import WatchEvent, WatchEventType
from controlplane.pb.objects_pb2 import TaskStatus
from controlplane.store.kinds import name_of

pytestmark = pytest.mark.integration


def test_a_starting_task_gets_its_stack_and_its_names() -> None:
    async def scenario() -> None:
        datapath = NodeDataPath(NodeView("n1", "127.77.251.50"), FakeGossip(), upstreams=[])
        await datapath.start()
        try:
            web = task("t1", "10.0.1.2")
            datapath.state.assignments({"t1": web}, {"net1": network()})
            datapath.state.task_status("t1", TaskStatus(state="starting"))
            # its overlay's stack, then its eth1 on the node's docker_gwbridge (as Docker's)
            [stack, gateway] = await datapath.attach(name_of(web), ["net1"])
            assert gateway.ip == "172.18.0.3"  # .2 is the ingress sandbox's
            assert (stack.ip, stack.mtu) == ("10.0.1.2", 1450)

            async def answer(name: str) -> list[str]:
                query = DNSRecord.question(name, "A")
                reply = await datapath.resolve(bytes(query.pack()), ["net1"])
                assert reply is not None
                return [str(rr.rdata) for rr in DNSRecord.parse(reply).rr]

            assert await answer(name_of(web)) == ["10.0.1.2"]
            assert await answer("web") == []  # its service's names come once it runs
            datapath.state.task_status("t1", TaskStatus(state="running"))
            key = "t1.net1"  # NetworkDB tells its watchers of our own update, as of any other
            value = datapath.state._published[key][1]
            event = WatchEvent(WatchEventType.UPDATE, "net1", ENDPOINT_TABLE, key, value, "n1")
            datapath.endpoint_event(event)
            for name in ("web", "tasks.web", name_of(web), "web.blue"):
                assert await answer(name) == ["10.0.1.2"], name
            [segment] = datapath.counters()["segments"].values()
            assert (segment["network"], segment["transport"]) == ("blue", "vxlan")
            assert segment["dropped"] == {}
        finally:
            datapath.stop()

    asyncio.run(scenario())


def test_a_container_without_an_endpoint_fails_with_its_name() -> None:
    async def scenario() -> None:
        datapath = NodeDataPath(NodeView("n1", "127.77.251.51"), FakeGossip(), upstreams=[])
        await datapath.start()
        try:
            with pytest.raises(AttachError, match=r"'ghost\.1\.t9' has no network endpoint"):
                await datapath.attach("ghost.1.t9", ["net1"], timeout=0.2)
        finally:
            datapath.stop()

    asyncio.run(scenario())


def test_a_taken_vtep_address_is_named() -> None:
    async def scenario() -> None:
        first = NodeDataPath(NodeView("n1", "127.77.251.52"), FakeGossip(), upstreams=[])
        await first.start()
        try:
            second = NodeDataPath(NodeView("n2", "127.77.251.52"), FakeGossip(), upstreams=[])
            with pytest.raises(DataPathError, match=r"127\.77\.251\.52:4789"):
                await second.start()
        finally:
            first.stop()

    asyncio.run(scenario())


def test_endpoint_changes_of_one_loop_turn_are_followed_once() -> None:
    """A bulk sync delivers many entries at once: the program and names follow them in one
    rebuild, and a name lookup in between sees them all."""

    async def scenario() -> None:
        datapath = NodeDataPath(NodeView("n1", "127.77.137.50"), FakeGossip(), upstreams=[])
        await datapath.start()
        rebuilds = 0
        follow = datapath.state.endpoints_changed

        def counted() -> None:
            nonlocal rebuilds
            rebuilds += 1
            follow()

        datapath.state.endpoints_changed = counted  # type: ignore[method-assign]
        try:
            event = WatchEvent(WatchEventType.CREATE, "net1", ENDPOINT_TABLE, "k", b"", "n2")
            for _ in range(100):
                datapath.endpoint_event(event)
            assert rebuilds == 0
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert rebuilds == 1
            datapath.endpoint_event(event)
            query = DNSRecord.question("web", "A")
            await datapath.resolve(bytes(query.pack()), ["net1"])
            assert rebuilds == 2  # the lookup settled the pending change first
            await asyncio.sleep(0)
            assert rebuilds == 2
        finally:
            datapath.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("wanted", "shown"), [(True, "gso on, gro on"), (False, "gso off, gro off")]
)
def test_the_counters_say_whether_udp_offloads_are_on(wanted: bool, shown: str) -> None:
    """`--no-udp-offloads` reaches the backend, and `swarmlab datapath` shows the result (this
    kernel has UDP GSO and GRO)."""

    async def scenario() -> None:
        address = "127.77.251.55" if wanted else "127.77.251.56"
        datapath = NodeDataPath(
            NodeView("n1", address), FakeGossip(), upstreams=[], udp_offloads=wanted
        )
        await datapath.start()
        try:
            counters = datapath.counters()
            assert counters["udp_offloads"] == {"gso": wanted, "gro": wanted}
            assert f"  udp offloads: {shown}\n" in render_counters(counters)
        finally:
            datapath.stop()

    asyncio.run(scenario())
