"""Host-mode published ports: the scheduler keeps two tasks wanting one host port off one node
(swarmkit's host-port filter), and a node's `HostPorts` forwards real TCP and UDP on
127.77.191.1 to the task's gwbridge stack, reports what it bound, refuses a taken port with
Docker's error and closes the ports on release."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from controlplane.datapath.host_ports import HostPortError, HostPorts
from controlplane.datapath.userspace import IPv4Stack
from controlplane.pb.objects_pb2 import PortConfig, Service, Task
from controlplane.store import Transaction
from tests.unit.cluster_builders import SyncCluster, replicated

HOST = "127.77.191.1"


def host_service(name: str, replicas: int, published: int) -> Service:
    svc = replicated(name, replicas)
    svc.spec.ports.add(
        target_port=80, published_port=published, protocol="tcp", publish_mode="host"
    )
    return svc


# ---- scheduling ---------------------------------------------------------------------------


def test_a_host_port_is_taken_once_per_node() -> None:
    c = SyncCluster(nodes=2)
    c.apply(Transaction().create(host_service("web", 3, 8080)))
    c.converge()
    placed = [t for t in c.tasks("web") if t.node_id]
    assert len(placed) == 2 and len({t.node_id for t in placed}) == 2
    [waiting] = [t for t in c.tasks("web") if not t.node_id]
    assert waiting.status.state == "pending"
    assert waiting.status.err == "no suitable node (host-mode port already in use on 2 nodes)"
    [port] = waiting.endpoint.ports
    assert (port.publish_mode, port.published_port) == ("host", 8080)


def test_ports_left_to_the_node_never_clash() -> None:
    c = SyncCluster(nodes=2)
    c.apply(Transaction().create(host_service("web", 3, 0)))
    c.converge()
    assert all(t.node_id for t in c.tasks("web"))


# ---- forwarding ---------------------------------------------------------------------------


def task(task_id: str, *ports: tuple[str, int, int]) -> Task:
    t = Task(id=task_id, service_id="s1", slot=1, node_id="n1")
    t.spec.annotations.name = "web"
    for protocol, published, target in ports:
        t.endpoint.ports.append(
            PortConfig(
                protocol=protocol,
                published_port=published,
                target_port=target,
                publish_mode="host",
            )
        )
    return t


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):
            await scenario()

    asyncio.run(bounded())


def serve(stack: IPv4Stack) -> None:
    """TCP 80 says who connected; UDP 53 echoes with the stack's name."""
    listener = stack.listen(80)
    sock = stack.udp_socket(53)

    async def tcp() -> None:
        while True:
            conn = await listener.accept()
            await conn.send(f"{stack.name} from {conn.peer[0]}".encode())
            conn.close()

    async def udp() -> None:
        while True:
            data, peer = await sock.recvfrom()
            sock.sendto(stack.name.encode() + b":" + data, peer)

    loop = asyncio.get_running_loop()
    _servers.update((loop.create_task(tcp()), loop.create_task(udp())))


_servers: set[asyncio.Task[None]] = set()


async def tcp_answer(port: int) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    answer = await reader.read()
    writer.close()
    return answer


async def until_bindable(port: int) -> None:
    """Poll (closing a datagram transport takes a loop turn) until `port` binds, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        try:
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=(HOST, port)
            )
        except OSError:
            assert loop.time() < deadline, f"udp {port} still bound"
            await asyncio.sleep(0.01)
            continue
        transport.close()
        return


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


def test_a_task_s_host_ports_forward_to_it_and_close_on_release() -> None:
    async def scenario() -> None:
        ports = HostPorts(HOST)
        try:
            web = task("t1", ("tcp", 18090, 80), ("udp", 18090, 53), ("tcp", 0, 80))
            stack = await ports.publish(web)
            assert stack is not None and stack.ip == "172.18.0.2"
            serve(stack)
            bound = [p.published_port for p in ports.port_status("t1")]
            assert bound[:2] == [18090, 18090] and bound[2] > 0  # the OS chose the last one
            assert all(p.publish_mode == "host" for p in ports.port_status("t1"))

            assert await tcp_answer(18090) == b"web.1.t1 from 172.18.0.1"  # via the gateway
            assert await tcp_answer(bound[2]) == b"web.1.t1 from 172.18.0.1"
            loop = asyncio.get_running_loop()
            transport, client = await loop.create_datagram_endpoint(
                _Collect, remote_addr=(HOST, 18090)
            )
            transport.sendto(b"ping")
            assert await asyncio.wait_for(client.got.get(), 10) == b"web.1.t1:ping"
            transport.close()

            other = task("t2", ("udp", 18092, 53), ("tcp", 18090, 80))
            allocated = (
                r"endpoint web\.1\.t2: Bind for 0\.0\.0\.0:18090 failed: port is already allocated"
            )
            with pytest.raises(HostPortError, match=allocated):
                await ports.publish(other)
            assert ports.owners() == {"t1"}
            await until_bindable(18092)  # nothing of the refused task stays bound

            ports.release("t1")
            with pytest.raises(ConnectionRefusedError):
                await tcp_answer(18090)
            assert ports.port_status("t1") == []
        finally:
            ports.close()

    run(scenario)


def test_a_task_without_host_ports_gets_no_gwbridge_stack() -> None:
    async def scenario() -> None:
        ports = HostPorts(HOST)
        ingress_only = task("t3")
        ingress_only.endpoint.ports.append(
            PortConfig(protocol="tcp", published_port=8080, target_port=80, publish_mode="ingress")
        )
        assert await ports.publish(ingress_only) is None
        assert ports.owners() == set()

    run(scenario)
