"""Wire formats of the userspace data path: Ethernet II, ARP, IPv4, ICMP echo, UDP, TCP and
VXLAN (RFC 7348), packed and parsed by hand so the frames on the wire are the real ones (tshark
decodes them). Pure: bytes in, dataclasses out. Every parser checks lengths, versions and
checksums and raises `FrameError` naming what was wrong; it never raises anything else, so a
hostile datagram costs a counter increment, not a crash.

Addresses are kept as raw bytes (6 for a MAC, 4 for an IPv4 address) on the hot path;
`mac_bytes`/`mac_text` and `ip_bytes`/`ip_text` convert from and to the text forms the program
uses.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
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


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise FrameError(f"{what} needs at least {size} bytes, got {len(data)}")


# ---- Ethernet II and ARP --------------------------------------------------------------------


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
        total = 20 + len(self.payload)
        if total > 0xFFFF:
            raise FrameError(f"IPv4 packet of {total} bytes exceeds 65535")
        header = _IPV4.pack(
            0x45,
            self.tos,
            total,
            self.ident,
            0x4000,
            self.ttl,
            self.protocol,
            0,
            self.src,
            self.dst,
        )
        checksum = internet_checksum(header)
        return header[:10] + struct.pack("!H", checksum) + header[12:] + self.payload

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
        if internet_checksum(data[:ihl]) != 0:
            raise FrameError("IPv4 header checksum is wrong")
        if frag & 0x3FFF:
            raise FrameError("fragmented IPv4 packets are not carried (lower the sender's MTU)")
        return cls(src, dst, proto, data[ihl:total], ttl, ident, tos)


def _pseudo_header(src: bytes, dst: bytes, protocol: int, length: int) -> bytes:
    return src + dst + struct.pack("!BBH", 0, protocol, length)


# ---- ICMP echo ------------------------------------------------------------------------------

_ICMP = struct.Struct("!BBHHH")


@dataclass(frozen=True)
class IcmpEcho:
    """ICMP echo request (type 8) or reply (type 0); other ICMP types are refused."""

    type: int
    ident: int
    seq: int
    data: bytes

    def pack(self) -> bytes:
        raw = _ICMP.pack(self.type, 0, 0, self.ident, self.seq) + self.data
        return raw[:2] + struct.pack("!H", internet_checksum(raw)) + raw[4:]

    @classmethod
    def parse(cls, data: bytes) -> IcmpEcho:
        _need(data, _ICMP.size, "an ICMP echo header")
        kind, code, _, ident, seq = _ICMP.unpack_from(data)
        if kind not in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY) or code != 0:
            raise FrameError(f"ICMP type {kind} code {code} is not an echo request or reply")
        if internet_checksum(data) != 0:
            raise FrameError("ICMP checksum is wrong")
        return cls(kind, ident, seq, data[_ICMP.size :])


# ---- UDP ------------------------------------------------------------------------------------

_UDP = struct.Struct("!HHHH")


@dataclass(frozen=True)
class Udp:
    src_port: int
    dst_port: int
    payload: bytes

    def pack(self, src_ip: bytes, dst_ip: bytes) -> bytes:
        length = 8 + len(self.payload)
        raw = _UDP.pack(self.src_port, self.dst_port, length, 0) + self.payload
        checksum = internet_checksum(_pseudo_header(src_ip, dst_ip, PROTO_UDP, length) + raw)
        return raw[:6] + struct.pack("!H", checksum or 0xFFFF) + raw[8:]

    @classmethod
    def parse(cls, data: bytes, src_ip: bytes, dst_ip: bytes) -> Udp:
        _need(data, 8, "a UDP header")
        sport, dport, length, checksum = _UDP.unpack_from(data)
        if length < 8 or length > len(data):
            raise FrameError(f"UDP length {length} does not fit the {len(data)} bytes received")
        data = data[:length]
        if checksum and internet_checksum(_pseudo_header(src_ip, dst_ip, PROTO_UDP, length) + data):
            raise FrameError("UDP checksum is wrong")
        return cls(sport, dport, data[8:])


# ---- TCP ------------------------------------------------------------------------------------

_TCP = struct.Struct("!HHIIBBHHH")


@dataclass(frozen=True)
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
        if len(self.options) % 4 or len(self.options) > 40:
            raise FrameError(
                f"TCP options of {len(self.options)} bytes (want a multiple of 4, <= 40)"
            )
        offset = (20 + len(self.options)) // 4
        raw = (
            _TCP.pack(
                self.src_port,
                self.dst_port,
                self.seq,
                self.ack,
                offset << 4,
                self.flags,
                self.window,
                0,
                0,
            )
            + self.options
            + self.payload
        )
        pseudo = _pseudo_header(src_ip, dst_ip, PROTO_TCP, len(raw))
        return raw[:16] + struct.pack("!H", internet_checksum(pseudo + raw)) + raw[18:]

    @classmethod
    def parse(cls, data: bytes, src_ip: bytes, dst_ip: bytes) -> Tcp:
        _need(data, 20, "a TCP header")
        sport, dport, seq, ack, offset_byte, flags, window, _, _ = _TCP.unpack_from(data)
        offset = (offset_byte >> 4) * 4
        if offset < 20 or offset > len(data):
            raise FrameError(
                f"TCP data offset {offset} does not fit the {len(data)} bytes received"
            )
        if internet_checksum(_pseudo_header(src_ip, dst_ip, PROTO_TCP, len(data)) + data):
            raise FrameError("TCP checksum is wrong")
        return cls(sport, dport, seq, ack, flags, window, data[offset:], data[20:offset])


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


@dataclass(frozen=True)
class Vxlan:
    vni: int
    payload: bytes  # the inner Ethernet frame

    def pack(self) -> bytes:
        if not 0 <= self.vni < 1 << 24:
            raise FrameError(f"VNI {self.vni} does not fit in 24 bits")
        return _VXLAN.pack(VXLAN_FLAG_I, b"\x00\x00\x00", self.vni << 8) + self.payload

    @classmethod
    def parse(cls, data: bytes) -> Vxlan:
        _need(data, VXLAN_HEADER, "a VXLAN header")
        flags, _, vni_word = _VXLAN.unpack_from(data)
        if not flags & VXLAN_FLAG_I:
            raise FrameError("VXLAN header without the I flag: the VNI is not valid (RFC 7348)")
        return cls(vni_word >> 8, data[VXLAN_HEADER:])
