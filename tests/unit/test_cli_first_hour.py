"""What a lab user runs in their first hour with the real docker CLI, beyond the basic
commands, against the API on 127.77.122.1:2375 with the leader's loops and a stand-in agent
in-process: each test names the command and what a real Docker 20.10 swarm printed for it.
Skipped without the docker CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from served_api import DockerAt, served, worker_port

from controlplane.api.local import LocalBackend
from tests.unit.swarm_fixture import seeded_swarm

HOST, PORT = "127.77.122.1", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok


@pytest.fixture
def swarm() -> Iterator[LocalBackend]:
    with served(HOST, PORT, seeded_swarm(2)) as backend:
        yield backend


def inspect(ref: str, template: str = "{{json .}}") -> Any:
    return json.loads(ok("service", "inspect", "--format", template, ref))


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_mounts_are_kept_shown_and_updated(swarm: LocalBackend) -> None:
    # Real 20.10: the spec keeps the mount; `inspect --pretty` lists it under "Mounts:".
    ok("service", "create", "-d", "--name", "cache", "--mount", "type=tmpfs,target=/cache",
       "--env", "FOO=bar", "busybox", "sleep", "1000")  # fmt: skip
    spec = inspect("cache", "{{json .Spec.TaskTemplate.ContainerSpec}}")
    assert spec["Mounts"] == [{"Type": "tmpfs", "Target": "/cache"}]
    assert list(spec) == [
        "Image", "Args", "Env", "Init", "Mounts", "StopGracePeriod", "DNSConfig", "Isolation"
    ]  # fmt: skip
    # No network, no published port: no endpoint allocated (real: {"Spec":{}}).
    assert inspect("cache", "{{json .Endpoint}}") == {"Spec": {}}
    pretty = ok("service", "inspect", "--pretty", "cache")
    assert "Mounts:\n Target:\t/cache\n  Source:\t\n  ReadOnly:\tfalse\n  Type:\t\ttmpfs\n" in (
        pretty
    )
    # The task carries the mount too (its Spec is the service's template).
    eventually(lambda: bool(ok("service", "ps", "-q", "cache").strip()))
    task_id = ok("service", "ps", "-q", "cache").split()[0]
    task = json.loads(ok("inspect", "--format", "{{json .Spec.ContainerSpec.Mounts}}", task_id))
    assert task == [{"Type": "tmpfs", "Target": "/cache"}]

    ok("service", "update", "-d", "--mount-add", "type=volume,source=data,target=/data",
       "--mount-rm", "/cache", "cache")  # fmt: skip
    mounts = inspect("cache", "{{json .Spec.TaskTemplate.ContainerSpec.Mounts}}")
    assert mounts == [{"Type": "volume", "Source": "data", "Target": "/data"}]
    # A mount change is a new task template: the tasks are replaced (a rolling update).
    eventually(lambda: len(ok("service", "ps", "-q", "cache").split()) == 2)


def test_bad_mounts_are_refused_with_a_reason(swarm: LocalBackend) -> None:
    twice = docker("service", "create", "-d", "--name", "twice", "--mount", "type=tmpfs,target=/x",
                   "--mount", "type=volume,target=/x", "busybox")  # fmt: skip
    assert twice.returncode == 1
    assert twice.stderr == (
        "Error response from daemon: rpc error: code = InvalidArgument desc = invalid "
        "duplicate mount point: /x\n"
    )
    relative = docker("service", "create", "-d", "--mount", "type=tmpfs,target=x", "busybox")
    assert relative.returncode == 1
    assert "invalid mount target, must be an absolute path: x" in relative.stderr


def test_swarm_update_sets_what_it_says_or_says_what_is_not_emulated(
    swarm: LocalBackend,
) -> None:
    # Real 20.10: each setting is in the cluster's spec afterwards (docker info shows it).
    assert ok("swarm", "update", "--task-history-limit", "2", "--cert-expiry", "48h") == (
        "Swarm updated.\n"
    )
    spec = json.loads(ok("info", "--format", "{{json .Swarm.Cluster.Spec}}"))
    assert spec["Orchestration"] == {"TaskHistoryRetentionLimit": 2}
    assert spec["CAConfig"]["NodeCertExpiry"] == 48 * 3600 * 10**9
    short = docker("swarm", "update", "--cert-expiry", "30m")
    assert (short.returncode, short.stderr) == (
        1,
        "Error response from daemon: rpc error: code = InvalidArgument desc = minimum "
        "certificate expiry time is: 1h0m0s\n",
    )
    # Not emulated: refused, where real Docker would do it (autolock prints an unlock key).
    for flags, words in (
        (["--autolock=true"], "autolock is not emulated by Swarmlab"),
        (["--max-snapshots", "2"], "--max-snapshots is not emulated"),
    ):
        refused = docker("swarm", "update", *flags)
        assert refused.returncode == 1 and words in refused.stderr, refused.stderr
    spec = json.loads(ok("info", "--format", "{{json .Swarm.Cluster.Spec}}"))
    assert spec["EncryptionConfig"] == {"AutoLockManagers": False}
    assert spec["Raft"]["KeepOldSnapshots"] == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--update-failure-action", "explode"], "unrecognized update failure action explode"),
        (["--rollback-failure-action", "explode"], "unrecognized update failure action explode"),
        (["--update-order", "sideways"], "unrecognized update order sideways"),
        (["--restart-condition", "sometimes"], 'invalid RestartCondition: "sometimes"'),
        (["--endpoint-mode", "foo"], 'invalid resolution mode: "foo"'),
    ],
)
def test_bad_values_get_dockerds_words(swarm: LocalBackend, flags: list[str], message: str) -> None:
    refused = docker("service", "create", "-d", "--name", "bad", *flags, "nginx")
    assert (refused.returncode, refused.stderr) == (1, f"Error response from daemon: {message}\n")


def test_the_task_template_keeps_every_flag_as_a_real_swarm(swarm: LocalBackend) -> None:
    """Flags Swarmlab keeps without acting on them come back from `inspect` as a real 20.10
    swarm shows them (its TaskTemplate for the same command, keys sorted)."""
    ok("service", "create", "-d", "--name", "hc", "--health-cmd", "true", "--health-interval",
       "2s", "--log-driver", "json-file", "--log-opt", "max-size=1m", "--dns", "8.8.8.8",
       "--host", "foo:1.2.3.4", "--read-only", "--cap-add", "NET_ADMIN", "--sysctl",
       "net.core.somaxconn=1024", "--ulimit", "nofile=1024:2048", "--restart-condition", "any",
       "busybox", "sleep", "1000")  # fmt: skip
    template = inspect("hc", "{{json .Spec.TaskTemplate}}")
    assert template == {
        "ContainerSpec": {
            "Image": "busybox:latest",
            "Args": ["sleep", "1000"],
            "Init": False,
            "ReadOnly": True,
            "StopGracePeriod": 10000000000,
            "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 2000000000},
            "Hosts": ["1.2.3.4 foo"],
            "DNSConfig": {"Nameservers": ["8.8.8.8"]},
            "Isolation": "default",
            "Sysctls": {"net.core.somaxconn": "1024"},
            "CapabilityAdd": ["CAP_NET_ADMIN"],
            "Ulimits": [{"Name": "nofile", "Hard": 2048, "Soft": 1024}],
        },
        "Resources": {"Limits": {}, "Reservations": {}},
        "RestartPolicy": {"Condition": "any", "Delay": 5000000000, "MaxAttempts": 0},
        "Placement": {},
        "LogDriver": {"Name": "json-file", "Options": {"max-size": "1m"}},
        "ForceUpdate": 0,
        "Runtime": "container",
    }


def test_placement_preferences_are_kept(swarm: LocalBackend) -> None:
    ok("service", "create", "-d", "--name", "pp", "--placement-pref", "spread=node.labels.zone",
       "--replicas", "2", "busybox", "sleep", "1000")  # fmt: skip
    placement = inspect("pp", "{{json .Spec.TaskTemplate.Placement}}")
    assert placement == {"Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]}
    # Real 20.10's --pretty line, byte for byte.
    pretty = ok("service", "inspect", "--pretty", "pp")
    assert "Placement:\n Preferences:   [spread=node.labels.zone]\n" in pretty
