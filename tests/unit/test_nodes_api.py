"""`POST /nodes/{id}/update` and `DELETE /nodes/{id}` over the LocalBackend: every decision
the API takes itself (versions, bad bodies, swarmkit's refusals), each response checked
against the v1.41 spec."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from controlplane.api import create_app
from controlplane.api.backend import ManagerInfo, NodeInfo, RaftMembers
from controlplane.api.errors import NOT_A_MANAGER_MESSAGE
from controlplane.api.local import LocalBackend
from controlplane.manager.ca import RootCA
from controlplane.pb.objects_pb2 import Cluster, Node, Task
from controlplane.raft.errors import NO_LEADER_MESSAGE
from controlplane.store import StoreError, Transaction
from tests.unit.swarm_fixture import ready_node
from tests.unit.test_api import Api

LOCAL = "localnode0000000000000000"
MANAGER_2 = "manager2000000000000000000"
MANAGER_3 = "manager3000000000000000000"
WORKER = "worker00000000000000000000"
PRECONDITION = "rpc error: code = FailedPrecondition desc = "
UPDATE = "/nodes/{id}/update"


async def put(backend: LocalBackend, *objects: Node | Task) -> None:
    txn = Transaction()
    for obj in objects:
        txn.create(obj)
    assert StoreError.from_result(await backend.propose(txn.encode())) is None


def run(test: Callable[[Api], Awaitable[None]], *, managers: int = 1) -> None:
    """A swarm of `managers` managers (all Raft voters, all reachable) and one worker."""

    async def main() -> None:
        backend = LocalBackend()
        ids = [LOCAL, MANAGER_2, MANAGER_3][:managers]
        nodes = [ready_node(node_id, f"m{i + 1}", role="manager") for i, node_id in enumerate(ids)]
        await put(backend, *nodes, ready_node(WORKER, "w1"))
        backend.raft = RaftMembers(voters=frozenset(ids), reachable=frozenset(ids))
        async with TestClient(TestServer(create_app(backend))) as client:
            await test(Api(client, backend))

    asyncio.run(main())


async def inspect(api: Api, ref: str) -> dict[str, Any]:
    status, node = await api.call("GET", f"/v1.41/nodes/{ref}", "/nodes/{id}")
    assert status == 200
    return dict(node)


async def update(
    api: Api, ref: str, version: int | str | None = None, **spec: Any
) -> tuple[int, Any]:
    """The docker CLI's way: inspect, change the spec, send it back with the version read."""
    node = await inspect(api, ref)
    body = {**node["Spec"], **spec}
    version = node["Version"]["Index"] if version is None else version
    return await api.call(
        "POST", f"/v1.41/nodes/{ref}/update", UPDATE, body=body, params={"version": str(version)}
    )


async def remove(api: Api, ref: str, force: str | None = None) -> tuple[int, Any]:
    params = {"force": force} if force is not None else None
    return await api.call("DELETE", f"/v1.41/nodes/{ref}", "/nodes/{id}", params=params)


# ---- update ----------------------------------------------------------------------------


def test_update_sets_labels_availability_and_name_and_moves_the_version() -> None:
    async def t(api: Api) -> None:
        before = await inspect(api, "w1")
        status, body = await update(
            api, "w1", Labels={"zone": "a", "disk": "ssd"}, Availability="drain", Name="edge"
        )
        assert (status, body) == (200, None)
        after = await inspect(api, "w1")
        assert after["Spec"] == {
            "Name": "edge",
            "Labels": {"zone": "a", "disk": "ssd"},
            "Role": "worker",
            "Availability": "drain",
        }
        assert after["Version"]["Index"] > before["Version"]["Index"]
        status, _ = await update(api, "w1", Labels={}, Availability="ACTIVE")
        assert status == 200
        assert (await inspect(api, WORKER))["Spec"]["Availability"] == "active"
        assert (await inspect(api, WORKER))["Spec"]["Labels"] == {}

    run(t)


def test_update_with_a_stale_version_is_out_of_sequence() -> None:
    async def t(api: Api) -> None:
        stale = (await inspect(api, "w1"))["Version"]["Index"]
        assert (await update(api, "w1", Availability="pause"))[0] == 200
        status, err = await update(api, "w1", version=stale, Availability="drain")
        assert status == 500
        assert err == {"message": "rpc error: code = Unknown desc = update out of sequence"}
        assert (await inspect(api, "w1"))["Spec"]["Availability"] == "pause"

    run(t)


def test_update_refuses_a_version_that_is_not_an_unsigned_integer() -> None:
    async def t(api: Api) -> None:
        for text in ("", "abc", "-1"):
            status, err = await update(api, "w1", version=text)
            assert status == 400
            assert err["message"].startswith(
                f"invalid node version '{text}': strconv.ParseUint: parsing \"{text}\": "
                "invalid syntax"
            )
        status, err = await update(api, "w1", version=str(1 << 64))
        assert status == 400 and err["message"].endswith("value out of range")

    run(t)


def test_update_refuses_bad_bodies_naming_the_field() -> None:
    async def t(api: Api) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"Role": "boss"}, 'invalid Role: "boss"'),
            ({"Role": ""}, 'invalid Role: ""'),
            ({"Role": 3}, 'invalid Role: "3"'),
            ({"Availability": "asleep"}, 'invalid Availability: "asleep"'),
            ({"Labels": ["a=b"]}, "invalid node spec: Labels must map strings to strings"),
            ({"Labels": {"a": 1}}, "invalid node spec: Labels must map strings to strings"),
            ({"Name": 7}, "invalid node spec: Name must be a string, got 7"),
        ]
        for change, message in cases:
            status, err = await update(api, "w1", **change)
            assert status == 400, change
            assert err["message"].startswith(message), (change, err)
        node = await inspect(api, "w1")
        status, err = await api.call(
            "POST",
            "/v1.41/nodes/w1/update",
            UPDATE,
            raw=b"{not json",
            params={"version": str(node["Version"]["Index"])},
        )
        assert status == 400 and err["message"].startswith("invalid JSON in the request body")
        assert (await inspect(api, "w1"))["Version"] == node["Version"]

    run(t)


def test_update_of_an_unknown_node_is_not_found() -> None:
    async def t(api: Api) -> None:
        status, err = await api.call(
            "POST",
            "/v1.41/nodes/nope/update",
            UPDATE,
            body={"Role": "worker", "Availability": "active"},
            params={"version": "1"},
        )
        assert status == 404 and err == {"message": "node nope not found"}

    run(t)


def test_promotion_only_records_the_desired_role() -> None:
    async def t(api: Api) -> None:
        assert (await update(api, "w1", Role="manager"))[0] == 200
        node = await inspect(api, "w1")
        assert node["Spec"]["Role"] == "manager"
        stored = api.backend.store.get(Node, WORKER)
        assert stored is not None and stored.role == "worker"  # the role manager's job

    run(t)


def test_demoting_the_last_manager_is_refused() -> None:
    async def t(api: Api) -> None:
        status, err = await update(api, "m1", Role="worker")
        assert status == 400
        assert err == {
            "message": PRECONDITION + "attempting to demote the last manager of the swarm"
        }
        assert (await inspect(api, "m1"))["Spec"]["Role"] == "manager"

    run(t)


def test_demotion_that_would_lose_quorum_is_refused() -> None:
    async def t(api: Api) -> None:
        voters = frozenset({LOCAL, MANAGER_2, MANAGER_3})
        api.backend.raft = RaftMembers(voters=voters, reachable=voters - {MANAGER_3})
        # Without m2 only m1 of {m1, m3} is reachable: no majority.
        status, err = await update(api, "m2", Role="worker")
        assert status == 400
        assert err == {
            "message": PRECONDITION
            + "can't remove member from the raft: this would result in a loss of quorum"
        }
        # Without the unreachable m3, m1 and m2 are both reachable: allowed.
        assert (await update(api, "m3", Role="worker"))[0] == 200
        assert (await inspect(api, "m3"))["Spec"]["Role"] == "worker"

    run(t, managers=3)


def test_demoting_a_manager_outside_the_raft_membership_is_not_found() -> None:
    async def t(api: Api) -> None:
        api.backend.raft = RaftMembers(voters=frozenset({LOCAL}), reachable=frozenset({LOCAL}))
        status, err = await update(api, "m2", Role="worker")
        assert status == 404
        assert err == {
            "message": "rpc error: code = NotFound desc = can't find manager in raft memberlist"
        }

    run(t, managers=2)


def test_demoting_a_learner_keeps_the_quorum() -> None:
    async def t(api: Api) -> None:
        api.backend.raft = RaftMembers(
            voters=frozenset({LOCAL}),
            learners=frozenset({MANAGER_2}),
            reachable=frozenset({LOCAL}),
        )
        assert (await update(api, "m2", Role="worker"))[0] == 200

    run(t, managers=2)


def test_update_on_a_worker_or_without_quorum() -> None:
    async def t(api: Api) -> None:
        api.backend.no_quorum = True
        status, err = await update(api, "w1", Availability="drain")
        assert status == 500 and err == {"message": NO_LEADER_MESSAGE}
        api.backend.no_quorum = False
        api.backend.set_role("worker")
        status, err = await api.call(
            "POST",
            "/v1.41/nodes/w1/update",
            UPDATE,
            body={"Role": "worker", "Availability": "drain"},
            params={"version": "1"},
        )
        assert status == 503 and err == {"message": NOT_A_MANAGER_MESSAGE}

    run(t)


# ---- remove ----------------------------------------------------------------------------


def _task(task_id: str, node_id: str, state: str) -> Task:
    task = Task(id=task_id, service_id="svc", node_id=node_id, desired_state="running")
    task.status.state = state
    return task


async def _mark(api: Api, node_id: str, state: str) -> None:
    node = api.backend.store.get(Node, node_id)
    assert node is not None
    node.status.state = state
    assert (
        StoreError.from_result(await api.backend.propose(Transaction().update(node).encode()))
        is None
    )


def test_removing_a_ready_node_needs_force() -> None:
    async def t(api: Api) -> None:
        status, err = await remove(api, "w1")
        assert status == 400
        assert err == {"message": PRECONDITION + f"node {WORKER} is not down and can't be removed"}
        status, _ = await remove(api, "w1", force="false")
        assert status == 400
        assert (await remove(api, "w1", force="1"))[0] == 200
        assert api.backend.store.get(Node, WORKER) is None

    run(t)


def test_removing_a_down_worker_orphans_its_unfinished_tasks() -> None:
    async def t(api: Api) -> None:
        await put(
            api.backend,
            _task("running0000000000000000000", WORKER, "running"),
            _task("finished000000000000000000", WORKER, "complete"),
            _task("elsewhere00000000000000000", LOCAL, "running"),
        )
        await _mark(api, WORKER, "down")
        assert (await remove(api, WORKER[:6]))[0] == 200
        store = api.backend.store
        assert store.get(Node, WORKER) is None
        states = {t.id[:8]: (t.status.state, t.status.message) for t in store.list(Task)}
        assert states["running0"] == ("orphaned", "Task belonged to a node that has been deleted")
        assert states["finished"][0] == "complete"
        assert states["elsewher"][0] == "running"
        status, err = await remove(api, WORKER)
        assert status == 404 and err == {"message": f"node {WORKER} not found"}

    run(t)


def test_removing_a_raft_member_is_refused_even_forced() -> None:
    async def t(api: Api) -> None:
        await _mark(api, MANAGER_2, "down")
        for force in (None, "true"):
            status, err = await remove(api, "m2", force)
            assert status == 400
            assert err == {
                "message": PRECONDITION
                + f"node {MANAGER_2} is a cluster manager and is a member of the raft cluster. "
                "It must be demoted to worker before removal"
            }
        # Once out of the Raft membership (demoted, or never joined), it goes like a worker.
        api.backend.raft = RaftMembers(voters=frozenset({LOCAL}), reachable=frozenset({LOCAL}))
        assert (await remove(api, "m2"))[0] == 200

    run(t, managers=2)


def test_remove_on_a_worker_is_refused() -> None:
    async def t(api: Api) -> None:
        api.backend.set_role("worker")
        status, err = await remove(api, "w1", "1")
        assert status == 503 and err == {"message": NOT_A_MANAGER_MESSAGE}

    run(t)


def test_inspect_shows_resources_plugins_and_the_swarms_tls_info() -> None:
    """What `docker node inspect --pretty` prints under Resources, Plugins and TLS Info (real
    20.10: the node's CPUs and memory, the engine's plugins, the root CA)."""

    async def t(api: Api) -> None:
        worker = api.backend.store.get(Node, WORKER)
        assert worker is not None
        worker.description.nano_cpus, worker.description.memory_bytes = 2_000_000_000, 1 << 34
        root = RootCA.create()
        [cluster] = api.backend.store.list(Cluster)
        cluster.root_ca.ca_cert_pem = root.cert_pem
        await api.backend.propose(Transaction().update(worker).update(cluster).encode())
        description = (await inspect(api, WORKER))["Description"]
        assert list(description) == ["Hostname", "Platform", "Resources", "Engine", "TLSInfo"]
        assert description["Resources"] == {"NanoCPUs": 2_000_000_000, "MemoryBytes": 1 << 34}
        assert {"Type": "Network", "Name": "overlay"} in description["Engine"]["Plugins"]
        tls = description["TLSInfo"]
        assert tls["TrustRoot"] == root.cert_pem.decode()
        assert base64.b64decode(tls["CertIssuerSubject"]) == (
            x509.load_pem_x509_certificate(root.cert_pem).subject.public_bytes()
        )

    run(t)


def test_a_follower_lists_the_managers_as_the_leader_sees_them() -> None:
    """Real 20.10 answers `docker node ls` on any manager from the leader, which hears from
    every manager: a follower shows the others Reachable (or Unreachable), not Unknown; with
    no leader to ask it shows its own view."""

    async def main() -> None:
        info = NodeInfo(
            node_id=LOCAL,
            hostname="m1",
            addr="127.0.0.1",
            is_leader=False,
            managers=(
                ManagerInfo(LOCAL, "127.0.0.1:2377", reachability="reachable"),
                ManagerInfo(MANAGER_2, "127.0.0.2:2377", leader=True, reachability="reachable"),
                ManagerInfo(MANAGER_3, "127.0.0.3:2377", reachability="unknown"),
            ),
        )
        backend = LocalBackend(info)
        await put(backend, *[ready_node(m.node_id, m.node_id[:8], role="manager")
                             for m in info.managers])  # fmt: skip
        voters = frozenset({LOCAL, MANAGER_2, MANAGER_3})
        backend.raft = RaftMembers(voters=voters, reachable=frozenset({LOCAL, MANAGER_2}))
        async with TestClient(TestServer(create_app(backend))) as client:
            api = Api(client, backend)
            status, listed = await api.call("GET", "/v1.41/nodes", "/nodes")
            assert status == 200
            shown = {n["ID"]: n["ManagerStatus"]["Reachability"] for n in listed}
            assert shown == {LOCAL: "reachable", MANAGER_2: "reachable", MANAGER_3: "unreachable"}
            backend.no_quorum = True  # no leader answers: the follower's own view
            status, listed = await api.call("GET", "/v1.41/nodes", "/nodes")
            assert {n["ID"]: n["ManagerStatus"]["Reachability"] for n in listed}[MANAGER_3] == (
                "unknown"
            )

    asyncio.run(main())


def test_the_label_filter_takes_engine_labels_and_node_label_the_nodes() -> None:
    """`docker node ls -f label=...` filters on the engine's labels (dockerd --label), and
    `-f node.label=...` on the node's own (`docker node update --label-add`), as dockerd."""

    async def t(api: Api) -> None:
        worker = api.backend.store.get(Node, WORKER)
        assert worker is not None
        worker.description.engine_labels["disk"] = "ssd"
        worker.spec.annotations.labels["zone"] = "a"
        await api.backend.propose(Transaction().update(worker).encode())

        async def listed(**filters: list[str]) -> list[str]:
            query = {"filters": json.dumps(filters)}
            status, nodes = await api.call("GET", "/v1.41/nodes", "/nodes", params=query)
            assert status == 200
            return [n["ID"] for n in nodes]

        assert await listed(label=["disk=ssd"]) == [WORKER]
        assert await listed(label=["zone=a"]) == []
        assert await listed(**{"node.label": ["zone=a"]}) == [WORKER]
        assert (await inspect(api, WORKER))["Description"]["Engine"]["Labels"] == {"disk": "ssd"}

    run(t)
