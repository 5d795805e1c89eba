"""datapath/userspace/frames.py: every wire format round-trips, malformed input is refused with
a FrameError naming the field, and tshark decodes the frames as what they claim to be."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from userspace_testing import outer_frame, tshark_fields, write_pcap

from controlplane.datapath.userspace.frames import (
    ARP_REQUEST,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ICMP_ECHO_REQUEST,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_PSH,
    TCP_SYN,
    Arp,
    Ethernet,
    FrameError,
    IcmpEcho,
    IPv4,
    Tcp,
    Udp,
    Vxlan,
    internet_checksum,
    ip_bytes,
    ip_text,
    ipv4_header,
    mac_bytes,
    mac_text,
    pseudo_header_sum,
    tcp_header,
    tcp_mss_from,
    tcp_mss_option,
    word_sum,
)

A, B = ip_bytes("10.0.1.2"), ip_bytes("10.0.1.3")
MAC_A, MAC_B = mac_bytes("02:42:0a:00:01:02"), mac_bytes("02:42:0a:00:01:03")


def inner(protocol: int, payload: bytes) -> bytes:
    return Ethernet(MAC_B, MAC_A, ETHERTYPE_IPV4, IPv4(A, B, protocol, payload).pack()).pack()


def test_addresses_convert_and_bad_text_is_named() -> None:
    assert mac_text(mac_bytes("02:42:0A:00:01:02")) == "02:42:0a:00:01:02"
    assert ip_text(ip_bytes("10.0.1.2")) == "10.0.1.2"
    for bad in ("02:42:0a:00:01", "02:42:0a:00:01:zz", "2:42:0a:00:01:02:03"):
        with pytest.raises(FrameError, match="not a MAC address"):
            mac_bytes(bad)
    with pytest.raises(FrameError, match="not an IPv4 address"):
        ip_bytes("10.0.1.300")


def test_internet_checksum_of_a_known_header() -> None:
    # RFC 1071's property: a header carrying its checksum sums to zero.
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    checksum = internet_checksum(header)
    assert checksum == 0xB861
    assert internet_checksum(header[:10] + checksum.to_bytes(2) + header[12:]) == 0


def checksum_word_by_word(data: bytes) -> int:
    """RFC 1071 as written: add 16-bit words, fold the carries back in, complement."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_internet_checksum_vectors() -> None:
    # RFC 1071 section 3's example: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    assert internet_checksum(b"") == 0xFFFF  # the sum of nothing is zero
    assert internet_checksum(b"\x00" * 9) == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0  # sum 0xffff (never the other zero)
    assert internet_checksum(b"\xff") == 0x00FF  # an odd byte is the high half of a word
    assert internet_checksum(b"\x80\x00\x80\x00") == 0xFFFE  # the carry comes back in


def test_internet_checksum_agrees_with_the_word_by_word_sum() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        size = rng.randrange(0, 1600)
        fill = rng.choice(["random", "zeros", "ones"])
        data = {"random": rng.randbytes(size), "zeros": bytes(size), "ones": b"\xff" * size}[fill]
        assert internet_checksum(data) == checksum_word_by_word(data), (fill, size)
        cut = rng.randrange(0, size + 1) & ~1  # parts starting at even offsets add up
        assert internet_checksum(data[cut:], word_sum(data[:cut])) == internet_checksum(data)


def test_header_builders_match_the_packets() -> None:
    payload = random.Random(8).randbytes(1410)
    tcp = Tcp(40000, 80, 7, 9, TCP_ACK | TCP_PSH, 65535, payload, tcp_mss_option(1410))
    pseudo = pseudo_header_sum(A, B, PROTO_TCP, 24 + len(payload))
    header = tcp_header(
        40000, 80, 7, 9, TCP_ACK | TCP_PSH, 65535, payload, pseudo, b"\x02\x04\x05\x82"
    )
    assert header + payload == tcp.pack(A, B)
    segment = tcp.pack(A, B)
    pseudo_bytes = A + B + bytes((0, PROTO_TCP)) + len(segment).to_bytes(2)
    assert checksum_word_by_word(pseudo_bytes + segment) == 0
    assert (
        ipv4_header(A, B, PROTO_TCP, len(segment), 5) + segment
        == IPv4(A, B, PROTO_TCP, segment, ident=5).pack()
    )
    assert checksum_word_by_word(ipv4_header(A, B, PROTO_TCP, 1, 5)) == 0
    with pytest.raises(FrameError, match="options of 3 bytes"):
        tcp_header(1, 2, 3, 4, TCP_ACK, 5, b"", 0, b"abc")
    with pytest.raises(FrameError, match="exceeds 65535"):
        ipv4_header(A, B, PROTO_UDP, 65530, 1)


def test_udp_without_checksum_is_zero_there_and_accepted() -> None:
    raw = Udp(4789, 4789, b"vxlan datagram").pack_without_checksum()
    assert raw[6:8] == b"\x00\x00"  # RFC 768: no checksum computed
    assert Udp.parse(raw, A, B) == Udp(4789, 4789, b"vxlan datagram")


def test_round_trips() -> None:
    eth = Ethernet(MAC_B, MAC_A, ETHERTYPE_ARP, b"x" * 28)
    assert Ethernet.parse(eth.pack()) == eth
    arp = Arp(ARP_REQUEST, MAC_A, A, b"\x00" * 6, B)
    assert Arp.parse(arp.pack()) == arp
    ip = IPv4(A, B, PROTO_UDP, b"payload", ttl=17, ident=99)
    assert IPv4.parse(ip.pack()) == ip
    echo = IcmpEcho(ICMP_ECHO_REQUEST, 7, 8, b"ping data")
    assert IcmpEcho.parse(echo.pack()) == echo
    udp = Udp(5353, 53, b"question")
    assert Udp.parse(udp.pack(A, B), A, B) == udp
    tcp = Tcp(40000, 80, 2**32 - 1, 5, TCP_SYN | TCP_ACK, 65535, b"", tcp_mss_option(1410))
    parsed = Tcp.parse(tcp.pack(A, B), A, B)
    assert parsed == tcp and tcp_mss_from(parsed.options) == 1410
    vx = Vxlan(4097, inner(PROTO_UDP, udp.pack(A, B)))
    assert Vxlan.parse(vx.pack()) == vx
    assert vx.pack()[:8] == bytes.fromhex("0800000000100100")  # I flag, VNI 4097 << 8


def test_ethernet_padding_after_ipv4_is_ignored() -> None:
    # Short frames are padded to 60 bytes on real links: the IPv4 total length rules.
    ip = IPv4(A, B, PROTO_ICMP, IcmpEcho(ICMP_ECHO_REQUEST, 1, 1, b"").pack())
    assert IPv4.parse(ip.pack() + b"\x00" * 10) == ip


@pytest.mark.parametrize(
    ("parse", "data", "message"),
    [
        (Ethernet.parse, b"\x00" * 13, "Ethernet II header needs at least 14"),
        (Ethernet.parse, b"\x00" * 12 + b"\x00\x40", "802.3 length field"),
        (Arp.parse, b"\x00" * 27, "ARP packet needs"),
        (
            Arp.parse,
            Arp(ARP_REQUEST, MAC_A, A, MAC_B, B).pack()[:7] + b"\x09" + b"\x00" * 20,
            "neither request",
        ),
        (
            Arp.parse,
            b"\x00\x06" + Arp(ARP_REQUEST, MAC_A, A, MAC_B, B).pack()[2:],
            "hardware type 6",
        ),
        (IPv4.parse, b"\x45" + b"\x00" * 10, "IPv4 header needs"),
        (IPv4.parse, b"\x65" + IPv4(A, B, 6, b"").pack()[1:], "IP version 6"),
        (IPv4.parse, b"\x44" + IPv4(A, B, 6, b"").pack()[1:], "header length 16"),
        (IPv4.parse, IPv4(A, B, 6, b"abcd").pack()[:-1], "total length 24"),
        (IcmpEcho.parse, b"\x03\x00" + b"\x00" * 6, "type 3 code 0"),
        (IcmpEcho.parse, b"\x08", "ICMP echo header needs"),
        (Udp.parse, b"\x00" * 7, "UDP header needs"),
        (Udp.parse, Udp(1, 2, b"abc").pack(A, B)[:-1], "UDP length 11"),
        (Tcp.parse, b"\x00" * 19, "TCP header needs"),
        (
            Tcp.parse,
            Tcp(1, 2, 3, 4, TCP_ACK, 5).pack(A, B)[:12] + b"\x40" + b"\x00" * 7,
            "data offset 16",
        ),
        (Vxlan.parse, b"\x08\x00\x00", "VXLAN header needs"),
        (Vxlan.parse, b"\x00" * 8 + b"frame", "without the I flag"),
    ],
)
def test_malformed_input_is_refused_with_a_clear_error(parse, data, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FrameError, match=message):
        if parse in (Udp.parse, Tcp.parse):
            parse(data, A, B)
        else:
            parse(data)


def test_corrupted_checksums_are_refused() -> None:
    ip = bytearray(IPv4(A, B, PROTO_UDP, b"x").pack())
    ip[8] ^= 1  # the TTL
    with pytest.raises(FrameError, match="IPv4 header checksum"):
        IPv4.parse(bytes(ip))
    with pytest.raises(FrameError, match="UDP checksum"):
        Udp.parse(Udp(1, 2, b"abc").pack(A, B)[:-1] + b"d", A, B)
    with pytest.raises(FrameError, match="UDP checksum"):  # the pseudo-header counts
        Udp.parse(Udp(1, 2, b"abc").pack(A, B), A, ip_bytes("10.0.1.4"))
    with pytest.raises(FrameError, match="TCP checksum"):
        Tcp.parse(Tcp(1, 2, 3, 4, TCP_ACK, 5, b"ab").pack(A, B)[:-1] + b"c", A, B)
    with pytest.raises(FrameError, match="ICMP checksum"):
        IcmpEcho.parse(IcmpEcho(ICMP_ECHO_REQUEST, 1, 2, b"ab").pack()[:-1] + b"c")
    with pytest.raises(FrameError, match="fragmented"):
        raw = bytearray(IPv4(A, B, PROTO_UDP, b"x").pack())
        raw[6] = 0x20  # more fragments
        raw[10:12] = b"\x00\x00"
        raw[10:12] = internet_checksum(bytes(raw[:20])).to_bytes(2)
        IPv4.parse(bytes(raw))


def test_fuzzed_input_raises_only_frame_errors() -> None:
    rng = random.Random(5)
    samples = [
        inner(PROTO_TCP, Tcp(1, 80, 1, 1, TCP_ACK | TCP_PSH, 100, b"GET /").pack(A, B)),
        Vxlan(4097, inner(PROTO_UDP, Udp(1, 2, b"hi").pack(A, B))).pack(),
    ]
    for _ in range(3000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randint(0, len(data))]
        for parse in (Vxlan.parse, Ethernet.parse, Arp.parse, IPv4.parse, IcmpEcho.parse):
            with contextlib.suppress(FrameError):
                parse(bytes(data))
        for parse2 in (Udp.parse, Tcp.parse):
            with contextlib.suppress(FrameError):
                parse2(bytes(data), A, B)


def test_tshark_decodes_vxlan_ethernet_ipv4_and_each_transport(tmp_path: Path) -> None:
    frames = [
        Vxlan(4097, inner(PROTO_ICMP, IcmpEcho(ICMP_ECHO_REQUEST, 1, 1, b"x" * 56).pack())),
        Vxlan(4097, inner(PROTO_UDP, Udp(40000, 9, b"hello").pack(A, B))),
        Vxlan(
            4098,
            inner(
                PROTO_TCP,
                Tcp(40000, 80, 1, 2, TCP_ACK | TCP_PSH, 65535, b"GET / HTTP/1.0\r\n\r\n").pack(
                    A, B
                ),
            ),
        ),
    ]
    pcap = tmp_path / "vxlan.pcap"
    write_pcap(pcap, (outer_frame(f.pack(), "127.77.240.1", "127.77.240.2") for f in frames))
    rows = tshark_fields(
        pcap,
        "vxlan",
        [
            "frame.protocols",
            "vxlan.vni",
            "eth.dst",
            "ip.checksum.status",
            "udp.checksum.status",
            "tcp.checksum.status",
            "icmp.checksum.status",
        ],
    )
    protocols = [row[0] for row in rows]
    assert protocols[0].startswith("eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:icmp")
    assert protocols[1].startswith("eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:udp")
    assert protocols[2].startswith("eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:tcp")
    assert [row[1] for row in rows] == ["4097", "4097", "4098"]
    assert all("02:42:0a:00:01:03" in row[2] for row in rows)
    # 1 is "good" for every checksum tshark verified (outer and inner).
    for row in rows:
        statuses = ",".join(row[3:]).replace(",,", ",").strip(",").split(",")
        assert statuses and set(statuses) == {"1"}, row
