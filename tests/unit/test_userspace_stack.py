"""datapath/userspace/stack.py: the emulated containers' IPv4 stack over an in-memory link
that drops, duplicates and reorders frames (seeded). Waits use deadlines, never speed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from polling import eventually
from userspace_testing import http_get

from controlplane.datapath.program import mac_for
from controlplane.datapath.userspace import stack
from controlplane.datapath.userspace.frames import PROTO_TCP, TCP_ACK, Ethernet, IPv4, Tcp
from controlplane.datapath.userspace.stack import IPv4Stack, State, TcpConnection

A_IP, B_IP = "10.0.7.2", "10.0.7.3"
DEADLINE = 120.0


class Link:
    """Two stacks joined by a lossy wire: each frame is dropped with `loss`, duplicated with
    `duplicate`, and delayed by up to `jitter` seconds (which reorders)."""

    def __init__(self, seed: int, loss: float = 0.0, duplicate: float = 0.0, jitter: float = 0.0):
        self.rng = random.Random(seed)
        self.loss, self.duplicate, self.jitter = loss, duplicate, jitter
        self.frames = 0
        self.sent: list[tuple[str, bytes]] = []  # (sender, frame), as sent
        self.a = IPv4Stack("a", A_IP, mac_for(A_IP), 24, 1450, self._sender("a", lambda: self.b))
        self.b = IPv4Stack("b", B_IP, mac_for(B_IP), 24, 1450, self._sender("b", lambda: self.a))

    def _sender(self, name: str, peer: Callable[[], IPv4Stack]) -> Callable[[bytes], None]:
        loop = asyncio.get_running_loop()

        def send(frame: bytes) -> None:
            self.frames += 1
            self.sent.append((name, frame))
            if self.rng.random() < self.loss:
                return
            copies = 2 if self.rng.random() < self.duplicate else 1
            for _ in range(copies):
                loop.call_later(self.rng.uniform(0, self.jitter), peer().receive, frame)

        return send

    def pure_acks_from(self, name: str) -> int:
        """TCP segments `name` sent with nothing in them but the ACK."""
        count = 0
        for sender, frame in self.sent:
            packet = IPv4.parse(Ethernet.parse(frame).payload)
            if sender == name and packet.protocol == PROTO_TCP:
                segment = Tcp.parse(packet.payload, packet.src, packet.dst)
                count += segment.flags == TCP_ACK and not segment.payload
        return count


async def connected(link: Link, port: int) -> tuple[TcpConnection, TcpConnection]:
    listener = link.b.listen(port)
    accepted = asyncio.create_task(listener.accept())
    client = await link.a.connect(B_IP, port)
    return client, await accepted


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(DEADLINE):
            await scenario()

    asyncio.run(bounded())


def test_arp_then_ping_reports_a_round_trip_time() -> None:
    async def scenario() -> None:
        link = Link(seed=1)
        rtt = await link.a.ping(B_IP)
        assert rtt >= 0
        assert (await link.b.ping(A_IP)) >= 0  # b learnt a's MAC from the ARP request
        with pytest.raises(TimeoutError):
            await link.a.ping("10.0.7.99", timeout=0.2)  # nobody answers ARP for it
        with pytest.raises(OSError, match=r"outside 10\.0\.7\.0/24"):
            await link.a.ping("10.0.8.1")

    run(scenario)


def test_ping_times_come_from_a_fine_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the loop's: uvloop's counts whole milliseconds, so pings read 0.000 or 1.000 ms.
    Here the clock advances 37 µs per reading: the echo's time is one step."""
    readings = iter(range(10**6))
    monkeypatch.setattr(stack, "fine_clock", lambda: next(readings) * 37e-6)

    async def scenario() -> None:
        link = Link(seed=2)
        assert await link.a.ping(B_IP) == pytest.approx(37e-6)

    run(scenario)


def test_interfaces_count_the_frames_and_bytes_they_carry() -> None:
    """What `docker stats` shows as NET I/O: whole frames, as a Linux interface counts."""

    async def scenario() -> None:
        link = Link(seed=1)
        await link.a.ping(B_IP)  # ARP request and reply, echo request and reply
        sent_by_a = [len(frame) for sender, frame in link.sent if sender == "a"]
        sent_by_b = [len(frame) for sender, frame in link.sent if sender == "b"]
        assert (link.a.counters.tx_packets, link.a.counters.tx_bytes) == (2, sum(sent_by_a))
        assert (link.a.counters.rx_packets, link.a.counters.rx_bytes) == (2, sum(sent_by_b))
        assert link.b.counters.rx_bytes == link.a.counters.tx_bytes

    run(scenario)


def test_udp_sendto_and_recvfrom_both_ways() -> None:
    async def scenario() -> None:
        link = Link(seed=2)
        server = link.b.udp_socket(53)
        client = link.a.udp_socket()
        client.sendto(b"question", (B_IP, 53))
        data, (ip, port) = await server.recvfrom()
        assert (data, ip, port) == (b"question", A_IP, client.port)
        server.sendto(b"answer", (ip, port))
        assert await client.recvfrom() == (b"answer", (B_IP, 53))
        with pytest.raises(OSError, match="in use"):
            link.b.udp_socket(53)
        with pytest.raises(OSError, match="exceeds the MTU"):
            client.sendto(b"x" * 1500, (B_IP, 53))

    run(scenario)


def test_http_get_over_a_clean_link() -> None:
    async def scenario() -> None:
        link = Link(seed=3)
        body = random.Random(3).randbytes(100_000)
        response = await http_get(link.a, link.b, body)
        assert response == b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n" + body

    run(scenario)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_tcp_delivers_in_order_over_a_lossy_reordering_duplicating_link(seed: int) -> None:
    async def scenario() -> None:
        link = Link(seed, loss=0.05, duplicate=0.03, jitter=0.004)
        body = random.Random(seed).randbytes(300_000)
        response = await http_get(link.a, link.b, body)
        assert response.endswith(b"\r\n\r\n" + body)
        assert len(response) == len(body) + len(
            b"HTTP/1.0 200 OK\r\nContent-Length: 300000\r\n\r\n"
        )

    run(scenario)


def test_both_directions_at_once_and_a_slow_reader_closing_the_window() -> None:
    async def scenario() -> None:
        link = Link(seed=4, loss=0.02, jitter=0.002)
        listener = link.b.listen(9000)
        payload_a = random.Random(1).randbytes(400_000)
        payload_b = random.Random(2).randbytes(200_000)

        async def exchange(conn: TcpConnection, payload: bytes, slow: bool) -> bytes:
            async def reader() -> bytes:
                got = bytearray()
                while chunk := await conn.recv(4096 if slow else 65536):
                    got += chunk
                    if slow:
                        await asyncio.sleep(0)  # let the window fill up now and then
                return bytes(got)

            reading = asyncio.create_task(reader())
            await conn.send(payload)
            conn.close()
            return await reading

        accepted = asyncio.create_task(listener.accept())
        client = await link.a.connect(B_IP, 9000)
        server = await accepted
        got_by_b, got_by_a = await asyncio.gather(
            exchange(server, payload_b, slow=True), exchange(client, payload_a, slow=False)
        )
        assert got_by_b == payload_a and got_by_a == payload_b
        await asyncio.gather(client.wait_closed(), server.wait_closed())
        assert {client.state, server.state} <= {State.TIME_WAIT, State.CLOSED}

    run(scenario)


def test_connection_refused_reset_and_send_after_close() -> None:
    async def scenario() -> None:
        link = Link(seed=5)
        with pytest.raises(ConnectionRefusedError):
            await link.a.connect(B_IP, 81)  # nothing listens: the peer answers RST
        listener = link.b.listen(82)
        accepted = asyncio.create_task(listener.accept())
        client = await link.a.connect(B_IP, 82)
        server = await accepted
        server.abort()
        with pytest.raises(ConnectionResetError):
            while True:
                await client.recv()
        with pytest.raises(OSError, match="already listening"):
            link.b.listen(82)
        accepted = asyncio.create_task(listener.accept())
        client = await link.a.connect(B_IP, 82)
        server = await accepted
        client.close()
        assert await server.recv() == b""  # the FIN reads as end of stream
        with pytest.raises(OSError, match="closed for sending"):
            await client.send(b"late")
        link.a.close()  # the endpoint goes away: its connections reset

    run(scenario)


def test_unanswered_connect_times_out_after_retransmissions() -> None:
    async def scenario() -> None:
        link = Link(seed=6, loss=1.0)  # a dead wire
        link.a._neighbours[link.b.ip_raw] = link.b._mac  # skip ARP: only TCP is tested here
        with pytest.raises(TimeoutError):
            await link.a.connect(B_IP, 80, timeout=1.5)
        assert link.frames >= 2  # the SYN went out again

    run(scenario)


def test_data_arriving_together_is_acknowledged_once() -> None:
    async def scenario() -> None:
        link = Link(seed=7)
        client, server = await connected(link, 9100)
        mss = client.mss
        link.sent.clear()
        await client.send(bytes(10 * mss))  # ten full segments, delivered in one turn
        got = 0
        while got < 10 * mss:
            got += len(await server.recv())
        await eventually(
            "all data acknowledged", lambda: client._snd_una == client._snd_nxt, timeout=DEADLINE
        )
        # At most one ACK per two full-sized segments (RFC 5681 4.2); one covers all ten
        # here, plus a window update when the reader emptied the buffer.
        assert 1 <= link.pure_acks_from("b") <= 5

    run(scenario)


def test_a_lone_full_segment_waits_for_the_delayed_ack_and_a_short_one_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Long enough that a poll on a loaded machine sees the timer armed (40 ms is not).
    monkeypatch.setattr(stack, "DELAYED_ACK", 0.5)

    async def scenario() -> None:
        link = Link(seed=8)
        client, server = await connected(link, 9101)
        link.sent.clear()
        await client.send(bytes(client.mss))
        await eventually(
            "the delayed ACK to be armed", lambda: server._delayed_ack is not None, timeout=DEADLINE
        )
        assert link.pure_acks_from("b") == 0
        await eventually(
            "the delayed ACK", lambda: client._snd_una == client._snd_nxt, timeout=DEADLINE
        )
        assert link.pure_acks_from("b") == 1 and server._delayed_ack is None
        await client.send(b"short")  # the end of a write: acknowledged without waiting
        await eventually(
            "the short segment's ACK", lambda: client._snd_una == client._snd_nxt, timeout=DEADLINE
        )
        assert link.pure_acks_from("b") == 2 and server._delayed_ack is None
        await server.send(b"answer")  # data going back carries the ACK: none of its own
        await client.send(bytes(client.mss))
        await eventually("the next segment", lambda: server._unacked == 1, timeout=DEADLINE)
        await server.send(b"answer")
        assert server._unacked == 0 and server._delayed_ack is None
        answers = b""
        while len(answers) < 12:
            answers += await client.recv()
        assert answers == b"answeranswer"

    run(scenario)


def test_a_segment_out_of_order_is_acknowledged_at_once() -> None:
    async def scenario() -> None:
        link = Link(seed=9)
        client, server = await connected(link, 9102)
        mss = client.mss
        link.loss = 1.0
        await client.send(bytes(mss))  # lost on the wire
        link.loss = 0.0
        link.sent.clear()
        await client.send(bytes(mss))  # arrives before the one lost
        await eventually("a duplicate ACK", lambda: link.pure_acks_from("b") == 1, timeout=DEADLINE)
        assert server._delayed_ack is None and server._out_of_order

    run(scenario)


def test_a_lost_window_update_is_recovered_by_probing_the_zero_window() -> None:
    """The reader's window closes, then the segment that reopens it is lost: the sender must
    probe the zero window (RFC 9293 3.8.6.1) rather than wait for ever."""

    async def scenario() -> None:
        link = Link(seed=11)
        client, server = await connected(link, 9103)
        payload = random.Random(3).randbytes(3 * stack.TCP_RECEIVE_BUFFER)
        sending = asyncio.create_task(client.send(payload))
        await eventually(
            "the window to close with everything sent acknowledged",
            lambda: client._snd_wnd == 0 and client._snd_una == client._snd_nxt,
            timeout=DEADLINE,
        )
        link.loss = 1.0  # the window update the next read sends is lost
        got = bytearray(await server.recv(stack.TCP_RECEIVE_BUFFER))
        link.loss = 0.0
        while len(got) < len(payload):
            got += await server.recv()
        assert bytes(got) == payload
        await sending

    run(scenario)
