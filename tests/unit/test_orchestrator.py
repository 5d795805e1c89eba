"""The orchestrator's decisions, pass by pass, on a synchronous store and a test clock."""

from __future__ import annotations

import pytest

from controlplane.manager.delayed_start import OLD_TASK_TIMEOUT_NS
from controlplane.manager.orchestrator import reconcile
from controlplane.manager.rolling_update import default_update_config
from controlplane.manager.tasks import HISTORY_LIMIT, Slot, new_task, shown_desired_state
from controlplane.pb.objects_pb2 import Cluster, Node, Service, Task
from controlplane.store import Transaction
from tests.unit.cluster_builders import SECOND, SyncCluster, global_service, replicated


def running_cluster(replicas: int = 3, nodes: int = 3) -> SyncCluster:
    c = SyncCluster(nodes)
    c.apply(Transaction().create(replicated("web", replicas)))
    c.converge(agent=True)
    return c


def test_replicated_service_gets_one_task_per_slot() -> None:
    c = SyncCluster()
    c.apply(Transaction().create(replicated("web", 3)))
    plan = reconcile(c.view(), c.now, c.memory)
    assert plan.transaction is not None and plan.wake_at_ns is None
    c.apply(plan.transaction)
    tasks = c.tasks("web")
    assert sorted(t.slot for t in tasks) == [1, 2, 3]
    assert all(t.status.state == "new" and t.desired_state == "running" for t in tasks)
    assert all(t.spec.annotations.name == "web" and not t.spec.replicas for t in tasks)
    assert (
        reconcile(c.view(), c.now, c.memory).transaction is None
    )  # a fixpoint: nothing more to do


def test_passes_converge_to_assigned_and_running() -> None:
    c = SyncCluster()
    c.apply(Transaction().create(replicated("web", 3)))
    c.converge()
    assert {t.status.state for t in c.tasks()} == {"assigned"}
    assert len({t.node_id for t in c.tasks()}) == 3
    c.converge(agent=True)
    assert {t.status.state for t in c.tasks()} == {"running"}


def test_scale_down_removes_highest_slots_and_scale_up_refills_them() -> None:
    c = running_cluster(3)
    svc = c.service("web")
    svc.spec.replicas = 1
    c.update_service(svc)
    c.apply(reconcile(c.view(), c.now, c.memory).transaction)  # type: ignore[arg-type]
    removing = [t for t in c.tasks() if t.desired_state == "remove"]
    assert sorted(t.slot for t in removing) == [2, 3]
    c.converge(agent=True)  # the agent stops them; then they are deleted
    assert [t.slot for t in c.tasks()] == [1]
    svc = c.service("web")
    svc.spec.replicas = 3
    c.update_service(svc)
    c.converge(agent=True)
    assert sorted(t.slot for t in c.live("web")) == [1, 2, 3]


def test_scale_down_prefers_tasks_that_do_not_run_yet() -> None:
    c = running_cluster(2)
    svc = c.service("web")
    svc.spec.replicas = 3
    c.update_service(svc)
    c.converge()  # slot 3 assigned, not running
    svc = c.service("web")
    svc.spec.replicas = 2
    c.update_service(svc)
    c.converge(agent=True)
    assert sorted(t.slot for t in c.live("web")) == [1, 2]


def test_scale_down_deletes_tasks_that_never_reached_a_node() -> None:
    c = SyncCluster(nodes=0)
    c.apply(Transaction().create(replicated("web", 2)))
    c.converge()
    assert {t.status.state for t in c.tasks()} == {"pending"}
    svc = c.service("web")
    svc.spec.replicas = 0
    c.update_service(svc)
    c.converge()
    assert c.tasks() == []


def test_task_on_a_down_node_is_replaced_in_its_slot() -> None:
    c = running_cluster(3)
    victim = c.tasks("web")[0]
    node = c.store.get(Node, victim.node_id)
    assert node is not None
    node.status.state = "down"
    c.apply(Transaction().update(node))
    assert c.converge(agent=True) == c.now + 5 * SECOND  # swarmkit's restart delay
    old = c.store.get(Task, victim.id)
    assert old is not None and old.desired_state == "shutdown"
    [waiting] = [t for t in c.tasks("web") if t.desired_state == "ready"]
    assert waiting.slot == victim.slot and waiting.status.state == "ready"
    c.now += 5 * SECOND
    c.converge(agent=True)
    live = c.live("web")
    assert sorted(t.slot for t in live) == [1, 2, 3]
    replacement = next(t for t in live if t.slot == victim.slot)
    assert replacement.id == waiting.id
    assert replacement.node_id != victim.node_id and replacement.status.state == "running"


def test_a_task_moved_off_a_drained_node_starts_once_the_old_one_stopped() -> None:
    """dockerd 20.10: no restart delay for a drained node's task; its successor waits
    "ready" while the old one stops."""
    c = running_cluster(2, nodes=2)
    node = c.store.get(Node, "node1")
    assert node is not None
    [victim] = [t for t in c.tasks("web") if t.node_id == "node1"]
    node.spec.availability = "drain"
    c.apply(Transaction().update(node))
    assert c.converge() == c.now + OLD_TASK_TIMEOUT_NS  # no agent: the old task still runs
    [waiting] = [t for t in c.tasks("web") if t.desired_state == "ready"]
    assert (waiting.slot, waiting.node_id) == (victim.slot, "node2")
    assert c.memory.waiting[waiting.id].start_at_ns == c.now
    c.set_task(victim.id, "shutdown")
    c.converge()
    assert c.store.get(Task, waiting.id).desired_state == "running"  # type: ignore[union-attr]


def test_a_restart_waits_only_for_the_task_it_replaces() -> None:
    """swarmkit's DelayStart watches the replaced task alone: a restart of a task that
    failed starts after its delay, though an older task of its slot (left on a drained
    node, asked to stop a minute ago) still runs."""
    c = SyncCluster(nodes=2)
    svc = replicated("web", 1)
    svc.spec.restart_policy.delay_ns = 0
    c.apply(Transaction().create(svc))
    c.converge(agent=True)
    [first] = c.tasks("web")
    drain(c, first.node_id)
    c.converge()  # no agent: the drained node's task does not stop
    c.now += OLD_TASK_TIMEOUT_NS
    c.converge()
    [moved] = c.live("web")
    c.set_task(moved.id, "running")
    c.set_task(moved.id, "failed", exit_code=1)
    c.converge()  # the restart is made, waiting "ready" ...
    assert c.converge() is None  # ... and started on the next pass: no wake-up left
    [restart] = c.live("web")
    assert restart.id not in (first.id, moved.id)
    assert c.store.get(Task, first.id).status.state == "running"  # type: ignore[union-attr]


def test_a_new_leader_starts_a_replacement_without_waiting_for_the_old_task() -> None:
    """swarmkit's new leader (taskinit.CheckTasks) knows no task a replacement waits for:
    it starts it once the restart policy's delay ran out after its last status (though the
    old leader made it without delay, off a drained node)."""
    c = running_cluster(1, nodes=2)
    [first] = c.tasks("web")
    drain(c, first.node_id)
    c.converge()
    [waiting] = [t for t in c.tasks("web") if t.desired_state == "ready"]
    c.new_leader()
    assert c.converge() == waiting.status.timestamp_ns + 5 * SECOND
    c.now = waiting.status.timestamp_ns + 5 * SECOND
    assert c.converge() is None
    assert c.store.get(Task, waiting.id).desired_state == "running"  # type: ignore[union-attr]
    assert c.store.get(Task, first.id).status.state == "running"  # type: ignore[union-attr]


def test_drain_moves_tasks_and_pause_takes_no_new_ones() -> None:
    c = running_cluster(3)
    nodes = {n.id: n for n in c.store.list(Node)}
    nodes["node1"].spec.availability = "drain"
    nodes["node2"].spec.availability = "pause"
    c.apply(Transaction().update(nodes["node1"]).update(nodes["node2"]))
    c.converge(agent=True)
    placement = sorted(t.node_id for t in c.live("web"))
    assert "node1" not in placement
    assert placement.count("node2") == 1  # kept its task, got no new one
    assert placement.count("node3") == 2


def by_creation(tasks: list[Task]) -> list[Task]:
    return sorted(tasks, key=lambda t: (t.meta.created_at_ns, t.id))


def test_failed_task_is_replaced_at_once_and_started_after_the_delay() -> None:
    """swarmkit's restart supervisor: the replacement is made at once, desired "ready" (its
    node prepares it), and moved to running once the restart delay ran out."""
    c = running_cluster(1)
    [task] = c.tasks("web")
    c.now += SECOND
    c.set_task(task.id, "failed", exit_code=1)
    plan = reconcile(c.view(), c.now, c.memory)
    assert plan.transaction is not None and plan.wake_at_ns is None
    c.apply(plan.transaction)
    c.memory.learn(plan.learned)
    old, new = by_creation(c.tasks("web"))
    assert (old.desired_state, new.desired_state, new.slot) == ("shutdown", "ready", 1)
    assert c.memory.waiting[new.id].start_at_ns == c.now + 5 * SECOND  # Swarm's default
    assert c.converge(agent=True) == c.now + 5 * SECOND
    new = c.store.get(Task, new.id)  # type: ignore[assignment]
    assert (new.desired_state, new.status.state) == ("ready", "ready")  # prepared, waiting
    c.now += 5 * SECOND - 1
    assert c.converge(agent=True) == c.now + 1
    c.now += 1
    c.converge(agent=True)
    assert [(t.slot, t.desired_state, t.status.state) for t in by_creation(c.tasks("web"))] == [
        (1, "shutdown", "failed"),
        (1, "running", "running"),
    ]


def waiting_replacement(c: SyncCluster) -> Task:
    """A second on, fail web's running task: its replacement, made then and waiting "ready"
    for 5 s."""
    [task] = [t for t in c.live("web") if t.status.state == "running"]
    c.now += SECOND
    c.set_task(task.id, "failed", exit_code=1)
    c.converge(agent=True)
    [waiting] = [t for t in c.tasks("web") if t.desired_state == "ready"]
    assert c.memory.waiting[waiting.id].start_at_ns == c.now + 5 * SECOND
    return waiting


def test_a_replacement_rejected_while_it_waits_is_replaced_once_its_delay_is_over() -> None:
    """swarmkit's restart supervisor (dockerd 20.10: `Ready / Rejected`, then a new task
    once the restart delay is over): no tight restart loop when the node rejects every task
    it prepares (a missing image)."""
    c = running_cluster(1)
    waiting = waiting_replacement(c)
    due = c.now + 5 * SECOND
    c.now += SECOND
    c.set_task(waiting.id, "rejected")  # its node could not prepare it
    assert c.converge(agent=True) == due
    tasks = by_creation(c.tasks("web"))
    assert [(t.desired_state, t.status.state) for t in tasks] == [
        ("shutdown", "failed"),
        ("ready", "rejected"),  # dockerd's `docker service ps` shows `Ready / Rejected`
    ]
    assert shown_desired_state(tasks[-1]) == "ready"
    c.now = due - 1
    assert c.converge(agent=True) == due
    assert len(c.tasks("web")) == 2
    c.now = due
    c.converge(agent=True)
    tasks = by_creation(c.tasks("web"))
    assert [(t.desired_state, t.status.state) for t in tasks] == [
        ("shutdown", "failed"),
        ("shutdown", "rejected"),
        ("ready", "ready"),  # the successor waits its own delay in turn
    ]
    assert c.memory.waiting[tasks[-1].id].start_at_ns == due + 5 * SECOND
    assert waiting.id not in c.memory.waiting


def test_a_node_rejecting_every_task_gets_one_per_restart_delay() -> None:
    """Virtual time: every task the node prepares is rejected at once; over 15 s the slot
    gets a new task per restart delay (5 s), not one per pass."""
    c = running_cluster(1)
    [first] = c.tasks("web")
    c.set_task(first.id, "rejected")
    seen = {first.id}
    end = c.now + 15 * SECOND
    while c.now < end:
        c.now += SECOND // 2
        c.converge(agent=True)
        for task in c.tasks("web"):
            if task.id not in seen and task.status.state == "ready":
                seen.add(task.id)
                c.set_task(task.id, "rejected")
    assert len(seen) == 4  # the first task, and one successor made every 5 s


def test_a_restart_waiting_out_its_delay_counts_one_attempt_per_restart() -> None:
    c = SyncCluster(nodes=1)
    svc = replicated("web", 1)
    svc.spec.restart_policy.max_attempts = 2
    c.apply(Transaction().create(svc))
    c.converge(agent=True)
    waiting = waiting_replacement(c)
    due = c.now + 5 * SECOND
    c.set_task(waiting.id, "rejected")
    for _ in range(3):  # passes while it waits: no attempt made
        c.now += SECOND
        c.converge(agent=True)
    assert c.memory.restarts.restarts(("web", 1), waiting) == 1
    c.now = due
    c.converge(agent=True)
    [successor] = [t for t in c.tasks("web") if t.desired_state == "ready"]
    assert c.memory.restarts.restarts(("web", 1), successor) == 2
    c.now += SECOND
    c.set_task(successor.id, "rejected")
    c.now += 5 * SECOND
    assert c.converge(agent=True) is None  # both attempts used: no third
    assert len(c.tasks("web")) == 3
    last = c.store.get(Task, successor.id)
    assert last is not None and last.desired_state == "running"  # holds the slot
    assert shown_desired_state(last) == "shutdown"  # as swarmkit's, once its delay is over


def test_a_replacement_rejected_after_its_delay_is_replaced_at_once() -> None:
    c = running_cluster(1)
    waiting = waiting_replacement(c)
    c.now += 5 * SECOND
    c.converge()  # started: desired "running", no longer waiting
    assert waiting.id not in c.memory.waiting
    c.set_task(waiting.id, "rejected")
    assert c.converge(agent=True) == c.now + 5 * SECOND
    tasks = by_creation(c.tasks("web"))
    assert [(t.desired_state, t.status.state) for t in tasks][1:] == [
        ("shutdown", "rejected"),
        ("ready", "ready"),
    ]


def test_a_new_leader_replaces_a_rejected_waiting_task_and_then_waits_too() -> None:
    """swarmkit's taskinit.CheckTasks gives no delay to a waiting task that already
    finished: a new leader restarts it at once; its successor's delay is this leader's, and
    a rejection during it waits for it."""
    c = running_cluster(1)
    waiting = waiting_replacement(c)
    c.now += SECOND
    c.set_task(waiting.id, "rejected")
    c.converge(agent=True)
    c.new_leader()
    assert c.converge(agent=True) == c.now + 5 * SECOND
    [successor] = [t for t in c.tasks("web") if t.desired_state == "ready"]
    due = c.now + 5 * SECOND
    c.now += SECOND
    c.set_task(successor.id, "rejected")
    assert c.converge(agent=True) == due
    assert len(c.tasks("web")) == 3
    c.now = due
    c.converge(agent=True)
    assert len(c.tasks("web")) == 4


def test_a_new_leader_restarts_a_waiting_replacements_delay_from_its_last_status() -> None:
    """swarmkit's taskinit.CheckTasks: a leader that never saw the failure starts the
    waiting task once the restart delay ran out after the task's last status (here its
    node's report that it is prepared, 2 s after it was made), and asks to be woken then."""
    c = running_cluster(1)
    [task] = c.tasks("web")
    c.set_task(task.id, "failed", exit_code=1)
    c.converge()  # the replacement is made and assigned, due in 5 s ...
    made_at = c.now
    c.now += 2 * SECOND
    c.converge(agent=True)  # ... and reported prepared 2 s later
    [waiting] = [t for t in c.tasks("web") if t.desired_state == "ready"]
    assert waiting.status.state == "ready" and waiting.status.timestamp_ns == c.now
    assert c.memory.waiting[waiting.id].start_at_ns == made_at + 5 * SECOND
    c.now += SECOND
    c.new_leader()
    assert c.converge(agent=True) == made_at + 7 * SECOND
    c.now = made_at + 7 * SECOND
    c.converge(agent=True)
    assert c.store.get(Task, waiting.id).status.state == "running"  # type: ignore[union-attr]


def test_restart_conditions_and_max_attempts() -> None:
    c = SyncCluster()
    none = replicated("once", 1)
    none.spec.restart_policy.condition = "none"
    onfail = replicated("onfail", 1)
    onfail.spec.restart_policy.condition = "on-failure"
    onfail.spec.restart_policy.delay_ns = 0
    limited = replicated("limited", 1)
    limited.spec.restart_policy.max_attempts = 2
    limited.spec.restart_policy.delay_ns = 0
    c.apply(Transaction().create(none).create(onfail).create(limited))
    c.converge(agent=True)
    for name in ("once", "onfail"):
        [task] = c.live(name)
        c.set_task(task.id, "complete")
    c.converge(agent=True)
    assert [t.status.state for t in c.tasks("once")] == ["complete"]  # never restarted
    assert [t.status.state for t in c.tasks("onfail")] == ["complete"]  # exit 0: no failure
    for _ in range(4):
        [task] = c.live("limited")
        if task.status.state == "running":
            c.set_task(task.id, "failed", exit_code=2)
        c.converge(agent=True)  # the restart waits "ready" for its delay of 0 ...
        c.converge(agent=True)  # ... and starts on the next pass
    attempts = c.tasks("limited")
    assert len(attempts) == 3  # the first run and two restarts, then no more
    assert all(t.status.state == "failed" for t in attempts)


def drain(c: SyncCluster, node_id: str, availability: str = "drain") -> None:
    node = c.store.get(Node, node_id)
    assert node is not None
    node.spec.availability = availability
    c.apply(Transaction().update(node))


def test_a_task_leaving_a_drained_node_is_not_replaced_under_condition_none() -> None:
    """dockerd 20.10: shut down, no successor; the slot stays empty after the node is
    active again and through a service update that leaves the tasks' spec alone."""
    c = SyncCluster(nodes=2)
    svc = replicated("once", 2)
    svc.spec.restart_policy.condition = "none"
    c.apply(Transaction().create(svc))
    c.converge(agent=True)
    [victim] = [t for t in c.tasks("once") if t.node_id == "node1"]
    drain(c, "node1")
    assert c.converge(agent=True) is None
    old = c.store.get(Task, victim.id)
    assert old is not None and (old.desired_state, old.status.state) == ("shutdown", "shutdown")
    assert len(c.tasks("once")) == 2
    drain(c, "node1", "active")
    svc = c.service("once")
    svc.spec.annotations.labels["x"] = "1"
    c.update_service(svc)
    c.converge(agent=True)
    assert [t.node_id for t in c.live("once")] == ["node2"]
    assert len(c.tasks("once")) == 2


def test_a_task_on_a_down_node_is_not_replaced_under_condition_none() -> None:
    c = SyncCluster(nodes=2)
    svc = replicated("once", 2)
    svc.spec.restart_policy.condition = "none"
    c.apply(Transaction().create(svc))
    c.converge(agent=True)
    node = c.store.get(Node, "node1")
    assert node is not None
    node.status.state = "down"
    c.apply(Transaction().update(node))
    assert c.converge(agent=True) is None
    assert [t.node_id for t in c.live("once")] == ["node2"] and len(c.tasks("once")) == 2


def held_slot() -> tuple[SyncCluster, Task]:
    """Two replicas under condition "none"; node1 drained: its task holds its slot empty."""
    c = SyncCluster(nodes=2)
    svc = replicated("once", 2)
    svc.spec.restart_policy.condition = "none"
    c.apply(Transaction().create(svc))
    c.converge(agent=True)
    [held] = [t for t in c.tasks("once") if t.node_id == "node1"]
    drain(c, "node1")
    c.converge(agent=True)
    return c, held


def test_an_update_gives_a_slot_held_empty_a_new_task() -> None:
    """swarmkit's updater still counts the task that was not restarted: a change of the
    tasks' spec replaces it by a new task in its slot."""
    c, held = held_slot()
    svc = c.service("once")
    svc.spec.container.image = "nginx:2"
    svc.update_status.state = "updating"
    svc.update_status.started_at_ns = c.now
    c.update_service(svc)
    c.converge(agent=True)
    live = c.live("once")
    assert sorted(t.slot for t in live) == [1, 2]
    assert {(t.spec.container.image, t.node_id) for t in live} == {("nginx:2", "node2")}
    assert c.store.get(Task, held.id).holds_slot is False  # type: ignore[union-attr]


def test_a_scale_down_takes_a_slot_held_empty_first() -> None:
    c, held = held_slot()
    svc = c.service("once")
    svc.spec.replicas = 1
    c.update_service(svc)
    c.converge(agent=True)
    assert c.store.get(Task, held.id) is None
    assert [t.node_id for t in c.live("once")] == ["node2"]
    svc = c.service("once")
    svc.spec.replicas = 2
    c.update_service(svc)
    c.converge(agent=True)
    assert sorted(t.slot for t in c.live("once")) == [1, 2]


@pytest.mark.parametrize("lost", ["drained", "down"])
def test_a_task_leaving_its_node_counts_against_max_attempts(lost: str) -> None:
    """dockerd 20.10 (`--restart-max-attempts 1`): the drain's successor is the one
    restart; when it fails, no other. So for a node gone down (its task never stops)."""
    c = SyncCluster(nodes=2)
    svc = replicated("web", 1)
    svc.spec.restart_policy.max_attempts = 1
    svc.spec.restart_policy.delay_ns = 0
    c.apply(Transaction().create(svc))
    c.converge(agent=True)
    [first] = c.tasks("web")
    if lost == "drained":
        drain(c, first.node_id)
    else:
        node = c.store.get(Node, first.node_id)
        assert node is not None
        node.status.state = "down"
        c.apply(Transaction().update(node))
    c.converge(agent=True)
    [second] = c.live("web")
    assert second.id != first.id and second.status.state == "running"
    c.set_task(second.id, "failed", exit_code=137)
    c.converge(agent=True)
    assert [t.id for t in c.live("web")] == [second.id]  # desired kept: the slot is held
    assert len(c.tasks("web")) == 2


def fail_until_given_up(c: SyncCluster, service: str, step_ns: int, limit: int = 20) -> int:
    """Fail the running task of `service` every `step_ns` until none is restarted: the runs."""
    c.converge(agent=True)
    for runs in range(1, limit + 1):
        [task] = [t for t in c.live(service) if t.status.state == "running"]
        c.now += step_ns
        c.set_task(task.id, "failed", exit_code=1)
        c.converge(agent=True)  # a restart (no delay) runs at once
        if not [t for t in c.live(service) if t.status.state == "running"]:
            return runs
    raise AssertionError(f"still restarted after {limit} runs")


def test_max_attempts_over_the_history_limit_keeps_a_task_per_attempt() -> None:
    """swarmkit's task reaper keeps max_attempts + 1 tasks per slot, over the history limit:
    a new leader counts the slot's restarts from them, and gives no more attempts."""
    c = SyncCluster(nodes=1)
    svc = replicated("web", 1)
    svc.spec.restart_policy.max_attempts = HISTORY_LIMIT + 1
    svc.spec.restart_policy.delay_ns = 0
    c.apply(Transaction().create(svc))
    assert fail_until_given_up(c, "web", SECOND) == HISTORY_LIMIT + 2  # the first run too
    assert len(c.tasks("web")) == HISTORY_LIMIT + 2
    c.new_leader()
    c.now += SECOND
    assert c.converge(agent=True) is None
    assert len(c.tasks("web")) == HISTORY_LIMIT + 2


def test_a_scale_starts_the_count_of_a_slots_restarts_again() -> None:
    """dockerd 20.10 (`--restart-max-attempts 2`, scaled to 2 after the first restart): slot
    1's next restart is of the new spec version, so the count starts again there: three
    restarts in all. swarmkit counts per spec version, which every update makes."""
    c = SyncCluster(nodes=1)
    svc = replicated("web", 1)
    svc.spec.restart_policy.max_attempts = 2
    svc.spec.restart_policy.delay_ns = 0
    c.apply(Transaction().create(svc))
    c.converge(agent=True)
    runs = 0
    for _ in range(10):
        slot1 = [t for t in c.live("web") if t.slot == 1 and t.status.state == "running"]
        if not slot1:
            break
        c.now += SECOND
        c.set_task(slot1[0].id, "failed", exit_code=1)
        runs += 1
        c.converge(agent=True)
        if runs == 1:  # once the first restart was made
            svc = c.service("web")
            svc.spec.replicas = 2
            c.update_service(svc)
            c.converge(agent=True)
    assert runs == 4  # the first run and three restarts
    assert len([t for t in c.tasks("web") if t.slot == 1]) == 3  # max_attempts + 1 kept


def test_max_attempts_counts_the_restarts_within_the_window() -> None:
    """swarmkit: the restarts made in the window before the failing task's last status."""
    c = SyncCluster(nodes=1)
    svc = replicated("web", 1)
    svc.spec.restart_policy.max_attempts = 2
    svc.spec.restart_policy.window_ns = 10 * SECOND
    svc.spec.restart_policy.delay_ns = 0
    c.apply(Transaction().create(svc))
    with pytest.raises(AssertionError, match="still restarted"):
        fail_until_given_up(c, "web", 6 * SECOND, limit=8)  # at most 1 restart in 10 s
    c2 = SyncCluster(nodes=1)
    c2.apply(Transaction().create(svc))
    assert fail_until_given_up(c2, "web", 4 * SECOND) == 3  # 2 restarts in 8 s: enough


def test_on_failure_restarts_all_but_a_completed_task() -> None:
    """swarmkit's ShouldRestart: a running task leaving a drained node, or one that its
    node shut down, is restarted under "on-failure"; a completed one is not."""
    c = SyncCluster(nodes=2)
    svc = replicated("onfail", 2)
    svc.spec.restart_policy.condition = "on-failure"
    svc.spec.restart_policy.delay_ns = 0
    c.apply(Transaction().create(svc))
    c.converge(agent=True)
    by_node = {t.node_id: t for t in c.tasks("onfail")}
    drain(c, "node1")
    c.converge(agent=True)
    assert sorted(t.node_id for t in c.live("onfail")) == ["node2", "node2"]
    successor = next(t for t in c.live("onfail") if t.id != by_node["node2"].id)
    c.set_task(successor.id, "shutdown")
    c.converge(agent=True)
    assert len(c.live("onfail")) == 2 and successor.id not in {t.id for t in c.live("onfail")}
    c.set_task(by_node["node2"].id, "complete")
    c.converge(agent=True)
    assert by_node["node2"].id in {t.id for t in c.live("onfail")}  # kept, not restarted


def test_rolling_update_one_at_a_time_with_delay() -> None:
    c = running_cluster(3)
    svc = c.service("web")
    svc.spec.container.image = "nginx:1.25"
    svc.spec.update_config.parallelism = 1
    svc.spec.update_config.delay_ns = 10 * SECOND
    svc.update_status.state = "updating"
    svc.update_status.started_at_ns = c.now
    c.update_service(svc)
    wake = c.converge(agent=True)
    images = sorted(t.spec.container.image for t in c.live("web"))
    assert images == ["nginx", "nginx", "nginx:1.25"]  # one batch, then the delay
    assert wake == c.now + 10 * SECOND
    c.now += 10 * SECOND
    c.converge(agent=True)
    c.now += 10 * SECOND
    c.converge(agent=True)
    assert {t.spec.container.image for t in c.live("web")} == {"nginx:1.25"}
    assert sorted(t.slot for t in c.live("web")) == [1, 2, 3]
    assert c.service("web").update_status.state == "updating"  # the last delay, the monitor
    c.now += 15 * SECOND
    c.converge(agent=True)
    status = c.service("web").update_status
    assert (status.state, status.message) == ("completed", "update completed")


def by_image(tasks: list[Task]) -> list[Task]:
    """The old task (nginx) and the update's (nginx:2)."""
    return sorted(tasks, key=lambda t: t.spec.container.image)


def test_stop_first_makes_the_new_task_at_once_and_starts_it_once_the_old_one_stopped() -> None:
    c = running_cluster(1)
    svc = c.service("web")
    svc.spec.container.image = "nginx:2"
    c.update_service(svc)
    c.converge()  # no agent: the old task is asked to stop but still runs
    old, new = by_image(c.tasks("web"))
    assert (old.desired_state, old.status.state) == ("shutdown", "running")
    assert (new.desired_state, new.status.state, new.slot) == ("ready", "assigned", 1)
    assert new.spec.container.image == "nginx:2" and new.by_update
    c.set_task(old.id, "shutdown")
    c.converge(agent=True)
    assert [t.spec.container.image for t in c.live("web")] == ["nginx:2"]
    assert c.store.get(Task, new.id).status.state == "running"  # type: ignore[union-attr]


def test_stop_first_starts_the_new_task_after_a_minute_if_the_old_one_never_stops() -> None:
    """swarmkit's DelayStart waits at most a minute (defaultOldTaskTimeout) for the old task."""
    c = running_cluster(1)
    svc = c.service("web")
    svc.spec.container.image = "nginx:2"
    c.update_service(svc)
    assert c.converge() == c.now + OLD_TASK_TIMEOUT_NS
    c.now += OLD_TASK_TIMEOUT_NS
    c.converge()
    old, new = by_image(c.tasks("web"))
    assert (old.desired_state, old.status.state) == ("shutdown", "running")
    assert new.desired_state == "running"


def test_start_first_starts_the_new_task_before_stopping_the_old() -> None:
    c = running_cluster(1)
    svc = c.service("web")
    svc.spec.container.image = "nginx:2"
    svc.spec.update_config.order = "start-first"
    svc.spec.update_config.parallelism = 1
    c.update_service(svc)
    c.converge()  # made "ready", then started without waiting: the old task runs on
    live = c.live("web")
    assert sorted(t.spec.container.image for t in live) == ["nginx", "nginx:2"]
    c.converge(agent=True)
    assert [t.spec.container.image for t in c.live("web")] == ["nginx:2"]


def test_update_pauses_when_a_new_task_fails() -> None:
    c = running_cluster(2)
    svc = c.service("web")
    svc.spec.container.image = "broken"
    svc.spec.update_config.parallelism = 1
    svc.spec.update_config.delay_ns = 10 * SECOND
    svc.update_status.state = "updating"
    svc.update_status.started_at_ns = c.now
    c.update_service(svc)
    c.converge(agent=True)
    [fresh] = [t for t in c.live("web") if t.spec.container.image == "broken"]
    c.set_task(fresh.id, "failed", exit_code=1)
    c.now += 10 * SECOND
    c.converge(agent=True)
    status = c.service("web").update_status
    assert status.state == "paused"
    assert status.message == f"update paused due to failure or early termination of task {fresh.id}"
    assert sum(t.spec.container.image == "nginx" for t in c.live("web")) == 1  # no new batch


def test_update_failure_can_roll_back() -> None:
    c = running_cluster(1)
    svc = c.service("web")
    svc.previous_spec.CopyFrom(svc.spec)
    svc.spec.container.image = "broken"
    svc.spec.update_config.CopyFrom(default_update_config())  # monitor 5 s
    svc.spec.update_config.failure_action = "rollback"
    svc.update_status.state = "updating"
    svc.update_status.started_at_ns = c.now
    c.update_service(svc)
    c.converge(agent=True)
    [fresh] = c.live("web")
    c.set_task(fresh.id, "failed", exit_code=1)
    c.converge(agent=True)
    svc = c.service("web")
    assert svc.spec.container.image == "nginx"
    assert svc.update_status.state == "rollback_started"
    c.now += 5 * SECOND
    c.converge(agent=True)
    svc = c.service("web")
    assert svc.update_status.state == "rollback_completed"
    assert [t.spec.container.image for t in c.live("web")] == ["nginx"]


def test_a_rollback_refills_a_held_slot_at_once() -> None:
    """swarmkit: while rolling back, a slot whose task stopped without a successor is dead,
    and the replicated orchestrator gives it a task at once, so that the rollback converges
    (the update itself left it empty: its task was of the spec rolled back to)."""
    c = SyncCluster(nodes=2)
    svc = replicated("once", 2)
    svc.spec.restart_policy.condition = "none"
    c.apply(Transaction().create(svc))
    c.converge(agent=True)
    [held] = [t for t in c.tasks("once") if t.slot == 2]
    drain(c, held.node_id)
    c.converge(agent=True)
    svc = c.service("once")
    svc.previous_spec.CopyFrom(svc.spec)
    svc.spec.container.image = "broken"
    svc.spec.update_config.CopyFrom(default_update_config())
    svc.spec.update_config.failure_action = "rollback"
    svc.spec.update_config.delay_ns = 3600 * SECOND  # slot 2 is not reached
    svc.update_status.state = "updating"
    svc.update_status.started_at_ns = c.now
    c.update_service(svc)
    c.converge(agent=True)
    [broken] = [t for t in c.live("once") if t.spec.container.image == "broken"]
    assert broken.slot == 1 and c.store.get(Task, held.id).holds_slot  # type: ignore[union-attr]
    c.set_task(broken.id, "failed", exit_code=1)
    c.converge(agent=True)
    assert c.service("once").update_status.state.startswith("rollback_")
    live = [t for t in c.live("once") if t.status.state == "running"]
    assert sorted((t.slot, t.spec.container.image) for t in live) == [(1, "nginx"), (2, "nginx")]
    assert c.store.get(Task, held.id).holds_slot is False  # type: ignore[union-attr]


def test_global_service_follows_eligible_nodes() -> None:
    c = SyncCluster(3)
    nodes = {n.id: n for n in c.store.list(Node)}
    nodes["node3"].spec.annotations.labels["zone"] = "b"
    c.apply(Transaction().update(nodes["node3"]))
    c.apply(Transaction().create(global_service("agent", "node.labels.zone!=b")))
    c.converge(agent=True)
    assert sorted(t.node_id for t in c.live("agent")) == ["node1", "node2"]
    assert all(t.slot == 0 for t in c.tasks("agent"))
    nodes = {n.id: n for n in c.store.list(Node)}
    joined = nodes["node3"]
    del joined.spec.annotations.labels["zone"]
    node1 = nodes["node1"]
    node1.spec.availability = "drain"
    c.apply(Transaction().update(joined).update(node1))
    c.converge(agent=True)
    assert sorted(t.node_id for t in c.live("agent")) == ["node2", "node3"]


def test_removed_service_tasks_are_stopped_then_deleted() -> None:
    c = running_cluster(2)
    c.apply(Transaction().delete(Service, "web"))
    c.apply(reconcile(c.view(), c.now, c.memory).transaction)  # type: ignore[arg-type]
    assert {t.desired_state for t in c.tasks()} == {"remove"}
    c.converge(agent=True)
    assert c.tasks() == []


def fail_and_restart(c: SyncCluster) -> None:
    """The live task fails; its replacement waits out the restart delay and runs."""
    [task] = c.live("web")
    c.set_task(task.id, "failed", exit_code=1)
    c.converge(agent=True)
    c.now += 5 * SECOND
    c.converge(agent=True)


def test_history_is_trimmed_per_slot() -> None:
    c = running_cluster(1)
    for _ in range(HISTORY_LIMIT + 3):
        fail_and_restart(c)
    assert len(c.tasks("web")) == HISTORY_LIMIT


def test_history_follows_the_clusters_task_history_limit() -> None:
    """`docker swarm update --task-history-limit 2`: a slot keeps its live task and one more."""
    c = running_cluster(1)
    cluster = Cluster(id="cluster")
    cluster.spec.annotations.name = "default"
    cluster.spec.task_history_retention_limit = 2
    c.apply(Transaction().create(cluster))
    for _ in range(4):
        fail_and_restart(c)
    assert len(c.tasks("web")) == 2


def test_half_done_store_two_live_tasks_in_a_slot() -> None:
    """A leader died between creating a replacement and shutting the old task down."""
    c = running_cluster(1)
    [old] = c.tasks("web")
    c.now += SECOND
    twin = new_task(c.service("web"), Slot(number=old.slot), c.now)
    c.apply(Transaction().create(twin))
    c.converge(agent=True)
    [live] = c.live("web")
    assert live.id == twin.id  # the newest up-to-date one stays
    assert c.store.get(Task, old.id).desired_state == "shutdown"  # type: ignore[union-attr]


def test_tasks_of_a_missing_service_never_reached_a_node_are_deleted() -> None:
    c = SyncCluster()
    orphan = new_task(replicated("ghost", 1), Slot(number=1), c.now)
    c.apply(Transaction().create(orphan))
    c.converge()
    assert c.tasks() == []


def test_a_malformed_constraint_in_the_store_matches_no_node() -> None:
    c = SyncCluster()
    bad_global = global_service("agent", "node.role")  # the API refuses this; a raw write may not
    bad_replicated = replicated("web", 1)
    bad_replicated.spec.placement.constraints.append("node.role")
    c.apply(Transaction().create(bad_global).create(bad_replicated))
    c.converge()
    assert c.tasks("agent") == []
    [task] = c.tasks("web")
    assert task.status.state == "pending"
    assert task.status.err == "no suitable node (scheduling constraints not satisfied on 3 nodes)"
