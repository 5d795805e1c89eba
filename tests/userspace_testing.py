"""Shared test helpers for the userspace data path: a pcap writer and a tshark reader, so
tests can ask Wireshark's dissectors what our frames are, a live tshark capture of one VTEP's
datagrams on loopback, and a tiny HTTP/1.0 exchange between two endpoint stacks."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from controlplane.datapath.userspace.frames import (
    ETHERTYPE_IPV4,
    PROTO_UDP,
    Ethernet,
    IPv4,
    Udp,
    ip_bytes,
)
from controlplane.datapath.userspace.stack import IPv4Stack
from controlplane.lab.capture import WireCapture

LINKTYPE_ETHERNET = 1


def outer_frame(payload: bytes, src: str, dst: str, port: int = 4789) -> bytes:
    """A datagram between two VTEPs as it crosses the underlay: Ethernet, IPv4, UDP."""
    s, d = ip_bytes(src), ip_bytes(dst)
    udp = Udp(port, port, payload).pack(s, d)
    return Ethernet(
        b"\x00" * 6, b"\x00" * 6, ETHERTYPE_IPV4, IPv4(s, d, PROTO_UDP, udp).pack()
    ).pack()


def write_pcap(path: Path, frames: Iterable[bytes]) -> None:
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for frame in frames:
            out.write(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame)


def tshark() -> str:
    found = shutil.which("tshark")
    if found is None:
        pytest.skip("tshark is not installed (apt-get install tshark) to decode the frames")
    return found


def tshark_fields(pcap: Path, decode_as: str, fields: list[str]) -> list[list[str]]:
    """One row per packet: the given fields as tshark decodes them, checksums verified."""
    args = [tshark(), "-r", str(pcap), "-d", f"udp.port==4789,{decode_as}", "-T", "fields"]
    for proto in ("ip", "udp", "tcp"):
        args += ["-o", f"{proto}.check_checksum:TRUE"]
    for name in fields:
        args += ["-e", name]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in done.stdout.splitlines()]


async def http_get(client: IPv4Stack, server: IPv4Stack, body: bytes) -> bytes:
    """A tiny HTTP/1.0 exchange: what `wget` and `httpd` of the emulated runtime will do."""
    listener = server.listen(80)

    async def serve() -> None:
        conn = await listener.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await conn.recv()
            assert chunk, "client closed before the end of its request"
            request += chunk
        assert request.startswith(b"GET /index.html HTTP/1.0\r\n")
        head = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        await conn.send(head + body)
        conn.close()
        await conn.wait_closed()

    served = asyncio.create_task(serve())
    conn = await client.connect(server.ip, 80)
    await conn.send(b"GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n")
    response = b""
    while chunk := await conn.recv():
        response += chunk
    conn.close()
    await served
    await conn.wait_closed()
    listener.close()
    return response


class Capture(WireCapture):
    """The package's live capture; a test without tshark is skipped, not failed."""

    def decode(self, decode_as: str, fields: list[str]) -> list[list[str]]:
        if self.unavailable:
            pytest.skip(f"the data path works; the wire check is skipped: {self.unavailable}")
        return super().decode(decode_as, fields)
