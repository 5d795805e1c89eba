"""A live tshark capture of one VTEP's datagrams on loopback, so the demo and the tests can
show what the data path really puts on the wire, decoded by Wireshark's own dissectors."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
from pathlib import Path

PROBE_PORT = 4788  # where the capture's liveness probes go (nothing listens)
DATA_PATH_PORT = 4789


class CaptureUnavailable(RuntimeError):
    """tshark is missing or cannot capture on lo; the message says which and what to do."""


class WireCapture:
    """tshark on the loopback interface, filtered to one VTEP's UDP traffic. It probes the
    VTEP's port 4788 until tshark prints the probe: on entry so the capture is known to be
    live before any data path traffic, on exit so everything before the last probe was
    written (dumpcap hands packets to tshark in batches)."""

    def __init__(self, pcap: Path, vtep: str) -> None:
        self.pcap = pcap
        self.vtep = vtep
        self.process: subprocess.Popen[bytes] | None = None
        self.unavailable = ""

    async def __aenter__(self) -> WireCapture:
        tshark = shutil.which("tshark")
        if tshark is None:
            self.unavailable = "tshark is not installed (apt-get install tshark)"
            return self
        self.process = subprocess.Popen(
            [tshark, "-i", "lo", "-f", f"udp and host {self.vtep}", "-w", str(self.pcap),
             "-P", "-l"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not await self._probe(b"start"):
            self.unavailable = f"tshark cannot capture on lo (exit {self.process.wait()})"
            self.process = None
        return self

    async def _probe(self, marker: bytes) -> bool:
        """Send `marker` until tshark prints it; False if tshark ended instead."""
        seen = asyncio.ensure_future(asyncio.to_thread(self._read_until, b"Len=%d" % len(marker)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            while not seen.done():
                probe.sendto(marker, (self.vtep, PROBE_PORT))
                await asyncio.wait([seen], timeout=0.2)
        return seen.result()

    def _read_until(self, text: bytes) -> bool:
        assert self.process is not None and self.process.stdout is not None
        while line := self.process.stdout.readline():
            if b"%d" % PROBE_PORT in line and text in line:
                return True
        return False

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None:
            await self._probe(b"the end of the capture")
            self.process.send_signal(signal.SIGINT)
            await asyncio.to_thread(self.process.wait, 30)

    def decode(self, decode_as: str, fields: list[str]) -> list[list[str]]:
        """The data path datagrams captured (the probes left out), decoded as `decode_as`.
        Raises CaptureUnavailable when there was no capture."""
        if self.unavailable:
            raise CaptureUnavailable(self.unavailable)
        done = subprocess.run(
            ["tshark", "-r", str(self.pcap), "-d", f"udp.port=={DATA_PATH_PORT},{decode_as}"]
            + ["-Y", f"udp.port=={DATA_PATH_PORT}", "-T", "fields"]
            + [arg for name in fields for arg in ("-e", name)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [line.split("\t") for line in done.stdout.splitlines()]
