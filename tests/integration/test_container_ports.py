"""`docker run -p` / `-P` for standalone containers on an overlay, end to end with the real
docker CLI in a userspace lab of 1 manager and 1 worker (127.77.171.x): the container's ports
are published on its node only (TCP and UDP, a range, a HostIp, ports the node picks), shown
by `docker ps`, `docker port` and `docker inspect` as dockerd shows them (and valid against
the v1.41 spec); a port already taken fails the start with dockerd's error and the container
does not run; `/sctp` is refused at the start, saying why; the port is released when the
container stops, is killed or removed."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from docker_cli import docker, needs_docker_cli, ok
from tcp_probes import http_answer, refused

from controlplane.api.spec import SPEC_PATH, Spec
from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli, pytest.mark.timeout(400)]

LAB = 171
NGINX_TITLE = "<title>Welcome to nginx!</title>"


async def closed(host: str, port: int) -> bool | None:
    """For `until`: True once nothing listens on (host, port)."""
    return True if await refused(host, port) else None


def _udp_ask(host: str, port: int, data: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(data, (host, port))
        try:
            return sock.recv(1024)
        except TimeoutError:
            return None


async def udp_ask(host: str, port: int, data: bytes) -> bytes | None:
    """The answer to one datagram to (host, port), a Python socket's; None without one."""
    return await asyncio.to_thread(_udp_ask, host, port, data)


def fails(node: NodeProcess, *args: str) -> str:
    """The CLI's error output for a command that must fail."""
    result = docker(node, *args)
    assert result.returncode != 0, (args, result.stdout)
    return result.stderr


def test_docker_run_publishes_ports_on_its_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=1, lab=LAB)
        try:
            await lab.up()
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            here, elsewhere = worker.address, manager.address
            ok(manager, "network", "create", "-d", "overlay", "--attachable", "my-net")
            web_id = ok(
                worker, "run", "-d", "-p", "8080:80", "--network", "my-net", "--name", "web",
                "nginx",
            ).strip()  # fmt: skip

            async def nginx_answers() -> bool | None:
                return NGINX_TITLE in (await http_answer(here, 8080) or "") or None

            await until(nginx_answers, 60, "nginx on the worker's 8080")
            assert await refused(elsewhere, 8080)  # published on its own node only
            assert ok(worker, "ps", "--format", "{{.Names}} {{.Ports}}") == (
                "web 0.0.0.0:8080->80/tcp\n"
            )
            assert ok(worker, "port", "web") == "80/tcp -> 0.0.0.0:8080\n"
            shown = json.loads(
                ok(worker, "inspect", "--format",
                   "{{json .NetworkSettings.Ports}}|{{json .HostConfig.PortBindings}}", "web")
                .replace("|", ",").join("[]")
            )  # fmt: skip
            assert shown == [
                {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
                {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
            ]
            await valid_against_the_spec(lab, worker, web_id)

            # The same port again: dockerd's error, the container exits without running.
            error = fails(
                worker, "run", "-d", "-p", "8080:80", "--network", "my-net", "--name", "web2",
                "nginx",
            )  # fmt: skip
            web2 = ok(worker, "inspect", "--format", "{{.Id}}", "web2").strip()
            assert (
                f"Error response from daemon: container {web2}: endpoint join on GW Network "
                f"failed: driver failed programming external connectivity on endpoint "
                f"gateway_{web2[:12]} ("
            ) in error, error
            assert re.search(
                r"\([0-9a-f]{64}\): Bind for 0\.0\.0\.0:8080 failed: port is already allocated",
                error,
            ), error
            state = ok(worker, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                       "web2")  # fmt: skip
            assert state.strip() == "created 128"  # as dockerd leaves a failed start
            assert ok(worker, "ps", "-a", "--filter", "name=web2", "--format", "{{.Ports}}") == (
                "\n"
            )

            await ports_stay_across_network_connect(manager, worker, here)
            await udp_range_and_picked_ports(worker, here)
            await loopback_bindings_on_each_node(manager, worker)
            await refusals(worker, here)
            await released_when_stopped_killed_or_removed(worker, here)
        finally:
            lab.stop()

    asyncio.run(scenario())


async def valid_against_the_spec(lab: SwarmLab, node: NodeProcess, container_id: str) -> None:
    """`/containers/json` and `/containers/{id}/json` as the v1.41 spec describes them."""
    if not SPEC_PATH.exists():
        return
    spec = Spec.load(SPEC_PATH)
    async with lab.engine(node) as engine:
        listed: list[dict[str, Any]] = await engine.request("GET", "/containers/json")
        inspected: dict[str, Any] = await engine.request("GET", f"/containers/{container_id}/json")
    spec.validate_response("/containers/json", "GET", 200, listed)
    spec.validate_response("/containers/{id}/json", "GET", 200, inspected)
    [summary] = [c for c in listed if c["Id"] == container_id]
    assert summary["Ports"] == [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080,
                                 "Type": "tcp"}]  # fmt: skip
    assert inspected["Config"]["ExposedPorts"] == {"80/tcp": {}}


async def ports_stay_across_network_connect(
    manager: NodeProcess, worker: NodeProcess, here: str
) -> None:
    """`docker network connect` and `disconnect` of web keep its published port answering."""
    ok(manager, "network", "create", "-d", "overlay", "--attachable", "other-net")
    ok(worker, "network", "connect", "other-net", "web")
    assert NGINX_TITLE in (await http_answer(here, 8080) or "")
    ok(worker, "network", "disconnect", "other-net", "web")
    assert NGINX_TITLE in (await http_answer(here, 8080) or "")


async def udp_range_and_picked_ports(worker: NodeProcess, here: str) -> None:
    """UDP with a Python socket; `-P` and an empty host port get ports the node picks; two
    containers on the range 9090-9091 get one each; `HostIp` binds that address only."""
    ok(worker, "run", "-d", "-p", "5353:53/udp", "--network", "my-net", "--name", "echo",
       "busybox", "nc", "-u", "-l", "-p", "53", "-e", "echo", "pong")  # fmt: skip
    assert await until(lambda: udp_ask(here, 5353, b"ping\n"), 60, "udp 5353") == b"pong\n"

    ok(worker, "run", "-d", "-P", "--network", "my-net", "--name", "all", "httpd")
    [line] = ok(worker, "port", "all").splitlines()
    picked = int(re.fullmatch(r"80/tcp -> 0\.0\.0\.0:(\d+)", line)[1])  # type: ignore[index]
    assert "It works!" in (await http_answer(here, picked) or "")

    for name in ("r1", "r2"):
        ok(worker, "run", "-d", "-p", "9090-9091:80", "--network", "my-net", "--name", name,
           "traefik/whoami")  # fmt: skip
    assert ok(worker, "port", "r1") == "80/tcp -> 0.0.0.0:9090\n"
    assert ok(worker, "port", "r2") == "80/tcp -> 0.0.0.0:9091\n"
    r2 = ok(worker, "inspect", "--format", "{{.Config.Hostname}}", "r2").strip()
    assert f"Hostname: {r2}" in (await http_answer(here, 9091) or "")

    ok(worker, "run", "-d", "-p", f"{here}::80", "--network", "my-net", "--name", "ip",
       "traefik/whoami")  # fmt: skip
    [line] = ok(worker, "port", "ip").splitlines()
    assert line.startswith(f"80/tcp -> {here}:"), line
    ps = ok(worker, "ps", "--format", "{{.Names}} {{.Ports}}").splitlines()
    assert f"ip {here}:{line.rpartition(':')[2]}->80/tcp" in ps, ps


async def loopback_bindings_on_each_node(*nodes: NodeProcess) -> None:
    """`-p 127.0.0.1:9092:80` on two nodes: each emulated host's loopback is its own address
    (no collision on the machine's shared 127.0.0.1), shown as asked; IPv6 is refused."""
    for node in nodes:
        ok(node, "run", "-d", "-p", "127.0.0.1:9092:80", "--network", "my-net", "--name",
           f"lo-{node.name}", "traefik/whoami")  # fmt: skip
        assert ok(node, "port", f"lo-{node.name}") == "80/tcp -> 127.0.0.1:9092\n"
    for node in nodes:
        hostname = ok(node, "inspect", "--format", "{{.Config.Hostname}}", f"lo-{node.name}")

        async def answers(node: NodeProcess = node) -> str | None:
            return await http_answer(node.address, 9092) or None  # "" (closed at once): not yet

        assert f"Hostname: {hostname.strip()}" in await until(answers, 60, f"9092 on {node.name}")
    error = fails(nodes[0], "run", "-d", "-p", "[::1]:9093:80", "--network", "my-net",
                  "traefik/whoami")  # fmt: skip
    assert "invalid HostIp ::1: a Swarmlab node is an emulated host with one IPv4" in error


async def refusals(worker: NodeProcess, here: str) -> None:
    """SCTP, which the userspace data path cannot carry, and a port taken outside."""
    error = fails(worker, "run", "-d", "-p", "8081:80/sctp", "--network", "my-net", "--name",
                  "sctp", "nginx")  # fmt: skip
    assert "port 80/sctp: swarmlab's userspace data path carries TCP and UDP only" in error
    assert "--datapath kernel" in error
    shown = ok(worker, "inspect", "--format", "{{json .HostConfig.PortBindings}}", "sctp")
    assert json.loads(shown) == {"80/sctp": [{"HostIp": "", "HostPort": "8081"}]}

    blocker = await asyncio.start_server(lambda r, w: None, here, 8083)
    try:
        error = fails(worker, "run", "-d", "-p", "8083:80", "--network", "my-net", "--name",
                      "blocked", "nginx")  # fmt: skip
    finally:
        blocker.close()
    assert (
        "Error starting userland proxy: listen tcp4 0.0.0.0:8083: bind: address already in use"
        in error
    ), error


async def released_when_stopped_killed_or_removed(worker: NodeProcess, here: str) -> None:
    ok(worker, "stop", "-t", "1", "web")
    assert await until(lambda: closed(here, 8080), 30, "8080 closed after stop")
    assert ok(worker, "port", "web") == ""
    ok(worker, "run", "-d", "-p", "8080:80", "--network", "my-net", "--name", "again", "nginx")
    assert NGINX_TITLE in (await http_answer(here, 8080) or "")
    ok(worker, "kill", "again")
    assert await until(lambda: closed(here, 8080), 30, "8080 closed after kill")
    ok(worker, "run", "-d", "-p", "8080:80", "--name", "nonet", "nginx")  # no overlay
    assert NGINX_TITLE in (await http_answer(here, 8080) or "")
    ok(worker, "rm", "-f", "nonet")
    assert await until(lambda: closed(here, 8080), 30, "8080 closed after rm -f")
