"""`swarmlab demo`: a lab swarm of 3 managers and 2 workers on loopback, formed through the
Docker Engine API as a user would, plays issue 5's overlay scenario with the real docker CLI:
an encrypted attachable overlay, nginx as a standalone container on worker-1, a busybox on
worker-2 that pings, resolves and fetches it by name (its VXLAN frames caught on the wire by
tshark: ESP only, no plaintext), `docker exec` into a container on the overlay, and a
whoami service published on 8080 answered on every node by several tasks; then chaos: SIGKILL
the leader in the middle of a stream of writes (nothing acknowledged is lost, nothing is
allocated twice), SIGKILL the worker running the web service (gossip declares it dead, it
goes Down, web moves), a new client reaches web where it runs now, and the old leader
restarts and catches up.

Each step prints what a user would see and checks what it claims; the demo exits non-zero
when a check fails, so it doubles as a smoke test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from controlplane.lab.capture import DATA_PATH_PORT, CaptureUnavailable, WireCapture
from controlplane.lab.engine import EngineClient, EngineError
from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until


def _say(text: str = "") -> None:
    print(text, flush=True)


async def run_demo(state_dir: Path | None) -> int:
    if shutil.which("docker") is None:
        _say("swarmlab demo plays the scenario with the real docker CLI, which is not on PATH:")
        _say("install it (the client alone is enough), e.g. apt-get install docker.io")
        return 2
    if state_dir is None:
        with tempfile.TemporaryDirectory(prefix="swarmlab-demo-") as tmp:
            return await _demo(Path(tmp))
    return await _demo(state_dir)


def _node_table(nodes: list[dict[str, Any]]) -> str:
    lines = [f"   {'HOSTNAME':<10} {'ROLE':<8} {'STATUS':<8} {'AVAILABILITY':<13} MANAGER STATUS"]
    for n in sorted(nodes, key=lambda n: str(n["Description"]["Hostname"])):
        manager = n.get("ManagerStatus") or {}
        status = "Leader" if manager.get("Leader") else str(manager.get("Reachability", ""))
        lines.append(
            f"   {n['Description']['Hostname']:<10} {n['Spec']['Role']:<8} "
            f"{n['Status']['State']:<8} {n['Spec']['Availability']:<13} {status.capitalize()}"
        )
    return "\n".join(lines)


MESH_PORT = 8080
ADDRESS_FORMAT = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
CLIENT_SCRIPT = "ping -c 2 web; nslookup web; wget -qO- http://web; sleep 100000"


async def _service(
    engine: EngineClient, name: str, image: str, args: list[str], constraint: str
) -> str:
    created = await engine.request(
        "POST",
        "/services/create",
        {
            "Name": name,
            "TaskTemplate": {
                "ContainerSpec": {"Image": image, "Args": args},
                "Networks": [{"Target": "my-net"}],
                "Placement": {"Constraints": [constraint]},
            },
            "Mode": {"Replicated": {"Replicas": 1}},
        },
    )
    return str(created["ID"])


async def _client_talks(
    lab: SwarmLab, engine: EngineClient, name: str, names: dict[str, str]
) -> bool:
    """A busybox service on a manager that pings, resolves and fetches `web` by name; its
    logs and the data path counters of its node are shown."""
    client = await _service(
        engine, name, "busybox", ["sh", "-c", CLIENT_SCRIPT], "node.role==manager"
    )

    async def fetched() -> str | None:
        logs = await engine.service_logs(client)
        return logs if "</html>" in logs else None

    try:
        logs = await until(fetched, 90, f"{name}'s ping, nslookup and wget")
    except TimeoutError as err:
        _say(f"   FAILED: {err}")
        return False
    [task] = await _tasks(engine, client)
    node = names.get(task["NodeID"], task["NodeID"])
    _say(f"   {name} (busybox) on {node}: sh -c '{CLIENT_SCRIPT}'")
    shown = [line for line in logs.splitlines() if line.strip() and not line.startswith("<")]
    title = [line for line in logs.splitlines() if "<title>" in line]
    for line in shown[:12] + title[:1]:
        _say(f"     | {line}")
    await _show_counters(lab, lab.node(node))
    return "0% packet loss" in logs and "Welcome to nginx!" in logs


async def _show_counters(lab: SwarmLab, node: NodeProcess) -> None:
    """What `node`'s data path carried on my-net, from its own counters."""
    async with lab.engine(node) as on_node:
        segments = (await on_node.datapath()).get("counters", {}).get("segments", {})
    for seg in segments.values():
        if seg.get("network") == "my-net":
            _say(
                f"   {node.name}'s data path on my-net: {seg['transport']}, frames in "
                f"{seg['frames_in']}, out {seg['frames_out']}, dropped {seg['dropped'] or 0}"
            )


async def _docker(node: NodeProcess, *args: str, keep: int = 6) -> str:
    """The real docker CLI against `node`, narrated as a prompt on that node; its output
    (stderr too, to show what failed) is shown trimmed to `keep` lines and returned."""
    _say(f"   {node.name}$ docker {shlex.join(args)}")
    cli = await asyncio.create_subprocess_exec(
        "docker", "-H", f"tcp://{node.api}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await cli.communicate()
    text = out.decode()
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines[:keep]:
        _say(f"     | {line}")
    if len(lines) > keep:
        _say(f"     | ... ({len(lines) - keep} more lines)")
    return text


async def _overlay(lab: SwarmLab, follower: NodeProcess) -> bool:
    """The encrypted attachable overlay, created through a follower (it forwards)."""
    await _docker(follower, "network", "create", "-d", "overlay", "--attachable",
                  "--opt", "encrypted", "my-net", keep=1)  # fmt: skip
    async with lab.engine(follower) as engine:
        try:
            inspect = await engine.request("GET", "/networks/my-net")
        except EngineError as err:
            _say(f"   FAILED: {err}")
            return False
    vni = inspect["Options"].get("com.docker.network.driver.overlay.vxlanid_list")
    encrypted = "encrypted" in inspect["Options"]
    _say(
        f"   my-net: subnet {inspect['IPAM']['Config'][0]['Subnet']}, VNI {vni}, "
        f"{'encrypted' if encrypted else 'NOT encrypted'}"
    )
    return encrypted


async def _seed_scenario(lab: SwarmLab, root: Path, checks: dict[str, bool]) -> None:
    """nginx standalone on worker-1; from worker-2 busybox pings, resolves and fetches it by
    name, while tshark watches worker-2's VTEP on the wire."""
    server, client = lab.node("worker-1"), lab.node("worker-2")
    await _docker(server, "run", "-d", "--name", "web", "--network", "my-net", "nginx", keep=1)
    address = await _docker(server, "inspect", "-f", ADDRESS_FORMAT, "web")
    busybox = ("run", "--rm", "--network", "my-net", "busybox")
    programmed: set[str] = set()
    async with WireCapture(root / "my-net.pcap", client.address) as capture:
        sampler = asyncio.create_task(_sample_spis(lab, client, programmed))
        ping = await _docker(client, *busybox, "ping", "-c", "2", "web")
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        lookup = await _docker(client, *busybox, "nslookup", "web", keep=8)
        page = await _docker(client, *busybox, "wget", "-qO-", "http://web", keep=4)
    checks["busybox on worker-2 pinged web by name"] = "0% packet loss" in ping
    checks["nslookup web gave web's address"] = bool(address.strip()) and (
        f"Address: {address.strip()}" in lookup
    )
    checks["wget fetched nginx's page from web"] = "Welcome to nginx!" in page
    try:
        checks["only ESP on the wire, no plaintext"] = _wire(capture, client, programmed)
    except CaptureUnavailable as err:
        _say(f"   the wire is not shown: {err}; web's node counted instead")
        await _show_counters(lab, server)  # the client's endpoint went with `--rm`


async def _sample_spis(lab: SwarmLab, node: NodeProcess, spis: set[str]) -> None:
    """Adds the SPIs of `node`'s xfrm states to `spis` until cancelled: they are sampled
    while a client runs, since a `--rm` client's endpoint, and its SAs, go when it ends."""
    async with lab.engine(node) as engine:
        while True:
            text = (await engine.datapath())["text"]
            spis.update(re.findall(r"spi (0x[0-9a-f]+)", text))
            await asyncio.sleep(0.2)


def _wire(capture: WireCapture, node: NodeProcess, programmed: set[str]) -> bool:
    """The captured datagrams of `node`'s VTEP: ESP under the SPIs of its data path program,
    and nothing readable (no VXLAN-carried ICMP or HTTP, no page bytes)."""
    esp = capture.decode("udpencap", ["frame.protocols", "esp.spi", "ip.src", "ip.dst"])
    as_vxlan = [row[0] for row in capture.decode("vxlan", ["frame.protocols"])]
    spis = sorted({row[1] for row in esp})
    ends = sorted({row[2] for row in esp} | {row[3] for row in esp})
    _say(
        f"   on the wire (tshark on lo, UDP {DATA_PATH_PORT} of {node.address}): {len(esp)} "
        f"frames: ESP (SPI {', '.join(spis)}) between {' and '.join(ends)}"
    )
    readable = [p for p in as_vxlan if ":icmp" in p or ":http" in p or ":arp" in p]
    leaked = b"Welcome to nginx" in capture.pcap.read_bytes()
    _say(
        f"   plaintext VXLAN/ICMP/HTTP frames: {len(readable)}; page bytes on the wire: "
        f"{'yes' if leaked else 'none'}; SPIs in {node.name}'s xfrm states: "
        f"{'yes' if set(spis) <= programmed else 'NO'}"
    )
    all_esp = all(row[0].endswith(":udpencap:esp") for row in esp)
    return bool(esp) and all_esp and set(spis) <= programmed and not readable and not leaked


async def _exec_probe(node: NodeProcess) -> bool:
    """A standalone container on my-net, and `docker exec` (no TTY) running wget in it."""
    await _docker(node, "run", "-d", "--name", "probe", "--network", "my-net", "busybox",
                  "sleep", "100000", keep=1)  # fmt: skip
    page = await _docker(node, "exec", "probe", "wget", "-qO-", "http://web", keep=4)
    await _docker(node, "rm", "-f", "probe", keep=1)
    return "Welcome to nginx!" in page


async def _http_get(host: str, port: int) -> str | None:
    """One HTTP/1.0 GET, the whole answer; None when refused or silent."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET / HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.read(), 10)).decode()
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()


async def _routing_mesh(lab: SwarmLab, manager: NodeProcess, names: dict[str, str]) -> bool:
    """whoami, 3 replicas published on 8080: every node's address answers, and the requests
    to each are spread over several tasks (the Hostname line says which one answered)."""
    await _docker(manager, "service", "create", "-d", "--no-resolve-image", "--name",
                  "whoami", "--replicas", "3", "-p", f"{MESH_PORT}:80", "traefik/whoami",
                  keep=1)  # fmt: skip
    answered: dict[str, list[str]] = {}

    async def several_tasks_everywhere() -> bool | None:
        for node in lab.nodes:
            hosts = []
            for _ in range(3):
                text = await _http_get(node.address, MESH_PORT)
                hosts += re.findall(r"^Hostname: (\S+)$", text or "", re.M)
            answered[node.name] = hosts
        return all(len(set(h)) >= 2 for h in answered.values()) or None

    try:
        await until(several_tasks_everywhere, 120, "answers from several tasks on every node")
    except TimeoutError as err:
        _say(f"   FAILED: {err}")
    tasks = await _task_by_hostname(lab, manager, "whoami", 3, names)
    for node in lab.nodes:
        hosts = [f"{tasks.get(h, h)}" for h in answered.get(node.name, [])]
        _say(f"   GET http://{node.address}:{MESH_PORT}/ x3 ({node.name}) answered by: "
             f"{', '.join(hosts) or 'nobody'}")  # fmt: skip
    await _docker(manager, "service", "rm", "whoami", keep=1)
    return len(answered) == len(lab.nodes) and all(len(set(h)) >= 2 for h in answered.values())


async def _task_by_hostname(
    lab: SwarmLab, manager: NodeProcess, service: str, replicas: int, names: dict[str, str]
) -> dict[str, str]:
    """`service`'s running tasks by their container's hostname (its short ID, what whoami
    answers), as "whoami.2@worker-1"; empty if their status has not reached `manager` yet."""
    async with lab.engine(manager) as engine:
        services = await engine.request("GET", "/services")
        service_id = next(s["ID"] for s in services if s["Spec"]["Name"] == service)

        async def reported() -> dict[str, str] | None:
            running = [
                t for t in await _tasks(engine, service_id) if t["Status"]["State"] == "running"
            ]
            if len(running) != replicas:
                return None
            return {
                t["Status"]["ContainerStatus"]["ContainerID"][:12]: (
                    f"{service}.{t['Slot']}@{names.get(t['NodeID'], t['NodeID'])}"
                )
                for t in running
            }

        try:
            return await until(reported, 30, f"{service}'s tasks reported running")
        except TimeoutError:
            return {}


async def _web_becomes_a_service(
    lab: SwarmLab, manager: NodeProcess, names: dict[str, str]
) -> bool:
    """The standalone web cannot move when its node dies; a service can: web is replaced by
    a one-replica nginx service on a worker for the chaos to come."""
    await _docker(lab.node("worker-1"), "rm", "-f", "web", keep=1)
    await _docker(manager, "service", "create", "-d", "--no-resolve-image", "--name", "web",
                  "--network", "my-net", "--constraint", "node.role==worker", "nginx",
                  keep=1)  # fmt: skip
    async with lab.engine(manager) as engine:
        services = await engine.request("GET", "/services")
        web = next(s["ID"] for s in services if s["Spec"]["Name"] == "web")
        try:
            placed = await until(
                lambda: _running_on(engine, web, 1, names, "web"), 60, "web running"
            )
        except TimeoutError as err:
            _say(f"   FAILED: {err}")
            return False
    _say(f"   service web: {', '.join(placed)}")
    return True


async def _tasks(engine: EngineClient, service_id: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = await engine.request("GET", "/tasks")
    return [t for t in tasks if t["ServiceID"] == service_id and t["DesiredState"] == "running"]


async def _running_on(
    engine: EngineClient, service_id: str, replicas: int, names: dict[str, str], label: str
) -> list[str] | None:
    tasks = await _tasks(engine, service_id)
    running = [t for t in tasks if t["Status"]["State"] == "running"]
    if len(running) != replicas:
        return None
    return sorted(f"{label}.{t['Slot']} on {names.get(t['NodeID'], t['NodeID'])}" for t in running)


async def _leader(lab: SwarmLab) -> NodeProcess:
    async def find() -> NodeProcess | None:
        for row in await lab.node_list():
            if (row.get("ManagerStatus") or {}).get("Leader"):
                return lab.node(str(row["Description"]["Hostname"]))
        return None

    return await until(find, 60, "a leader")


async def _demo(root: Path) -> int:
    lab = SwarmLab(root, managers=3, workers=2)
    checks: dict[str, bool] = {}
    try:
        _say("== 1. Five engines on loopback; swarm init on manager-1, join with the tokens")
        started = time.monotonic()
        await lab.up(lambda line: _say(f"   {line}"))

        async def all_ready() -> list[dict[str, Any]] | None:
            nodes = await lab.node_list()
            ready = len(nodes) == 5 and all(n["Status"]["State"] == "ready" for n in nodes)
            return nodes if ready else None

        nodes = await until(all_ready, 60, "five Ready nodes")
        _say(f"   all Ready after {time.monotonic() - started:.1f} s\n")
        _say(_node_table(nodes))
        names = {n["ID"]: str(n["Description"]["Hostname"]) for n in nodes}

        leader = await _leader(lab)
        follower = next(m for m in lab.managers if m is not leader)
        _say("\n== 2. The seed scenario with the real docker CLI")
        checks["my-net is an encrypted overlay"] = await _overlay(lab, follower)
        await _seed_scenario(lab, root, checks)
        checks["docker exec fetched web from a standalone container"] = await _exec_probe(
            lab.node("worker-2")
        )
        _say(f"\n== 3. The routing mesh: a service published on {MESH_PORT}")
        checks[f"every node answered on {MESH_PORT}, by several tasks"] = await _routing_mesh(
            lab, follower, names
        )
        checks["web is a service on a worker"] = await _web_becomes_a_service(lab, follower, names)

        _say(f"\n== 4. SIGKILL the leader, {leader.name}, during a stream of network creates")
        acknowledged, first_write = await _writes_across_failover(lab, leader)
        checks["a write succeeded after the leader died"] = first_write is not None
        if first_write is not None:
            _say(f"   first write acknowledged {first_write:.2f} s after the kill")
        new_leader = await _leader(lab)
        _say(f"   new leader: {new_leader.name}")
        async with lab.engine(new_leader) as engine:
            networks = await engine.networks()
        present = {n["Name"] for n in networks}
        missing = [n for n in acknowledged if n not in present]
        subnets = [c["Subnet"] for n in networks for c in (n["IPAM"]["Config"] or [])]
        _say(
            f"   {len(acknowledged)} networks acknowledged, {len(missing)} missing; "
            f"{len(subnets)} subnets, {len(set(subnets))} distinct"
        )
        checks["no acknowledged network lost"] = not missing
        checks["no subnet allocated twice"] = len(subnets) == len(set(subnets))

        try:
            await _worker_dies(lab, names)
            checks["a dead worker is declared down and its tasks move"] = True
        except TimeoutError as err:
            _say(f"   FAILED: {err}")
            checks["a dead worker is declared down and its tasks move"] = False
        async with lab.engine(new_leader) as engine:
            _say("   the data path carries on: a new client reaches web where it runs now")
            checks["a new client reached web after the chaos"] = await _client_talks(
                lab, engine, "client-2", names
            )

        _say(f"\n== 6. Restart {leader.name} from its state directory: it catches up")
        leader.start()
        await lab.wait_api(leader)
        async with lab.engine(leader) as engine:

            async def caught_up() -> bool | None:
                held = {n["Name"] for n in await engine.networks()}
                return True if set(acknowledged) <= held else None

            try:
                checks[f"{leader.name} caught up"] = bool(
                    await until(caught_up, 60, f"{leader.name} to catch up")
                )
            except TimeoutError as err:
                _say(f"   FAILED: {err}")
                checks[f"{leader.name} caught up"] = False
        _say(f"   {leader.name} holds all {len(acknowledged)} networks again\n")

        async def back() -> list[dict[str, Any]] | None:
            nodes = await lab.node_list(via=new_leader)
            states = {str(n["Description"]["Hostname"]): n["Status"]["State"] for n in nodes}
            return nodes if states.get(leader.name) == "ready" else None

        _say(_node_table(await until(back, 60, f"{leader.name} Ready again")))
    finally:
        lab.stop()
    failed = [what for what, ok in checks.items() if not ok]
    _say("\nresult: " + ("every check passed" if not failed else f"FAILED: {', '.join(failed)}"))
    return 0 if not failed else 1


async def _writes_across_failover(
    lab: SwarmLab, leader: NodeProcess
) -> tuple[list[str], float | None]:
    """Create networks through a surviving manager, kill the leader after the third, and
    keep going until two more are acknowledged; Docker's no-leader errors are retried."""
    survivor = next(m for m in lab.managers if m is not leader)
    acknowledged: list[str] = []
    killed_at: float | None = None
    first_write: float | None = None
    async with lab.engine(survivor) as engine:
        for i in range(1, 200):
            if len(acknowledged) == 3 and killed_at is None:
                leader.kill()
                killed_at = time.monotonic()
            name = f"net-{i}"
            try:
                await engine.request(
                    "POST", "/networks/create", {"Name": name, "Driver": "overlay"}
                )
            except EngineError:
                await asyncio.sleep(0.05)
                continue
            acknowledged.append(name)
            if killed_at is not None and first_write is None:
                first_write = time.monotonic() - killed_at
            if len(acknowledged) >= 5 and first_write is not None:
                break
    return acknowledged, first_write


async def _worker_dies(lab: SwarmLab, names: dict[str, str]) -> None:
    """SIGKILL the worker that runs web. Raises TimeoutError naming what did not happen."""
    manager = next(m for m in lab.managers if m.alive())
    async with lab.engine(manager) as engine:
        services = await engine.request("GET", "/services")
        service_id = next(s["ID"] for s in services if s["Spec"]["Name"] == "web")
        [task] = await _tasks(engine, service_id)
        worker_id = task["NodeID"]
        worker = lab.node(names[worker_id])
        _say(
            f"\n== 5. SIGKILL {worker.name}, web's node: heartbeats stop, gossip notices, web moves"
        )
        worker.kill()
        killed_at = time.monotonic()

        async def down() -> float | None:
            node = await engine.request("GET", f"/nodes/{worker_id}")
            return time.monotonic() - killed_at if node["Status"]["State"] == "down" else None

        async def dead() -> float | None:
            view = await engine.gossip()  # 7946 itself is sealed with the managers' keys
            states = {m["name"]: m["state"] for m in view["members"]}
            return time.monotonic() - killed_at if states.get(worker_id) == "dead" else None

        gossip_dead = await until(dead, 60, f"{worker.name} dead in the gossip view")
        _say(f"   gossip: {worker.name} dead after {gossip_dead:.2f} s")
        marked = await until(down, 60, f"{worker.name} marked down")
        _say(f"   dispatcher: {worker.name} Down after {marked:.2f} s (3 missed heartbeats of 1 s)")

        async def moved() -> list[str] | None:
            placed = await _running_on(engine, service_id, 1, names, "web")
            if placed is None or any(worker.name in p for p in placed):
                return None
            return placed

        placed = await until(moved, 60, "web's tasks off the dead worker")
        _say(f"   service web: {', '.join(placed)}")
