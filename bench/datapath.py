"""Data path benchmark: ping RTT, UDP and TCP throughput between two containers on two nodes,
userspace and kernel, over plain VXLAN and over ESP-encrypted VXLAN, side by side in one run.

Run with `.venv/bin/python bench/datapath.py` (`--help` for flags). Two `UserspaceBackend`s
(node-a on 127.77.241.11, node-b on 127.77.241.12, port 4789) apply the programs `compute`
gives them for one overlay network with a container on each node, and the containers' stacks
exchange traffic through the real UDP sockets. Both nodes run in this one process and event
loop (one core for both ends, as two emulated nodes of a lab share a machine): the figures are
for the whole path, sender and receiver together.

Kernel columns (Linux, root; `--no-kernel` leaves them out): two `KernelBackend`s, each node's
data path in its own namespace on an underlay bridge (10.201.LAB.11-12, the lab's
`KernelUnderlay`), the containers being the namespaces the backends make. Ping is busybox's
(`ping -A`: the next echo as soon as the reply came, as the userspace ping does); UDP and TCP
are sent and received by Python sockets opened inside the two containers' namespaces, each end
on its own thread, so the kernel carries everything between them. Kernel encrypted needs ESP
and GCM in the kernel: where it has none (this machine), the column says why instead of
figures. The issue's target: userspace TCP throughput at least 10% of the kernel's.

Measured, per mode:
  1. ping: `--pings` ICMP echoes one after the other, p50/p99 round trip;
  2. UDP: datagrams of the largest size the MTU allows, sent back to back for `--seconds`
     (yielding to the loop every UDP_BURST), the bytes received per second and the loss;
  3. TCP: one connection sending for `--seconds`, the bytes the receiver read per second;
     then again with node-b in a process of its own (each end on its own core where the
     machine has two free, as the nodes of a lab and as the kernel's two threads).
The userspace VTEP sockets use UDP GSO and GRO where the kernel has them (`--no-offloads`:
one datagram per system call); the table says which. The payload checksums and the parse of
received TCP packets are done in C where the optional extension is built
(`datapath/userspace/speedups.py`; the output says which; `SWARMLAB_SPEEDUPS=off` in the
environment measures the pure-Python path).
Then, plain userspace only:
  4. VIP vs task IP: HTTP-like requests (connect, request, answer, close) per second from a
     container on node-a to two tasks on node-b (127.77.194.11-12), sent to one task's
     address, then to the service's VIP (balanced per connection in the sender's stack);
  5. run to reachable: in a real lab of node processes (1 manager, 2 workers on
     127.77.195.x), the time from `docker run -d --network my-net --name tN busybox` on
     worker-2 (an attachable overlay) until a container already running on worker-1 pings
     `tN` by name, the median of `--reach-runs` runs. The prober retries every
     REACH_RETRY seconds; its exit time (`State.FinishedAt`) ends the measure.
Results go to stdout (tables) and to bench/results/datapath.json. Everything stays on
127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from controlplane.datapath.kernel import KernelBackend, kernel_datapath_unavailable, namespaces
from controlplane.datapath.kernel.xfrm import esp_support
from controlplane.datapath.program import (
    DEFAULT_DATA_PATH_PORT,
    DataPathKey,
    Endpoint,
    NetworkView,
    NodeView,
    Program,
    compute,
)
from controlplane.datapath.userspace import IPv4Stack, UserspaceBackend, speedups
from controlplane.datapath.vips import VipBalancers
from controlplane.lab.kernel_underlay import KernelUnderlay
from controlplane.lab.swarm_lab import SwarmLab, until
from controlplane.pb.datapath_pb2 import EndpointRecord

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
    tcp_cpu_us_per_segment: float | None = None  # this process's CPU (both ends), userspace
    drops: dict[str, int] = field(default_factory=dict)
    offloads: str = "-"  # userspace: the UDP offloads the VTEP sockets used (gso, gro)
    tcp_two_processes_mbit_s: float | None = None  # userspace: node-b in a process of its own
    tcp_two_processes_cpu_us_per_segment: float | None = None  # both processes' CPU

    @classmethod
    def measured(
        cls,
        encrypted: bool,
        mtu: int,
        rtts: list[float],
        udp: tuple[float, float],
        tcp: float,
        drops: dict[str, int],
        **userspace_only: Any,
    ) -> ModeResult:
        """One mode's figures, rounded as the table and the JSON show them."""
        mbit_s, loss = udp
        return cls(
            "encrypted" if encrypted else "plain",
            mtu,
            round(statistics.median(rtts), 3),
            round(percentile(rtts, 0.99), 3),
            round(mbit_s, 1),
            round(loss, 2),
            round(tcp, 1),
            drops=drops,
            **userspace_only,
        )


def segment_drops(backends: Iterable[UserspaceBackend | KernelBackend]) -> dict[str, int]:
    """Frames the backends' segments dropped, by reason."""
    drops: dict[str, int] = {}
    for backend in backends:
        for counters in backend.counters().values():
            drops.update({f"segment:{k}": v for k, v in counters.dropped.items()})
    return drops


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
    payload, sent = os.urandom(size), 0
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


async def measure_tcp(client: IPv4Stack, server: IPv4Stack, seconds: float) -> tuple[float, float]:
    """Mbit/s the receiver read, and the CPU time this process spent per full segment
    delivered (both ends, user and system: the figure the load of the machine moves least)."""
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
    chunk = os.urandom(64 * 1024)  # checksums cost what real data costs, not zeros' price
    start, cpu_start = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        await conn.send(chunk)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    done_at = received
    conn.close()
    await sinking
    listener.close()
    segments = max(1, done_at // conn.mss)
    return done_at * 8 / elapsed / 1e6, cpu / segments * 1e6


TCP_PORT = 5001
CHILD_DEADLINE = 120.0  # seconds the two-process phase waits for node-b's process


def serve_tcp_node(a: NodeView, b: NodeView, encrypted: bool, offloads: bool, pipe: Any) -> None:
    """node-b of the two-process TCP phase, in a process of its own (as each node of a lab):
    its backend and the server; reports the bytes read, from the first to the last, and the
    CPU this process spent meanwhile."""
    asyncio.run(_serve_tcp_node(a, b, encrypted, offloads, pipe))


async def _serve_tcp_node(
    a: NodeView, b: NodeView, encrypted: bool, offloads: bool, pipe: Any
) -> None:
    net, _, program_b = programs(a, b, encrypted)
    backend = UserspaceBackend(b.vtep, b.port, offloads=offloads)
    await backend.start()
    try:
        backend.apply(program_b)
        listener = backend.endpoint(net.network_id, "server").listen(TCP_PORT)
        pipe.send("ready")
        peer = await listener.accept()
        received, first, last, cpu_start = 0, 0.0, 0.0, 0.0
        while chunk := await peer.recv():
            if not received:
                first, cpu_start = time.perf_counter(), time.process_time()
            received += len(chunk)
            last = time.perf_counter()
        pipe.send((received, last - first, time.process_time() - cpu_start))
    finally:
        backend.close()


async def measure_tcp_two_processes(
    a: NodeView, b: NodeView, encrypted: bool, offloads: bool, seconds: float
) -> tuple[float, float]:
    """The TCP phase with node-b in a child process, so each end has a core when the machine
    has two free: Mbit/s node-b read, and both processes' CPU per full segment."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=serve_tcp_node, args=(a, b, encrypted, offloads, theirs))
    child.start()
    try:
        if not await asyncio.to_thread(ours.poll, CHILD_DEADLINE) or ours.recv() != "ready":
            raise RuntimeError("node-b's process did not start its server in time")
        net, program_a, _ = programs(a, b, encrypted)
        backend = UserspaceBackend(a.vtep, a.port, offloads=offloads)
        await backend.start()
        try:
            backend.apply(program_a)
            client = backend.endpoint(net.network_id, "client")
            conn = await client.connect("10.0.20.2", TCP_PORT)
            chunk = os.urandom(64 * 1024)
            start, cpu_start = time.perf_counter(), time.process_time()
            while time.perf_counter() - start < seconds:
                await conn.send(chunk)
            conn.close()
            await conn.wait_closed()  # all of it delivered and acknowledged
            cpu = time.process_time() - cpu_start
        finally:
            backend.close()
        if not await asyncio.to_thread(ours.poll, CHILD_DEADLINE):
            raise RuntimeError("node-b's process did not report what it received")
        received, elapsed, child_cpu = ours.recv()
    finally:
        await asyncio.to_thread(child.join, CHILD_DEADLINE)
        if child.is_alive():
            child.kill()
    segments = max(1, received // conn.mss)
    return received * 8 / max(elapsed, 1e-9) / 1e6, (cpu + child_cpu) / segments * 1e6


def programs(a: NodeView, b: NodeView, encrypted: bool) -> tuple[NetworkView, Program, Program]:
    """One overlay with the client on node-a and the server on node-b, as each node sees it."""
    net = NetworkView("benchnet0001", "benchnet", 4200, "10.0.20.0/24", "10.0.20.1", encrypted)
    eps = [
        Endpoint(net.network_id, "ep-client", "client", "10.0.20.3", a.node_id),
        Endpoint(net.network_id, "ep-server", "server", "10.0.20.2", b.node_id),
    ]
    keys = [KEY] if encrypted else []
    return net, compute(a, [a, b], [net], eps, keys), compute(b, [a, b], [net], eps, keys)


async def run_mode(
    encrypted: bool, lab: int, pings: int, seconds: float, port: int, offloads: bool
) -> ModeResult:
    a = NodeView("node-a", f"127.77.{lab}.11", port)
    b = NodeView("node-b", f"127.77.{lab}.12", port)
    net, program_a, program_b = programs(a, b, encrypted)
    backend_a = UserspaceBackend(a.vtep, a.port, offloads=offloads)
    backend_b = UserspaceBackend(b.vtep, b.port, offloads=offloads)
    await backend_a.start()
    await backend_b.start()
    try:
        backend_a.apply(program_a)
        backend_b.apply(program_b)
        client = backend_a.endpoint(net.network_id, "client")
        server = backend_b.endpoint(net.network_id, "server")
        rtts = await measure_ping(client, server, pings)
        udp = await measure_udp(client, server, seconds)
        tcp, cpu_per_segment = await measure_tcp(client, server, seconds)
        drops = dict(backend_a.node_drops + backend_b.node_drops)
        drops.update(segment_drops((backend_a, backend_b)))
        used = backend_a.offloads
        mtu = client.mtu
    finally:
        backend_a.close()
        backend_b.close()
    two_tcp, two_cpu = await measure_tcp_two_processes(a, b, encrypted, offloads, seconds)
    return ModeResult.measured(
        encrypted,
        mtu,
        rtts,
        udp,
        tcp,
        drops,
        tcp_cpu_us_per_segment=round(cpu_per_segment, 1),
        offloads="+".join(name for name in ("gso", "gro") if getattr(used, name)) or "none",
        tcp_two_processes_mbit_s=round(two_tcp, 1),
        tcp_two_processes_cpu_us_per_segment=round(two_cpu, 1),
    )


# ---- kernel mode ---------------------------------------------------------------------------


def kernel_ping(client_netns: str, server_ip: str, count: int) -> list[float]:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            client_netns,
            "busybox",
            "ping",
            "-A",
            "-c",
            str(count + 1),
            "-W",
            "5",
            server_ip,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    times = [float(t) for t in re.findall(r"time=([0-9.]+) ms", done.stdout)]
    return times[1:]  # the first waited for ARP


def kernel_udp(
    client_netns: str, server_netns: str, server_ip: str, mtu: int, seconds: float
) -> tuple[float, float]:
    size = mtu - 28
    receiver = namespaces.socket_in(server_netns, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    receiver.bind((server_ip, 9))
    receiver.settimeout(0.5)
    sender = namespaces.socket_in(client_netns, socket.SOCK_DGRAM)
    received = 0

    def sink() -> None:
        nonlocal received
        while True:
            try:
                received += len(receiver.recv(65536))
            except TimeoutError:
                return

    sinking = threading.Thread(target=sink)
    sinking.start()
    payload, sent = os.urandom(size), 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            sender.sendto(payload, (server_ip, 9))
            sent += size
        except OSError:  # ENOBUFS: the queue is full; the datagram is lost, not counted
            pass
    elapsed = time.perf_counter() - start
    sinking.join()
    receiver.close()
    sender.close()
    return received * 8 / elapsed / 1e6, 100 * (1 - received / sent)


def kernel_tcp(client_netns: str, server_netns: str, server_ip: str, seconds: float) -> float:
    listener = namespaces.socket_in(server_netns, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((server_ip, 5001))
    listener.listen(1)
    received = 0

    def sink() -> None:
        nonlocal received
        peer, _ = listener.accept()
        with peer:
            while chunk := peer.recv(256 * 1024):
                received += len(chunk)

    sinking = threading.Thread(target=sink)
    sinking.start()
    conn = namespaces.socket_in(client_netns, socket.SOCK_STREAM)
    conn.connect((server_ip, 5001))
    chunk = os.urandom(64 * 1024)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        conn.sendall(chunk)
    elapsed = time.perf_counter() - start
    done_at = received
    conn.close()
    sinking.join()
    listener.close()
    return done_at * 8 / elapsed / 1e6


async def run_kernel_mode(
    encrypted: bool, lab: int, pings: int, seconds: float
) -> ModeResult | str:
    """The kernel's figures, or why this host cannot give them."""
    missing = kernel_datapath_unavailable()
    if missing:
        return f"not run: {missing}"
    if encrypted:
        refused = esp_support("swkbench-esp")
        if refused:
            return "refused here: no ESP/GCM in this kernel"
    underlay = KernelUnderlay(lab, "swkbench")
    a = NodeView("node-a", underlay.datapath_address(f"127.77.{lab}.11"))
    b = NodeView("node-b", underlay.datapath_address(f"127.77.{lab}.12"))
    net, program_a, program_b = programs(a, b, encrypted)
    underlay.create([("node-a", f"127.77.{lab}.11"), ("node-b", f"127.77.{lab}.12")])
    backend_a = KernelBackend(
        a.vtep, node_netns=underlay.node_netns("node-a"), prefix="swkbench-a-"
    )
    backend_b = KernelBackend(
        b.vtep, node_netns=underlay.node_netns("node-b"), prefix="swkbench-b-"
    )
    try:
        await backend_a.start()
        await backend_b.start()
        backend_a.apply(program_a)
        backend_b.apply(program_b)
        client = backend_a.container_netns(net.network_id, "client")
        server = backend_b.container_netns(net.network_id, "server")
        mtu = program_a.segments[net.network_id].mtu
        rtts = await asyncio.to_thread(kernel_ping, client, "10.0.20.2", pings)
        udp = await asyncio.to_thread(kernel_udp, client, server, "10.0.20.2", mtu, seconds)
        tcp = await asyncio.to_thread(kernel_tcp, client, server, "10.0.20.2", seconds)
        drops = segment_drops((backend_a, backend_b))
        return ModeResult.measured(encrypted, mtu, rtts, udp, tcp, drops)
    finally:
        backend_a.close()
        backend_b.close()
        underlay.remove()


# ---- VIP vs task IP request rate ----------------------------------------------------------

VIP_NETWORK = "benchvip0001"
VIP = "10.0.30.100"
REQUEST = b"GET / HTTP/1.0\r\nHost: web\r\n\r\n"
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class VipResult:
    direct_requests_s: float
    vip_requests_s: float
    vip_spread: dict[str, int]  # requests each task answered through the VIP


async def serve_requests(stack: IPv4Stack, counts: dict[str, int]) -> None:
    listener = stack.listen(80)
    while True:
        conn = await listener.accept()
        await conn.recv()
        await conn.send(ANSWER)
        conn.close()
        counts[stack.ip] = counts.get(stack.ip, 0) + 1


async def request_rate(client: IPv4Stack, target: str, seconds: float) -> float:
    """Requests per second, one after the other, each on its own TCP connection."""
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        conn = await client.connect(target, 80, timeout=10)
        await conn.send(REQUEST)
        while await conn.recv():
            pass
        conn.close()
        done += 1
    return done / (time.perf_counter() - start)


async def measure_vip(lab: int, seconds: float, port: int) -> VipResult:
    a = NodeView("node-a", f"127.77.{lab}.11", port)
    b = NodeView("node-b", f"127.77.{lab}.12", port)
    net = NetworkView(VIP_NETWORK, "vipnet", 4300, "10.0.30.0/24", "10.0.30.1")
    tasks = [("web.1", "10.0.30.2"), ("web.2", "10.0.30.3")]
    eps = [Endpoint(VIP_NETWORK, "ep-client", "client", "10.0.30.9", a.node_id)]
    eps += [Endpoint(VIP_NETWORK, f"ep-{name}", name, ip, b.node_id) for name, ip in tasks]
    vips = VipBalancers()
    vips.update(
        (VIP_NETWORK, EndpointRecord(name=name, ip=ip, service_id="s", vip=VIP))
        for name, ip in tasks
    )
    backend_a = UserspaceBackend(a.vtep, a.port, vips.for_network)
    backend_b = UserspaceBackend(b.vtep, b.port)
    await backend_a.start()
    await backend_b.start()
    servers: list[asyncio.Task[None]] = []
    try:
        backend_a.apply(compute(a, [a, b], [net], eps))
        backend_b.apply(compute(b, [a, b], [net], eps))
        client = backend_a.endpoint(VIP_NETWORK, "client")
        counts: dict[str, int] = {}
        for name, _ in tasks:
            server = backend_b.endpoint(VIP_NETWORK, name)
            servers.append(asyncio.create_task(serve_requests(server, counts)))
        await request_rate(client, tasks[0][1], 0.2)  # ARP and a first exchange
        direct = await request_rate(client, tasks[0][1], seconds)
        counts.clear()
        via_vip = await request_rate(client, VIP, seconds)
        return VipResult(round(direct, 1), round(via_vip, 1), dict(sorted(counts.items())))
    finally:
        for serving in servers:
            serving.cancel()
        backend_a.close()
        backend_b.close()


# ---- run to reachable ---------------------------------------------------------------------

REACH_RETRY = 0.05  # seconds between the prober's attempts
REACH_ATTEMPTS = 600  # the prober gives up after about this many tries


@dataclass
class ReachResult:
    runs_s: list[float]
    median_s: float


def _docker(api: str, *args: str) -> str:
    result = subprocess.run(
        ["docker", "-H", f"tcp://{api}", *args], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _unix_time(go_time: str) -> float:
    """An RFC 3339 time with nanoseconds (`State.FinishedAt`) as seconds since the epoch."""
    whole, _, fraction = go_time.rstrip("Z").partition(".")
    base = datetime.fromisoformat(whole + "+00:00").timestamp()
    return base + (int(fraction.ljust(9, "0")[:9]) / 1e9 if fraction else 0.0)


async def measure_run_to_reachable(lab: int, runs: int) -> ReachResult:
    with tempfile.TemporaryDirectory(prefix="swarmlab-bench-") as root:
        swarm = SwarmLab(Path(root), managers=1, workers=2, lab=lab)
        try:
            await swarm.up()
            manager, prober_node = swarm.node("manager-1"), swarm.node("worker-1")
            target_node = swarm.node("worker-2")
            _docker(manager.api, "network", "create", "-d", "overlay", "--attachable", "my-net")
            times = []
            for run in range(runs):
                target = f"t{run}"
                attempt = f"ping -c 1 -W 1 {target} && exit 0; sleep {REACH_RETRY}"
                script = "; ".join([attempt] * REACH_ATTEMPTS) + "; exit 1"
                prober = f"p{run}"
                _docker(prober_node.api, "run", "-d", "--network", "my-net", "--name", prober,
                        "busybox", "sh", "-c", script)  # fmt: skip
                started = time.time()
                _docker(target_node.api, "run", "-d", "--network", "my-net", "--name", target,
                        "busybox", "sleep", "100000")  # fmt: skip

                async def finished(prober: str = prober, target: str = target) -> str | None:
                    async with swarm.engine(prober_node) as engine:
                        state = (await engine.request("GET", f"/containers/{prober}/json"))["State"]
                    if state["Status"] != "exited":
                        return None
                    if state["ExitCode"] != 0:
                        raise RuntimeError(f"prober {prober} never reached {target}")
                    return str(state["FinishedAt"])

                times.append(_unix_time(await until(finished, 60, f"{prober} to reach")) - started)
                _docker(prober_node.api, "rm", "-f", prober)
                _docker(target_node.api, "rm", "-f", target)
            return ReachResult([round(t, 3) for t in times], round(statistics.median(times), 3))
        finally:
            swarm.stop()


def report_vip_and_reach(vip: VipResult, reach: ReachResult | None) -> None:
    print()
    print(f"{'service VIP (userspace, plain)':<34}{'task IP':>12}{'VIP':>12}")
    print(f"{'requests/s (1 connection each)':<34}{vip.direct_requests_s:>12}"
          f"{vip.vip_requests_s:>12}")  # fmt: skip
    print(f"VIP requests per task: {vip.vip_spread}")
    if reach is None:
        print("run to reachable: skipped (no docker CLI)")
        return
    print(
        f"docker run -> reachable by name from another node: median {reach.median_s} s "
        f"over {len(reach.runs_s)} runs {reach.runs_s}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput phase")
    parser.add_argument("--lab", type=int, default=241, help="use 127.77.LAB.11-12")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_DATA_PATH_PORT,
        help="userspace data path port (another when a kernel VXLAN device holds 4789)",
    )
    parser.add_argument("--quick", action="store_true", help="50 pings, 1 s phases")
    parser.add_argument("--json", type=Path, default=RESULTS / "datapath.json")
    parser.add_argument("--vip-lab", type=int, default=194, help="VIP rate on 127.77.N.11-12")
    parser.add_argument("--reach-lab", type=int, default=195, help="run-to-reachable lab")
    parser.add_argument("--reach-runs", type=int, default=5)
    parser.add_argument("--no-kernel", action="store_true", help="userspace columns only")
    parser.add_argument(
        "--no-offloads",
        action="store_true",
        help="userspace VTEP sockets without UDP GSO/GRO (one datagram per system call)",
    )
    args = parser.parse_args()
    pings, seconds = (50, 1.0) if args.quick else (args.pings, args.seconds)
    reach_runs = 3 if args.quick else args.reach_runs
    results = [
        asyncio.run(run_mode(mode, args.lab, pings, seconds, args.port, not args.no_offloads))
        for mode in (False, True)
    ]
    kernel: list[ModeResult | str] = (
        ["not run: --no-kernel"] * 2
        if args.no_kernel
        else [
            asyncio.run(run_kernel_mode(mode, args.lab, pings, seconds)) for mode in (False, True)
        ]
    )
    vip = asyncio.run(measure_vip(args.vip_lab, seconds, args.port))
    reach = (
        asyncio.run(measure_run_to_reachable(args.reach_lab, reach_runs))
        if shutil.which("docker")
        else None
    )
    plain, secret = results
    rows: list[tuple[str, Callable[[ModeResult], str]]] = [
        ("ping p50 / p99 (ms)", lambda r: f"{r.ping_p50_ms} / {r.ping_p99_ms}"),
        ("UDP throughput (Mbit/s)", lambda r: f"{r.udp_mbit_s}"),
        ("UDP loss (%)", lambda r: f"{r.udp_loss_percent}"),
        ("TCP throughput (Mbit/s)", lambda r: f"{r.tcp_mbit_s}"),
        ("TCP CPU per segment (us)", lambda r: f"{r.tcp_cpu_us_per_segment or '-'}"),
        ("TCP, 2 processes (Mbit/s)", lambda r: f"{r.tcp_two_processes_mbit_s or '-'}"),
        ("TCP, 2 processes CPU (us)", lambda r: f"{r.tcp_two_processes_cpu_us_per_segment or '-'}"),
        ("UDP offloads", lambda r: r.offloads),
        ("container MTU", lambda r: f"{r.mtu}"),
    ]
    columns: list[tuple[str, ModeResult | str]] = [
        ("userspace plain", plain),
        ("userspace encrypted", secret),
        ("kernel plain", kernel[0]),
        ("kernel encrypted", kernel[1]),
    ]
    print(f"{'data path':<26}" + "".join(f"{name:>22}" for name, _ in columns))
    for label, cell in rows:
        line = "".join(f"{cell(r) if isinstance(r, ModeResult) else '-':>22}" for _, r in columns)
        print(f"{label:<26}{line}")
    for name, r in columns:
        if isinstance(r, str):
            print(f"{name}: {r}")
    print(f"userspace per-segment code: {speedups.IMPLEMENTATION}")
    ratio = secret.tcp_mbit_s / plain.tcp_mbit_s if plain.tcp_mbit_s else 0.0
    verdict = "PASS" if ratio >= 0.5 else "FAIL"
    print(f"userspace encrypted / plain TCP throughput: {ratio:.2f} (target >= 0.50: {verdict})")
    kernel_plain = kernel[0]
    kernel_tcp = kernel_plain.tcp_mbit_s if isinstance(kernel_plain, ModeResult) else 0.0
    versus_kernel = round(plain.tcp_mbit_s / kernel_tcp, 4) if kernel_tcp else None
    two_processes = plain.tcp_two_processes_mbit_s or 0.0
    versus_kernel_two = round(two_processes / kernel_tcp, 4) if kernel_tcp else None
    for how, value in (("one process", versus_kernel), ("two processes", versus_kernel_two)):
        if value is not None:
            verdict = "PASS" if value >= 0.10 else "FAIL"
            print(
                f"userspace ({how}) / kernel plain TCP throughput: {value:.4f} "
                f"(target >= 0.10: {verdict})"
            )
    for name, r in columns:
        if isinstance(r, ModeResult) and r.drops:
            print(f"drops ({name}): {r.drops}")
    report_vip_and_reach(vip, reach)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": {"python": platform.python_version(), "platform": platform.platform()},
                "pings": pings,
                "speedups": speedups.IMPLEMENTATION,
                "seconds": seconds,
                "results": [asdict(r) for r in results],
                "kernel": [
                    asdict(r) if isinstance(r, ModeResult) else {"not_measured": r} for r in kernel
                ],
                "encrypted_over_plain_tcp": round(ratio, 3),
                "userspace_over_kernel_tcp": versus_kernel,
                "userspace_two_processes_over_kernel_tcp": versus_kernel_two,
                "vip": asdict(vip),
                "run_to_reachable": asdict(reach) if reach is not None else None,
            },
            indent=2,
        )
    )
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
