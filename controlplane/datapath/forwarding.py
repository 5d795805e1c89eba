"""Forwarding from a real socket on the node's address into the emulated overlay: what the
routing mesh (`ingress.py`) and host-mode published ports (`host_ports.py`) both do, each
choosing where a new connection or flow goes (`Choose`: the stack it leaves from, the address
and the port it goes to; None refuses it).

TCP: each accepted connection opens one emulated TCP connection and the two are spliced until
both sides closed; a reset on one side resets the other. UDP: each client address is a flow
with its own emulated socket, pinned to where it was first sent, its answers relayed back from
the published port until it idles out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from controlplane.datapath.userspace import IPv4Stack, TcpConnection, UdpSocket

log = logging.getLogger("controlplane.datapath.forwarding")

CONNECT_TIMEOUT = 10.0  # seconds to reach a task before the client's connection is reset
UDP_FLOW_IDLE = 60.0  # seconds a UDP flow (client address -> task) lives without traffic
_CHUNK = 65536

Destination = tuple[IPv4Stack, str, int]
"""Where a connection goes: the emulated stack it leaves from, the address and the port."""
Choose = Callable[[], Destination | None]


async def listen_tcp(address: str, port: int, choose: Choose, label: str) -> asyncio.Server:
    """A TCP listener on (address, port) forwarding each connection where `choose` says;
    OSError when the port cannot be bound. Port 0 lets the OS choose."""
    return await asyncio.start_server(
        lambda r, w: _forward_tcp(choose, label, r, w),
        host=address,
        port=port,
        reuse_address=True,
    )


async def listen_udp(address: str, port: int, choose: Choose, label: str) -> UdpForwarder:
    """A UDP port on (address, port) forwarding each flow where `choose` says; OSError when
    the port cannot be bound. Port 0 lets the OS choose."""
    _, forwarder = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: UdpForwarder(choose, label), local_addr=(address, port)
    )
    return forwarder


async def _forward_tcp(
    choose: Choose, label: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    destination = choose()
    client = writer.get_extra_info("peername")
    if destination is None:
        log.info("event=forward_no_destination port=%s client=%s", label, client)
        writer.transport.abort()
        return
    stack, address, port = destination
    try:
        conn = await stack.connect(address, port, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        log.info(
            "event=forward_connect_failed port=%s to=%s:%d error=%r", label, address, port, str(err)
        )
        writer.transport.abort()
        return
    log.debug("event=forward port=%s client=%s to=%s:%d", label, client, address, port)
    await _splice(reader, writer, conn)


async def _splice(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: TcpConnection
) -> None:
    """Copy both ways until both sides closed; a reset on one side resets the other."""

    async def upstream() -> None:
        while data := await reader.read(_CHUNK):
            await conn.send(data)
        conn.close()

    async def downstream() -> None:
        while data := await conn.recv(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(upstream())
            group.create_task(downstream())
    except* OSError:
        conn.abort()
        writer.transport.abort()
    else:
        writer.close()


@dataclass
class _Flow:
    socket: UdpSocket
    address: str
    port: int
    last: float
    relay: asyncio.Task[None] | None = None


class UdpForwarder(asyncio.DatagramProtocol):
    """One forwarded UDP port (see the module docstring). Sent to a VIP, a flow's socket is
    pinned to one task by the VIP's balancer, which moves it when that task goes."""

    def __init__(self, choose: Choose, label: str) -> None:
        self._choose = choose
        self._label = label
        self._transport: asyncio.DatagramTransport | None = None
        self._flows: dict[tuple[str, int], _Flow] = {}

    @property
    def port(self) -> int:
        """The port bound (the OS's choice when 0 was asked)."""
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        flow = self._flows.get(addr)
        if flow is None:
            destination = self._choose()
            if destination is None:
                return
            stack, address, port = destination
            flow = _Flow(stack.udp_socket(), address, port, loop.time())
            flow.relay = loop.create_task(self._relay(addr, flow))
            self._flows[addr] = flow
        flow.last = loop.time()
        try:
            flow.socket.sendto(data, (flow.address, flow.port))
        except OSError as err:
            log.info("event=forward_udp_dropped port=%s error=%r", self._label, str(err))

    async def _relay(self, addr: tuple[str, int], flow: _Flow) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(flow.last + UDP_FLOW_IDLE):
                        data, _ = await flow.socket.recvfrom()
                except TimeoutError:
                    if loop.time() >= flow.last + UDP_FLOW_IDLE:
                        return
                    continue
                flow.last = loop.time()
                if self._transport is not None:
                    self._transport.sendto(data, addr)
        except OSError:
            return  # the stack went away
        finally:
            flow.socket.close()
            if self._flows.get(addr) is flow:
                del self._flows[addr]

    def close(self) -> None:
        for flow in list(self._flows.values()):
            if flow.relay is not None:
                flow.relay.cancel()
            flow.socket.close()
        self._flows.clear()
        if self._transport is not None:
            self._transport.close()
