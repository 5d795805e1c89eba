"""`swarmlab demo`: a lab swarm of 3 managers and 2 workers on loopback, formed through the
Docker Engine API as a user would, plays the overlay scenario: an encrypted overlay network,
nginx on a worker, a busybox client on a manager that pings, resolves and fetches it by name
over VXLAN and ESP, and `docker exec` into a standalone container on the overlay (with the
real docker CLI, when installed); then chaos: SIGKILL the leader in the middle of a stream of
writes (nothing acknowledged is lost, nothing is allocated twice), SIGKILL web's worker
(gossip declares it dead, it goes Down, web moves), a new client reaches web where it runs
now, and the old leader restarts and catches up.

Each step prints what a user would see; the demo exits non-zero when a check fails, so it
doubles as a smoke test.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from controlplane.lab.engine import EngineClient, EngineError
from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until


def _say(text: str = "") -> None:
    print(text, flush=True)


async def run_demo(state_dir: Path | None) -> int:
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
    async with lab.engine(node) as on_node:
        segments = (await on_node.datapath()).get("counters", {}).get("segments", {})
    for seg in segments.values():
        if seg.get("network") == "my-net":
            _say(
                f"   {node}'s data path on my-net: {seg['transport']}, frames in "
                f"{seg['frames_in']}, out {seg['frames_out']}, dropped {seg['dropped'] or 0}"
            )
    return "0% packet loss" in logs and "Welcome to nginx!" in logs


async def _docker(node: NodeProcess, *args: str) -> str:
    """The real docker CLI against `node`; its output (stderr too, to show what failed)."""
    cli = await asyncio.create_subprocess_exec(
        "docker", "-H", f"tcp://{node.api}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await cli.communicate()
    return out.decode()


async def _exec_probe(node: NodeProcess) -> bool:
    """A standalone container on my-net, and `docker exec` (no TTY) running wget in it."""
    await _docker(node, "run", "-d", "--name", "probe", "--network", "my-net", "busybox",
                  "sleep", "100000")  # fmt: skip
    page = await _docker(node, "exec", "probe", "wget", "-qO-", "http://web")
    title = [line for line in page.splitlines() if "<title>" in line] or page.splitlines()[:3]
    _say(f"   docker run -d --name probe --network my-net busybox sleep 100000 ({node.name})")
    _say("   docker exec probe wget -qO- http://web")
    for line in title:
        _say(f"     | {line}")
    await _docker(node, "rm", "-f", "probe")
    return "Welcome to nginx!" in page


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
        async with lab.engine(follower) as engine:
            _say(f"\n== 2. The overlay, through {follower.name} (a follower: it forwards)")
            net = await engine.request(
                "POST",
                "/networks/create",
                {
                    "Name": "my-net",
                    "Driver": "overlay",
                    "Attachable": True,
                    "Options": {"encrypted": ""},
                },
            )
            inspect = await engine.request("GET", f"/networks/{net['Id']}")
            vni = inspect["Options"].get("com.docker.network.driver.overlay.vxlanid_list")
            _say(
                f"   docker network create -d overlay --attachable --opt encrypted my-net: "
                f"subnet {inspect['IPAM']['Config'][0]['Subnet']}, VNI {vni}"
            )
            web = await _service(engine, "web", "nginx", [], "node.role==worker")
            placed = await until(
                lambda: _running_on(engine, web, 1, names, "web"), 60, "web running"
            )
            _say(f"   service web (nginx) on a worker: {', '.join(placed)}")
            checks["the client reached web by name over ESP"] = await _client_talks(
                lab, engine, "client", names
            )
            if shutil.which("docker") is not None:
                checks["docker exec fetched web from a standalone container"] = await _exec_probe(
                    lab.node("worker-2")
                )

        _say(f"\n== 3. SIGKILL the leader, {leader.name}, during a stream of network creates")
        acknowledged, first_write = await _writes_across_failover(lab, leader)
        checks["a write succeeded after the leader died"] = first_write is not None
        if first_write is not None:
            _say(f"   first write acknowledged {first_write:.2f} s after the kill")
        new_leader = await _leader(lab)
        _say(f"   new leader: {new_leader.name}")
        async with lab.engine(new_leader) as engine:
            networks = await engine.request("GET", "/networks")
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

        _say(f"\n== 5. Restart {leader.name} from its state directory: it catches up")
        leader.start()
        await lab.wait_api(leader)
        async with lab.engine(leader) as engine:

            async def caught_up() -> bool | None:
                held = {n["Name"] for n in await engine.request("GET", "/networks")}
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
            f"\n== 4. SIGKILL {worker.name}, web's node: heartbeats stop, gossip notices, web moves"
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
