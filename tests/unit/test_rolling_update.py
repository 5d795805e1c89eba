"""Rolling updates as swarmkit's updater runs them, pass by pass on a synchronous store and a
test clock: failure actions, the failure ratio, the monitor window, parallelism and delay,
start-first, rollbacks, and a new leader resuming from the store."""

from __future__ import annotations

from controlplane.manager.orchestrator import reconcile
from controlplane.pb.objects_pb2 import Task, UpdateConfig
from controlplane.store import Store, Transaction
from tests.unit.cluster_builders import SECOND, SyncCluster, global_service, replicated

BAD = "busybox:bad"


def running_cluster(replicas: int, nodes: int = 3) -> SyncCluster:
    c = SyncCluster(nodes)
    c.apply(Transaction().create(replicated("web", replicas)))
    c.converge(agent=True)
    return c


def update(c: SyncCluster, image: str = BAD, **config: object) -> None:
    """`docker service update --image IMAGE --update-*`: what the API writes (the previous
    spec kept, the UpdateStatus dropped)."""
    svc = c.service("web")
    svc.previous_spec.CopyFrom(svc.spec)
    svc.spec.container.image = image
    svc.spec.update_config.CopyFrom(UpdateConfig(parallelism=1, failure_action="pause"))
    for name, value in config.items():
        setattr(svc.spec.update_config, name, value)
    svc.ClearField("update_status")
    c.update_service(svc)


def new_tasks(c: SyncCluster, image: str = BAD) -> list[Task]:
    tasks = [t for t in c.tasks("web") if t.spec.container.image == image]
    return sorted(tasks, key=lambda t: (t.meta.created_at_ns, t.slot))


def taken(c: SyncCluster) -> list[int | str]:
    """The slots (nodes, global) the update took: those it made a task for."""
    keys = {
        t.node_id if t.node_id and not t.slot else t.slot for t in c.tasks("web") if t.by_update
    }
    return sorted(keys, key=str)


def status(c: SyncCluster) -> tuple[str, str]:
    s = c.service("web").update_status
    return s.state, s.message


def fail_new_tasks(c: SyncCluster) -> None:
    """The agent's report for every new task that would run: it exited at once."""
    for task in new_tasks(c):
        if task.status.state == "running" and task.desired_state == "running":
            c.set_task(task.id, "failed", exit_code=1)


def stop_old_tasks(c: SyncCluster) -> None:
    """The agent's report for every task asked to stop: it stopped. Then the passes, without
    the agent: the slots' new tasks are placed but not reported running."""
    for task in c.tasks("web"):
        if task.desired_state == "shutdown" and task.status.state == "running":
            c.set_task(task.id, "shutdown")
    c.converge()


def paused_by(task: Task) -> tuple[str, str]:
    return "paused", f"update paused due to failure or early termination of task {task.id}"


def test_update_starts_with_its_status_and_takes_one_slot_at_a_time() -> None:
    c = running_cluster(3)
    update(c, image="nginx:2")
    plan = reconcile(c.view(), c.now, c.memory)
    c.apply(plan.transaction)  # type: ignore[arg-type]
    c.memory.learn(plan.learned)
    svc = c.service("web")
    assert status(c) == ("updating", "update in progress")
    assert svc.update_status.started_at_ns == c.now
    stopping = [t for t in c.tasks("web") if t.desired_state == "shutdown"]
    assert [t.slot for t in stopping] == [1]  # stop-first, parallelism 1
    c.converge(agent=True)
    assert [t.slot for t in new_tasks(c, "nginx:2")] == [1, 2, 3]
    assert all(t.by_update for t in new_tasks(c, "nginx:2"))


def test_pause_at_the_first_failure_after_moving_to_the_next_slot() -> None:
    """dockerd 20.10: the worker freed by a task that failed at once takes the next slot
    before the failure pauses the update; the third slot is never touched."""
    c = running_cluster(3)
    update(c)
    c.converge()
    stop_old_tasks(c)  # slot 1's new task assigned, not yet reported
    [first] = new_tasks(c)
    assert first.status.state == "assigned"
    c.set_task(first.id, "failed", exit_code=1)
    c.converge()
    assert status(c) == paused_by(first)
    assert taken(c) == [1, 2]
    assert list(c.service("web").update_status.failed_task_ids) == [first.id]
    c.now += 60 * SECOND
    c.converge(agent=True)
    fail_new_tasks(c)
    c.converge(agent=True)
    slot3 = [t for t in c.live("web") if t.slot == 3]
    assert [t.spec.container.image for t in slot3] == ["nginx"]  # paused: never updated
    assert status(c) == paused_by(first)  # the restarts' failures change nothing


def test_pause_during_the_update_delay_takes_no_further_slot() -> None:
    c = running_cluster(3)
    update(c, delay_ns=10 * SECOND)
    wake = c.converge(agent=True)
    [first] = new_tasks(c)
    assert wake == c.now + 10 * SECOND  # the worker sleeps its delay
    c.now += 2 * SECOND
    c.set_task(first.id, "failed", exit_code=1)
    c.converge(agent=True)
    assert status(c) == paused_by(first)
    assert taken(c) == [1]  # slot 1 also has a restart of the failed task


def test_continue_ignores_failures_and_completes_after_the_monitor() -> None:
    c = running_cluster(3)
    update(c, failure_action="continue")
    for _ in range(3):
        c.converge(agent=True)
        fail_new_tasks(c)
    c.converge(agent=True)
    assert sorted({t.slot for t in new_tasks(c)}) == [1, 2, 3]
    assert status(c) == ("updating", "update in progress")
    c.now += 5 * SECOND  # the default monitor period after the last slot
    c.converge(agent=True)
    assert status(c) == ("completed", "update completed")
    assert c.service("web").update_status.completed_at_ns == c.now


def test_failure_ratio_is_counted_over_the_slots_of_the_update() -> None:
    c = running_cluster(4)
    update(c, parallelism=0, max_failure_ratio=0.5)  # all four slots at once
    c.converge(agent=True)
    fresh = new_tasks(c)
    assert len(fresh) == 4
    for task in fresh[:2]:  # 2/4 is not above 0.5
        c.set_task(task.id, "failed", exit_code=1)
    c.converge()
    assert status(c) == ("updating", "update in progress")
    assert sorted(c.service("web").update_status.failed_task_ids) == sorted(t.id for t in fresh[:2])
    c.now += SECOND
    c.set_task(fresh[2].id, "failed", exit_code=1)  # 3/4 is
    c.converge()
    assert status(c) == paused_by(fresh[2])


def test_a_failure_after_the_monitor_window_does_not_count() -> None:
    c = running_cluster(2)
    update(c, monitor_ns=3 * SECOND, delay_ns=0)
    c.converge(agent=True)
    c.converge(agent=True)
    first, second = new_tasks(c)
    c.now += 4 * SECOND  # past both tasks' monitor windows
    c.set_task(first.id, "failed", exit_code=1)
    c.converge()
    assert status(c) == ("completed", "update completed")
    assert second.status.state == "running"


def test_a_failure_within_the_monitor_window_after_the_last_slot_counts() -> None:
    c = running_cluster(2)
    update(c, monitor_ns=30 * SECOND)
    c.converge(agent=True)
    wake = c.converge(agent=True)
    _, second = new_tasks(c)
    assert wake == c.now + 30 * SECOND and status(c)[0] == "updating"
    c.now += 20 * SECOND
    c.set_task(second.id, "failed", exit_code=1)
    c.converge()
    assert status(c) == paused_by(second)


def test_parallelism_and_delay_order_the_slots() -> None:
    c = running_cluster(5)
    update(c, image="nginx:2", parallelism=2, delay_ns=10 * SECOND)
    taken: list[list[int]] = []
    for _ in range(3):
        wake = c.converge(agent=True)
        before = {s for batch in taken for s in batch}
        taken.append(sorted(t.slot for t in new_tasks(c, "nginx:2") if t.slot not in before))
        assert wake == c.now + 10 * SECOND
        c.now += 10 * SECOND
    assert taken == [[1, 2], [3, 4], [5]]
    c.converge(agent=True)
    assert status(c)[0] == "updating"  # the monitor period after the last delay
    c.now += 5 * SECOND
    c.converge(agent=True)
    assert status(c) == ("completed", "update completed")


def test_start_first_runs_the_new_task_before_stopping_the_old() -> None:
    c = running_cluster(2)
    update(c, image="nginx:2", order="start-first")
    c.converge()  # no agent: the new task is placed beside the old one, which still runs
    slot1 = sorted((t.spec.container.image, t.desired_state) for t in c.live("web") if t.slot == 1)
    assert slot1 == [("nginx", "running"), ("nginx:2", "running")]
    c.converge(agent=True)
    assert [t.spec.container.image for t in c.live("web")] == ["nginx:2", "nginx:2"]
    old = [t for t in c.tasks("web") if t.spec.container.image == "nginx"]
    assert {(t.desired_state, t.status.state) for t in old} == {("shutdown", "shutdown")}


def test_start_first_task_that_fails_is_restarted_beside_the_old_one() -> None:
    c = running_cluster(1)
    update(c, order="start-first")
    c.converge()
    [fresh] = new_tasks(c)
    c.set_task(fresh.id, "failed", exit_code=1)  # before it was seen running
    c.converge()
    assert status(c) == paused_by(fresh)
    c.now += 5 * SECOND  # the restart delay
    c.converge()
    live = sorted((t.spec.container.image, t.status.state) for t in c.live("web"))
    assert live == [(BAD, "assigned"), ("nginx", "running")]  # the old one still serves
    c.converge(agent=True)  # the restart runs: the old one stops
    assert [t.spec.container.image for t in c.live("web")] == [BAD]


def test_start_first_old_task_that_fails_beside_a_running_new_one_is_not_replaced() -> None:
    c = running_cluster(1)
    update(c, image="nginx:2", order="start-first")
    c.converge()
    [fresh] = new_tasks(c, "nginx:2")
    c.set_task(fresh.id, "running")
    [old] = [t for t in c.tasks("web") if t.spec.container.image == "nginx"]
    c.set_task(old.id, "failed", exit_code=137)  # it died before it was told to stop
    c.now += 5 * SECOND
    c.converge(agent=True)
    assert [t.id for t in c.live("web")] == [fresh.id]


def test_rollback_restores_the_previous_spec_with_the_rollback_config() -> None:
    c = running_cluster(3)
    svc = c.service("web")
    svc.spec.rollback_config.CopyFrom(UpdateConfig(parallelism=0, monitor_ns=2 * SECOND))
    c.update_service(svc)
    update(c, failure_action="rollback", parallelism=2)
    c.converge()
    stop_old_tasks(c)
    first, _ = new_tasks(c)
    c.set_task(first.id, "failed", exit_code=1)
    c.converge()
    svc = c.service("web")
    assert status(c) == (
        "rollback_started",
        f"update rolled back due to failure or early termination of task {first.id}",
    )
    assert svc.spec.container.image == "nginx"
    assert not svc.HasField("previous_spec")  # nothing to roll back to any more
    c.converge(agent=True)  # rollback parallelism 0: both updated slots at once
    assert {t.spec.container.image for t in c.live("web")} == {"nginx"}
    rolled = [t for t in c.tasks("web") if t.by_update and t.spec.container.image == "nginx"]
    assert sorted(t.slot for t in rolled) == [1, 2]
    c.now += 2 * SECOND
    c.converge(agent=True)
    assert status(c) == ("rollback_completed", "rollback completed")


def test_a_failing_rollback_is_paused_not_rolled_back() -> None:
    c = running_cluster(1)
    svc = c.service("web")
    svc.spec.rollback_config.CopyFrom(UpdateConfig(parallelism=1, failure_action="rollback"))
    c.update_service(svc)
    update(c, failure_action="rollback")
    c.converge(agent=True)
    [first] = new_tasks(c)
    c.set_task(first.id, "failed", exit_code=1)
    c.converge()
    assert status(c)[0] == "rollback_started"
    [back] = [t for t in c.live("web") if t.by_update]
    c.set_task(back.id, "failed", exit_code=1)
    c.converge()
    assert status(c) == (
        "rollback_paused",
        f"rollback paused due to failure or early termination of task {back.id}",
    )
    assert c.service("web").spec.container.image == "nginx"


def test_an_update_of_a_paused_update_starts_a_new_run() -> None:
    """The user's way to resume: `docker service update` drops the status; the new run counts
    only its own tasks."""
    c = running_cluster(2)
    update(c, delay_ns=10 * SECOND)
    c.converge(agent=True)
    [first] = new_tasks(c)
    c.set_task(first.id, "failed", exit_code=1)
    c.converge()
    assert status(c) == paused_by(first)
    c.now += SECOND
    svc = c.service("web")
    svc.spec.container.image = "nginx:3"
    svc.ClearField("update_status")
    c.update_service(svc)
    c.converge(agent=True)
    assert status(c) == ("updating", "update in progress")
    assert not c.service("web").update_status.failed_task_ids
    assert [t.slot for t in new_tasks(c, "nginx:3")] == [1]


def test_a_new_leader_resumes_the_update_from_the_store() -> None:
    """Everything an update needs is in the store: a replica restored from a snapshot (a new
    leader) counts the failures already counted, even those the history trimmed, takes the
    slots not yet taken, and keeps the monitor windows of the tasks already started."""
    c = running_cluster(4)
    update(c, parallelism=1, max_failure_ratio=0.3)
    c.converge()
    stop_old_tasks(c)
    [first] = new_tasks(c)
    c.set_task(first.id, "failed", exit_code=1)  # 1/4: below 0.3, the update goes on
    c.converge()
    assert list(c.service("web").update_status.failed_task_ids) == [first.id]
    c.now += 5 * SECOND
    c.converge()  # slot 1 restarted (not by the update) ...
    c.apply(Transaction().delete(Task, first.id))  # ... and the task history dropped it

    successor = SyncCluster(nodes=0, ingress=False)
    successor.store = Store()
    successor.store.restore(c.store.snapshot(), c.index)
    successor.index, successor.now = c.index, c.now
    stop_old_tasks(successor)  # slot 2, taken by the old leader: its old task stopped
    [second] = [t for t in new_tasks(successor) if t.slot == 2]
    successor.set_task(second.id, "failed", exit_code=1)  # 2/4: above 0.3
    successor.converge()
    assert status(successor) == paused_by(second)
    assert taken(successor) == [2, 3]  # and slot 1, whose update task the history dropped
    assert [t.spec.container.image for t in successor.live("web") if t.slot == 1] == [BAD]


def test_global_service_updates_node_by_node_and_pauses_on_failure() -> None:
    c = SyncCluster(3)
    c.apply(Transaction().create(global_service("web")))
    c.converge(agent=True)
    update(c)
    c.converge()
    stop_old_tasks(c)
    [first] = new_tasks(c)
    assert first.node_id == "node1" and first.by_update
    c.set_task(first.id, "failed", exit_code=1)
    c.converge()
    assert status(c) == paused_by(first)
    assert taken(c) == ["node1", "node2"]  # the next node was taken; the third was not
