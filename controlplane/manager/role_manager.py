"""The leader's role manager: brings the Raft membership and each node's observed role in line
with the roles the API asked for (`docker node promote/demote/rm`), as swarmkit's roleManager.

The API writes only `spec.desired_role`. Each pass here reads the whole store and the Raft
membership afresh and plans (`plan_roles`, pure):
- demotion (desired worker, observed manager): while the node's Raft id is a member, remove
  it from Raft (`leave`: a leader that demotes itself hands leadership over first); once it is
  out, record `role = worker` and clear its manager status. Its process then stops its replica.
- promotion (desired manager, observed worker): record `role = manager` at once; the node then
  gets a manager certificate and joins Raft as a learner, promoted to voter once caught up.
- a Raft member that no Node claims (its Node was removed, e.g. demoted and removed in quick
  succession) is removed from Raft, but only while no manager is about to claim its Raft id
  (a Node that wants to be a manager and has no Raft id yet is joining; its id is recorded
  just after the join), and never this manager itself.

Nothing is remembered between passes, so a new leader finishes what the previous one left
half-way. A role write is version-checked; a refused or failed step (no quorum, a removal
that would lose quorum, no other manager to take over the leadership) is retried after
`retry_delay`, since what blocks it (reachability) does not show in the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controlplane.pb.objects_pb2 import Node
from controlplane.pb.raft_pb2 import LeaveRequest
from controlplane.raft.core import RaftError
from controlplane.store import ErrorKind, Store, StoreError, Transaction, Watch, WatchError

log = logging.getLogger("controlplane.manager.roles")

WRITE_TIMEOUT = 10.0


class RaftMembership(Protocol):
    """What the role manager needs of this manager's Raft replica (a `RaftDriver`)."""

    @property
    def node_id(self) -> int: ...

    @property
    def members(self) -> Mapping[int, str]: ...

    async def propose(self, data: bytes, timeout: float = ...) -> tuple[int, bytes]: ...

    async def leave(self, request: LeaveRequest) -> None: ...


@dataclass(frozen=True)
class Removal:
    raft_id: int
    node_id: str  # "" for a member no Node claims
    reason: str  # "demoted" | "orphaned"


@dataclass
class RolePlan:
    """One pass's work: role records to write (one transaction), then members to remove."""

    updates: list[Node] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # why some work must wait

    @property
    def empty(self) -> bool:
        return not self.updates and not self.removals


def plan_roles(nodes: Iterable[Node], members: Mapping[int, str], own_raft_id: int) -> RolePlan:
    """What to do now so that observed roles and Raft membership follow the desired roles."""
    plan = RolePlan()
    nodes = list(nodes)
    for node in nodes:
        desired, raft_id = node.spec.desired_role, node.manager_status.raft_id
        if desired == "worker" and node.role == "manager":
            if raft_id in members:
                plan.removals.append(Removal(raft_id, node.id, "demoted"))
            else:
                plan.updates.append(_with_role(node, "worker"))
        elif desired == "manager" and node.role == "worker":
            plan.updates.append(_with_role(node, "manager"))
    claimed = {n.manager_status.raft_id for n in nodes if n.manager_status.raft_id}
    unclaimed = sorted(set(members) - claimed - {own_raft_id})
    joining = [
        n.id
        for n in nodes
        if n.spec.desired_role == "manager"
        and not n.manager_status.raft_id
        and n.status.state != "down"
    ]
    if unclaimed and joining:
        plan.blocked.append(
            f"raft members {', '.join(f'{r:016x}' for r in unclaimed)} are claimed by no node, "
            f"but {', '.join(joining)} may be joining: waiting for their Raft ids"
        )
    elif unclaimed:
        plan.removals.extend(Removal(r, "", "orphaned") for r in unclaimed)
    # This manager goes last: once it leaves it leads no more.
    plan.removals.sort(key=lambda r: r.raft_id == own_raft_id)
    return plan


def _with_role(node: Node, role: str) -> Node:
    updated = Node()
    updated.CopyFrom(node)
    updated.role = role
    if role == "worker":
        updated.ClearField("manager_status")
    updated.meta.updated_at_ns = time.time_ns()
    return updated


class RoleManager:
    """Runs while this manager leads (as `LeaderLoops`): `await run()` until cancelled."""

    def __init__(self, store: Store, raft: RaftMembership, *, retry_delay: float = 1.0) -> None:
        self._store = store
        self._raft = raft
        self._retry_delay = retry_delay
        self._blocked: list[str] = []
        self.passes = 0

    async def run(self) -> None:
        log.info("event=role_manager_started")
        watch = self._store.watch(kinds=frozenset({Node}))
        try:
            while True:
                watch = self._drain(watch)
                try:
                    progressed, waiting = await self.step()
                except Exception:
                    log.exception("event=role_pass_failed")
                    progressed, waiting = False, True
                if not progressed:
                    watch = await self._sleep(watch, self._retry_delay if waiting else None)
        finally:
            watch.close()
            log.info("event=role_manager_stopped passes=%d", self.passes)

    async def step(self) -> tuple[bool, bool]:
        """One pass. Returns (something changed: pass again now, work is waiting on something
        the store does not show: pass again after `retry_delay`)."""
        self.passes += 1
        plan = plan_roles(self._store.list(Node), self._raft.members, self._raft.node_id)
        self._report(plan.blocked)
        progressed = failed = False
        if plan.updates:
            if await self._write(plan.updates):
                progressed = True
            else:
                failed = True
        for removal in plan.removals:
            if await self._remove(removal):
                progressed = True
            else:
                failed = True
        return progressed, failed or bool(plan.blocked)

    async def _write(self, updates: list[Node]) -> bool:
        txn = Transaction()
        for node in updates:
            txn.update(node)
        try:
            _index, result = await self._raft.propose(txn.encode(), WRITE_TIMEOUT)
        except RaftError as err:
            log.warning("event=role_write_failed error=%r", str(err))
            return False
        refused = StoreError.from_result(result)
        if refused is not None and refused.kind in (ErrorKind.CONFLICT, ErrorKind.NOT_FOUND):
            # The node changed or went meanwhile: the next pass re-reads it.
            log.info("event=role_write_stale error=%r", refused.message)
            return True
        if refused is not None:
            log.error("event=role_write_refused error=%r", refused.message)
            return False
        for node in updates:
            log.info("event=node_role_changed node=%s role=%s", node.id, node.role)
        return True

    async def _remove(self, removal: Removal) -> bool:
        own = removal.raft_id == self._raft.node_id
        log.info(
            "event=raft_member_removing raft_id=%016x node=%s reason=%s own=%s",
            removal.raft_id,
            removal.node_id or "-",
            removal.reason,
            own,
        )
        try:
            await self._raft.leave(LeaveRequest(node_id=removal.raft_id))
        except RaftError as err:
            # Losing quorum, no other manager to lead, no leader: retried on a later pass.
            log.info(
                "event=raft_member_removal_deferred raft_id=%016x reason=%r",
                removal.raft_id,
                str(err),
            )
            return False
        log.info(
            "event=raft_member_removed raft_id=%016x node=%s", removal.raft_id, removal.node_id
        )
        return True

    def _report(self, blocked: list[str]) -> None:
        """Say why work waits when that changes, not on every pass."""
        for reason in blocked:
            if reason not in self._blocked:
                log.info("event=role_change_waiting detail=%r", reason)
        self._blocked = blocked

    def _drain(self, watch: Watch) -> Watch:
        try:
            watch.poll()
            return watch
        except WatchError:
            return self._store.watch(kinds=frozenset({Node}))

    async def _sleep(self, watch: Watch, timeout: float | None) -> Watch:
        try:
            await asyncio.wait_for(watch.__anext__(), timeout)
        except TimeoutError:
            pass
        except (WatchError, StopAsyncIteration):
            watch.close()
            return self._store.watch(kinds=frozenset({Node}))
        return watch
