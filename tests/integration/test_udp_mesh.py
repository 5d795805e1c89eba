"""UDP through the routing mesh end to end with the real docker CLI, in a lab of 1 manager and 2
workers (127.77.197.x): `-p 8053:53/udp` to busybox `nc -u -l -p 53 -e hostname` with 2
replicas answers real UDP datagrams on every node's address, each flow from one task and new
flows from both; `-p 8080:80/tcp -p 8080:80/udp` on one service answers TCP (httpd) and UDP
(nc) on the same port number."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from docker_cli import needs_docker_cli, ok
from tcp_probes import http_answer

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]

LAB = 197


class _Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


async def udp_answers(host: str, port: int, count: int) -> list[str] | None:
    """`count` datagrams from one client socket (one flow); their answers, or None when one
    did not come within a few seconds."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        _Answers, remote_addr=(host, port), family=socket.AF_INET
    )
    answers = []
    try:
        for i in range(count):
            transport.sendto(f"q{i}".encode())
            try:
                answers.append((await asyncio.wait_for(client.got.get(), 3)).decode().strip())
            except TimeoutError:
                return None
    finally:
        transport.close()
    return answers


def test_udp_and_tcp_on_one_port_through_the_mesh(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=LAB)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            ok(manager, "service", "create", "-d", "--name", "dns", "--replicas", "2",
                   "-p", "8053:53/udp", "busybox", "nc", "-u", "-l", "-p", "53", "-e",
                   "hostname")  # fmt: skip
            ok(manager, "service", "create", "-d", "--name", "both", "-p", "8080:80/tcp",
                   "-p", "8080:80/udp", "busybox", "sh", "-c",
                   "nc -u -l -p 80 -e hostname & httpd -f -p 80")  # fmt: skip
            addresses = [node.address for node in lab.nodes]
            seen: set[str] = set()

            async def every_node_answers_from_both_tasks() -> bool | None:
                for host in addresses:
                    answers = await udp_answers(host, 8053, 3)
                    if answers is None:
                        return None
                    assert len(set(answers)) == 1, answers  # one flow, one task
                    seen.update(answers)
                return len(seen) == 2 or None

            await until(every_node_answers_from_both_tasks, 120, "UDP 8053 on every node")

            async def tcp_and_udp_on_8080() -> bool | None:
                for host in addresses:
                    status = (await http_answer(host, 8080) or "").split("\r\n", 1)[0]
                    if status != "HTTP/1.1 404 Not Found":
                        return None  # busybox httpd's empty document root: its 404
                    if await udp_answers(host, 8080, 1) is None:
                        return None
                return True

            await until(tcp_and_udp_on_8080, 120, "TCP and UDP 8080 on every node")
            ls = ok(manager, "service", "ls", "--format", "{{.Name}} {{.Ports}}")
            assert "both *:8080->80/tcp, *:8080->80/udp" in ls, ls
        finally:
            lab.stop()

    asyncio.run(scenario())
