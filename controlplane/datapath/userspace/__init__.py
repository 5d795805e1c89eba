"""The userspace data path backend (any OS, no privileges): `frames` (wire formats), `esp`
(ESP with AES-GCM), `stack` (the emulated containers' IPv4 stack), `backend` (the node's VTEP
endpoint applying programs)."""

from controlplane.datapath.userspace.backend import (
    DataPathError,
    SegmentCounters,
    UserspaceBackend,
)
from controlplane.datapath.userspace.stack import IPv4Stack, TcpConnection, TcpListener, UdpSocket

__all__ = [
    "DataPathError",
    "IPv4Stack",
    "SegmentCounters",
    "TcpConnection",
    "TcpListener",
    "UdpSocket",
    "UserspaceBackend",
]
