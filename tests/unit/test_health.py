"""Healthchecks: the state machine on given times, the probing loop on a fake clock, the
checks run as execs in emulated containers, and a swarm task failed when unhealthy."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from polling import eventually

from controlplane.agent.exec_sessions import ExecSessions
from controlplane.agent.health import (
    NS,
    PROBE_FAILED,
    Health,
    HealthConfig,
    HealthConfigError,
    HealthStatus,
    ProbeResult,
    go_duration,
    run_health_checks,
)
from controlplane.agent.runtime import ContainerConfig, Runtime
from controlplane.agent.worker import Worker
from controlplane.pb.objects_pb2 import Task, TaskStatus

DEADLINE = 30.0


def result(at_s: float, exit_code: int, output: str = "") -> ProbeResult:
    return ProbeResult(int(at_s * NS), int(at_s * NS) + 1000, exit_code, output)


# ---- configuration ------------------------------------------------------------------------


def test_config_defaults_and_commands() -> None:
    shell = HealthConfig.parse({"Test": ["CMD-SHELL", "wget -q -O- localhost || exit 1"]})
    assert shell is not None
    assert shell.argv == ["/bin/sh", "-c", "wget -q -O- localhost || exit 1"]
    assert (shell.interval, shell.timeout, shell.max_failures) == (30.0, 30.0, 3)
    direct = HealthConfig.parse(
        {"Test": ["CMD", "true", "x"], "Interval": NS, "Timeout": NS // 2, "Retries": 2}
    )
    assert direct is not None
    assert direct.argv == ["true", "x"]
    assert (direct.interval, direct.timeout, direct.max_failures) == (1.0, 0.5, 2)
    # No check to run: none given, the image's (the built-in images have none), or NONE.
    for nothing in (None, {}, {"Test": []}, {"Test": ["NONE"]}):
        assert HealthConfig.parse(nothing) is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"Test": ["CMD", "true"], "Retries": -1}, "Retries in Healthcheck cannot be negative"),
        ({"Test": ["CMD", "true"], "Interval": 1000}, "Interval in Healthcheck cannot be less"),
        ({"Test": ["CMD", "true"], "Timeout": -5}, "Timeout in Healthcheck cannot be less"),
        ({"Test": ["CMD", "true"], "StartPeriod": "1s"}, "StartPeriod in Healthcheck must be"),
        ({"Test": ["RUN", "true"]}, 'must be ["NONE"], ["CMD", ARGS...]'),
        ({"Test": ["CMD"]}, 'must be ["NONE"], ["CMD", ARGS...]'),
        ({"Test": ["CMD-SHELL", "a", "b"]}, "CMD-SHELL takes exactly one command line"),
        ({"Test": "true"}, "Test in Healthcheck must be a list of strings"),
        ("true", "Healthcheck must be an object"),
    ],
)
def test_bad_configs_are_refused_with_what_is_wrong(body: Any, words: str) -> None:
    with pytest.raises(HealthConfigError) as refused:
        HealthConfig.parse(body)
    assert words in str(refused.value)


def test_go_durations() -> None:
    assert [go_duration(s) for s in (30, 1.5, 0.05, 90, 3600.25)] == [
        "30s",
        "1.5s",
        "50ms",
        "1m30s",
        "1h0m0.25s",
    ]


# ---- the state machine --------------------------------------------------------------------


def test_retries_failures_in_a_row_make_it_unhealthy_and_a_success_heals() -> None:
    config = HealthConfig(("CMD", "check"), retries=2)
    health = Health(config, started_at_ns=0)
    assert health.status is HealthStatus.STARTING
    assert not health.record(result(1, 1))
    assert (health.status, health.failing_streak) == (HealthStatus.STARTING, 1)
    assert health.record(result(2, 1))
    assert (health.status, health.failing_streak) == (HealthStatus.UNHEALTHY, 2)
    assert not health.record(result(3, 2))  # any non-zero status is a failure
    assert health.failing_streak == 3
    assert health.record(result(4, 0))
    assert (health.status, health.failing_streak) == (HealthStatus.HEALTHY, 0)
    assert health.summary() == "(healthy)"


def test_failures_in_the_start_period_do_not_count_until_healthy() -> None:
    config = HealthConfig(("CMD", "check"), start_period_ns=10 * NS, retries=1)
    health = Health(config, started_at_ns=100 * NS)
    health.record(result(105, 1))
    assert (health.status, health.failing_streak) == (HealthStatus.STARTING, 0)
    assert health.summary() == "(health: starting)"
    health.record(result(106, 0))
    assert health.status is HealthStatus.HEALTHY
    health.record(result(107, 1))  # healthy once: the start period protects no more
    assert health.status is HealthStatus.UNHEALTHY
    late = Health(config, started_at_ns=100 * NS)
    late.record(result(110, 1))  # the period is over when the check starts
    assert late.status is HealthStatus.UNHEALTHY


def test_the_last_five_results_are_kept_for_inspect() -> None:
    health = Health(HealthConfig(("CMD", "check")), started_at_ns=0)
    for second in range(1, 8):
        health.record(result(second, second % 2, f"run {second}"))
    shown = health.to_json(lambda ns: str(ns // NS))
    assert [entry["Output"] for entry in shown["Log"]] == [f"run {s}" for s in range(3, 8)]
    assert shown["Log"][-1] == {"Start": "7", "End": "7", "ExitCode": 1, "Output": "run 7"}
    assert (shown["Status"], shown["FailingStreak"]) == ("healthy", 1)  # 1 of 3 retries


def test_the_loop_probes_every_interval_on_a_fake_clock() -> None:
    async def scenario() -> None:
        config = HealthConfig(("CMD", "check"), interval_ns=5 * NS, timeout_ns=2 * NS, retries=1)
        health = Health(config, started_at_ns=0)
        clock = [0.0]
        probes: list[tuple[list[str], float, float]] = []
        changes: list[HealthStatus] = []

        async def sleep(seconds: float) -> None:
            clock[0] += seconds
            await asyncio.sleep(0)

        async def probe(argv: list[str], timeout: float) -> ProbeResult:
            probes.append((argv, timeout, clock[0]))
            return result(clock[0], 0 if len(probes) < 3 else 1)

        loop = asyncio.create_task(run_health_checks(health, probe, changes.append, sleep))
        await health.until(HealthStatus.UNHEALTHY)
        loop.cancel()
        assert probes == [(["check"], 2.0, 5.0), (["check"], 2.0, 10.0), (["check"], 2.0, 15.0)]
        assert changes == [HealthStatus.HEALTHY, HealthStatus.UNHEALTHY]

    asyncio.run(scenario())


# ---- checks run as execs in emulated containers -------------------------------------------


def checked(runtime: Runtime, test: list[str], **fields: int) -> str:
    config = HealthConfig.parse({"Test": test, "Interval": 20_000_000, **fields})
    container = runtime.create(ContainerConfig("busybox", args=["sleep", "1d"], healthcheck=config))
    return container.id


def test_checks_run_as_execs_with_their_output_and_events() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        execs = ExecSessions(runtime)
        sick = checked(runtime, ["CMD-SHELL", "echo checking; false"], Retries=2)
        well = checked(runtime, ["CMD", "true"])
        for container_id in (sick, well):
            await runtime.start(container_id)
        sick_health, well_health = runtime.get(sick).health, runtime.get(well).health
        assert sick_health is not None and well_health is not None
        await asyncio.wait_for(sick_health.until(HealthStatus.UNHEALTHY), DEADLINE)
        await asyncio.wait_for(well_health.until(HealthStatus.HEALTHY), DEADLINE)
        assert sick_health.log[0].exit_code == 1
        assert sick_health.log[0].output == "checking\n"
        assert well_health.log[0].output == ""
        assert execs.running(sick) == []  # each check's session is forgotten once done
        assert not execs._sessions
        actions = [e.action for e in runtime.events.kept() if e.actor_id == sick]
        assert "exec_create: /bin/sh -c echo checking; false" in actions
        assert "exec_die" in actions
        assert actions.count("health_status: unhealthy") == 1
        await runtime.close()
        assert sick_health.status is HealthStatus.UNHEALTHY  # it stays as it last was

    asyncio.run(scenario())


def test_a_check_past_its_timeout_is_killed_and_fails() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        ExecSessions(runtime)
        slow = checked(runtime, ["CMD", "sleep", "1d"], Timeout=50_000_000, Retries=1)
        await runtime.start(slow)
        health = runtime.get(slow).health
        assert health is not None
        await asyncio.wait_for(health.until(HealthStatus.UNHEALTHY), DEADLINE)
        assert health.log[0].exit_code == PROBE_FAILED
        assert health.log[0].output == "Health check exceeded timeout (50ms)"
        await runtime.close()

    asyncio.run(scenario())


# ---- swarm tasks --------------------------------------------------------------------------


def health_task(task_id: str, test: list[str]) -> Task:
    t = Task(id=task_id, node_id="n1", service_id="s1", slot=1, desired_state="running")
    t.spec.annotations.name = "web"
    t.spec.container.image = "busybox"
    t.spec.container.args.extend(["sleep", "1d"])
    check = {"Test": test, "Interval": 20_000_000, "Retries": 2}
    t.spec.container.unmodelled_json = json.dumps({"Healthcheck": check})
    t.status.state = "assigned"
    return t


def test_a_task_runs_once_healthy_and_fails_when_unhealthy() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        ExecSessions(runtime)
        reports: dict[str, list[TaskStatus]] = {}
        worker = Worker(runtime, lambda i, s: reports.setdefault(i, []).append(s), 0.1)
        worker.reconcile(
            {
                "good": health_task("good", ["CMD", "true"]),
                "bad": health_task("bad", ["CMD-SHELL", "exit 3"]),
            },
            {},
        )
        await eventually(
            "bad failed", lambda: "bad" in reports and reports["bad"][-1].state == "failed"
        )
        await eventually("good running", lambda: reports["good"][-1].state == "running")
        assert [s.state for s in reports["bad"]][-2:] == ["starting", "failed"]
        failed = reports["bad"][-1]
        assert failed.err == "task: non-zero exit (137): dockerexec: unhealthy container"
        assert failed.message == "starting"
        good = runtime.get(reports["good"][-1].container_id)
        assert good.health is not None and good.health.status is HealthStatus.HEALTHY
        await worker.close()

    asyncio.run(scenario())


def test_a_task_with_a_bad_healthcheck_is_rejected() -> None:
    async def scenario() -> None:
        reports: dict[str, list[TaskStatus]] = {}
        worker = Worker(Runtime(), lambda i, s: reports.setdefault(i, []).append(s), 0.1)
        bad = health_task("t", ["CMD", "true"])
        bad.spec.container.unmodelled_json = json.dumps({"Healthcheck": {"Test": ["X", "y"]}})
        worker.reconcile({"t": bad}, {})
        await eventually(
            "rejected", lambda: "t" in reports and reports["t"][-1].state == "rejected"
        )
        assert "Test in HealthConfig must be" in reports["t"][-1].err

    asyncio.run(scenario())
