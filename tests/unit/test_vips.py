"""Service VIPs: the table built from endpoint records, the round robin, the names, and the
stacks routing a VIP (ping answered locally, TCP per connection, UDP per flow) on one
emulated segment."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from controlplane.datapath.attachments import DataPathState
from controlplane.datapath.names import NameTable, name_record
from controlplane.datapath.program import NodeView, mac_for
from controlplane.datapath.userspace import IPv4Stack
from controlplane.datapath.vips import (
    VipBalancer,
    VipBalancers,
    VipService,
    render_vips,
    vip_services,
)
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.objects_pb2 import TaskStatus
from tests.datapath_testing import FakeGossip, network, task

VIP = "10.0.1.100"


def record(task_id: str, ip: str, *, vip: str = VIP, disabled: bool = False) -> EndpointRecord:
    return EndpointRecord(
        name=f"web.1.{task_id}",
        ip=ip,
        node_id="n1",
        service_id="s1",
        service_name="web",
        task_id=task_id,
        vip=vip,
        service_disabled=disabled,
    )


def raw(ip: str) -> bytes:
    return bytes(int(part) for part in ip.split("."))


# ---- the table and the balancer ---------------------------------------------------------


def test_running_tasks_with_a_vip_back_it_in_address_order() -> None:
    table = vip_services(
        [
            record("b", "10.0.1.10"),
            record("a", "10.0.1.9"),
            record("c", "10.0.1.11", disabled=True),  # starting: not balanced to yet
            record("d", "10.0.1.12", vip=""),  # a dnsrr service's task
        ]
    )
    assert table == {VIP: VipService("s1", "web", VIP, ("10.0.1.9", "10.0.1.10"))}


def test_round_robin_per_vip_keeps_its_turn_across_changes() -> None:
    vips = VipBalancer()
    vips.replace({VIP: VipService("s1", "web", VIP, ("10.0.1.9", "10.0.1.10"))})
    picks = [vips.pick(raw(VIP)) for _ in range(3)]
    assert picks == [raw("10.0.1.9"), raw("10.0.1.10"), raw("10.0.1.9")]
    vips.replace({VIP: VipService("s1", "web", VIP, ("10.0.1.9", "10.0.1.10", "10.0.1.11"))})
    assert vips.pick(raw(VIP)) == raw("10.0.1.10")  # the turn went on, it did not restart
    assert vips.serves(raw(VIP), raw("10.0.1.11"))
    vips.replace({})
    assert not vips.is_vip(raw(VIP))
    assert vips.pick(raw(VIP)) is None


def test_balancers_are_per_network_and_kept_across_updates() -> None:
    balancers = VipBalancers()
    held = balancers.for_network("net1")
    balancers.update([("net1", record("a", "10.0.1.9")), ("net2", record("b", "10.0.2.9"))])
    assert held.is_vip(raw(VIP))
    assert set(balancers.services) == {"net1", "net2"}
    balancers.update([])
    assert not held.is_vip(raw(VIP))


def test_the_vips_render_as_ipvsadm_lists_them() -> None:
    balancers = VipBalancers()
    balancers.update([("net1", record("b", "10.0.1.10")), ("net1", record("a", "10.0.1.9"))])
    assert render_vips(balancers.services, {"net1": "blue"}) == (
        "service VIPs (ipvsadm -Ln in each sandbox):\n"
        "  blue: FWM 10.0.1.100 (web) rr\n"
        "    -> 10.0.1.9:0  Masq  1\n"
        "    -> 10.0.1.10:0  Masq  1\n"
    )
    assert render_vips({}, {}).endswith("none (no running task of a VIP-mode service on this "
                                        "node's networks)\n")  # fmt: skip


# ---- what a node publishes and the names --------------------------------------------------


def test_a_task_record_carries_its_vip_and_is_disabled_until_running() -> None:
    gossip = FakeGossip()
    state = DataPathState(NodeView("n1", "127.0.0.1"), gossip)
    t = task("t1", "10.0.1.9")
    t.endpoint.virtual_ips["net1"] = f"{VIP}/24"
    state.assignments({"t1": t}, {"net1": network()})

    def published() -> EndpointRecord:
        return EndpointRecord.FromString(gossip.tables["net1"]["t1.net1"].value)

    state.task_status("t1", TaskStatus(state="starting"))
    assert (published().vip, published().service_disabled) == (VIP, True)
    state.task_status("t1", TaskStatus(state="running"))
    assert (published().vip, published().service_disabled) == (VIP, False)
    assert set(gossip.tables["net1"]) == {"t1.net1"}


def test_service_name_resolves_to_its_vip_and_tasks_name_to_the_running_tasks() -> None:
    records = [
        name_record("net1", "k1", record("a", "10.0.1.9")),
        name_record("net1", "k2", record("b", "10.0.1.10")),
        name_record("net1", "k3", record("c", "10.0.1.11", disabled=True)),
    ]
    table = NameTable.build(records, {"net1": "blue"})
    assert table.lookup("web", ["net1"]) == (VIP,)
    assert table.lookup("tasks.web", ["net1"]) == ("10.0.1.9", "10.0.1.10")
    assert table.lookup("web.1.c", ["net1"]) == ("10.0.1.11",)  # its own name: known at once
    assert table.lookup("web", ["other"]) is None


# ---- stacks routing a VIP -----------------------------------------------------------------


class Segment:
    """Stacks on one emulated segment exchanging frames by MAC, counting what went out."""

    def __init__(self) -> None:
        self.stacks: dict[bytes, IPv4Stack] = {}
        self.frames = 0

    def stack(self, name: str, ip: str, vips: VipBalancer | None = None) -> IPv4Stack:
        stack = IPv4Stack(name, ip, mac_for(ip), 24, 1450, self._send, vips)
        self.stacks[bytes.fromhex(mac_for(ip).replace(":", ""))] = stack
        return stack

    def _send(self, frame: bytes) -> None:
        self.frames += 1
        loop = asyncio.get_running_loop()
        dst = frame[:6]
        targets = list(self.stacks.values()) if dst == b"\xff" * 6 else [self.stacks[dst]]
        for target in targets:
            loop.call_soon(target.receive, frame)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):
            await scenario()

    asyncio.run(bounded())


def web_tasks(segment: Segment) -> tuple[list[IPv4Stack], VipBalancer]:
    tasks = [segment.stack(f"web.{i}", f"10.0.1.{i + 10}") for i in (1, 2)]
    vips = VipBalancer()
    vips.replace({VIP: VipService("s1", "web", VIP, tuple(t.ip for t in tasks))})
    return tasks, vips


def test_ping_to_a_vip_is_answered_by_the_asker_itself() -> None:
    async def scenario() -> None:
        segment = Segment()
        _, vips = web_tasks(segment)
        client = segment.stack("client", "10.0.1.50", vips)
        before = segment.frames
        assert await client.ping(VIP, timeout=5) >= 0
        assert segment.frames == before  # nothing went on the segment
        with pytest.raises(TimeoutError):
            await client.ping("10.0.1.101", timeout=0.5)  # no VIP, nobody there

    run(scenario)


def test_tcp_connections_to_a_vip_go_round_robin_and_see_the_vip_as_peer() -> None:
    async def scenario() -> None:
        segment = Segment()
        tasks, vips = web_tasks(segment)
        for t in tasks:
            listener = t.listen(80)

            async def answer(stack: IPv4Stack = t, listener=listener) -> None:  # type: ignore[no-untyped-def]
                while True:
                    conn = await listener.accept()
                    await conn.send(f"{stack.name} saw {conn.peer[0]}".encode())
                    conn.close()

            asyncio.get_running_loop().create_task(answer())
        client = segment.stack("client", "10.0.1.50", vips)
        answers = []
        for _ in range(4):
            conn = await client.connect(VIP, 80, timeout=10)
            assert conn.peer == (VIP, 80)
            answers.append(await conn.recv())
            conn.close()
        assert answers == [b"web.1 saw 10.0.1.50", b"web.2 saw 10.0.1.50"] * 2
        vips.replace({})  # no task runs: the VIP is gone from the sandboxes, as in Docker
        with pytest.raises(TimeoutError):
            await client.connect(VIP, 80, timeout=1)

    run(scenario)


def test_a_udp_flow_to_a_vip_stays_on_its_task_until_the_task_goes() -> None:
    async def scenario() -> None:
        segment = Segment()
        tasks, vips = web_tasks(segment)
        for t in tasks:
            sock = t.udp_socket(53)

            async def echo(stack: IPv4Stack = t, sock=sock) -> None:  # type: ignore[no-untyped-def]
                while True:
                    data, peer = await sock.recvfrom()
                    sock.sendto(stack.name.encode() + b":" + data, peer)

            asyncio.get_running_loop().create_task(echo())
        client = segment.stack("client", "10.0.1.50", vips)
        first, second = client.udp_socket(), client.udp_socket()

        async def exchange(sock, data: bytes) -> tuple[bytes, tuple[str, int]]:  # type: ignore[no-untyped-def]
            sock.sendto(data, (VIP, 53))
            return await asyncio.wait_for(sock.recvfrom(), 10)  # type: ignore[no-any-return]

        assert await exchange(first, b"a") == (b"web.1:a", (VIP, 53))  # answers come from the VIP
        assert await exchange(second, b"b") == (b"web.2:b", (VIP, 53))  # a new flow: next task
        assert await exchange(first, b"c") == (b"web.1:c", (VIP, 53))  # pinned
        vips.replace({VIP: VipService("s1", "web", VIP, (tasks[1].ip,))})
        assert await exchange(first, b"d") == (b"web.2:d", (VIP, 53))  # its task went: moved

    run(scenario)
