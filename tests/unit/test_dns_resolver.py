"""datapath/dns.py: the embedded resolver on the wire, its upstream forwarding, and its UDP+TCP
server as `dig` and `nslookup` see it (those are skipped when dnsutils is not installed).
Everything binds in 127.77.245.0/24."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import cast

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from controlplane.datapath.dns import DnsServer, Resolver
from controlplane.datapath.names import NameRecord, NameTable, ServiceRef
from controlplane.datapath.program import Endpoint

HOST = "127.77.245.1"
UPSTREAM_HOST = "127.77.245.53"
DEAD_HOST = "127.77.245.54"  # nothing listens there
NET_A, NET_B = "neta0000", "netb0000"
WEB_SERVICE = ServiceRef("web", vip="10.0.1.10")
RECORDS = [
    NameRecord(Endpoint(NET_A, "e-web1", "web.1.t1", "10.0.1.11", "w1"), WEB_SERVICE),
    NameRecord(Endpoint(NET_A, "e-web2", "web.2.t2", "10.0.1.12", "w2"), WEB_SERVICE),
    NameRecord(Endpoint(NET_A, "e-box", "box", "10.0.1.2", "w1", aliases=("pal",))),
    NameRecord(Endpoint(NET_B, "e-db", "db", "10.0.2.2", "w2")),
]
TABLE = NameTable.build(RECORDS, {NET_A: "my-net", NET_B: "back-net"})
EXTERNAL = "example.org"
EXTERNAL_IP = "192.0.2.80"


def ask(
    resolver: Resolver,
    name: str,
    qtype: str = "A",
    asker: Sequence[str] = (NET_A,),
    tcp: bool = False,
) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    reply = asyncio.run(resolver.handle(query.pack(), asker, tcp=tcp))
    assert reply is not None
    answer = DNSRecord.parse(reply)
    assert answer.header.id == query.header.id
    return answer


def addresses(reply: DNSRecord) -> set[str]:
    return {str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A}


def test_names_get_a_records_with_dockers_ttl() -> None:
    resolver = Resolver(TABLE, [])
    reply = ask(resolver, "web")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa
    assert [str(rr.rdata) for rr in reply.rr] == ["10.0.1.10"]
    assert reply.rr[0].ttl == 600
    assert addresses(ask(resolver, "tasks.web")) == {"10.0.1.11", "10.0.1.12"}
    assert addresses(ask(resolver, "web.2.t2")) == {"10.0.1.12"}
    assert addresses(ask(resolver, "pal")) == {"10.0.1.2"}
    assert addresses(ask(resolver, "BOX.my-net")) == {"10.0.1.2"}
    assert resolver.stats.answered == 5


def test_the_answer_keeps_the_askers_spelling() -> None:
    reply = ask(Resolver(TABLE, []), "WeB")
    assert str(reply.rr[0].rname) == "WeB."


def test_several_addresses_are_shuffled() -> None:
    many = [
        NameRecord(Endpoint(NET_A, f"e{i}", f"rr.{i}.t{i}", f"10.0.1.{i}", "w1"), ServiceRef("rr"))
        for i in range(1, 9)
    ]
    resolver = Resolver(NameTable.build(many), [], rng=random.Random(7))
    orders = {tuple(str(rr.rdata) for rr in ask(resolver, "rr").rr) for _ in range(10)}
    assert len(orders) > 1
    assert all(set(order) == {f"10.0.1.{i}" for i in range(1, 9)} for order in orders)


def test_a_dnsrr_service_answers_every_task() -> None:
    rr = ServiceRef("rr")
    table = NameTable.build(
        [
            NameRecord(Endpoint(NET_A, "e1", "rr.1.t1", "10.0.1.21", "w1"), rr),
            NameRecord(Endpoint(NET_A, "e2", "rr.2.t2", "10.0.1.22", "w2"), rr),
        ]
    )
    assert addresses(ask(Resolver(table, []), "rr")) == {"10.0.1.21", "10.0.1.22"}


def test_names_on_networks_the_asker_does_not_share_are_not_answered() -> None:
    resolver = Resolver(TABLE, [])
    assert ask(resolver, "db", asker=[NET_A]).header.rcode == RCODE.NXDOMAIN
    assert ask(resolver, "web", asker=[NET_B]).header.rcode == RCODE.NXDOMAIN
    assert addresses(ask(resolver, "db", asker=[NET_A, NET_B])) == {"10.0.2.2"}


def test_aaaa_and_other_types_of_our_names_are_empty_noerror() -> None:
    resolver = Resolver(TABLE, [])
    for qtype in ("AAAA", "MX", "TXT"):
        reply = ask(resolver, "web", qtype)
        assert reply.header.rcode == RCODE.NOERROR
        assert reply.rr == []


def test_ptr_for_container_addresses() -> None:
    resolver = Resolver(TABLE, [])
    reply = ask(resolver, "11.1.0.10.in-addr.arpa", "PTR")
    assert [str(rr.rdata) for rr in reply.rr] == ["web.1.t1.my-net."]
    assert ask(resolver, "2.2.0.10.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN
    assert ask(resolver, "10.1.0.10.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN  # VIP


def test_the_table_is_replaced_whole() -> None:
    resolver = Resolver(TABLE, [])
    moved = NameRecord(Endpoint(NET_A, "e-box", "box", "10.0.1.99", "w2"))
    resolver.replace(NameTable.build([moved]))
    assert addresses(ask(resolver, "box")) == {"10.0.1.99"}
    assert ask(resolver, "web").header.rcode == RCODE.NXDOMAIN


def test_garbage_never_raises_it_is_dropped_or_formerr() -> None:
    resolver = Resolver(TABLE, [])
    assert asyncio.run(resolver.handle(b"\x12", [NET_A])) is None
    assert resolver.stats.dropped == 1
    # A reply sent to the resolver is not answered (no reflection loops).
    reply_bytes = DNSRecord.question("web").reply().pack()
    assert asyncio.run(resolver.handle(bytes(reply_bytes), [NET_A])) is None
    assert resolver.stats.dropped == 2
    # A header that says one question, then nothing that parses.
    broken = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x3fweb"
    answer = asyncio.run(resolver.handle(broken, [NET_A]))
    assert answer is not None
    formerr = DNSRecord.parse(answer)
    assert (formerr.header.id, formerr.header.rcode, formerr.header.qr) == (
        0xBEEF,
        RCODE.FORMERR,
        1,
    )
    rng = random.Random(5)
    for _ in range(3000):
        noise = bytes(rng.getrandbits(8) for _ in range(rng.randrange(64)))
        asyncio.run(resolver.handle(noise, [NET_A]))
    assert resolver.stats.formerr > 1 and resolver.stats.dropped > 2


def test_two_questions_are_formerr_and_other_opcodes_notimp() -> None:
    resolver = Resolver(TABLE, [])
    two = DNSRecord.question("web")
    two.add_question(*DNSRecord.question("box").questions)
    answer = asyncio.run(resolver.handle(bytes(two.pack()), [NET_A]))
    assert answer is not None and DNSRecord.parse(answer).header.rcode == RCODE.FORMERR
    notify = DNSRecord.question("web")
    notify.header.opcode = 4
    answer = asyncio.run(resolver.handle(bytes(notify.pack()), [NET_A]))
    assert answer is not None and DNSRecord.parse(answer).header.rcode == RCODE.NOTIMP


def big_table(count: int) -> NameTable:
    big = ServiceRef("big")
    return NameTable.build(
        NameRecord(Endpoint(NET_A, f"e{i}", f"big.{i}.t{i}", f"10.0.1.{i}", "w1"), big)
        for i in range(1, count + 1)
    )


def test_answers_over_512_bytes_are_truncated_on_udp_and_whole_on_tcp() -> None:
    resolver = Resolver(big_table(40), [])
    udp = ask(resolver, "tasks.big")
    assert udp.header.tc == 1 and udp.rr == [] and str(udp.q.qname) == "tasks.big."
    assert resolver.stats.truncated == 1
    tcp = ask(resolver, "tasks.big", tcp=True)
    assert tcp.header.tc == 0 and len(addresses(tcp)) == 40
    assert ask(resolver, "big.1.t1").header.tc == 0  # small answers are whole on UDP


def test_the_resolver_never_forwards_to_itself() -> None:
    resolver = Resolver(
        TABLE, [("127.0.0.11", 53), (HOST, 53), ("10.9.0.1", 53)], own_addresses=[HOST]
    )
    assert resolver.upstreams == [("10.9.0.1", 53)]
    with pytest.raises(ValueError, match="upstream_timeout must be positive"):
        Resolver(TABLE, [], upstream_timeout=0)


# ---- upstream forwarding, against a fake upstream in our range ----------------------------


class FakeUpstream:
    """An upstream resolver on UDP and TCP that knows one external name."""

    def __init__(self) -> None:
        self.port = 0
        self.seen: list[tuple[str, str]] = []  # (transport, name)

    def answer(self, data: bytes, transport: str) -> bytes:
        query = DNSRecord.parse(data)
        self.seen.append((transport, str(query.q.qname)))
        reply = query.reply()
        if str(query.q.qname).lower() == EXTERNAL + ".":
            reply.add_answer(RR(query.q.qname, QTYPE.A, ttl=30, rdata=A(EXTERNAL_IP)))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return bytes(reply.pack())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeUpstream]:
        upstream = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.transport.sendto(upstream.answer(data, "udp"), addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            reply = upstream.answer(await reader.readexactly(length), "tcp")
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
            writer.close()

        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(UPSTREAM_HOST, 0))
        self.port = udp.get_extra_info("sockname")[1]
        server = await asyncio.start_server(tcp, UPSTREAM_HOST, self.port)
        try:
            yield self
        finally:
            udp.close()
            server.close()
            await server.wait_closed()


def run_with_upstream(check: Callable[[FakeUpstream], Awaitable[None]]) -> None:
    async def scenario() -> None:
        async with FakeUpstream().running() as upstream:
            await check(upstream)

    asyncio.run(scenario())


async def ask_async(resolver: Resolver, name: str, tcp: bool = False) -> DNSRecord:
    query = DNSRecord.question(name)
    reply = await resolver.handle(bytes(query.pack()), [NET_A], tcp=tcp)
    assert reply is not None
    answer = DNSRecord.parse(reply)
    assert answer.header.id == query.header.id  # the container's ID, not the forwarded one
    return answer


def test_other_names_are_forwarded_over_the_askers_transport() -> None:
    async def check(upstream: FakeUpstream) -> None:
        resolver = Resolver(TABLE, [(UPSTREAM_HOST, upstream.port)])
        assert addresses(await ask_async(resolver, EXTERNAL)) == {EXTERNAL_IP}
        assert addresses(await ask_async(resolver, EXTERNAL, tcp=True)) == {EXTERNAL_IP}
        unknown = await ask_async(resolver, "nope.example")
        assert unknown.header.rcode == RCODE.NXDOMAIN
        assert addresses(await ask_async(resolver, "web")) == {"10.0.1.10"}  # never forwarded
        assert upstream.seen == [
            ("udp", "example.org."),
            ("tcp", "example.org."),
            ("udp", "nope.example."),
        ]
        assert resolver.stats.forwarded == 3

    run_with_upstream(check)


def test_a_dead_upstream_is_skipped_for_the_next_one() -> None:
    async def check(upstream: FakeUpstream) -> None:
        servers = [(DEAD_HOST, upstream.port), (UPSTREAM_HOST, upstream.port)]
        resolver = Resolver(TABLE, servers, upstream_timeout=1.0)
        assert addresses(await ask_async(resolver, EXTERNAL)) == {EXTERNAL_IP}

    run_with_upstream(check)


def test_upstream_down_is_servfail_and_no_upstream_nxdomain() -> None:
    async def scenario() -> None:
        dead = Resolver(TABLE, [(DEAD_HOST, 5353)], upstream_timeout=1.0)
        for tcp in (False, True):
            reply = await ask_async(dead, EXTERNAL, tcp=tcp)
            assert reply.header.rcode == RCODE.SERVFAIL
        assert dead.stats.upstream_failures == 2
        none = Resolver(TABLE, [])
        assert (await ask_async(none, EXTERNAL)).header.rcode == RCODE.NXDOMAIN
        assert none.stats.nxdomain == 1

    asyncio.run(scenario())


def test_an_upstream_that_never_answers_times_out_to_servfail() -> None:
    async def scenario() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind((UPSTREAM_HOST, 0))  # receives, never answers
        try:
            port = silent.getsockname()[1]
            resolver = Resolver(TABLE, [(UPSTREAM_HOST, port)], upstream_timeout=0.5)
            assert (await ask_async(resolver, EXTERNAL)).header.rcode == RCODE.SERVFAIL
        finally:
            silent.close()

    asyncio.run(scenario())


def test_at_most_100_forwards_wait_at_once_the_next_is_servfail() -> None:
    async def scenario() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind((UPSTREAM_HOST, 0))
        port = silent.getsockname()[1]
        resolver = Resolver(TABLE, [(UPSTREAM_HOST, port)], upstream_timeout=120)
        waiting = [asyncio.create_task(ask_async(resolver, EXTERNAL)) for _ in range(100)]
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while resolver.stats.forwarding < 100:
                assert asyncio.get_running_loop().time() < deadline, resolver.stats
                await asyncio.sleep(0.01)
            assert (await ask_async(resolver, EXTERNAL)).header.rcode == RCODE.SERVFAIL
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            silent.close()
        assert resolver.stats.forwarding == 0

    asyncio.run(scenario())


# ---- the server on real sockets -----------------------------------------------------------


def on_net_a(addr: tuple[str, int]) -> Sequence[str] | None:
    return (NET_A,)


@asynccontextmanager
async def serving(
    resolver: Resolver, asker_of: Callable[..., Sequence[str] | None] = on_net_a
) -> AsyncIterator[DnsServer]:
    server = DnsServer(resolver, HOST, 0, asker_of)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def udp_exchange(port: int, message: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not reply.done():
                reply.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(HOST, port))
    try:
        transport.sendto(message)
        return await asyncio.wait_for(reply, 30)
    finally:
        transport.close()


async def tcp_exchange(port: int, messages: Sequence[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    replies = []
    try:
        for message in messages:
            writer.write(struct.pack("!H", len(message)) + message)
            await writer.drain()
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 30))
            replies.append(await reader.readexactly(length))
    finally:
        writer.close()
    return replies


def test_the_server_answers_over_udp_and_tcp_on_one_port() -> None:
    async def scenario() -> None:
        async with serving(Resolver(big_table(40), [])) as server:
            query = bytes(DNSRecord.question("tasks.big").pack())
            truncated = DNSRecord.parse(await udp_exchange(server.port, query))
            assert truncated.header.tc == 1
            replies = await tcp_exchange(
                server.port, [query, bytes(DNSRecord.question("big.3.t3").pack())]
            )
            assert len(addresses(DNSRecord.parse(replies[0]))) == 40
            assert addresses(DNSRecord.parse(replies[1])) == {"10.0.1.3"}

    asyncio.run(scenario())


def test_a_server_refuses_to_forward_to_itself() -> None:
    async def scenario() -> None:
        server = DnsServer(Resolver(TABLE, [(HOST, 5353)]), HOST, 5353, on_net_a)
        with pytest.raises(ValueError, match="give the server's address to Resolver"):
            await server.start()
        await server.close()

    asyncio.run(scenario())


def test_the_server_refuses_strangers_and_survives_garbage() -> None:
    async def scenario() -> None:
        async with serving(Resolver(TABLE, []), lambda addr: None) as server:
            refused = DNSRecord.parse(
                await udp_exchange(server.port, bytes(DNSRecord.question("web").pack()))
            )
            assert refused.header.rcode == RCODE.REFUSED
        async with serving(Resolver(TABLE, [])) as server:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=(HOST, server.port)
            )
            transport.sendto(b"\x00")
            transport.close()
            # A TCP client that sends half a message and hangs up.
            _, writer = await asyncio.open_connection(HOST, server.port)
            writer.write(b"\x00\x40abc")
            writer.close()
            web = DNSRecord.parse(
                await udp_exchange(server.port, bytes(DNSRecord.question("web").pack()))
            )
            assert addresses(web) == {"10.0.1.10"}

    asyncio.run(scenario())


# ---- dig and nslookup, as a container would use them ---------------------------------------


async def run_tool(*argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def with_tool(
    tool: str, check: Callable[[str, DnsServer], Awaitable[None]], resolver: Resolver
) -> None:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install dnsutils)")

    async def scenario() -> None:
        async with serving(resolver) as server:
            await check(path, server)

    asyncio.run(scenario())


def test_dig_gets_what_docker_answers() -> None:
    async def check(dig: str, server: DnsServer) -> None:
        at = [f"@{HOST}", "-p", str(server.port), "+tries=1", "+time=10"]
        rc, out = await run_tool(dig, *at, "+short", "web")
        assert (rc, out.split()) == (0, ["10.0.1.10"])
        rc, out = await run_tool(dig, *at, "+short", "tasks.web")
        assert rc == 0 and sorted(out.split()) == ["10.0.1.11", "10.0.1.12"]
        rc, out = await run_tool(dig, *at, "nope")
        assert rc == 0 and "status: NXDOMAIN" in out
        rc, out = await run_tool(dig, *at, "+short", "-x", "10.0.1.2")
        assert (rc, out.split()) == (0, ["box.my-net."])

    with_tool("dig", check, Resolver(TABLE, []))


def test_dig_retries_a_truncated_answer_over_tcp() -> None:
    async def check(dig: str, server: DnsServer) -> None:
        at = [f"@{HOST}", "-p", str(server.port), "+tries=1", "+time=10", "+noedns"]
        rc, out = await run_tool(dig, *at, "tasks.big")
        assert rc == 0 and "Truncated, retrying in TCP mode" in out
        rc, out = await run_tool(dig, *at, "+short", "tasks.big")
        assert rc == 0 and len(out.split()) == 40

    with_tool("dig", check, Resolver(big_table(40), []))


def test_nslookup_gets_what_docker_answers() -> None:
    async def check(nslookup: str, server: DnsServer) -> None:
        at = [f"-port={server.port}", "-timeout=10", "-retry=1"]
        rc, out = await run_tool(nslookup, *at, "web", HOST)
        assert rc == 0 and "Name:\tweb\nAddress: 10.0.1.10" in out
        rc, out = await run_tool(nslookup, *at, "tasks.web", HOST)
        assert rc == 0 and "Address: 10.0.1.11" in out and "Address: 10.0.1.12" in out
        rc, out = await run_tool(nslookup, *at, "nope", HOST)
        assert rc != 0 and "server can't find nope: NXDOMAIN" in out

    with_tool("nslookup", check, Resolver(TABLE, []))
