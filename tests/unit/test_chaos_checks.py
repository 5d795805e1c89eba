"""The chaos invariants on hand-made snapshots of a lab, and the ledger that turns the
workload's answers into what the swarm must hold."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.api.networks import VXLAN_ID_OPTION
from controlplane.lab.chaos_checks import CheckResult, Snapshot, run_checks
from controlplane.lab.chaos_workload import CallRecord, Change, Ledger, Presence, TrackedObject

NODES = {"manager-1": "m1", "manager-2": "m2", "manager-3": "m3", "worker-1": "w1"}


def raft(role: str, applied: int = 40, term: int = 3, leader: str = "a1") -> dict[str, Any]:
    return {"role": role, "term": term, "commit": applied, "applied": applied, "leader": leader}


def network(name: str, ident: str, subnet: str, vni: int) -> dict[str, Any]:
    return {
        "Name": name,
        "Id": ident,
        "Scope": "swarm",
        "IPAM": {"Config": [{"Subnet": subnet}]},
        "Options": {VXLAN_ID_OPTION: str(vni)},
    }


def service(name: str, ident: str, replicas: int, generation: int = 0) -> dict[str, Any]:
    return {
        "ID": ident,
        "Spec": {
            "Name": name,
            "Mode": {"Replicated": {"Replicas": replicas}},
            "TaskTemplate": {"ContainerSpec": {"Env": [f"CHAOS_GENERATION={generation}"]}},
        },
        "Endpoint": {"VirtualIPs": [{"NetworkID": "net-a", "Addr": "10.0.1.2/24"}]},
    }


def task(service_id: str, address: str, state: str = "running") -> dict[str, Any]:
    return {
        "ServiceID": service_id,
        "DesiredState": "running",
        "Status": {"State": state},
        "NetworksAttachments": [{"Network": {"ID": "net-a"}, "Addresses": [f"{address}/24"]}],
    }


def healthy() -> Snapshot:
    return Snapshot(
        processes={name: True for name in NODES},
        rafts={
            "manager-1": raft("leader"),
            "manager-2": raft("follower"),
            "manager-3": raft("follower"),
        },
        gossip={
            name: {"members": [{"name": i, "state": "alive"} for i in NODES.values()]}
            for name in NODES
        },
        nodes=[
            {"ID": ident, "Description": {"Hostname": name}, "Status": {"State": "ready"}}
            for name, ident in NODES.items()
        ],
        networks=[
            network("ingress", "net-i", "10.0.0.0/24", 4096),
            network("chaos-net-1", "net-a", "10.0.1.0/24", 4097),
        ],
        services=[service("chaos-svc-2", "svc-b", 2)],
        tasks=[task("svc-b", "10.0.1.3"), task("svc-b", "10.0.1.4")],
        read_from="manager-1",
        listings={m: ["net-a", "net-i", "svc-b"] for m in ("manager-1", "manager-2", "manager-3")},
    )


def ledger() -> Ledger:
    book = Ledger()
    book.objects["chaos-net-1"] = TrackedObject("network", "chaos-net-1", Presence.PRESENT, "net-a")
    book.objects["chaos-svc-2"] = TrackedObject(
        "service",
        "chaos-svc-2",
        Presence.PRESENT,
        "svc-b",
        network="chaos-net-1",
        replicas={2},
        generations={0},
    )
    book.objects["chaos-net-3"] = TrackedObject("network", "chaos-net-3", Presence.ABSENT, "net-c")
    return book


def failing(results: list[CheckResult]) -> dict[str, str]:
    return {r.name: r.detail for r in results if not r.ok}


def test_a_converged_lab_that_kept_its_writes_passes_every_check() -> None:
    results = run_checks(healthy(), ledger())
    assert failing(results) == {}
    assert [r.name for r in results] == [
        "processes",
        "one leader",
        "raft applied",
        "managers agree",
        "nodes ready",
        "acknowledged writes",
        "no stale reads",
        "service networks",
        "unique names",
        "unique allocations",
        "replicas running",
        "gossip agrees",
    ]


def test_a_lost_acknowledged_create_and_a_resurrected_remove_fail() -> None:
    snapshot = healthy()
    snapshot.networks = [
        snapshot.networks[0],
        network("chaos-net-3", "net-c", "10.0.3.0/24", 4099),
    ]
    details = failing(run_checks(snapshot, ledger()))
    assert (
        "network chaos-net-1 (net-a) was acknowledged but is gone" in details["acknowledged writes"]
    )
    assert "network chaos-net-3 exists, but its remove" in details["acknowledged writes"]


def not_found(at: float, node: str, acknowledged: bool) -> CallRecord:
    detail = "service svc-b not found"
    return CallRecord(at, 1, node, "service scale", "chaos-svc-2", "rejected", 404, detail, 0.0,
                      acknowledged)  # fmt: skip


def test_a_not_found_for_an_acknowledged_object_is_a_stale_read() -> None:
    book = ledger()
    book.calls = [not_found(9.9, "manager-3", True), not_found(12.0, "manager-1", False)]
    details = failing(run_checks(healthy(), book))
    assert details == {
        "no stale reads": "manager-3 answered service scale of chaos-svc-2 at +9.9s with 404 "
        "(service svc-b not found), though its create was acknowledged"
    }


def test_a_scale_or_update_the_swarm_lost_fails() -> None:
    snapshot = healthy()
    snapshot.services = [service("chaos-svc-2", "svc-b", 3, generation=4)]
    details = failing(run_checks(snapshot, ledger()))["acknowledged writes"]
    assert "has 3 replicas, expected one of [2]" in details
    assert "at generation 4, expected one of [0]" in details


def test_anything_allocated_twice_fails() -> None:
    snapshot = healthy()
    snapshot.networks.append(network("other", "net-o", "10.0.1.0/24", 4097))
    snapshot.tasks.append(task("svc-b", "10.0.1.2"))  # the service's VIP
    details = failing(run_checks(snapshot, ledger()))["unique allocations"]
    assert "subnet 10.0.1.0/24 2 times" in details
    assert "VNI 4097 2 times" in details
    assert "address (network:IP) net-a:10.0.1.2 2 times" in details


def test_a_stopping_task_may_hand_its_address_on() -> None:
    snapshot = healthy()
    snapshot.tasks.append(task("svc-b", "10.0.1.3") | {"DesiredState": "shutdown"})
    assert "unique allocations" not in failing(run_checks(snapshot, ledger()))


def test_a_name_twice_fails() -> None:
    snapshot = healthy()
    snapshot.services.append(service("chaos-svc-2", "svc-x", 2))
    details = failing(run_checks(snapshot, ledger()))
    assert details["unique names"] == "service name chaos-svc-2 2 times"


def test_a_split_or_lagging_raft_fails() -> None:
    snapshot = healthy()
    snapshot.rafts["manager-2"] = raft("leader", applied=39, term=4, leader="a2")
    details = failing(run_checks(snapshot, ledger()))
    assert "2 managers lead (manager-1, manager-2)" in details["one leader"]
    assert "different terms" in details["one leader"]
    assert (
        "applied index differs: manager-1=40, manager-2=39, manager-3=40" in details["raft applied"]
    )


def test_a_manager_whose_store_differs_fails() -> None:
    snapshot = healthy()
    snapshot.listings["manager-3"] = ["net-i", "svc-b", "svc-z"]
    del snapshot.listings["manager-2"]
    details = failing(run_checks(snapshot, ledger()))["managers agree"]
    assert "manager-2 does not list" in details
    assert "manager-3 differs from manager-1: 1 objects only it lists, 1 it lacks" in details


def test_a_node_down_a_short_service_and_a_partial_gossip_view_fail() -> None:
    snapshot = healthy()
    snapshot.nodes[3]["Status"]["State"] = "down"
    snapshot.tasks[1] = task("svc-b", "10.0.1.4", state="starting")
    snapshot.gossip["manager-3"]["members"][3]["state"] = "suspect"
    snapshot.processes["worker-1"] = False
    details = failing(run_checks(snapshot, ledger()))
    assert details["nodes ready"] == "worker-1 is down"
    assert details["replicas running"] == "service chaos-svc-2 runs 1 of 2 replicas"
    assert details["gossip agrees"] == "manager-3 does not see worker-1 alive"
    assert details["processes"] == "worker-1 is not running"


def test_without_one_leader_the_swarm_checks_fail_clearly() -> None:
    snapshot = healthy()
    snapshot.read_from = ""
    details = failing(run_checks(snapshot, ledger()))
    assert details["nodes ready"] == "no single leader to ask"


@pytest.mark.parametrize(
    ("op", "outcome", "presence"),
    [
        ("network create", "ok", Presence.PRESENT),
        ("network create", "rejected", Presence.ABSENT),
        ("network create", "unknown", Presence.EITHER),
        ("service rm", "ok", Presence.ABSENT),
        ("service rm", "rejected", Presence.PRESENT),
        ("service rm", "unknown", Presence.EITHER),
    ],
)
def test_the_ledger_reads_creates_and_removes(op: str, outcome: str, presence: Presence) -> None:
    obj = TrackedObject(op.split()[0], "x", Presence.PRESENT)
    Ledger().account(op, obj, outcome, None)
    assert obj.presence is presence


def test_the_ledger_keeps_every_value_an_unknown_scale_may_have_written() -> None:
    book = ledger()
    obj = book.objects["chaos-svc-2"]
    book.account("service scale", obj, "unknown", Change("replicas", 3))
    assert obj.replicas == {2, 3}
    book.account("service scale", obj, "rejected", Change("replicas", 1))
    assert obj.replicas == {2, 3}
    book.account("service update", obj, "ok", Change("generations", 1))
    assert obj.generations == {1}
    snapshot = healthy()
    snapshot.services = [service("chaos-svc-2", "svc-b", 3, generation=1)]
    snapshot.tasks.append(task("svc-b", "10.0.1.5"))
    assert failing(run_checks(snapshot, book)) == {}


def race_call(
    race: int, op: str, target: str, outcome: str, status: int, detail: str
) -> CallRecord:
    return CallRecord(1.0, 1, "manager-1", op, target, outcome, status, detail, 0.1, False, race)


def test_a_service_whose_network_is_gone_fails() -> None:
    snapshot = healthy()
    snapshot.services[0]["Spec"]["TaskTemplate"]["Networks"] = [{"Target": "net-gone"}]
    details = failing(run_checks(snapshot, ledger()))
    assert (
        details["service networks"] == "service chaos-svc-2 names network net-gone, which is gone"
    )
    snapshot.services[0]["Spec"]["TaskTemplate"]["Networks"] = [{"Target": "net-a"}]
    assert "service networks" not in failing(run_checks(snapshot, ledger()))


def test_a_create_and_remove_race_must_not_win_twice() -> None:
    book = ledger()
    in_use = "rpc error: code = FailedPrecondition desc = network net-c is in use by service s"
    book.calls += [
        race_call(1, "service create", "chaos-svc-7", "ok", 200, ""),
        race_call(1, "network rm", "chaos-net-6", "rejected", 400, in_use),
        race_call(2, "service create", "chaos-svc-9", "rejected", 404, "network net-d not found"),
        race_call(2, "network rm", "chaos-net-8", "ok", 200, ""),
    ]
    results = {r.name: r for r in run_checks(healthy(), book)}
    assert results["service networks"].ok
    assert "none of 2 create/remove races won twice" in results["service networks"].detail
    book.calls += [
        race_call(3, "network rm", "chaos-net-10", "ok", 200, ""),
        race_call(3, "service create", "chaos-svc-11", "ok", 200, ""),
    ]
    assert failing(run_checks(healthy(), book))["service networks"] == (
        "race 3: service chaos-svc-11 was created and its network chaos-net-10 removed, "
        "both acknowledged"
    )
