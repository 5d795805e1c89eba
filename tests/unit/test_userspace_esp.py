"""datapath/userspace/esp.py: ESP (RFC 4303) with AES-GCM (RFC 4106). Wireshark's own ESP
decryption is the independent reference: it opens what we seal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from userspace_testing import outer_frame, tshark, write_pcap

from controlplane.datapath.program import SecurityAssociation
from controlplane.datapath.userspace.esp import (
    OVERHEAD_MAX,
    EspError,
    InboundSA,
    OutboundSA,
    spi_of,
)
from controlplane.datapath.userspace.frames import (
    ETHERTYPE_IPV4,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_PSH,
    Ethernet,
    IPv4,
    Tcp,
    Udp,
    Vxlan,
    ip_bytes,
    mac_bytes,
)

SRC, DST = "127.77.240.1", "127.77.240.2"
KEY = bytes(range(16))
SPI = 0x1234ABCD


def sa(direction: str, key: bytes = KEY, spi: int = SPI) -> SecurityAssociation:
    return SecurityAssociation(direction, SRC, DST, spi, key, spi.to_bytes(4), 1)  # type: ignore[arg-type]


def test_round_trip_with_every_padding_length() -> None:
    out, inbound = OutboundSA(sa("out")), InboundSA(sa("in"))
    for size in range(0, 9):
        payload = bytes(range(size))
        packet = out.seal(payload, PROTO_UDP)
        assert spi_of(packet) == SPI
        assert int.from_bytes(packet[4:8]) == out.seq
        assert (len(packet) - 8 - 8 - 16 - size - 2) in (0, 1, 2, 3)
        assert len(packet) - size <= OVERHEAD_MAX
        assert payload not in packet[8:] or size < 4
        assert inbound.open(packet) == (PROTO_UDP, payload)


def test_a_prefix_is_sealed_as_if_joined_with_the_payload() -> None:
    """`prefix` (the inner UDP header, kept apart to save a copy) is padded and protected
    with the payload, as one plaintext."""
    out, inbound = OutboundSA(sa("out")), InboundSA(sa("in"))
    for prefix_size in range(0, 9):
        for size in range(0, 5):
            prefix, payload = bytes(range(100, 100 + prefix_size)), bytes(range(size))
            packet = out.seal(payload, PROTO_UDP, prefix=prefix)
            assert (len(packet) - 8 - 8 - 16 - prefix_size - size - 2) in (0, 1, 2, 3)
            assert inbound.open(packet) == (PROTO_UDP, prefix + payload)


def test_explicit_ivs_never_repeat_within_an_sa() -> None:
    out = OutboundSA(sa("out"))
    ivs = {out.seal(b"same", PROTO_UDP)[8:16] for _ in range(500)}
    assert len(ivs) == 500


def test_tampering_anywhere_is_detected_and_never_delivered() -> None:
    out = OutboundSA(sa("out"))
    packet = out.seal(b"secret vxlan datagram", PROTO_UDP)
    for index in range(4, len(packet)):  # every byte after the SPI: seq, IV, ciphertext, ICV
        tampered = bytearray(packet)
        tampered[index] ^= 0x01
        with pytest.raises(EspError) as err:
            InboundSA(sa("in")).open(bytes(tampered))
        # Sequence number 1 flipped to 0 is refused before decryption, the rest by the ICV.
        assert err.value.reason in ("esp_auth_failed", "esp_replay")


def test_wrong_key_cannot_read_the_traffic() -> None:
    packet = OutboundSA(sa("out")).seal(b"secret", PROTO_UDP)
    stranger = InboundSA(sa("in", key=b"\x01" * 16))
    with pytest.raises(EspError, match="failed authentication") as err:
        stranger.open(packet)
    assert err.value.reason == "esp_auth_failed"


def test_replays_and_packets_older_than_the_window_are_refused() -> None:
    out, inbound = OutboundSA(sa("out")), InboundSA(sa("in"), window=8)
    packets = [out.seal(bytes([n]), PROTO_UDP) for n in range(20)]
    assert inbound.open(packets[0])[1] == b"\x00"
    with pytest.raises(EspError, match="replay") as err:
        inbound.open(packets[0])
    assert err.value.reason == "esp_replay"
    # Reordering inside the window is fine, once each.
    assert inbound.open(packets[5])[1] == b"\x05"
    assert inbound.open(packets[3])[1] == b"\x03"
    with pytest.raises(EspError, match="replay"):
        inbound.open(packets[3])
    assert inbound.open(packets[15])[1] == b"\x0f"
    with pytest.raises(EspError, match="older than the 8-packet window"):
        inbound.open(packets[4])  # seq 5, top 16: out of the window
    assert inbound.open(packets[10])[1] == b"\x0a"  # seq 11: inside


def test_a_forgery_does_not_move_the_replay_window() -> None:
    out, inbound = OutboundSA(sa("out")), InboundSA(sa("in"), window=8)
    first = out.seal(b"a", PROTO_UDP)
    forged = bytearray(first)
    forged[4:8] = (1000).to_bytes(4)  # a far-ahead sequence number, without the key
    with pytest.raises(EspError):
        inbound.open(bytes(forged))
    assert inbound.open(first) == (PROTO_UDP, b"a")


def test_malformed_packets_and_bad_sas_are_refused_clearly() -> None:
    with pytest.raises(EspError, match="shorter than its header") as err:
        spi_of(b"\x00" * 20)
    assert err.value.reason == "esp_truncated"
    packet = OutboundSA(sa("out")).seal(b"x", PROTO_UDP)
    with pytest.raises(EspError, match="is not"):
        InboundSA(sa("in", spi=SPI + 1)).open(packet)
    seq_zero = packet[:4] + b"\x00" * 4 + packet[8:]
    with pytest.raises(EspError, match="sequence number 0"):
        InboundSA(sa("in")).open(seq_zero)
    with pytest.raises(ValueError, match="needs 16 and 4"):
        OutboundSA(sa("out", key=b"short"))


def test_wireshark_decrypts_what_we_seal(tmp_path: Path) -> None:
    """Wireshark's ESP dissector, given the SA (rfc4106 key || salt), opens our packet and
    finds the VXLAN datagram inside: an independent check of the RFC 4106 framing."""
    a, b = ip_bytes("10.0.1.2"), ip_bytes("10.0.1.3")
    http = Tcp(40000, 80, 1, 2, TCP_ACK | TCP_PSH, 65535, b"GET / HTTP/1.0\r\n\r\n").pack(a, b)
    frame = Ethernet(
        mac_bytes("02:42:0a:00:01:03"),
        mac_bytes("02:42:0a:00:01:02"),
        ETHERTYPE_IPV4,
        IPv4(a, b, PROTO_TCP, http).pack(),
    ).pack()
    vxlan_udp = Udp(4789, 4789, Vxlan(4097, frame).pack()).pack(ip_bytes(SRC), ip_bytes(DST))
    packet = OutboundSA(sa("out")).seal(vxlan_udp, PROTO_UDP)
    pcap = tmp_path / "esp.pcap"
    # The outer UDP port is 4500 here (ESP-in-UDP's own port) so that Wireshark's decode-as
    # can tell the outer datagram (ESP) from the inner one (VXLAN on 4789).
    write_pcap(pcap, [outer_frame(packet, SRC, DST, port=4500)])
    esp_sa = (
        f'"IPv4","{SRC}","{DST}","0x{SPI:08x}","AES-GCM with 16 octet ICV [RFC4106]",'
        f'"0x{(KEY + SPI.to_bytes(4)).hex()}","NULL",""'
    )
    done = subprocess.run(
        [
            tshark(),
            "-r",
            str(pcap),
            "-d",
            "udp.port==4789,vxlan",
            "-o",
            "esp.enable_encryption_decode:TRUE",
            "-o",
            f"uat:esp_sa:{esp_sa}",
            "-T",
            "fields",
            "-e",
            "frame.protocols",
            "-e",
            "vxlan.vni",
            "-e",
            "http.request.uri",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    protocols, vni, uri = done.stdout.strip().split("\t")
    assert protocols.endswith("esp:udp:vxlan:eth:ethertype:ip:tcp:http")
    assert (vni, uri) == ("4097", "/")
