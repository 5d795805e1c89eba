"""The routing mesh's parts: the managers' bookkeeping (an ingress address per node, tasks
carrying their service's published ports), what a node publishes on the ingress network, the
port table every node builds from it, and the forwarding itself to the service's VIP: real
TCP and UDP sockets on 127.77.237.x in front of emulated stacks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from controlplane.datapath.attachments import ENDPOINT_TABLE, INGRESS_SANDBOX, DataPathState
from controlplane.datapath.ingress import (
    Backend,
    IngressMesh,
    MeshService,
    PublishedPort,
    mesh_table,
)
from controlplane.datapath.program import NodeView, mac_for
from controlplane.datapath.userspace import IPv4Stack
from controlplane.datapath.vips import VipBalancer, VipService
from controlplane.manager.allocation import allocate
from controlplane.pb.datapath_pb2 import EndpointRecord, IngressPort
from controlplane.pb.objects_pb2 import (
    Network,
    NetworkAttachment,
    Node,
    PortConfig,
    Task,
    TaskStatus,
)
from controlplane.store import Transaction
from tests.datapath_testing import FakeGossip, task
from tests.unit.cluster_builders import SyncCluster, replicated
from tests.unit.swarm_fixture import INGRESS_ID, ingress_network

HOST = "127.77.237.1"


# ---- the managers' bookkeeping --------------------------------------------------------------


def test_every_node_gets_one_ingress_address_apart_from_tasks_and_vips() -> None:
    c = SyncCluster(nodes=3)
    c.apply(Transaction().create(replicated("web", 2, ports=((8080, 80),))))
    c.converge()
    nodes = c.store.list(Node)
    sandboxes = [a for n in nodes for a in n.attachments]
    assert [a.network_id for a in sandboxes] == [INGRESS_ID] * 3
    used = [addr for a in sandboxes for addr in a.addresses]
    used += list(c.service("web").endpoint.virtual_ips.values())
    used += [addr for t in c.tasks("web") for att in t.networks for addr in att.addresses]
    assert len(used) == len(set(used)) == 6
    assert allocate(c.view(), c.now).transaction is None  # stable: nothing re-allocated


def test_a_port_change_reaches_running_tasks_without_replacing_them() -> None:
    c = SyncCluster(nodes=2)
    c.apply(Transaction().create(replicated("web", 2, ports=((8080, 80),))))
    c.converge(agent=True)
    before = {t.id for t in c.live("web")}
    assert all(t.endpoint.ports[0].published_port == 8080 for t in c.live("web"))
    svc = c.service("web")
    svc.spec.ports[0].published_port = 9090
    c.update_service(svc)
    c.converge(agent=True)
    assert {t.id for t in c.live("web")} == before
    assert all(t.endpoint.ports[0].published_port == 9090 for t in c.live("web"))


# ---- what a node publishes ----------------------------------------------------------------


def _ingress_task(ports: list[PortConfig]) -> tuple[Network, Task]:
    t = task("t1", "10.0.0.7")
    del t.networks[:]
    t.networks.append(NetworkAttachment(network_id=INGRESS_ID, addresses=["10.0.0.7/24"]))
    t.endpoint.ports.extend(ports)
    return ingress_network(), t


def test_node_publishes_its_sandbox_and_tasks_carry_their_ingress_ports() -> None:
    gossip = FakeGossip()
    state = DataPathState(NodeView("n1", "127.0.0.1"), gossip)
    net, t = _ingress_task(
        [
            PortConfig(protocol="tcp", target_port=80, published_port=8080, publish_mode="ingress"),
            PortConfig(protocol="udp", target_port=53, published_port=5353, publish_mode="ingress"),
            PortConfig(protocol="tcp", target_port=22, published_port=2222, publish_mode="host"),
        ]
    )
    state.assignments({"t1": t}, {INGRESS_ID: net})
    state.node_attachments([NetworkAttachment(network_id=INGRESS_ID, addresses=["10.0.0.3/24"])])
    state.task_status("t1", TaskStatus(state="running"))
    entries = gossip.table_entries(INGRESS_ID, ENDPOINT_TABLE)
    records = {k: EndpointRecord.FromString(e.value) for k, e in entries.items()}
    sandbox = records[f"{INGRESS_SANDBOX}-n1.{INGRESS_ID}"]
    assert (sandbox.name, sandbox.ip, list(sandbox.ingress_ports)) == (
        INGRESS_SANDBOX,
        "10.0.0.3",
        [],
    )
    task_record = records[f"t1.{INGRESS_ID}"]
    assert [(p.protocol, p.published_port, p.target_port) for p in task_record.ingress_ports] == [
        ("tcp", 8080, 80),
        ("udp", 5353, 53),
    ]  # host-mode ports are not the mesh's
    [segment] = state.program.segments.values()
    assert [ep.name for ep in segment.local] == [INGRESS_SANDBOX, "web.1.t1"]

    t.endpoint.ports[0].published_port = 8081
    state.assignments({"t1": t}, {INGRESS_ID: net})
    updated = EndpointRecord.FromString(gossip.tables[INGRESS_ID][f"t1.{INGRESS_ID}"].value)
    assert updated.ingress_ports[0].published_port == 8081

    state.node_attachments([])
    assert f"{INGRESS_SANDBOX}-n1.{INGRESS_ID}" not in gossip.tables[INGRESS_ID]


# ---- the port table and the balancer --------------------------------------------------------


VIP = "10.0.0.100"


def record(service: str, task: str, ip: str, *ports: tuple[str, int, int]) -> EndpointRecord:
    return EndpointRecord(
        name=f"{service}.1.{task}",
        ip=ip,
        service_id=service,
        service_name=service,
        task_id=task,
        vip=VIP,
        ingress_ports=[
            IngressPort(protocol=p, published_port=pub, target_port=tgt) for p, pub, tgt in ports
        ],
    )


def test_mesh_table_groups_running_tasks_by_port_and_leaves_out_sctp_and_sandboxes() -> None:
    starting = record("web", "d", "10.0.0.11", ("tcp", 8080, 80))
    starting.service_disabled = True
    table = mesh_table(
        [
            record("web", "b", "10.0.0.9", ("tcp", 8080, 80), ("udp", 8080, 80)),
            record("web", "a", "10.0.0.8", ("tcp", 8080, 80), ("udp", 8080, 80)),
            starting,
            record("sig", "c", "10.0.0.10", ("sctp", 9000, 9000)),
            EndpointRecord(name=INGRESS_SANDBOX, ip="10.0.0.2", node_id="n1"),
        ]
    )
    web = (Backend("10.0.0.8", 80, "a"), Backend("10.0.0.9", 80, "b"))
    assert table == {
        PublishedPort("tcp", 8080): MeshService("web", "web", VIP, 80, web),
        PublishedPort("udp", 8080): MeshService("web", "web", VIP, 80, web),
    }


def test_a_port_claimed_by_two_services_goes_to_one_of_them() -> None:
    table = mesh_table(
        [
            record("s2", "x", "10.0.0.5", ("tcp", 80, 80)),
            record("s1", "y", "10.0.0.6", ("tcp", 80, 8)),
        ]
    )
    assert table[PublishedPort("tcp", 80)].service_id == "s1"


# ---- forwarding through stacks -------------------------------------------------------------


class Bridge:
    """One segment on a single node: stacks exchanging frames by MAC (ARP broadcast)."""

    def __init__(self) -> None:
        self.stacks: dict[bytes, IPv4Stack] = {}

    def stack(self, name: str, ip: str, vips: VipBalancer | None = None) -> IPv4Stack:
        stack = IPv4Stack(name, ip, mac_for(ip), 24, 1450, self._send, vips)
        self.stacks[bytes.fromhex(mac_for(ip).replace(":", ""))] = stack
        return stack

    def _send(self, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        dst = frame[:6]
        targets = list(self.stacks.values()) if dst == b"\xff" * 6 else [self.stacks[dst]]
        for target in targets:
            loop.call_soon(target.receive, frame)


def balancer(*tasks: IPv4Stack) -> VipBalancer:
    """The sandbox's view of the service's VIP, backed by `tasks`."""
    vips = VipBalancer()
    vips.replace({VIP: VipService("s", "web", VIP, tuple(t.ip for t in tasks))})
    return vips


def mesh_service(port: int, *tasks: IPv4Stack) -> MeshService:
    return MeshService("s", "web", VIP, port, tuple(Backend(t.ip, port, t.name) for t in tasks))


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):
            await scenario()

    asyncio.run(bounded())


async def serve_tcp(stack: IPv4Stack, port: int) -> None:
    listener = stack.listen(port)

    async def answer() -> None:
        while True:
            conn = await listener.accept()
            request = await conn.recv()
            await conn.send(f"{stack.name} got {request.decode()} from {conn.peer[0]}".encode())
            conn.close()

    asyncio.get_running_loop().create_task(answer())


async def serve_udp(stack: IPv4Stack, port: int) -> None:
    sock = stack.udp_socket(port)

    async def echo() -> None:
        while True:
            data, peer = await sock.recvfrom()
            sock.sendto(f"{stack.name}:{data.decode()}".encode(), peer)

    asyncio.get_running_loop().create_task(echo())


async def tcp_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(data)
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    return answer


def test_tcp_connections_go_round_robin_to_the_tasks_from_the_sandbox() -> None:
    async def scenario() -> None:
        bridge = Bridge()
        tasks = [bridge.stack(f"web.{i}", f"10.0.0.{i + 10}") for i in (1, 2)]
        sandbox = bridge.stack(INGRESS_SANDBOX, "10.0.0.2", balancer(*tasks))
        for t in tasks:
            await serve_tcp(t, 80)
        mesh = IngressMesh(HOST, lambda: sandbox)
        mesh.update({PublishedPort("tcp", 18080): mesh_service(80, *tasks)})
        await mesh.settled()
        try:
            answers = [await tcp_exchange(18080, b"hello") for _ in range(4)]
            assert (
                answers
                == [
                    b"web.1 got hello from 10.0.0.2",
                    b"web.2 got hello from 10.0.0.2",
                ]
                * 2
            )
            mesh.update({})  # the last task went away: nothing listens any more
            await mesh.settled()
            with pytest.raises(ConnectionRefusedError):
                await tcp_exchange(18080, b"hello")
        finally:
            mesh.close()

    run(scenario)


def test_a_connection_with_no_sandbox_or_no_answering_task_is_reset() -> None:
    async def scenario() -> None:
        bridge = Bridge()
        task = bridge.stack("web.1", "10.0.0.11")  # no server on it: the task refuses
        sandbox = bridge.stack(INGRESS_SANDBOX, "10.0.0.2", balancer(task))
        stacks: list[IPv4Stack] = []
        mesh = IngressMesh(HOST, lambda: stacks[0] if stacks else None)
        mesh.update({PublishedPort("tcp", 18081): mesh_service(80, task)})
        await mesh.settled()
        try:
            for _ in ("no sandbox yet", "task refuses"):
                with pytest.raises(ConnectionResetError):
                    answer = await tcp_exchange(18081, b"x")
                    if not answer:  # a reset may be seen as an empty read first
                        raise ConnectionResetError
                stacks.append(sandbox)
        finally:
            mesh.close()

    run(scenario)


def test_udp_flows_are_pinned_to_a_task_and_answers_come_back() -> None:
    async def scenario() -> None:
        bridge = Bridge()
        tasks = [bridge.stack(f"dns.{i}", f"10.0.0.{i + 20}") for i in (1, 2)]
        vips = balancer(*tasks)
        sandbox = bridge.stack(INGRESS_SANDBOX, "10.0.0.2", vips)
        for t in tasks:
            await serve_udp(t, 53)
        mesh = IngressMesh(HOST, lambda: sandbox)
        mesh.update({PublishedPort("udp", 15353): mesh_service(53, *tasks)})
        await mesh.settled()
        loop = asyncio.get_running_loop()
        try:
            got: list[asyncio.Queue[bytes]] = []
            clients = []
            for _ in range(2):
                queue: asyncio.Queue[bytes] = asyncio.Queue()
                transport, _ = await loop.create_datagram_endpoint(
                    lambda q=queue: _Collect(q),
                    remote_addr=(HOST, 15353),  # type: ignore[misc]
                )
                got.append(queue)
                clients.append(transport)
            for round_ in ("a", "b"):
                for client in clients:
                    client.sendto(round_.encode())
            answers = [[await asyncio.wait_for(q.get(), 10) for _ in range(2)] for q in got]
            assert answers == [[b"dns.1:a", b"dns.1:b"], [b"dns.2:a", b"dns.2:b"]]
            # dns.1 goes away: its client's next datagram is forwarded to the task left
            vips.replace({VIP: VipService("s", "dns", VIP, (tasks[1].ip,))})
            mesh.update({PublishedPort("udp", 15353): mesh_service(53, tasks[1])})
            await mesh.settled()
            clients[0].sendto(b"c")
            assert await asyncio.wait_for(got[0].get(), 10) == b"dns.2:c"
            for client in clients:
                client.close()
        finally:
            mesh.close()

    run(scenario)


class _Collect(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self._queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._queue.put_nowait(data)


def test_a_port_that_cannot_be_bound_is_reported_not_fatal() -> None:
    async def scenario() -> None:
        blocker = await asyncio.start_server(lambda r, w: None, HOST, 18082)
        mesh = IngressMesh(HOST, lambda: None)
        try:
            mesh.update({PublishedPort("tcp", 18082): MeshService("s", "web", VIP, 80, ())})
            await mesh.settled()
            reason = mesh.failed[PublishedPort("tcp", 18082)]
            assert f"cannot listen on {HOST}:18082/tcp" in reason
        finally:
            mesh.close()
            blocker.close()

    run(scenario)
