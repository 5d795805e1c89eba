"""The invariants `swarmlab chaos run` checks once every fault is healed: the swarm converged
(one leader, the same Raft applied index and the same objects on every manager, every node
Ready, every replicated service at its replica count, every gossip view whole) and kept what it
promised (every acknowledged create exists, every acknowledged remove is gone, nothing refused
exists, no name, subnet, VNI, VIP or task IP twice).

`take_snapshot` reads the lab once (through the managers' Engine API and each node's lab API);
`run_checks` is pure over that snapshot and the workload's ledger, so every check is unit-tested
on hand-made snapshots. `converge` polls both until every check passes or the deadline passes,
and returns the last results either way.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from controlplane.api.networks import VXLAN_ID_OPTION
from controlplane.lab import control
from controlplane.lab.chaos_workload import Ledger, Presence, TrackedObject
from controlplane.lab.control import LabNode, LabState
from controlplane.lab.engine import EngineClient

SNAPSHOT_TIMEOUT = 10.0  # seconds for each read of a snapshot


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str  # what was checked when ok; what is wrong otherwise

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Snapshot:
    """What the lab looks like at one moment."""

    processes: dict[str, bool]  # lab node name -> its process runs
    rafts: dict[str, dict[str, Any]]  # manager name -> GET /swarmlab/raft
    gossip: dict[str, dict[str, Any]]  # node name -> GET /swarmlab/gossip
    nodes: list[dict[str, Any]] = field(default_factory=list)  # GET /nodes (from the leader)
    networks: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    read_from: str = ""  # the manager the swarm's objects were read from ('' when none led)
    # manager name -> the ids of the networks and services it lists itself
    listings: dict[str, list[str]] = field(default_factory=dict)


async def take_snapshot(state: LabState) -> Snapshot:
    managers = [n for n in state.nodes if n.name.startswith("manager-")]
    rafts, gossip = await asyncio.gather(
        control.raft_states(managers), control.gossip_views(state.nodes)
    )
    snapshot = Snapshot({n.name: n.alive() for n in state.nodes}, rafts, gossip)
    snapshot.listings = await _listings(managers)
    leaders = [name for name, raft in rafts.items() if raft["role"] == "leader"]
    if len(leaders) != 1:
        return snapshot
    snapshot.read_from = leaders[0]
    async with EngineClient(state.node(leaders[0]).api, timeout=SNAPSHOT_TIMEOUT) as engine:
        snapshot.nodes, snapshot.networks, snapshot.services, snapshot.tasks = await asyncio.gather(
            engine.request("GET", "/nodes"),
            engine.networks(),
            engine.request("GET", "/services"),
            engine.request("GET", "/tasks"),
        )
    return snapshot


async def _listings(managers: list[LabNode]) -> dict[str, list[str]]:
    """What each running manager lists from its own store: the ids of its networks and
    services."""

    async def one(node: LabNode) -> list[str]:
        async with EngineClient(node.api, timeout=SNAPSHOT_TIMEOUT) as engine:
            networks, services = await asyncio.gather(
                engine.networks(), engine.request("GET", "/services")
            )
        return sorted([n["Id"] for n in networks] + [s["ID"] for s in services])

    running = [m for m in managers if m.alive()]
    answers = await asyncio.gather(*(one(m) for m in running), return_exceptions=True)
    return {
        m.name: a for m, a in zip(running, answers, strict=True) if not isinstance(a, BaseException)
    }


def run_checks(snapshot: Snapshot, ledger: Ledger) -> list[CheckResult]:
    return [check(snapshot, ledger) for check in CHECKS]


async def converge(
    state: LabState,
    ledger: Ledger,
    timeout: float,
    progress: Callable[[str], None] = lambda _line: None,
    interval: float = 1.0,
) -> tuple[list[CheckResult], float]:
    """Check until every check passes or `timeout` seconds pass; returns the last results and
    the seconds it took."""
    started = time.monotonic()
    results: list[CheckResult] = []
    failing_before: set[str] = set()
    while True:
        try:
            results = run_checks(await take_snapshot(state), ledger)
        except Exception as err:  # a leader stepping down mid-read: read again
            results = [CheckResult("snapshot", False, f"could not read the lab: {err}")]
        failing = {r.name for r in results if not r.ok}
        elapsed = time.monotonic() - started
        if not failing or elapsed >= timeout:
            return results, elapsed
        if failing != failing_before:
            progress(f"  waiting for: {', '.join(sorted(failing))}")
            failing_before = failing
        await asyncio.sleep(interval)


def _result(name: str, problems: list[str], fine: str) -> CheckResult:
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        return CheckResult(name, False, shown)
    return CheckResult(name, True, fine)


def check_processes(snapshot: Snapshot, _ledger: Ledger) -> CheckResult:
    stopped = [f"{name} is not running" for name, up in snapshot.processes.items() if not up]
    return _result("processes", stopped, f"all {len(snapshot.processes)} node processes run")


def check_one_leader(snapshot: Snapshot, _ledger: Ledger) -> CheckResult:
    rafts = snapshot.rafts
    managers = [n for n in snapshot.processes if n.startswith("manager-")]
    problems = [f"{m} does not answer" for m in managers if m not in rafts]
    leaders = sorted(name for name, r in rafts.items() if r["role"] == "leader")
    if len(leaders) != 1:
        problems.append(f"{len(leaders)} managers lead ({', '.join(leaders) or 'none'})")
    named = {r["leader"] for r in rafts.values()}
    terms = {r["term"] for r in rafts.values()}
    if len(named) > 1 or "" in named:
        problems.append(f"the managers name different leaders: {_by_node(rafts, 'leader')}")
    if len(terms) > 1:
        problems.append(f"the managers are in different terms: {_by_node(rafts, 'term')}")
    fine = f"{leaders[0] if leaders else '?'} leads in term {min(terms, default=0)}"
    return _result("one leader", problems, fine)


def check_raft_applied(snapshot: Snapshot, _ledger: Ledger) -> CheckResult:
    rafts = snapshot.rafts
    applied = {r["applied"] for r in rafts.values()}
    commits = {r["commit"] for r in rafts.values()}
    problems = []
    if len(applied) > 1:
        problems.append(f"applied index differs: {_by_node(rafts, 'applied')}")
    if len(commits) > 1:
        problems.append(f"commit index differs: {_by_node(rafts, 'commit')}")
    fine = f"{len(rafts)} managers applied {max(applied, default=0)}"
    return _result("raft applied", problems, fine)


def check_managers_agree(snapshot: Snapshot, _ledger: Ledger) -> CheckResult:
    """Every manager lists the same networks and services from its own store: the same
    applied index must mean the same state."""
    problems = [f"{m} does not list" for m in snapshot.rafts if m not in snapshot.listings]
    reference_name = snapshot.read_from or min(snapshot.listings, default="")
    reference = set(snapshot.listings.get(reference_name, []))
    for name, listed in sorted(snapshot.listings.items()):
        only_here, missing = set(listed) - reference, reference - set(listed)
        if only_here or missing:
            problems.append(
                f"{name} differs from {reference_name}: {len(only_here)} objects only it "
                f"lists, {len(missing)} it lacks ({', '.join(sorted(only_here | missing)[:3])})"
            )
    fine = f"{len(snapshot.listings)} managers list the same {len(reference)} networks and services"
    return _result("managers agree", problems, fine)


def check_nodes_ready(snapshot: Snapshot, _ledger: Ledger) -> CheckResult:
    if not snapshot.read_from:
        return CheckResult("nodes ready", False, "no single leader to ask")
    by_name = {n["Description"]["Hostname"]: n for n in snapshot.nodes}
    problems = [
        f"{name} is not in the node list" for name in snapshot.processes if name not in by_name
    ]
    for name, node in sorted(by_name.items()):
        state = node["Status"]["State"]
        if state != "ready":
            problems.append(f"{name} is {state}")
        reachability = node.get("ManagerStatus", {}).get("Reachability", "reachable")
        if reachability != "reachable":
            problems.append(f"manager {name} is {reachability}")
    return _result("nodes ready", problems, f"{len(by_name)} nodes Ready")


def check_acknowledged(snapshot: Snapshot, ledger: Ledger) -> CheckResult:
    if not snapshot.read_from:
        return CheckResult("acknowledged writes", False, "no single leader to ask")
    listed = {
        "network": {n["Name"]: n for n in snapshot.networks},
        "service": {s["Spec"]["Name"]: s for s in snapshot.services},
    }
    problems: list[str] = []
    kept = gone = 0
    for obj in ledger.objects.values():
        found = listed[obj.kind].get(obj.name)
        if obj.presence is Presence.PRESENT:
            kept += 1
            problems += _missing_or_changed(obj, found)
        elif obj.presence is Presence.ABSENT and found is not None:
            gone += 1
            problems.append(
                f"{obj.kind} {obj.name} exists, but its remove was acknowledged "
                "or its create refused"
            )
        elif obj.presence is Presence.ABSENT:
            gone += 1
    fine = f"{kept} acknowledged objects exist, {gone} removed or refused ones do not"
    return _result("acknowledged writes", problems, fine)


def _missing_or_changed(obj: TrackedObject, found: dict[str, Any] | None) -> list[str]:
    if found is None:
        return [f"{obj.kind} {obj.name} ({obj.id[:12]}) was acknowledged but is gone"]
    found_id = found.get("Id") or found.get("ID")
    if found_id != obj.id:
        return [f"{obj.kind} {obj.name} has id {found_id}, but its create answered {obj.id}"]
    if obj.kind != "service":
        return []
    problems = []
    replicas = found["Spec"].get("Mode", {}).get("Replicated", {}).get("Replicas")
    if replicas not in obj.replicas:
        problems.append(
            f"service {obj.name} has {replicas} replicas, expected one of {sorted(obj.replicas)}"
        )
    env = found["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env", [])
    generation = next(
        (int(e.split("=", 1)[1]) for e in env if e.startswith("CHAOS_GENERATION=")), None
    )
    if generation not in obj.generations:
        problems.append(
            f"service {obj.name} is at generation {generation}, "
            f"expected one of {sorted(obj.generations)}"
        )
    return problems


def check_no_stale_reads(_snapshot: Snapshot, ledger: Ledger) -> CheckResult:
    """No call answered 'not found' for an object whose create was acknowledged and which no
    remove had been sent for: every manager's answers include every acknowledged write."""
    stale = [
        f"{c.node} answered {c.op} of {c.target} at +{c.at:.1f}s with {c.status} "
        f"({c.detail}), though its create was acknowledged"
        for c in ledger.calls
        if c.acknowledged and c.status == 404
    ]
    fine = f"no call missed an acknowledged object ({len(ledger.calls)} calls)"
    return _result("no stale reads", stale, fine)


def check_service_networks(snapshot: Snapshot, ledger: Ledger) -> CheckResult:
    """No service names a network that is gone, and no deliberate race (a service create and
    the remove of its network, together) had both calls acknowledged: Docker answers the
    remove "network ... is in use" or the create "network ... not found"."""
    problems = []
    if snapshot.read_from:
        networks = {n["Id"] for n in snapshot.networks} | {n["Name"] for n in snapshot.networks}
        for service in snapshot.services:
            template = service["Spec"].get("TaskTemplate", {})
            lost = [
                a["Target"] for a in template.get("Networks", []) if a["Target"] not in networks
            ]
            if lost:
                problems.append(
                    f"service {service['Spec']['Name']} names network {', '.join(lost)}, "
                    "which is gone"
                )
    races = ledger.races()
    for race, calls in sorted(races.items()):
        if len(calls) == 2 and all(c.outcome == "ok" for c in calls):
            create, remove = sorted(calls, key=lambda c: c.op != "service create")
            problems.append(
                f"race {race}: service {create.target} was created and its network "
                f"{remove.target} removed, both acknowledged"
            )
    fine = f"every service's networks exist; none of {len(races)} create/remove races won twice"
    return _result("service networks", problems, fine)


def check_unique_names(snapshot: Snapshot, _ledger: Ledger) -> CheckResult:
    problems = _twice("network name", (n["Name"] for n in snapshot.networks))
    problems += _twice("service name", (s["Spec"]["Name"] for s in snapshot.services))
    fine = f"{len(snapshot.networks)} networks, {len(snapshot.services)} services, no name twice"
    return _result("unique names", problems, fine)


def check_unique_allocations(snapshot: Snapshot, _ledger: Ledger) -> CheckResult:
    """Subnets and VNIs across the swarm's networks; within each network, its service VIPs
    and the IPs of its live tasks."""
    swarm_networks = [n for n in snapshot.networks if n.get("Scope") == "swarm"]
    subnets = [
        c["Subnet"] for n in swarm_networks for c in (n.get("IPAM") or {}).get("Config") or []
    ]
    vnis = [
        n["Options"][VXLAN_ID_OPTION]
        for n in swarm_networks
        if VXLAN_ID_OPTION in (n.get("Options") or {})
    ]
    problems = _twice("subnet", subnets) + _twice("VNI", vnis)
    addresses: list[str] = []
    for service in snapshot.services:
        for vip in service.get("Endpoint", {}).get("VirtualIPs", []):
            addresses.append(f"{vip['NetworkID'][:12]}:{vip['Addr'].split('/')[0]}")
    for task in snapshot.tasks:
        if task.get("DesiredState") not in ("running", "ready", "accepted"):
            continue  # a stopping task's address is released to be used again
        for attachment in task.get("NetworksAttachments", []):
            network = attachment["Network"]["ID"][:12]
            addresses += [f"{network}:{a.split('/')[0]}" for a in attachment.get("Addresses", [])]
    problems += _twice("address (network:IP)", addresses)
    fine = (
        f"{len(subnets)} subnets, {len(vnis)} VNIs, {len(addresses)} VIPs and task IPs, none twice"
    )
    return _result("unique allocations", problems, fine)


def check_replicas_running(snapshot: Snapshot, _ledger: Ledger) -> CheckResult:
    if not snapshot.read_from:
        return CheckResult("replicas running", False, "no single leader to ask")
    running = Counter(
        t["ServiceID"]
        for t in snapshot.tasks
        if t.get("DesiredState") == "running" and t.get("Status", {}).get("State") == "running"
    )
    problems = []
    replicated = 0
    for service in snapshot.services:
        wanted = service["Spec"].get("Mode", {}).get("Replicated", {}).get("Replicas")
        if wanted is None:
            continue
        replicated += 1
        if running[service["ID"]] != wanted:
            problems.append(
                f"service {service['Spec']['Name']} runs {running[service['ID']]} "
                f"of {wanted} replicas"
            )
    return _result("replicas running", problems, f"{replicated} replicated services at their count")


def check_gossip(snapshot: Snapshot, _ledger: Ledger) -> CheckResult:
    if not snapshot.read_from:
        return CheckResult("gossip agrees", False, "no single leader to ask")
    hostnames = {n["ID"]: n["Description"]["Hostname"] for n in snapshot.nodes}
    problems = [
        f"{name}'s gossip does not answer"
        for name in snapshot.processes
        if name not in snapshot.gossip
    ]
    for name, view in sorted(snapshot.gossip.items()):
        alive = {m["name"] for m in view.get("members", []) if m["state"] == "alive"}
        missing = sorted(hostnames[i] for i in set(hostnames) - alive)
        if missing:
            problems.append(f"{name} does not see {', '.join(missing)} alive")
        unknown = sorted(alive - set(hostnames))
        if unknown:
            problems.append(f"{name} sees members the swarm does not list: {', '.join(unknown)}")
    return _result(
        "gossip agrees", problems, f"{len(snapshot.gossip)} nodes see all {len(hostnames)} alive"
    )


def _twice(what: str, values: Iterable[str]) -> list[str]:
    return [f"{what} {value} {n} times" for value, n in sorted(Counter(values).items()) if n > 1]


def _by_node(rafts: dict[str, dict[str, Any]], key: str) -> str:
    return ", ".join(f"{name}={raft[key]}" for name, raft in sorted(rafts.items()))


CHECKS: tuple[Callable[[Snapshot, Ledger], CheckResult], ...] = (
    check_processes,
    check_one_leader,
    check_raft_applied,
    check_managers_agree,
    check_nodes_ready,
    check_acknowledged,
    check_no_stale_reads,
    check_service_networks,
    check_unique_names,
    check_unique_allocations,
    check_replicas_running,
    check_gossip,
)
