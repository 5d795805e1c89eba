"""The leader's role manager: its plan (pure), then over three real in-process managers (Raft
drivers on 127.77.210.1-3:2377 joined into one cluster, each with its store)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from polling import eventually

from controlplane.manager.role import ManagerRole, ManagerSettings
from controlplane.manager.role_manager import RoleManager, plan_roles
from controlplane.pb.objects_pb2 import Node
from controlplane.raft.driver import RaftDriver
from controlplane.raft.types import Role
from controlplane.store import StoreError, Transaction

HOSTS = ("127.77.210.1", "127.77.210.2", "127.77.210.3")
TIMEOUT = 60.0


def node(node_id: str, desired: str, role: str, raft_id: int = 0, state: str = "ready") -> Node:
    n = Node(id=node_id, role=role)
    n.spec.desired_role = desired
    n.status.state = state
    if raft_id:
        n.manager_status.raft_id = raft_id
        n.manager_status.addr = f"127.0.0.1:{raft_id}"
    return n


# ---- the plan --------------------------------------------------------------------------


def test_plan_removes_a_demoted_member_then_records_the_worker_role() -> None:
    members = {1: "a", 2: "b"}
    nodes = [node("one", "manager", "manager", 1), node("two", "worker", "manager", 2)]
    plan = plan_roles(nodes, members, own_raft_id=1)
    assert [(r.raft_id, r.node_id, r.reason) for r in plan.removals] == [(2, "two", "demoted")]
    assert plan.updates == []

    plan = plan_roles(nodes, {1: "a"}, own_raft_id=1)  # out of Raft now
    assert plan.removals == []
    [updated] = plan.updates
    assert updated.id == "two" and updated.role == "worker"
    assert not updated.HasField("manager_status")
    assert updated.meta.version == nodes[1].meta.version  # a version-checked write


def test_plan_promotes_at_once_and_leaves_settled_nodes_alone() -> None:
    nodes = [
        node("one", "manager", "manager", 1),
        node("w", "manager", "worker"),
        node("steady", "worker", "worker"),
    ]
    plan = plan_roles(nodes, {1: "a"}, own_raft_id=1)
    assert [(n.id, n.role) for n in plan.updates] == [("w", "manager")]
    assert plan.removals == []


def test_plan_evicts_unclaimed_members_unless_a_manager_is_joining() -> None:
    settled = [node("one", "manager", "manager", 1)]
    plan = plan_roles(settled, {1: "a", 7: "gone"}, own_raft_id=1)
    assert [(r.raft_id, r.reason) for r in plan.removals] == [(7, "orphaned")]

    joining = [*settled, node("new", "manager", "manager")]  # no Raft id recorded yet
    plan = plan_roles(joining, {1: "a", 7: "maybe-new"}, own_raft_id=1)
    assert plan.removals == [] and plan.blocked and "new" in plan.blocked[0]

    down = [*settled, node("dead", "manager", "manager", state="down")]
    plan = plan_roles(down, {1: "a", 7: "gone"}, own_raft_id=1)
    assert [r.raft_id for r in plan.removals] == [7]

    # This manager is never an orphan (its Node may not be written yet).
    assert plan_roles([], {1: "a"}, own_raft_id=1).empty


def test_plan_removes_this_manager_last() -> None:
    nodes = [
        node("me", "worker", "manager", 1),
        node("other", "worker", "manager", 2),
        node("third", "manager", "manager", 3),
    ]
    plan = plan_roles(nodes, {1: "a", 2: "b", 3: "c"}, own_raft_id=1)
    assert [r.raft_id for r in plan.removals] == [2, 1]


# ---- three real managers ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def three_managers(root: Path) -> AsyncIterator[list[ManagerRole]]:
    """m1 starts the cluster, m2 and m3 join it; each writes its Node (id: its Raft id in
    hex). Managers a test stops itself it takes out of the list."""
    roles = [
        ManagerRole(
            ManagerSettings(raft_dir=root / f"m{i}", listen=f"{h}:2377", advertise=f"{h}:2377")
        )
        for i, h in enumerate(HOSTS, start=1)
    ]
    started: list[ManagerRole] = []
    try:
        first = await roles[0].start()
        started.append(roles[0])
        await eventually("m1 to lead", lambda: first.core.role is Role.LEADER, timeout=TIMEOUT)
        for role in roles[1:]:
            await role.start(join=f"{HOSTS[0]}:2377")
            started.append(role)
        await eventually(
            "three voters, each with its Node",
            lambda: (
                len(first.core.voters) == 3
                and len([n for n in roles[0].store.list(Node) if n.manager_status.raft_id]) == 3
            ),
            timeout=TIMEOUT,
        )
        yield started
    finally:
        for role in reversed(started):
            await role.stop()


def driver_of(role: ManagerRole) -> RaftDriver:
    assert role.driver is not None
    return role.driver


def role_of(seen_by: ManagerRole, node_id: str) -> str:
    found = seen_by.store.get(Node, node_id)
    return found.role if found is not None else "gone"


def node_of(role: ManagerRole, store_of: ManagerRole) -> Node:
    found = store_of.store.get(Node, f"{driver_of(role).node_id:016x}")
    assert found is not None
    return found


async def set_desired_role(role: ManagerRole, node_id: str, desired: str) -> None:
    current = role.store.get(Node, node_id)
    assert current is not None
    current.spec.desired_role = desired
    _index, result = await driver_of(role).propose(Transaction().update(current).encode(), 10)
    assert StoreError.from_result(result) is None


@contextlib.asynccontextmanager
async def running(manager: RoleManager) -> AsyncIterator[None]:
    task = asyncio.create_task(manager.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_demotions_leave_raft_and_the_next_leader_finishes_its_predecessors(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with three_managers(tmp_path) as (m1, m2, m3):
            leader = driver_of(m1)
            worker = node("worker0000000000000000000", "worker", "worker")
            await leader.propose(Transaction().create(worker).encode(), 10)
            async with running(RoleManager(m1.store, leader, retry_delay=0.2)):
                # Promotion: the observed role follows at once.
                await set_desired_role(m1, worker.id, "manager")
                await eventually(
                    "the promoted worker's role",
                    lambda: role_of(m1, worker.id) == "manager",
                    timeout=TIMEOUT,
                )
                await set_desired_role(m1, worker.id, "worker")  # never joined: back at once
                await eventually(
                    "the demoted worker's role",
                    lambda: role_of(m1, worker.id) == "worker",
                    timeout=TIMEOUT,
                )
                # A follower's demotion: out of Raft, then a worker without manager status.
                m3_raft = driver_of(m3).node_id
                await set_desired_role(m1, node_of(m3, m1).id, "worker")
                await eventually(
                    "m3 out of the Raft members",
                    lambda: m3_raft not in leader.members,
                    timeout=TIMEOUT,
                )
                await eventually(
                    "m3's worker role", lambda: node_of(m3, m1).role == "worker", timeout=TIMEOUT
                )
                assert not node_of(m3, m1).HasField("manager_status")
                assert leader.core.voters == {leader.node_id, driver_of(m2).node_id}

                # The leader's own demotion: it hands leadership to m2, which removes it.
                await set_desired_role(m1, node_of(m1, m1).id, "worker")
                follower = driver_of(m2)
                await eventually(
                    "m2 to lead", lambda: follower.core.role is Role.LEADER, timeout=TIMEOUT
                )
            # As the node process does: the new leader runs its own role manager.
            async with running(RoleManager(m2.store, follower, retry_delay=0.2)):
                await eventually(
                    "m1 out of Raft",
                    lambda: follower.core.voters == {follower.node_id},
                    timeout=TIMEOUT,
                )
                await eventually(
                    "m1's worker role", lambda: node_of(m1, m2).role == "worker", timeout=TIMEOUT
                )
                assert node_of(m2, m2).role == "manager"

    asyncio.run(scenario())


def test_a_demotion_waits_for_quorum_and_a_removed_node_leaves_raft(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with three_managers(tmp_path) as roles:
            m1, m2, m3 = roles
            leader = driver_of(m1)
            m2_raft, m3_raft = driver_of(m2).node_id, driver_of(m3).node_id
            m3_node = node_of(m3, m1).id
            await roles.pop().stop()  # m3 is unreachable from now on
            await eventually(
                "the leader to notice m3 is gone",
                lambda: not leader.core.progress_view()[m3_raft].recently_heard,
                timeout=TIMEOUT,
            )
            manager = RoleManager(m1.store, leader, retry_delay=0.2)
            async with running(manager):
                # Without m2, only m1 of {m1, m3} is reachable: the demotion must wait.
                await set_desired_role(m1, node_of(m2, m1).id, "worker")
                passes = manager.passes
                await eventually(
                    "a few retries", lambda: manager.passes >= passes + 3, timeout=TIMEOUT
                )
                assert m2_raft in leader.core.voters
                assert node_of(m2, m1).role == "manager"
                # Removing m3's Node evicts it from Raft; then m2's demotion can go through.
                _index, result = await leader.propose(
                    Transaction().delete(Node, m3_node).encode(), 10
                )
                assert StoreError.from_result(result) is None
                await eventually(
                    "m1 alone in Raft",
                    lambda: leader.core.voters == {leader.node_id},
                    timeout=TIMEOUT,
                )
                assert m3_raft not in leader.members
                await eventually(
                    "m2's worker role", lambda: node_of(m2, m1).role == "worker", timeout=TIMEOUT
                )

    asyncio.run(scenario())
