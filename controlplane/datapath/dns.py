"""The embedded DNS resolver of a node, Docker's 127.0.0.11: its containers ask it for each
other's names. `Resolver.handle` turns one query (bytes) from a container on given networks
into the reply (bytes), whatever carried the packet; `DnsServer` carries it over real UDP and
TCP sockets on an address it is given (the data path routes a container's 127.0.0.11 there).

What it answers (the names themselves are decided in `names.py`):
- A for names it owns, shuffled when there are several (Docker rotates them); AAAA and other
  types for those names: no records, NOERROR (the overlays are IPv4-only, as in Docker);
- PTR for container addresses;
- everything else forwarded to the node's resolvers over the same transport, SERVFAIL when
  they all fail (or 100 forwards already wait, Docker's bound), NXDOMAIN when there are none;
- malformed input never raises: a message too short for a header, or a reply sent to us, is
  dropped and counted; one whose header reads but whose body does not gets FORMERR; one with
  other than one question FORMERR; another opcode NOTIMP;
- over UDP, an answer above 512 bytes is sent truncated (TC set, question only), and the
  client asks again over TCP, where it gets the whole answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from dnslib import PTR, QTYPE, RCODE, RR, A, DNSError, DNSHeader, DNSQuestion, DNSRecord

from controlplane.datapath import resolvconf
from controlplane.datapath.names import NameTable, reverse_name_to_ip
from controlplane.datapath.upstream import HEADER, QR_BIT, UpstreamError, forward

log = logging.getLogger("controlplane.datapath.dns")

RESPONSE_TTL = 600  # seconds, Docker's for the names it owns
UDP_LIMIT = 512  # a DNS message over UDP without EDNS (RFC 1035 4.2.1)
UPSTREAM_TIMEOUT = 4.0  # seconds per upstream server, Docker's
TCP_IDLE_TIMEOUT = 30.0  # seconds a TCP client may wait between queries
MAX_FORWARDS_IN_FLIGHT = 100  # Docker's bound on concurrent upstream queries
CLASS_IN = 1
OPCODE_QUERY = 0

Asker = Sequence[str]
"""The network ids of the asking container, in its own order (the first answers first)."""


@dataclass
class ResolverStats:
    """Counters of what the resolver did, for the node's metrics and for tests."""

    queries: int = 0
    answered: int = 0  # from the table
    forwarded: int = 0  # answered by an upstream
    forwarding: int = 0  # queries waiting on an upstream now
    upstream_failures: int = 0  # SERVFAIL given: every upstream failed, or too many in flight
    nxdomain: int = 0
    dropped: int = 0  # not even a header, or not a query
    formerr: int = 0
    truncated: int = 0
    refused: int = 0  # from an address that is no container the server knows


class Resolver:
    """The names a node's containers can resolve, and where other names go. The table is
    swapped whole by `replace`, so a query in flight sees the old table or the new one."""

    def __init__(
        self,
        table: NameTable | None = None,
        upstreams: Sequence[tuple[str, int]] | None = None,
        *,
        own_addresses: Sequence[str] = (),
        upstream_timeout: float = UPSTREAM_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        """`upstreams` are (address, port) pairs; None reads the node's /etc/resolv.conf.
        `own_addresses` are where this resolver listens: never forwarded to (a loop)."""
        if upstream_timeout <= 0:
            raise ValueError(f"upstream_timeout must be positive seconds, not {upstream_timeout}")
        own = {resolvconf.EMBEDDED_RESOLVER, *own_addresses}
        chosen = resolvconf.host_upstreams(own) if upstreams is None else list(upstreams)
        self.upstreams = [server for server in chosen if server[0] not in own]
        self.upstream_timeout = upstream_timeout
        self.stats = ResolverStats()
        self._table = table if table is not None else NameTable()
        self._rng = rng or random.Random()

    @property
    def table(self) -> NameTable:
        return self._table

    def replace(self, table: NameTable) -> None:
        """Use `table` from the next query on (endpoints changed)."""
        self._table = table

    async def handle(self, query: bytes, asker: Asker, *, tcp: bool = False) -> bytes | None:
        """The reply to `query` from a container on the networks `asker`; None when the
        message deserves no reply (dropped, counted in `stats.dropped`)."""
        self.stats.queries += 1
        if len(query) < HEADER or query[2] & QR_BIT:
            self.stats.dropped += 1
            return None
        try:
            request = DNSRecord.parse(query)
        except (DNSError, ValueError, IndexError, UnicodeError):
            self.stats.formerr += 1
            return _error(struct.unpack("!H", query[:2])[0], RCODE.FORMERR)
        if request.header.opcode != OPCODE_QUERY:
            return _error(request.header.id, RCODE.NOTIMP, request)
        if len(request.questions) != 1:
            self.stats.formerr += 1
            return _error(request.header.id, RCODE.FORMERR, request)
        local = self._answer_locally(request, asker)
        if local is not None:
            self.stats.answered += 1
            return self._fit(local, tcp)
        return await self._forward(query, request, tcp)

    def refuse(self, query: bytes) -> bytes | None:
        """The reply to a query from an address that is no container this node serves."""
        self.stats.refused += 1
        if len(query) < HEADER or query[2] & QR_BIT:
            return None
        return _error(struct.unpack("!H", query[:2])[0], RCODE.REFUSED)

    def _answer_locally(self, request: DNSRecord, asker: Asker) -> DNSRecord | None:
        question = request.q
        if question.qclass != CLASS_IN:
            return None
        qname = str(question.qname)
        if question.qtype == QTYPE.PTR:
            ip = reverse_name_to_ip(qname)
            name = self._table.reverse(ip, asker) if ip is not None else None
            if name is None:
                return None
            reply = request.reply()
            reply.add_answer(RR(question.qname, QTYPE.PTR, ttl=RESPONSE_TTL, rdata=PTR(name)))
            return reply
        addresses = self._table.lookup(qname, asker)
        if addresses is None:
            return None
        reply = request.reply()
        if question.qtype in (QTYPE.A, QTYPE.ANY):
            shuffled = list(addresses)
            self._rng.shuffle(shuffled)
            for ip in shuffled:
                reply.add_answer(RR(question.qname, QTYPE.A, ttl=RESPONSE_TTL, rdata=A(ip)))
        return reply  # other types of a name we own: no records, NOERROR

    async def _forward(self, query: bytes, request: DNSRecord, tcp: bool) -> bytes:
        if not self.upstreams:
            self.stats.nxdomain += 1
            reply = request.reply()
            reply.header.rcode = RCODE.NXDOMAIN
            return self._fit(reply, tcp)
        if self.stats.forwarding >= MAX_FORWARDS_IN_FLIGHT:
            self.stats.upstream_failures += 1
            return _error(request.header.id, RCODE.SERVFAIL, request)
        self.stats.forwarding += 1
        try:
            answer = await forward(query, self.upstreams, tcp=tcp, timeout=self.upstream_timeout)
        except UpstreamError as err:
            self.stats.upstream_failures += 1
            log.debug("event=dns_upstream_failed name=%s error=%r", request.q.qname, str(err))
            return _error(request.header.id, RCODE.SERVFAIL, request)
        finally:
            self.stats.forwarding -= 1
        self.stats.forwarded += 1
        return answer

    def _fit(self, reply: DNSRecord, tcp: bool) -> bytes:
        packed = bytes(reply.pack())
        if tcp or len(packed) <= UDP_LIMIT:
            return packed
        self.stats.truncated += 1
        header = DNSHeader(id=reply.header.id, qr=1, aa=1, ra=1, rd=reply.header.rd, tc=1)
        return bytes(DNSRecord(header, questions=reply.questions).pack())


def _error(query_id: int, rcode: int, request: DNSRecord | None = None) -> bytes:
    """A reply with no records and `rcode`, echoing the question when there is one."""
    questions: list[DNSQuestion] = list(request.questions) if request is not None else []
    rd = request.header.rd if request is not None else 0
    header = DNSHeader(id=query_id, qr=1, ra=1, rd=rd, rcode=rcode)
    return bytes(DNSRecord(header, questions=questions).pack())


AskerOf = Callable[[tuple[str, int]], Asker | None]
"""Which container is behind a client address: its networks, or None for a stranger."""


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._server.spawn(self._server.reply_udp(data, addr))


class DnsServer:
    """`resolver` served over UDP and TCP on `host:port` (port 0: any free port, the same for
    both). `asker_of` names the container behind a client address; a stranger is REFUSED."""

    def __init__(self, resolver: Resolver, host: str, port: int, asker_of: AskerOf) -> None:
        self.resolver = resolver
        self.host = host
        self.port = port
        self._asker_of = asker_of
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self, sockets: tuple[socket.socket, socket.socket] | None = None) -> None:
        """Listen on `host:port`, or on the given bound (UDP, TCP) `sockets`: the kernel data
        path opens them inside a container's network namespace, at 127.0.0.11:53."""
        loop = asyncio.get_running_loop()
        udp_sock, tcp_sock = sockets if sockets is not None else (None, None)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self),
            local_addr=None if udp_sock else (self.host, self.port),
            sock=udp_sock,
        )
        self._udp = transport
        self.port = transport.get_extra_info("sockname")[1]
        if (self.host, self.port) in self.resolver.upstreams:
            transport.close()
            raise ValueError(
                f"the resolver forwards to {self.host}:{self.port}, where this server listens: "
                "give the server's address to Resolver(own_addresses=...)"
            )
        try:
            if tcp_sock is not None:
                self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
            else:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
        except OSError:
            transport.close()
            raise
        log.info(
            "event=dns_started listen=%s:%d upstreams=%d",
            self.host,
            self.port,
            len(self.resolver.upstreams),
        )

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._connections):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run one UDP exchange in the background (it may wait on an upstream); `close`
        cancels what is left."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reply_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self.answer(data, addr, tcp=False)
        if reply is not None and self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(reply, addr)

    async def answer(self, data: bytes, addr: tuple[str, int], *, tcp: bool) -> bytes | None:
        asker = self._asker_of(addr)
        if asker is None:
            return self.resolver.refuse(data)
        return await self.resolver.handle(data, asker, tcp=tcp)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Length-prefixed queries, one after the other, until the client hangs up."""
        self._connections.add(writer)
        host, port = writer.get_extra_info("peername")[:2]
        try:
            while True:
                prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                (length,) = struct.unpack("!H", prefix)
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT)
                reply = await self.answer(data, (host, port), tcp=True)
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client hung up, went quiet, or the server closed
        finally:
            self._connections.discard(writer)
            writer.close()
