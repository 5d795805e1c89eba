"""Userspace data path benchmark: ping RTT, UDP and TCP throughput between two containers on
two nodes, over plain VXLAN and over ESP-encrypted VXLAN, side by side in one run.

Run with `.venv/bin/python bench/datapath.py` (`--help` for flags). Two `UserspaceBackend`s
(node-a on 127.77.241.11, node-b on 127.77.241.12, port 4789) apply the programs `compute`
gives them for one overlay network with a container on each node, and the containers' stacks
exchange traffic through the real UDP sockets. Both nodes run in this one process and event
loop (one core for both ends, as two emulated nodes of a lab share a machine): the figures are
for the whole path, sender and receiver together. Kernel mode (issue 5) comes later; its
columns will join this table then.

Measured, per mode:
  1. ping: `--pings` ICMP echoes one after the other, p50/p99 round trip;
  2. UDP: datagrams of the largest size the MTU allows, sent back to back for `--seconds`
     (yielding to the loop every UDP_BURST), the bytes received per second and the loss;
  3. TCP: one connection sending for `--seconds`, the bytes the receiver read per second.
Results go to stdout (a table) and to bench/results/datapath.json. Everything stays on
127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from controlplane.datapath.program import DataPathKey, Endpoint, NetworkView, NodeView, compute
from controlplane.datapath.userspace import IPv4Stack, UserspaceBackend

RESULTS = Path(__file__).resolve().parent / "results"
KEY = DataPathKey(1, bytes(range(16)))
UDP_BURST = 2  # datagrams sent between two yields to the loop (the receiver shares it)


@dataclass
class ModeResult:
    mode: str
    mtu: int
    ping_p50_ms: float
    ping_p99_ms: float
    udp_mbit_s: float
    udp_loss_percent: float
    tcp_mbit_s: float
    drops: dict[str, int]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure_ping(client: IPv4Stack, server: IPv4Stack, count: int) -> list[float]:
    await client.ping(server.ip)  # ARP first
    return [await client.ping(server.ip) * 1000 for _ in range(count)]


async def measure_udp(client: IPv4Stack, server: IPv4Stack, seconds: float) -> tuple[float, float]:
    size = client.mtu - 28
    receiver, sender = server.udp_socket(9), client.udp_socket()
    received = 0

    async def sink() -> None:
        nonlocal received
        while True:
            data, _ = await receiver.recvfrom()
            received += len(data)

    sinking = asyncio.create_task(sink())
    payload, sent = bytes(size), 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(UDP_BURST):
            sender.sendto(payload, (server.ip, 9))
            sent += size
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.2)  # the datagrams still in flight
    sinking.cancel()
    receiver.close()
    sender.close()
    return received * 8 / elapsed / 1e6, 100 * (1 - received / sent)


async def measure_tcp(client: IPv4Stack, server: IPv4Stack, seconds: float) -> float:
    listener = server.listen(5001)
    accepted = asyncio.create_task(listener.accept())
    conn = await client.connect(server.ip, 5001)
    peer = await accepted
    received = 0

    async def sink() -> None:
        nonlocal received
        while chunk := await peer.recv():
            received += len(chunk)

    sinking = asyncio.create_task(sink())
    chunk = bytes(64 * 1024)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        await conn.send(chunk)
    elapsed = time.perf_counter() - start
    done_at = received
    conn.close()
    await sinking
    listener.close()
    return done_at * 8 / elapsed / 1e6


async def run_mode(encrypted: bool, lab: int, pings: int, seconds: float) -> ModeResult:
    a = NodeView("node-a", f"127.77.{lab}.11")
    b = NodeView("node-b", f"127.77.{lab}.12")
    net = NetworkView("benchnet0001", "benchnet", 4200, "10.0.20.0/24", "10.0.20.1", encrypted)
    eps = [
        Endpoint(net.network_id, "ep-client", "client", "10.0.20.3", a.node_id),
        Endpoint(net.network_id, "ep-server", "server", "10.0.20.2", b.node_id),
    ]
    keys = [KEY] if encrypted else []
    backend_a, backend_b = UserspaceBackend(a.vtep, a.port), UserspaceBackend(b.vtep, b.port)
    await backend_a.start()
    await backend_b.start()
    try:
        backend_a.apply(compute(a, [a, b], [net], eps, keys))
        backend_b.apply(compute(b, [a, b], [net], eps, keys))
        client = backend_a.endpoint(net.network_id, "client")
        server = backend_b.endpoint(net.network_id, "server")
        rtts = await measure_ping(client, server, pings)
        udp, loss = await measure_udp(client, server, seconds)
        tcp = await measure_tcp(client, server, seconds)
        drops = dict(backend_a.node_drops + backend_b.node_drops)
        for backend in (backend_a, backend_b):
            for counters in backend.counters().values():
                drops.update({f"segment:{k}": v for k, v in counters.dropped.items()})
        return ModeResult(
            "encrypted" if encrypted else "plain",
            client.mtu,
            round(statistics.median(rtts), 3),
            round(percentile(rtts, 0.99), 3),
            round(udp, 1),
            round(loss, 2),
            round(tcp, 1),
            drops,
        )
    finally:
        backend_a.close()
        backend_b.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput phase")
    parser.add_argument("--lab", type=int, default=241, help="use 127.77.LAB.11-12")
    parser.add_argument("--quick", action="store_true", help="50 pings, 1 s phases")
    parser.add_argument("--json", type=Path, default=RESULTS / "datapath.json")
    args = parser.parse_args()
    pings, seconds = (50, 1.0) if args.quick else (args.pings, args.seconds)
    results = [asyncio.run(run_mode(mode, args.lab, pings, seconds)) for mode in (False, True)]
    plain, secret = results
    rows = [
        ("ping p50 / p99 (ms)", lambda r: f"{r.ping_p50_ms} / {r.ping_p99_ms}"),
        ("UDP throughput (Mbit/s)", lambda r: f"{r.udp_mbit_s}"),
        ("UDP loss (%)", lambda r: f"{r.udp_loss_percent}"),
        ("TCP throughput (Mbit/s)", lambda r: f"{r.tcp_mbit_s}"),
        ("container MTU", lambda r: f"{r.mtu}"),
    ]
    print(f"{'userspace data path':<26}{'plain':>18}{'encrypted':>18}")
    for label, cell in rows:
        print(f"{label:<26}{cell(plain):>18}{cell(secret):>18}")
    ratio = secret.tcp_mbit_s / plain.tcp_mbit_s if plain.tcp_mbit_s else 0.0
    verdict = "PASS" if ratio >= 0.5 else "FAIL"
    print(f"encrypted / plain TCP throughput: {ratio:.2f} (target >= 0.50: {verdict})")
    for r in results:
        if r.drops:
            print(f"drops ({r.mode}): {r.drops}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": {"python": platform.python_version(), "platform": platform.platform()},
                "pings": pings,
                "seconds": seconds,
                "results": [asdict(r) for r in results],
                "encrypted_over_plain_tcp": round(ratio, 3),
            },
            indent=2,
        )
    )
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
