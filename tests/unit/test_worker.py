"""The worker's reconciliation of assignments with what runs, and the states it reports."""

from __future__ import annotations

import asyncio

import pytest
from polling import eventually

from controlplane.agent.runtime import ContainerState, Runtime
from controlplane.agent.worker import Worker
from controlplane.pb.objects_pb2 import NodeDescription, Task, TaskStatus


class Reports:
    def __init__(self) -> None:
        self.by_task: dict[str, list[TaskStatus]] = {}

    def __call__(self, task_id: str, status: TaskStatus) -> None:
        self.by_task.setdefault(task_id, []).append(status)

    def states(self, task_id: str) -> list[str]:
        return [s.state for s in self.by_task.get(task_id, [])]

    def last(self, task_id: str) -> TaskStatus:
        return self.by_task[task_id][-1]


def task(
    task_id: str, image: str, *args: str, state: str = "assigned", desired: str = "running"
) -> Task:
    t = Task(id=task_id, node_id="n1", service_id="s1", slot=1, desired_state=desired)
    t.spec.annotations.name = "web"
    t.spec.container.image = image
    t.spec.container.args.extend(args)
    t.status.state = state
    return t


def make_worker() -> tuple[Worker, Reports]:
    reports = Reports()
    return Worker(Runtime(), reports, stop_grace=0.1), reports


RUN_STATES = ["accepted", "preparing", "ready", "starting", "running"]


def test_a_task_runs_through_every_state_and_completes() -> None:
    async def scenario() -> None:
        worker, reports = make_worker()
        worker.reconcile({"t1": task("t1", "busybox", "sh", "-c", "echo done")}, {})
        await eventually("t1 complete", lambda: "complete" in reports.states("t1"))
        assert reports.states("t1") == [*RUN_STATES, "complete"]
        messages = [s.message for s in reports.by_task["t1"]]
        assert messages == ["accepted", "preparing", "prepared", "starting", "started", "finished"]
        container = worker.runtime.get(reports.last("t1").container_id)
        assert container.name == "web.1.t1"
        assert container.config.labels["com.docker.swarm.task.id"] == "t1"
        # Still assigned, already done: not run again.
        worker.reconcile({"t1": task("t1", "busybox", state="complete")}, {})
        await asyncio.sleep(0)
        assert reports.states("t1").count("running") == 1

    asyncio.run(scenario())


def test_a_task_desired_ready_is_prepared_and_started_once_desired_running() -> None:
    """swarmkit's agent takes a task no further than its desired state: a replacement that
    waits for its restart delay has its container created, not started."""

    async def scenario() -> None:
        worker, reports = make_worker()
        waiting = task("t1", "busybox", "sleep", "60", desired="ready")
        worker.reconcile({"t1": waiting}, {})
        await eventually("t1 prepared", lambda: "ready" in reports.states("t1"))
        await asyncio.sleep(0.05)  # nothing more happens on its own
        assert reports.states("t1") == ["accepted", "preparing", "ready"]
        assert not reports.last("t1").container_id  # dockerd's: no ContainerStatus yet
        [made] = worker.task_containers()
        container = worker.runtime.get(made.container_id)
        assert container.state is ContainerState.CREATED
        worker.reconcile({"t1": task("t1", "busybox", "sleep", "60", state="ready")}, {})
        await eventually("t1 running", lambda: "running" in reports.states("t1"))
        assert reports.states("t1") == RUN_STATES
        assert container.state is ContainerState.RUNNING
        await worker.close()

    asyncio.run(scenario())


def test_a_task_stopped_while_it_waits_is_shut_down_without_starting() -> None:
    async def scenario() -> None:
        worker, reports = make_worker()
        worker.reconcile({"t1": task("t1", "busybox", "true", desired="ready")}, {})
        await eventually("t1 prepared", lambda: "ready" in reports.states("t1"))
        stopped = task("t1", "busybox", "true", state="ready", desired="shutdown")
        worker.reconcile({"t1": stopped}, {})
        await eventually("t1 shut down", lambda: "shutdown" in reports.states("t1"))
        assert reports.states("t1") == ["accepted", "preparing", "ready", "shutdown"]
        assert not worker.runtime.containers()  # created, never started, removed

    asyncio.run(scenario())


def test_failures_are_reported_with_dockers_words() -> None:
    async def scenario() -> None:
        worker, reports = make_worker()
        worker.reconcile(
            {
                "exit": task("exit", "busybox", "sh", "-c", "exit 7"),
                "image": task("image", "nosuch:2"),
                "cmd": task("cmd", "alpine", "nosuchcmd"),
                "empty": task("empty", ""),
            },
            {},
        )
        await eventually(
            "all ended",
            lambda: all(
                reports.states(t) and reports.states(t)[-1] in ("failed", "rejected")
                for t in ("exit", "image", "cmd", "empty")
            ),
        )
        assert reports.last("exit").state == "failed"
        assert reports.last("exit").err == "task: non-zero exit (7)"
        assert reports.last("exit").exit_code == 7  # docker inspect's ContainerStatus.ExitCode
        running = next(s for s in reports.by_task["exit"] if s.state == "running")
        assert running.pid > 0
        assert reports.states("image") == ["accepted", "preparing", "rejected"]
        assert reports.last("image").err == "No such image: nosuch:2"
        assert reports.last("empty").err.startswith("invalid reference format")
        assert reports.last("cmd").state == "failed"
        assert reports.last("cmd").err.startswith("starting container failed: OCI runtime")
        assert 'exec: "nosuchcmd": executable file not found in $PATH' in reports.last("cmd").err

    asyncio.run(scenario())


def test_hostname_and_env_templates_are_expanded_for_each_task() -> None:
    """`--hostname "{{.Node.Hostname}}-{{.Service.Name}}" --env SLOT={{.Task.Slot}}`: real
    20.10 gives the container the expanded values; a field Swarm has not fails the task."""

    async def scenario() -> None:
        node = NodeDescription(hostname="worker-1", os="linux", architecture="x86_64")
        reports = Reports()
        worker = Worker(Runtime(), reports, stop_grace=0.1, node=node)
        good = task("good", "busybox", "sleep", "100")
        good.spec.container.hostname = "{{.Node.Hostname}}-{{ .Service.Name }}"
        good.spec.container.env.extend(["SLOT={{.Task.Slot}}", "WHO={{.Task.Name}}@{{.Node.ID}}"])
        bad = task("bad", "busybox", "true")
        bad.spec.container.hostname = "{{.Node.Labels}}"
        worker.reconcile({"good": good, "bad": bad}, {})
        await eventually("good runs", lambda: reports.states("good")[-1:] == ["running"])
        [view] = [c for c in worker.runtime.containers() if c.name.startswith("web.1.good")]
        assert view.hostname == "worker-1-web"
        assert (view.env["SLOT"], view.env["WHO"]) == ("1", "web.1.good@n1")
        await eventually("bad rejected", lambda: reports.states("bad")[-1:] == ["rejected"])
        assert reports.last("bad").err.startswith(
            "failed to expand the template {{.Node.Labels}} in --hostname: Swarm's templates "
            "name one of {{.Service.ID}}, {{.Service.Name}}, {{.Node.ID}}, {{.Node.Hostname}}"
        )
        await worker.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["desired shutdown", "desired remove", "vanished"])
def test_running_tasks_stop_when_asked_or_gone(how: str) -> None:
    async def scenario() -> None:
        worker, reports = make_worker()
        worker.reconcile({"t1": task("t1", "busybox", "sleep", "1000")}, {})
        await eventually("running", lambda: "running" in reports.states("t1"))
        container = worker.runtime.get(reports.last("t1").container_id)
        if how == "vanished":
            worker.reconcile({}, {})
        else:
            desired = how.split()[1]
            worker.reconcile({"t1": task("t1", "busybox", state="running", desired=desired)}, {})
        await eventually("shutdown", lambda: reports.states("t1")[-1] == "shutdown")
        assert reports.last("t1").message == "shutdown"
        assert container.state is ContainerState.EXITED and container.exit_code == 137
        if how == "vanished":  # forgotten once finished, its container removed
            worker.reconcile({}, {})
            assert worker.statuses() == {}
            await eventually("container removed", lambda: worker.runtime.containers() == [])

    asyncio.run(scenario())


@pytest.mark.parametrize(("spec_grace_ns", "used"), [(None, 0.1), (3_000_000_000, 3.0)])
def test_a_task_is_stopped_with_its_services_stop_grace_period(
    spec_grace_ns: int | None, used: float
) -> None:
    """`--stop-grace-period` of the service, else the worker's default."""

    async def scenario() -> None:
        worker, reports = make_worker()  # its own grace: 0.1 s
        graces: list[float] = []
        real_stop = worker.runtime.stop

        async def stop(container_id: str, grace: float) -> int | None:
            graces.append(grace)
            return await real_stop(container_id, 0.0)

        worker.runtime.stop = stop  # type: ignore[method-assign]
        running = task("t1", "busybox", "sleep", "1000")
        if spec_grace_ns is not None:
            running.spec.container.stop_grace_period_ns = spec_grace_ns
        worker.reconcile({"t1": running}, {})
        await eventually("running", lambda: "running" in reports.states("t1"))
        stopping = Task()
        stopping.CopyFrom(running)
        stopping.desired_state = "shutdown"
        worker.reconcile({"t1": stopping}, {})
        await eventually("shutdown", lambda: reports.states("t1")[-1] == "shutdown")
        assert graces == [used]

    asyncio.run(scenario())


def test_tasks_this_node_knows_nothing_of() -> None:
    async def scenario() -> None:
        worker, reports = make_worker()
        worker.reconcile(
            {
                # The managers think it runs here: this node restarted and lost it.
                "lost": task("lost", "busybox", state="running"),
                # Shut down before it ever started.
                "early": task("early", "busybox", desired="shutdown"),
                # Finished in an earlier life: left alone.
                "old": task("old", "busybox", state="complete"),
                # Not a state at all: left alone, not crashed on.
                "odd": task("odd", "busybox", state="sprinting"),
            },
            {},
        )
        assert reports.states("lost") == ["failed"]
        assert reports.last("lost").err == "task lost: the node restarted"
        assert reports.states("early") == ["shutdown"]
        assert reports.states("old") == [] and reports.states("odd") == []
        assert worker.runtime.containers() == []
        assert set(worker.statuses()) == {"lost", "early", "old", "odd"}

    asyncio.run(scenario())


def test_close_kills_what_runs() -> None:
    async def scenario() -> None:
        worker, reports = make_worker()
        worker.reconcile({"t1": task("t1", "nginx")}, {})
        await eventually("running", lambda: "running" in reports.states("t1"))
        await worker.close()
        assert all(c.state is ContainerState.EXITED for c in worker.runtime.containers())

    asyncio.run(scenario())


def test_bad_stop_grace_is_refused() -> None:
    with pytest.raises(ValueError, match="stop_grace must not be negative"):
        Worker(Runtime(), Reports(), stop_grace=-1)


def test_a_runner_that_crashes_ends_its_task_instead_of_leaving_it_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error nobody expected, while preparing (rejected) or once started (failed): the
    task ends with the error, so the orchestrator replaces it."""

    async def scenario() -> None:
        worker, reports = make_worker()

        def broken_create(config: object) -> None:
            raise RuntimeError("the runtime broke")

        monkeypatch.setattr(worker.runtime, "create", broken_create)
        worker.reconcile({"t1": task("t1", "busybox", "sleep", "60")}, {})
        await eventually("t1 rejected", lambda: "rejected" in reports.states("t1"))
        assert reports.states("t1") == ["accepted", "preparing", "rejected"]
        assert reports.last("t1").err == "the runtime broke"
        monkeypatch.undo()

        async def broken_wait(container_id: str) -> int:
            raise RuntimeError("lost track of the container")

        monkeypatch.setattr(worker.runtime, "wait", broken_wait)
        worker.reconcile({"t2": task("t2", "busybox", "sleep", "60")}, {})
        await eventually("t2 failed", lambda: "failed" in reports.states("t2"))
        assert reports.states("t2") == [*RUN_STATES, "failed"]
        assert reports.last("t2").err == "task: lost track of the container"

    asyncio.run(scenario())
