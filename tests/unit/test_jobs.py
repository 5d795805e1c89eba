"""Job services (`manager/jobs.py`), pass by pass, on a synchronous store and a test clock."""

from __future__ import annotations

from controlplane.agent.worker import wants_stop
from controlplane.manager.orchestrator import reconcile
from controlplane.manager.tasks import DEFAULT_RESTART_DELAY_NS
from controlplane.pb.objects_pb2 import Cluster, Node, Service, Task
from controlplane.store import Transaction
from tests.unit.cluster_builders import SECOND, SyncCluster, global_job, replicated_job
from tests.unit.swarm_fixture import ready_node


def running(c: SyncCluster, service_id: str) -> list[Task]:
    tasks = [t for t in c.tasks(service_id) if t.status.state == "running"]
    return sorted(tasks, key=lambda t: (t.slot, t.node_id))


def complete_all(c: SyncCluster, tasks: list[Task], state: str = "complete") -> None:
    for task in tasks:
        c.set_task(task.id, state, exit_code=0 if state == "complete" else 1)


def test_replicated_job_runs_at_most_max_concurrent_until_total_completions() -> None:
    c = SyncCluster()
    c.apply(Transaction().create(replicated_job("batch", total=3, max_concurrent=2)))
    c.converge(agent=True)
    first = running(c, "batch")
    assert sorted(t.slot for t in first) == [0, 1]  # numbered from 0, as swarmkit's
    assert all(t.desired_state == "complete" and t.job_iteration == 0 for t in first)
    assert all(t.HasField("job_iteration") for t in first)
    complete_all(c, first[:1])
    c.converge(agent=True)
    assert sorted(t.slot for t in running(c, "batch")) == [1, 2]
    complete_all(c, running(c, "batch"))
    assert c.converge(agent=True) is None
    tasks = c.tasks("batch")
    assert sorted(t.slot for t in tasks) == [0, 1, 2]
    assert {t.status.state for t in tasks} == {"complete"}
    assert {t.desired_state for t in tasks} == {"complete"}  # dockerd shows Complete too
    assert reconcile(c.view(), c.now, c.memory).transaction is None  # done: nothing is restarted


def test_completed_job_task_is_not_restarted_even_with_condition_any() -> None:
    c = SyncCluster()
    job = replicated_job("once", total=1, max_concurrent=1)
    job.spec.restart_policy.condition = "any"
    c.apply(Transaction().create(job))
    c.converge(agent=True)
    complete_all(c, running(c, "once"))
    c.now += 10 * DEFAULT_RESTART_DELAY_NS
    c.converge(agent=True)
    assert len(c.tasks("once")) == 1


def test_failed_job_task_is_retried_after_the_delay_until_max_attempts() -> None:
    c = SyncCluster()
    job = replicated_job("flaky", total=1, max_concurrent=1)
    job.spec.restart_policy.max_attempts = 2
    job.spec.restart_policy.delay_ns = 3 * SECOND
    c.apply(Transaction().create(job))
    for attempt in range(3):
        c.converge(agent=True)
        [task] = running(c, "flaky")
        assert task.slot == 0
        complete_all(c, [task], "failed")
        wake = c.converge(agent=True)
        [failed] = [t for t in c.tasks("flaky") if t.id == task.id]
        assert failed.desired_state == "shutdown"  # the try is over, as dockerd shows it
        if attempt < 2:
            assert wake == c.now + 3 * SECOND  # the restart waits for its delay ...
            assert not running(c, "flaky")
            [waiting] = [t for t in c.tasks("flaky") if t.desired_state == "ready"]
            assert (waiting.slot, waiting.job_iteration, waiting.status.state) == (0, 0, "ready")
            c.now = wake  # ... and is then desired "complete", as a job's tasks are
    assert wake is None  # two restarts made: the slot is given up
    tasks = c.tasks("flaky")
    assert len(tasks) == 3 and {t.status.state for t in tasks} == {"failed"}
    c.now += 60 * SECOND
    assert reconcile(c.view(), c.now, c.memory).transaction is None


def test_job_with_restart_condition_none_is_not_retried() -> None:
    c = SyncCluster()
    job = replicated_job("strict", total=2, max_concurrent=2)
    job.spec.restart_policy.condition = "none"
    c.apply(Transaction().create(job))
    c.converge(agent=True)
    first, second = running(c, "strict")
    complete_all(c, [second])
    c.now += SECOND
    complete_all(c, [first], "failed")
    c.now += 60 * SECOND
    assert c.converge(agent=True) is None
    assert len(c.tasks("strict")) == 2  # nothing finished after the failure: no third task


def test_a_given_up_slot_gets_a_fresh_task_once_another_task_finished() -> None:
    """swarmkit reconciles a job at each report of a task that finished; a slot whose
    restarts are used up has no task meant to run then, and gets a fresh one at once (no
    restart delay); its failure finds the attempts used up, as before."""
    c = SyncCluster()
    job = replicated_job("strict", total=3, max_concurrent=3)
    job.spec.restart_policy.max_attempts = 1
    job.spec.restart_policy.delay_ns = 0
    c.apply(Transaction().create(job))
    c.converge(agent=True)
    first, second, third = running(c, "strict")
    for _ in range(2):  # the first run, then its one restart
        complete_all(c, [t for t in running(c, "strict") if t.slot == first.slot], "failed")
        c.converge(agent=True)
        c.converge(agent=True)
    assert {t.slot for t in running(c, "strict")} == {second.slot, third.slot}
    c.now += SECOND
    complete_all(c, [second])
    c.converge(agent=True)
    [fresh] = [t for t in running(c, "strict") if t.slot == first.slot]
    assert fresh.meta.created_at_ns == c.now and len(c.tasks("strict")) == 5
    c.now += SECOND
    complete_all(c, [fresh], "failed")
    c.converge(agent=True)
    assert [t.slot for t in running(c, "strict")] == [third.slot]  # given up again
    c.now += SECOND
    complete_all(c, [third])
    c.converge(agent=True)
    [again] = running(c, "strict")
    assert again.slot == first.slot and len(c.tasks("strict")) == 6
    c.now += SECOND
    complete_all(c, [again])
    assert c.converge(agent=True) is None
    assert sum(t.status.state == "complete" for t in c.tasks("strict")) == 3


def test_a_new_leader_gives_every_given_up_slot_a_fresh_task() -> None:
    """swarmkit's job orchestrator reconciles every job when a leader starts: a slot given
    up before then gets a fresh task at once; one given up later waits, as before, for
    another task of the job to finish."""
    c = SyncCluster()
    job = replicated_job("strict", total=2, max_concurrent=2)
    job.spec.restart_policy.max_attempts = 1
    job.spec.restart_policy.delay_ns = 0
    c.apply(Transaction().create(job))
    c.converge(agent=True)
    first, second = running(c, "strict")
    for _ in range(2):  # the first run, then its one restart
        complete_all(c, [t for t in running(c, "strict") if t.slot == first.slot], "failed")
        c.converge(agent=True)
        c.converge(agent=True)
    assert [t.slot for t in running(c, "strict")] == [second.slot]
    c.now += SECOND
    assert c.converge(agent=True) is None  # the same leader: still given up
    c.new_leader()
    c.now += SECOND
    c.converge(agent=True)
    [fresh] = [t for t in running(c, "strict") if t.slot == first.slot]
    assert fresh.meta.created_at_ns == c.now and len(c.tasks("strict")) == 4
    c.now += SECOND
    complete_all(c, [fresh], "failed")  # its attempts are still used up
    c.converge(agent=True)
    assert [t.slot for t in running(c, "strict")] == [second.slot]


def test_a_new_leader_gives_a_global_jobs_given_up_node_a_fresh_task() -> None:
    c = SyncCluster(nodes=2)
    job = global_job("setup")
    job.spec.restart_policy.condition = "none"
    c.apply(Transaction().create(job))
    c.converge(agent=True)
    on_node1, _ = running(c, "setup")
    complete_all(c, [on_node1], "failed")
    c.converge(agent=True)
    c.now += SECOND
    c.new_leader()
    c.converge(agent=True)
    fresh = [t for t in running(c, "setup") if t.node_id == on_node1.node_id]
    assert len(fresh) == 1 and fresh[0].id != on_node1.id


def test_update_starts_a_new_iteration_and_removes_the_old_tasks_that_still_run() -> None:
    c = SyncCluster()
    c.apply(Transaction().create(replicated_job("batch", total=2, max_concurrent=2)))
    c.converge(agent=True)
    old_done, old_running = running(c, "batch")
    complete_all(c, [old_done])
    svc = c.service("batch")
    svc.job_status.job_iteration = 1  # what the API's update does
    c.update_service(svc)
    c.apply(reconcile(c.view(), c.now, c.memory).transaction)  # type: ignore[arg-type]
    by_id = {t.id: t for t in c.tasks("batch")}
    assert by_id[old_running.id].desired_state == "remove"
    assert by_id[old_done.id].desired_state == "complete"  # history, kept
    c.converge(agent=True)
    fresh = running(c, "batch")
    assert sorted(t.slot for t in fresh) == [0, 1]
    assert {t.job_iteration for t in fresh} == {1}
    assert old_running.id not in {t.id for t in c.tasks("batch")}  # stopped, then deleted


def test_history_limit_keeps_the_current_iterations_tries() -> None:
    c = SyncCluster()
    cluster = Cluster(id="cluster")
    cluster.spec.annotations.name = "default"
    cluster.spec.task_history_retention_limit = 2
    job = replicated_job("flaky", total=1, max_concurrent=1)
    job.spec.restart_policy.delay_ns = 0
    job.spec.restart_policy.max_attempts = 3
    c.apply(Transaction().create(cluster).create(job))
    for _ in range(4):
        c.converge(agent=True)
        complete_all(c, running(c, "flaky"), "failed")
    c.converge(agent=True)
    assert len(c.tasks("flaky")) == 4  # trimming them would grant more attempts
    svc = c.service("flaky")
    svc.job_status.job_iteration = 1
    c.update_service(svc)
    c.converge(agent=True)
    tasks = c.tasks("flaky")
    assert len(tasks) == 2  # the old iteration's go first
    assert sum(t.job_iteration == 1 for t in tasks) == 1


def test_global_job_runs_once_per_eligible_node_and_on_nodes_that_join_later() -> None:
    c = SyncCluster(nodes=2)
    c.apply(Transaction().create(global_job("setup")))
    c.converge(agent=True)
    tasks = running(c, "setup")
    assert sorted(t.node_id for t in tasks) == ["node1", "node2"]
    assert all(t.slot == 0 and t.desired_state == "complete" for t in tasks)
    complete_all(c, tasks)
    c.converge(agent=True)
    assert len(c.tasks("setup")) == 2
    c.apply(Transaction().create(ready_node("node3", "host-3")))
    c.converge(agent=True)
    [late] = running(c, "setup")
    assert late.node_id == "node3"


def test_global_job_follows_constraints_and_stops_on_a_drained_node() -> None:
    c = SyncCluster(nodes=2)
    drained = Node()
    drained.CopyFrom(c.view().nodes["node2"])
    c.apply(Transaction().create(global_job("setup", "node.hostname==host-2")))
    c.converge(agent=True)
    [task] = running(c, "setup")
    assert task.node_id == "node2"
    drained.spec.availability = "drain"
    drained.meta.CopyFrom(c.view().nodes["node2"].meta)
    c.apply(Transaction().update(drained))
    c.converge(agent=True)
    [stopped] = c.tasks("setup")
    assert stopped.desired_state == "shutdown" and stopped.status.state == "shutdown"


def test_a_global_jobs_given_up_node_gets_a_fresh_task_once_another_task_finished() -> None:
    c = SyncCluster(nodes=2)
    job = global_job("setup")
    job.spec.restart_policy.condition = "none"
    c.apply(Transaction().create(job))
    c.converge(agent=True)
    on_node1, on_node2 = running(c, "setup")
    complete_all(c, [on_node1], "failed")
    assert c.converge(agent=True) is None and len(c.tasks("setup")) == 2  # given up
    c.now += SECOND
    complete_all(c, [on_node2])
    c.converge(agent=True)
    [fresh] = running(c, "setup")
    assert fresh.node_id == "node1" and fresh.id != on_node1.id


def test_job_task_is_no_order_to_stop_for_the_agent() -> None:
    task = Task(id="t", desired_state="complete")
    assert not wants_stop(task)
    task.desired_state = "shutdown"
    assert wants_stop(task)


def test_job_service_spec_copies_no_mode_into_its_tasks() -> None:
    c = SyncCluster()
    c.apply(Transaction().create(replicated_job("batch", total=1, max_concurrent=1)))
    c.converge()
    [task] = c.tasks("batch")
    assert task.spec.WhichOneof("mode") is None
    service = c.store.get(Service, "batch")
    assert service is not None and service.spec.WhichOneof("mode") == "replicated_job"


def test_replicated_job_task_on_a_drained_node_runs_again_elsewhere() -> None:
    c = SyncCluster(nodes=2)
    c.apply(Transaction().create(replicated_job("batch", total=1, max_concurrent=1)))
    c.converge(agent=True)
    [first] = running(c, "batch")
    node = Node()
    node.CopyFrom(c.view().nodes[first.node_id])
    node.spec.availability = "drain"
    c.apply(Transaction().update(node))
    c.converge(agent=True)  # no restart delay off a drained node: once the old one stopped
    [moved] = running(c, "batch")
    assert moved.node_id != first.node_id and moved.slot == first.slot
    stopped = c.store.get(Task, first.id)
    assert stopped is not None and stopped.desired_state == "shutdown"


def test_max_attempts_never_stops_a_global_jobs_restarts() -> None:
    """swarmkit 20.10 records a global job's restarts under its node and looks them up
    without it: its tasks are restarted however many attempts they used."""
    c = SyncCluster(nodes=1)
    job = global_job("setup")
    job.spec.restart_policy.max_attempts = 1
    job.spec.restart_policy.delay_ns = 0
    c.apply(Transaction().create(job))
    for _ in range(4):
        c.converge(agent=True)
        complete_all(c, running(c, "setup"), "failed")
    c.converge(agent=True)
    assert len(running(c, "setup")) == 1 and len(c.tasks("setup")) == 5


def test_a_job_retry_rejected_while_it_waits_is_retried_once_its_delay_is_over() -> None:
    """As for services (swarmkit's restart supervisor serves both): no tight retry loop."""
    c = SyncCluster()
    job = replicated_job("flaky", total=1, max_concurrent=1)
    job.spec.restart_policy.delay_ns = 3 * SECOND
    c.apply(Transaction().create(job))
    c.converge(agent=True)
    [task] = running(c, "flaky")
    complete_all(c, [task], "failed")
    due = c.converge(agent=True)
    assert due == c.now + 3 * SECOND
    [waiting] = [t for t in c.tasks("flaky") if t.desired_state == "ready"]
    c.now += SECOND
    c.set_task(waiting.id, "rejected")
    assert c.converge(agent=True) == due
    assert len(c.tasks("flaky")) == 2
    c.now = due
    c.converge(agent=True)
    states = sorted((t.desired_state, t.status.state) for t in c.tasks("flaky"))
    assert states == [("ready", "ready"), ("shutdown", "failed"), ("shutdown", "rejected")]
