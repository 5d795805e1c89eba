"""Docker's container healthchecks (`--health-cmd`, a service's or a container's Healthcheck).

dockerd 20.10's rules: once the container has started, the check runs every interval (30s by
default) as an exec in the container (`CMD` runs its arguments, `CMD-SHELL` runs
`/bin/sh -c CMD`), killed after its timeout (30s). The health starts as `starting`; a check
that exits 0 makes it `healthy` and clears the failing streak; any other result adds one to
the streak (except while the container is still `starting` within its start period) and
`retries` (3) failures in a row make it `unhealthy`. The last five results are kept with
their output (4096 bytes at most), for `docker inspect`'s State.Health. Each change of status
is a `health_status: STATUS` event.

`Health` is the state machine (pure, given the times); `run_health_checks` is the loop that
probes and feeds it. What a container does with its health is its owner's business: a swarm
task's controller (`worker.py`) fails the task when it turns unhealthy, as swarmkit does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

log = logging.getLogger("controlplane.agent.health")

NS = 1_000_000_000
DEFAULT_INTERVAL_NS = 30 * NS
DEFAULT_TIMEOUT_NS = 30 * NS
DEFAULT_RETRIES = 3
MINIMUM_DURATION_NS = 1_000_000  # dockerd and swarmkit refuse shorter durations (but 0)
KEPT_RESULTS = 5
MAX_OUTPUT_BYTES = 4096
PROBE_FAILED = -1  # dockerd's exit code for a check that could not run or hit its timeout


class HealthConfigError(ValueError):
    """A Healthcheck that dockerd would refuse; the message says which field and why."""


class HealthStatus(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class HealthConfig:
    """A Healthcheck that runs: `test` as given (`["CMD-SHELL", "..."]` or `["CMD", ...]`),
    durations in nanoseconds, 0 meaning dockerd's default."""

    test: tuple[str, ...]
    interval_ns: int = 0
    timeout_ns: int = 0
    start_period_ns: int = 0
    retries: int = 0

    @property
    def argv(self) -> list[str]:
        """The command the exec runs."""
        kind, *rest = self.test
        return ["/bin/sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest

    @property
    def interval(self) -> float:
        return (self.interval_ns or DEFAULT_INTERVAL_NS) / NS

    @property
    def timeout(self) -> float:
        return (self.timeout_ns or DEFAULT_TIMEOUT_NS) / NS

    @property
    def max_failures(self) -> int:
        return self.retries if self.retries > 0 else DEFAULT_RETRIES

    @staticmethod
    def disables(value: Any) -> bool:
        """Whether the API's Healthcheck object turns checks off (`--no-healthcheck`: Test
        `["NONE"]`, which inspect shows as given)."""
        return isinstance(value, dict) and value.get("Test") == ["NONE"]

    @classmethod
    def parse(cls, value: Any, where: str = "Healthcheck") -> HealthConfig | None:
        """From the API's Healthcheck object; None when there is no check to run (none given,
        an empty Test, which would inherit the image's (the built-in images have none), or
        `["NONE"]`). HealthConfigError names what is wrong, in dockerd's words."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise HealthConfigError(f"{where} must be an object, got {type(value).__name__}")
        test = value.get("Test") or []
        if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
            raise HealthConfigError(f"Test in {where} must be a list of strings")
        if not test or test == ["NONE"]:
            return None
        if test[0] == "CMD-SHELL" and len(test) != 2:
            raise HealthConfigError(f"Test in {where}: CMD-SHELL takes exactly one command line")
        if test[0] not in ("CMD", "CMD-SHELL") or len(test) < 2:
            raise HealthConfigError(
                f'Test in {where} must be ["NONE"], ["CMD", ARGS...] or '
                f'["CMD-SHELL", COMMAND], got {test!r}'
            )
        durations = {
            name: _duration(value, name, where) for name in ("Interval", "Timeout", "StartPeriod")
        }
        retries = value.get("Retries") or 0
        if not isinstance(retries, int) or isinstance(retries, bool):
            raise HealthConfigError(f"Retries in {where} must be an integer")
        if retries < 0:
            raise HealthConfigError(f"Retries in {where} cannot be negative")
        return cls(
            tuple(test),
            durations["Interval"],
            durations["Timeout"],
            durations["StartPeriod"],
            retries,
        )


def _duration(value: dict[str, Any], name: str, where: str) -> int:
    ns = value.get(name) or 0
    if not isinstance(ns, int) or isinstance(ns, bool):
        raise HealthConfigError(f"{name} in {where} must be an integer of nanoseconds")
    if ns != 0 and ns < MINIMUM_DURATION_NS:
        raise HealthConfigError(f"{name} in {where} cannot be less than 1ms")
    return ns


@dataclass(frozen=True)
class ProbeResult:
    start_ns: int
    end_ns: int
    exit_code: int
    output: str


class Health:
    """One running container's health: status, failing streak, the last results."""

    def __init__(self, config: HealthConfig, started_at_ns: int) -> None:
        self.config = config
        self.started_at_ns = started_at_ns
        self.status = HealthStatus.STARTING
        self.failing_streak = 0
        self.log: deque[ProbeResult] = deque(maxlen=KEPT_RESULTS)
        self._changed = asyncio.Event()  # set (and replaced) at each change of status

    def record(self, result: ProbeResult) -> bool:
        """Count one check's result; whether the status changed."""
        before = self.status
        self.log.append(result)
        if result.exit_code == 0:
            self.failing_streak = 0
            self.status = HealthStatus.HEALTHY
        elif not self._in_start_period(result):
            self.failing_streak += 1
            if self.failing_streak >= self.config.max_failures:
                self.status = HealthStatus.UNHEALTHY
        if self.status is before:
            return False
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    def _in_start_period(self, result: ProbeResult) -> bool:
        """A failure does not count while the container has never been healthy and its
        start period has not ended when the check started."""
        return (
            self.status is HealthStatus.STARTING
            and result.start_ns - self.started_at_ns < self.config.start_period_ns
        )

    async def until(self, *statuses: HealthStatus) -> HealthStatus:
        """Wait until the status is one of `statuses` (now or later); that status."""
        while self.status not in statuses:
            await self._changed.wait()
        return self.status

    def to_json(self, time_text: Callable[[int], str]) -> dict[str, Any]:
        """State.Health as `docker inspect` shows it (`time_text` renders a time)."""
        return {
            "Status": self.status.value,
            "FailingStreak": self.failing_streak,
            "Log": [
                {
                    "Start": time_text(r.start_ns),
                    "End": time_text(r.end_ns),
                    "ExitCode": r.exit_code,
                    "Output": r.output,
                }
                for r in self.log
            ],
        }

    def summary(self) -> str:
        """What `docker ps` adds to `Up ...`: `(health: starting)`, `(healthy)`."""
        if self.status is HealthStatus.STARTING:
            return "(health: starting)"
        return f"({self.status.value})"


# Runs `argv` in the container, killed after `timeout` seconds.
Probe = Callable[[list[str], float], Awaitable[ProbeResult]]


async def run_health_checks(
    health: Health,
    probe: Probe,
    on_change: Callable[[HealthStatus], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Probe every interval for as long as it is not cancelled (the container exits); each
    change of status goes to `on_change`."""
    config = health.config
    while True:
        await sleep(config.interval)
        result = await probe(config.argv, config.timeout)
        if health.record(result):
            log.info(
                "event=health_status status=%s failing_streak=%d",
                health.status.value,
                health.failing_streak,
            )
            on_change(health.status)


def clip_output(data: bytes) -> str:
    """A check's output as dockerd keeps it: its first 4096 bytes."""
    return data[:MAX_OUTPUT_BYTES].decode(errors="replace")


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it (`30s`, `1.5s`, `500ms`, `1m30s`)."""
    ns = round(seconds * NS)
    if ns < NS:
        return f"{_trim(ns / 1_000_000)}ms" if ns >= 1_000_000 else f"{ns}ns"
    hours, ns = divmod(ns, 3600 * NS)
    minutes, ns = divmod(ns, 60 * NS)
    text = f"{hours}h" if hours else ""
    text += f"{minutes}m" if hours or minutes else ""
    return f"{text}{_trim(ns / NS)}s"


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")
