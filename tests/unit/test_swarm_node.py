"""`SwarmNode` in this process: the engine outside a swarm, a state directory it cannot resume
(certificates gone), joins that fail, one `swarm init` and `leave`, and the address rules of
`--listen-addr`/`--advertise-addr`. The integration tests cover swarms of node processes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controlplane.agent.local_network_ids import LOCAL_NETWORKS_FILE
from controlplane.api.backend import LocalState, ManagerInfo, SwarmInit, SwarmJoin
from controlplane.api.errors import (
    NO_SWARM_MESSAGE,
    NOT_A_MANAGER_MESSAGE,
    NOT_IN_SWARM_MESSAGE,
    SWARM_EXISTS_MESSAGE,
    ApiError,
)
from controlplane.lab.swarm_lab import until
from controlplane.manager.ca import RootCA
from controlplane.manager.cluster import the_cluster
from controlplane.manager.roles import WORKER_ROLE
from controlplane.manager.tokens import generate_token
from controlplane.membership import Membership
from controlplane.node import ENGINE_ID_FILE, STATE_FILE, NodeOptions, SwarmNode
from controlplane.pb.objects_pb2 import Network, NetworkSpec, Node
from controlplane.process import NodeError
from controlplane.store import ErrorKind, StoreError, Transaction
from tests.unit.in_process_node import run_node

SUBNET = "127.77.249"  # .10-.29: this file's node addresses, one a test


async def refused(call: Awaitable[Any], status: int, message: str) -> None:
    with pytest.raises(ApiError) as err:
        await call
    assert (err.value.status, str(err.value)) == (status, message)


def test_outside_a_swarm(tmp_path: Path) -> None:
    """Inactive, no manager calls, nothing to leave; the engine id survives a restart."""
    options = NodeOptions(tmp_path, f"{SUBNET}.10", hostname="win-1", platform="windows")
    ids = []

    async def scenario(node: SwarmNode) -> None:
        assert node.local_state() == LocalState("inactive", "")
        info = node.node_info()
        assert (info.local_node_state, info.role, info.node_id, info.os) == (
            "inactive",
            "",
            "",
            "windows",
        )
        assert info.hostname == "win-1" and info.engine_id == node.engine_id
        assert any("encryption is not applied" in w for w in info.warnings)
        ids.append(node.engine_id)
        await refused(node.propose(b""), 503, NO_SWARM_MESSAGE)
        await refused(node.create_network(NetworkSpec()), 503, NO_SWARM_MESSAGE)
        await refused(node.raft_members(), 503, NO_SWARM_MESSAGE)
        await refused(node.linearizable_read(), 503, NO_SWARM_MESSAGE)
        await refused(node.swarm_leave(force=True), 503, NOT_IN_SWARM_MESSAGE)
        assert node.store.applied_index == 0  # an empty store, not an error

    run_node(options, scenario)
    run_node(options, scenario)
    assert ids[0] == ids[1] == (tmp_path / ENGINE_ID_FILE).read_text()


def test_a_state_directory_without_its_certificates(tmp_path: Path) -> None:
    """`swarm.json` says worker, the certificates are gone: the engine still serves, in state
    "error" naming why, refuses another init or join, and `swarm leave` gets it out."""
    Membership(
        node_id="n1",
        cluster_id="c1",
        role="worker",
        listen_addr=f"{SUBNET}.12:2377",
        advertise_addr=f"{SUBNET}.12:2377",
        data_path_addr="",
        managers=[f"{SUBNET}.13:2377"],
    ).save(tmp_path / STATE_FILE)

    async def scenario(node: SwarmNode) -> None:
        state = node.local_state()
        assert (state.local_node_state, state.role) == ("error", "worker")
        assert str(tmp_path / "certificates") in state.error
        info = node.node_info()
        assert (info.node_id, info.cluster_id, info.addr) == ("n1", "c1", f"{SUBNET}.12")
        assert (info.local_node_state, info.error) == ("error", state.error)
        assert node.agent is None and node.gossip is None  # nothing half started
        await refused(node.swarm_init(SwarmInit()), 503, SWARM_EXISTS_MESSAGE)
        await refused(node.swarm_join(SwarmJoin(("x:2377",), "t")), 503, SWARM_EXISTS_MESSAGE)
        await refused(node.propose(b""), 503, NOT_A_MANAGER_MESSAGE)
        await refused(
            node.swarm_init(SwarmInit(force_new_cluster=True)), 503, NOT_A_MANAGER_MESSAGE
        )
        await node.swarm_leave(force=False)
        assert node.local_state() == LocalState("inactive", "")
        assert not (tmp_path / STATE_FILE).exists()

    run_node(NodeOptions(tmp_path, f"{SUBNET}.12"), scenario)


def test_a_damaged_state_file_stops_the_start_naming_what_to_do(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text('{"node_id": "n1", "role": "leader"}')

    async def main() -> None:
        with pytest.raises(NodeError, match=f"remove {tmp_path} to start this node afresh"):
            await SwarmNode(NodeOptions(tmp_path, f"{SUBNET}.14")).start()

    asyncio.run(main())


def test_a_join_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    token = generate_token(RootCA.create().cert_pem, WORKER_ROLE)

    async def scenario(node: SwarmNode) -> None:
        # No manager at the address (port 1 of our own address: nothing listens there).
        with pytest.raises(ApiError) as err:
            await node.swarm_join(SwarmJoin((f"{SUBNET}.16:1",), token))
        assert err.value.status == 500
        assert f"could not connect to the manager at {SUBNET}.16:1" in str(err.value)
        with pytest.raises(ApiError, match="invalid join token"):
            await node.swarm_join(SwarmJoin((f"{SUBNET}.16",), "SWMTKN-1-nonsense"))
        assert node.local_state() == LocalState("inactive", "")
        # what the engine made at its start (its id, its local networks'), nothing of a swarm
        assert sorted(p.name for p in tmp_path.iterdir()) == [ENGINE_ID_FILE, LOCAL_NETWORKS_FILE]

    run_node(NodeOptions(tmp_path, f"{SUBNET}.16"), scenario)


def test_init_then_leave_as_the_last_manager(tmp_path: Path) -> None:
    async def scenario(node: SwarmNode) -> None:
        node_id = await node.swarm_init(SwarmInit())
        info = node.node_info()
        assert (info.node_id, info.role, info.local_node_state) == (node_id, "manager", "active")
        assert info.addr == f"{SUBNET}.18" and info.is_leader and info.nodes == 1
        assert info.managers == (ManagerInfo(node_id, f"{SUBNET}.18:2377", True, "reachable"),)
        members = await node.raft_members()
        assert (members.voters, members.learners) == (frozenset({node_id}), frozenset())
        await node.linearizable_read()
        await node.prepare_write()
        spec = NetworkSpec(driver="overlay")
        spec.annotations.name = "backend"
        network = await node.create_network(spec)
        assert node.store.get(Network, network.id) is not None
        # --force-new-cluster on a manager: the same node, a new Raft cluster, the state kept.
        assert await node.swarm_init(SwarmInit(force_new_cluster=True)) == node_id
        assert node.local_state() == LocalState("active", "manager")
        assert node.store.get(Network, network.id) is not None
        spec.annotations.name = "after"
        await node.create_network(spec)  # the new cluster has a leader and takes writes
        assert (tmp_path / STATE_FILE).exists() and (tmp_path / "raft").is_dir()
        await refused(node.swarm_init(SwarmInit()), 503, SWARM_EXISTS_MESSAGE)
        with pytest.raises(ApiError, match="Removing the last manager erases all current state"):
            await node.swarm_leave(force=False)
        await node.swarm_leave(force=True)
        assert node.local_state() == LocalState("inactive", "")
        assert not (tmp_path / "raft").exists() and not (tmp_path / "certificates").exists()

    run_node(NodeOptions(tmp_path, f"{SUBNET}.18", profile="lab", dns_upstreams=[]), scenario)


@pytest.mark.parametrize(
    ("requested", "listen"),
    [
        ("", f"{SUBNET}.20:2377"),
        ("0.0.0.0:2377", f"{SUBNET}.20:2377"),
        ("0.0.0.0:2400", f"{SUBNET}.20:2400"),
        (":2401", f"{SUBNET}.20:2401"),
        ("127.0.0.9:2377", "127.0.0.9:2377"),
        ("127.0.0.9:", "127.0.0.9:2377"),
    ],
)
def test_the_listen_address(tmp_path: Path, requested: str, listen: str) -> None:
    assert SwarmNode(NodeOptions(tmp_path, f"{SUBNET}.20"))._listen(requested) == listen


@pytest.mark.parametrize(
    ("requested", "advertise"),
    [
        ("", "10.0.0.1:2400"),
        ("10.0.0.2", "10.0.0.2:2400"),
        ("10.0.0.2:7777", "10.0.0.2:7777"),
        ("eth0:x", "eth0:x:2400"),  # no numeric port: the listen port is added
    ],
)
def test_the_advertise_address(tmp_path: Path, requested: str, advertise: str) -> None:
    node = SwarmNode(NodeOptions(tmp_path, f"{SUBNET}.20"))
    assert node._advertise(requested, "10.0.0.1:2400") == advertise


def fake_driver(voters: int, leave_fails: bool) -> Any:
    async def leave(_request: object) -> None:
        if leave_fails:
            raise RuntimeError("no leader")

    return SimpleNamespace(core=SimpleNamespace(voters=set(range(voters))), node_id=1, leave=leave)


def test_a_manager_leaves_raft_only_with_force(tmp_path: Path) -> None:
    node = SwarmNode(NodeOptions(tmp_path, f"{SUBNET}.20"))

    async def main() -> None:
        with pytest.raises(ApiError, match="Removing this node leaves 2 managers out of 3"):
            await node._leave_raft(fake_driver(3, leave_fails=False), force=False)
        # --force leaves even when the Raft leave fails (no leader, no quorum), as dockerd.
        await node._leave_raft(fake_driver(3, leave_fails=True), force=True)

    asyncio.run(main())


def test_a_certificate_renewal_with_no_manager_to_ask_says_so(tmp_path: Path) -> None:
    node = SwarmNode(NodeOptions(tmp_path, f"{SUBNET}.20"))
    root = RootCA.create()
    with pytest.raises(NodeError, match="no other manager is known to renew this node's"):
        asyncio.run(node._renew([], SimpleNamespace(), root))  # type: ignore[arg-type]


def test_a_worker_joins_and_leaves_an_in_process_manager(tmp_path: Path) -> None:
    """Two engines in this process: a manager and a worker that joins it with the worker
    token, becomes Ready in its node list, and leaves."""
    manager_address, worker_address = f"{SUBNET}.24", f"{SUBNET}.25"

    async def main() -> None:
        manager = SwarmNode(NodeOptions(tmp_path / "m", manager_address, dns_upstreams=[]))
        worker = SwarmNode(
            NodeOptions(tmp_path / "w", worker_address, hostname="w1", dns_upstreams=[])
        )
        await manager.start()
        await worker.start()
        try:
            await manager.swarm_init(SwarmInit())
            cluster = the_cluster(manager.store)
            assert cluster is not None
            token = cluster.root_join_tokens.worker
            # The right CA, a wrong secret: the manager's CA refuses it, in Docker's words.
            wrong = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
            await refused(
                worker.swarm_join(SwarmJoin((manager_address,), wrong)),
                400,
                "rpc error: code = InvalidArgument desc = A valid join token is necessary to "
                "join this cluster",
            )
            assert not (tmp_path / "w" / "certificates").exists()
            await worker.swarm_join(SwarmJoin((manager_address,), token))
            info = worker.node_info()
            assert (info.role, info.local_node_state, info.addr) == (
                "worker",
                "active",
                worker_address,
            )
            await refused(worker.propose(b""), 503, NOT_A_MANAGER_MESSAGE)

            async def ready() -> bool | None:
                nodes = {n.description.hostname: n for n in manager.store.list(Node)}
                return True if "w1" in nodes and nodes["w1"].status.state == "ready" else None

            await until(ready, 60, "the worker Ready in the manager's node list")

            # `docker node promote`: the node renews its certificate for the new role and
            # starts a Raft replica; demoted, it stops it and forgets the Raft log.
            for role in ("manager", "worker"):
                await set_desired_role(manager, "w1", role)

                # The role shows as soon as the node takes it; its Raft folder comes when the
                # replica has joined (or goes once it has stopped): wait for both.
                async def changed(role: str = role) -> bool | None:
                    has_raft = (tmp_path / "w" / "raft").exists()
                    settled = has_raft == (role == "manager")
                    return True if worker.local_state().role == role and settled else None

                await until(changed, 60, f"w1 to become a {role} with its Raft folder")
                assert worker.membership is not None and worker.membership.role == role
            await worker.swarm_leave(force=False)
            assert worker.local_state() == LocalState("inactive", "")
        finally:
            await worker.stop()
            await manager.stop()

    asyncio.run(main())


async def set_desired_role(manager: SwarmNode, hostname: str, role: str) -> None:
    """What `docker node promote/demote` writes: the node's desired role, read and written
    again while its status moves under it (an update of a stale version is refused)."""

    async def written() -> bool | None:
        [node] = [n for n in manager.store.list(Node) if n.description.hostname == hostname]
        node.spec.desired_role = role
        err = StoreError.from_result(await manager.propose(Transaction().update(node).encode()))
        assert err is None or err.kind is ErrorKind.CONFLICT, err
        return True if err is None else None

    await until(written, 30, f"{hostname}'s desired role written")
