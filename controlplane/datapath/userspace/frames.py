"""Wire formats of the userspace data path: Ethernet II, ARP, IPv4, ICMP echo, UDP, TCP and
VXLAN (RFC 7348), packed and parsed by hand so the frames on the wire are the real ones (tshark
decodes them). Pure: bytes in, dataclasses out. Every parser checks lengths, versions and
checksums and raises `FrameError` naming what was wrong; it never raises anything else, so a
hostile datagram costs a counter increment, not a crash.

Addresses are kept as raw bytes (6 for a MAC, 4 for an IPv4 address) on the hot path;
`mac_bytes`/`mac_text` and `ip_bytes`/`ip_text` convert from and to the text forms the program
uses.

Every frame costs Python time, so the hot path is kept lean: the dataclasses use slots and are
not frozen (a frozen one costs five times as much to make, and a received TCP segment makes
two; nothing changes one after parsing), checksums are summed in C (`speedups.py`), and
senders build headers (`ipv4_header`, `tcp_header`) in front of payloads they already hold.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from controlplane.datapath.userspace import speedups
from controlplane.datapath.userspace.speedups import word_sum

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
_ETHERTYPE_IPV4_BYTES = ETHERTYPE_IPV4.to_bytes(2)
BROADCAST_MAC = b"\xff" * 6
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ESP = 50
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ARP_REQUEST = 1
ARP_REPLY = 2
VXLAN_HEADER = 8
VXLAN_FLAG_I = 0x08

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10


class FrameError(ValueError):
    """A frame or header that cannot be parsed; the message says which field is wrong."""


def mac_bytes(text: str) -> bytes:
    parts = text.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(parts) != 6 or len(raw) != 6 or any(len(p) != 2 for p in parts):
        raise FrameError(
            f"{text!r} is not a MAC address (want six hex pairs like 02:42:0a:00:01:02)"
        )
    return raw


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def ip_bytes(text: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except OSError:
        raise FrameError(f"{text!r} is not an IPv4 address (want a dotted quad)") from None


def ip_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw)


def internet_checksum(data: bytes, partial: int = 0) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words, over
    `data` and the `word_sum` of what precedes it (`partial`: a pseudo-header, a header;
    `word_sum` is in `speedups.py`, C when built). Sums of parts that each start at an even
    offset add up."""
    return checksum_of_sum(partial + word_sum(data))


def checksum_of_sum(total: int) -> int:
    """The checksum field for words whose `word_sum` (or any number congruent to it modulo
    0xFFFF, such as fields added up as numbers) is `total`."""
    folded = total % 0xFFFF
    if folded == 0 and total:
        return 0  # the ones' complement sum of words not all zero is 0xFFFF, never 0
    return ~folded & 0xFFFF


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise FrameError(f"{what} needs at least {size} bytes, got {len(data)}")


# ---- Ethernet II and ARP --------------------------------------------------------------------


@dataclass(slots=True)
class Ethernet:
    dst: bytes
    src: bytes
    ethertype: int
    payload: bytes

    def pack(self) -> bytes:
        return self.dst + self.src + struct.pack("!H", self.ethertype) + self.payload

    @classmethod
    def parse(cls, data: bytes) -> Ethernet:
        _need(data, 14, "an Ethernet II header")
        (ethertype,) = struct.unpack_from("!H", data, 12)
        if ethertype < 0x0600:
            raise FrameError(f"802.3 length field {ethertype} where an EtherType was expected")
        return cls(data[0:6], data[6:12], ethertype, data[14:])


_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(slots=True)
class Arp:
    """ARP for IPv4 over Ethernet (RFC 826); the only kind the overlay carries."""

    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes

    def pack(self) -> bytes:
        return _ARP.pack(
            1,
            ETHERTYPE_IPV4,
            6,
            4,
            self.op,
            self.sender_mac,
            self.sender_ip,
            self.target_mac,
            self.target_ip,
        )

    @classmethod
    def parse(cls, data: bytes) -> Arp:
        _need(data, _ARP.size, "an ARP packet")
        htype, ptype, hlen, plen, op, smac, sip, tmac, tip = _ARP.unpack_from(data)
        if (htype, ptype, hlen, plen) != (1, ETHERTYPE_IPV4, 6, 4):
            raise FrameError(
                f"ARP for hardware type {htype}/protocol {ptype:#06x} "
                f"({hlen}/{plen}-byte addresses); only Ethernet/IPv4 is carried"
            )
        if op not in (ARP_REQUEST, ARP_REPLY):
            raise FrameError(f"ARP operation {op} is neither request (1) nor reply (2)")
        return cls(op, smac, sip, tmac, tip)


# ---- IPv4 -----------------------------------------------------------------------------------

_IPV4 = struct.Struct("!BBHHHBBH4s4s")


@dataclass(slots=True)
class IPv4:
    """An IPv4 packet without options; fragments are refused (the overlay MTU avoids them)."""

    src: bytes
    dst: bytes
    protocol: int
    payload: bytes
    ttl: int = 64
    ident: int = 0
    tos: int = 0

    def pack(self) -> bytes:
        header = ipv4_header(
            self.src, self.dst, self.protocol, len(self.payload), self.ident, self.ttl, self.tos
        )
        return header + self.payload

    @classmethod
    def parse(cls, data: bytes) -> IPv4:
        _need(data, 20, "an IPv4 header")
        vihl, tos, total, ident, frag, ttl, proto, _, src, dst = _IPV4.unpack_from(data)
        version, ihl = vihl >> 4, (vihl & 0x0F) * 4
        if version != 4:
            raise FrameError(f"IP version {version} where 4 was expected")
        if ihl < 20:
            raise FrameError(f"IPv4 header length {ihl} is below the minimum of 20")
        if total < ihl or total > len(data):
            raise FrameError(
                f"IPv4 total length {total} does not fit the {len(data)} bytes received"
            )
        if internet_checksum(data[:ihl]):
            raise FrameError("IPv4 header checksum is wrong")
        if frag & 0x3FFF:
            raise FrameError("fragmented IPv4 packets are not carried (lower the sender's MTU)")
        return cls(src, dst, proto, data[ihl:total], ttl, ident, tos)


def ipv4_header(
    src: bytes,
    dst: bytes,
    protocol: int,
    payload_size: int,
    ident: int,
    ttl: int = 64,
    tos: int = 0,
) -> bytes:
    """The 20-byte header (don't fragment, no options) of a packet carrying `payload_size`
    bytes: what a sender puts in front of a payload it already has."""
    total = 20 + payload_size
    if total > 0xFFFF:
        raise FrameError(f"IPv4 packet of {total} bytes exceeds 65535")
    # The header's words summed as numbers (no packing twice): version/IHL and TOS, total
    # length, ident, flags (DF), TTL and protocol, then the addresses.
    words = 0x4500 + tos + total + ident + 0x4000 + (ttl << 8) + protocol
    checksum = checksum_of_sum(words + int.from_bytes(src + dst))
    return _IPV4.pack(0x45, tos, total, ident, 0x4000, ttl, protocol, checksum, src, dst)


def pseudo_header_sum(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """The `word_sum` of the TCP/UDP pseudo-header (RFC 9293 3.1, RFC 768) without building
    it: the addresses' words, the protocol and the length."""
    return int.from_bytes(src + dst) + protocol + length


# ---- ICMP echo ------------------------------------------------------------------------------

_ICMP = struct.Struct("!BBHHH")


@dataclass(slots=True)
class IcmpEcho:
    """ICMP echo request (type 8) or reply (type 0); other ICMP types are refused."""

    type: int
    ident: int
    seq: int
    data: bytes

    def pack(self) -> bytes:
        header = _ICMP.pack(self.type, 0, 0, self.ident, self.seq)
        checksum = internet_checksum(self.data, word_sum(header))
        return _ICMP.pack(self.type, 0, checksum, self.ident, self.seq) + self.data

    @classmethod
    def parse(cls, data: bytes) -> IcmpEcho:
        _need(data, _ICMP.size, "an ICMP echo header")
        kind, code, _, ident, seq = _ICMP.unpack_from(data)
        if kind not in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY) or code != 0:
            raise FrameError(f"ICMP type {kind} code {code} is not an echo request or reply")
        if internet_checksum(data):
            raise FrameError("ICMP checksum is wrong")
        return cls(kind, ident, seq, data[_ICMP.size :])


# ---- UDP ------------------------------------------------------------------------------------

_UDP = struct.Struct("!HHHH")


@dataclass(slots=True)
class Udp:
    src_port: int
    dst_port: int
    payload: bytes

    def pack(self, src_ip: bytes, dst_ip: bytes) -> bytes:
        length = 8 + len(self.payload)
        partial = pseudo_header_sum(src_ip, dst_ip, PROTO_UDP, length)
        partial += word_sum(_UDP.pack(self.src_port, self.dst_port, length, 0))
        checksum = internet_checksum(self.payload, partial) or 0xFFFF
        return _UDP.pack(self.src_port, self.dst_port, length, checksum) + self.payload

    def pack_without_checksum(self) -> bytes:
        """The datagram with a zero checksum field (RFC 768: none computed), as VXLAN
        senders send theirs (RFC 7348 section 5) where something else protects the bytes."""
        header = udp_header_without_checksum(self.src_port, self.dst_port, len(self.payload))
        return header + self.payload

    @classmethod
    def parse(cls, data: bytes, src_ip: bytes, dst_ip: bytes) -> Udp:
        payload = udp_payload(data, src_ip, dst_ip)
        sport, dport, _, _ = _UDP.unpack_from(data)
        return cls(sport, dport, payload)


def udp_payload(data: bytes, src_ip: bytes, dst_ip: bytes) -> bytes:
    """The payload of a UDP datagram, its length and checksum checked: `Udp.parse` without
    the object, for a receiver that needs no ports (the VXLAN datagram inside ESP)."""
    _need(data, 8, "a UDP header")
    _, _, length, checksum = _UDP.unpack_from(data)
    if length < 8 or length > len(data):
        raise FrameError(f"UDP length {length} does not fit the {len(data)} bytes received")
    if checksum and internet_checksum(
        data[:length], pseudo_header_sum(src_ip, dst_ip, PROTO_UDP, length)
    ):  # zero: none sent (VXLAN's, and the VXLAN datagram inside ESP)
        raise FrameError("UDP checksum is wrong")
    return data[8:length]


def udp_header_without_checksum(src_port: int, dst_port: int, payload_size: int) -> bytes:
    """The 8-byte header of `Udp.pack_without_checksum`, for a sender that keeps header and
    payload apart (ESP seals them together without joining them first)."""
    return _UDP.pack(src_port, dst_port, 8 + payload_size, 0)


# ---- TCP ------------------------------------------------------------------------------------

_TCP = struct.Struct("!HHIIBBHHH")


@dataclass(slots=True)
class Tcp:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes = b""
    options: bytes = b""  # already padded to a multiple of 4 bytes

    def pack(self, src_ip: bytes, dst_ip: bytes) -> bytes:
        header = tcp_header(
            self.src_port,
            self.dst_port,
            self.seq,
            self.ack,
            self.flags,
            self.window,
            self.payload,
            pseudo_header_sum(
                src_ip, dst_ip, PROTO_TCP, 20 + len(self.options) + len(self.payload)
            ),
            self.options,
        )
        return header + self.payload

    @classmethod
    def parse(cls, data: bytes, src_ip: bytes, dst_ip: bytes) -> Tcp:
        _need(data, 20, "a TCP header")
        sport, dport, seq, ack, offset_byte, flags, window, _, _ = _TCP.unpack_from(data)
        offset = (offset_byte >> 4) * 4
        if offset < 20 or offset > len(data):
            raise FrameError(
                f"TCP data offset {offset} does not fit the {len(data)} bytes received"
            )
        if internet_checksum(data, pseudo_header_sum(src_ip, dst_ip, PROTO_TCP, len(data))):
            raise FrameError("TCP checksum is wrong")
        return cls(sport, dport, seq, ack, flags, window, data[offset:], data[20:offset])


def tcp_header(
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: bytes,
    pseudo_sum: int,
    options: bytes = b"",
) -> bytes:
    """The header (with its checksum) of a segment carrying `payload`; `pseudo_sum` is the
    `pseudo_header_sum` for the whole segment's length, which a connection keeps all but the
    length of. The payload is summed where it lies, never copied behind a header first."""
    if len(options) % 4 or len(options) > 40:
        raise FrameError(f"TCP options of {len(options)} bytes (want a multiple of 4, <= 40)")
    offset = (20 + len(options)) << 2
    # The header's words added up as numbers (a 32-bit field is congruent to its two words
    # modulo 0xFFFF), so the header is packed once, with its checksum.
    words = src_port + dst_port + seq + ack + (offset << 8) + flags + window
    if options:
        words += word_sum(options)
    checksum = checksum_of_sum(pseudo_sum + words + word_sum(payload))
    header = _TCP.pack(src_port, dst_port, seq, ack, offset, flags, window, checksum, 0)
    return header + options if options else header


def tcp_ipv4_frame_python(
    dst_mac: bytes,
    src_mac: bytes,
    src_ip: bytes,
    dst_ip: bytes,
    ident: int,
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: bytes,
) -> bytes:
    """The Ethernet frame of a TCP segment without options in an IPv4 packet (DF, TTL 64),
    both checksums in: what a connection sends to a neighbour whose MAC it knows."""
    size = 20 + len(payload)
    pseudo_sum = pseudo_header_sum(src_ip, dst_ip, PROTO_TCP, size)
    tcp = tcp_header(src_port, dst_port, seq, ack, flags, window, payload, pseudo_sum)
    ip = ipv4_header(src_ip, dst_ip, PROTO_TCP, size, ident)
    return b"".join((dst_mac, src_mac, _ETHERTYPE_IPV4_BYTES, ip, tcp, payload))


# In C (one allocation, no Python per header) where the extension is built (speedups.py).
tcp_ipv4_frame = speedups.tcp_ipv4_frame or tcp_ipv4_frame_python


def tcp_mss_option(mss: int) -> bytes:
    return struct.pack("!BBH", 2, 4, mss)


def tcp_mss_from(options: bytes) -> int | None:
    """The MSS option's value, if the options carry a well-formed one."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            return None
        size = options[i + 1]
        if kind == 2 and size == 4 and i + 4 <= len(options):
            return int(struct.unpack_from("!H", options, i + 2)[0])
        i += size
    return None


# ---- VXLAN (RFC 7348) -----------------------------------------------------------------------

_VXLAN = struct.Struct("!B3sI")


@dataclass(slots=True)
class Vxlan:
    vni: int
    payload: bytes  # the inner Ethernet frame

    def pack(self) -> bytes:
        if not 0 <= self.vni < 1 << 24:
            raise FrameError(f"VNI {self.vni} does not fit in 24 bits")
        return _VXLAN.pack(VXLAN_FLAG_I, b"\x00\x00\x00", self.vni << 8) + self.payload

    @classmethod
    def parse(cls, data: bytes) -> Vxlan:
        return cls(vxlan_vni(data), data[VXLAN_HEADER:])


def vxlan_vni(datagram: bytes) -> int:
    """The VNI of a VXLAN datagram, its header checked; the frame starts at VXLAN_HEADER (a
    receiver that only needs these two copies nothing)."""
    _need(datagram, VXLAN_HEADER, "a VXLAN header")
    flags, _, vni_word = _VXLAN.unpack_from(datagram)
    if not flags & VXLAN_FLAG_I:
        raise FrameError("VXLAN header without the I flag: the VNI is not valid (RFC 7348)")
    return int(vni_word >> 8)
