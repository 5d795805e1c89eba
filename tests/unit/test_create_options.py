"""A create body's restart policy, /dev/shm size, IPC/cgroup/runtime modes and logging driver:
dockerd 20.10's defaults and its refusals (the words measured against it with the docker CLI
and raw API bodies)."""

from __future__ import annotations

import pytest

from controlplane.agent.create_options import (
    DEFAULT_SHM_SIZE,
    ConfigEcho,
    CreateOptionsError,
    HostOptions,
    RestartPolicy,
    parse_size,
)


def test_an_empty_host_config_gets_dockerd_defaults() -> None:
    options = HostOptions.parse({}, auto_remove=False)
    assert options.restart_policy.json() == {"Name": "", "MaximumRetryCount": 0}
    assert options.log_config.json() == {"Type": "json-file", "Config": {}}
    assert (options.shm_size, options.ipc_mode, options.runtime) == (
        67108864,
        "private",
        "runc",
    )
    assert options.console_size == (0, 0) and options.init is None
    assert options.start_refusal() is None


def test_given_settings_are_kept_as_given() -> None:
    options = HostOptions.parse(
        {
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
            "ShmSize": 134217728,
            "IpcMode": "shareable",
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
            "ConsoleSize": [40, 120],
            "Runtime": "io.containerd.runc.v2",
            "Init": True,
        },
        auto_remove=False,
    )
    assert options.restart_policy == RestartPolicy("on-failure", 3)
    assert options.log_config.json()["Config"] == {"max-file": "3", "max-size": "10m"}
    assert (options.shm_size, options.ipc_mode, options.console_size) == (
        134217728,
        "shareable",
        (40, 120),
    )
    assert (options.runtime, options.init) == ("io.containerd.runc.v2", True)
    # a size of 0 is dockerd's default, as an unset one
    assert HostOptions.parse({"ShmSize": 0}, auto_remove=False).shm_size == DEFAULT_SHM_SIZE


@pytest.mark.parametrize(
    ("host_config", "auto_remove", "message"),
    [
        ({"RestartPolicy": {"Name": "bogus"}}, False, "invalid restart policy 'bogus'"),
        (
            {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}},
            False,
            "maximum retry count cannot be used with restart policy 'always'",
        ),
        (
            {"RestartPolicy": {"Name": "no", "MaximumRetryCount": 2}},
            False,
            "maximum retry count cannot be used with restart policy 'no'",
        ),
        (
            {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}},
            False,
            "maximum retry count cannot be negative",
        ),
        (
            {"RestartPolicy": {"Name": "always"}},
            True,
            "can't create 'AutoRemove' container with restart policy",
        ),
        ({"ShmSize": -1}, False, "SHM size can not be less than 0"),
        ({"CgroupnsMode": "bogus"}, False, "invalid cgroup namespace mode: bogus"),
        ({"Runtime": "nope"}, False, "Unknown runtime specified nope"),
        (
            {"LogConfig": {"Type": "nope"}},
            False,
            'error looking up logging plugin nope: plugin "nope" not found',
        ),
        (
            {"LogConfig": {"Type": "json-file", "Config": {"foo": "bar"}}},
            False,
            "unknown log opt 'foo' for json-file log driver",
        ),
        (
            {"LogConfig": {"Type": "local", "Config": {"labels": "a"}}},
            False,
            "unknown log opt 'labels' for local log driver",
        ),
    ],
)
def test_bad_settings_are_refused_in_dockerd_words(
    host_config: dict[str, object], auto_remove: bool, message: str
) -> None:
    with pytest.raises(CreateOptionsError) as refused:
        HostOptions.parse(host_config, auto_remove=auto_remove)
    assert str(refused.value) == message


def test_a_driver_that_sends_logs_away_is_refused_naming_the_emulated_ones() -> None:
    with pytest.raises(CreateOptionsError, match=r"syslog is not emulated.*json-file, local"):
        HostOptions.parse({"LogConfig": {"Type": "syslog"}}, auto_remove=False)


def test_what_dockerd_accepts_at_create_and_refuses_at_start() -> None:
    assert (
        HostOptions.parse({"IpcMode": "bogus"}, auto_remove=False).start_refusal()
        == "Invalid IPC mode: bogus"
    )
    bad_size = {"LogConfig": {"Config": {"max-size": "abc"}}}
    assert (
        HostOptions.parse(bad_size, auto_remove=False).start_refusal()
        == "failed to initialize logging driver: invalid size: 'abc'"
    )
    shared = HostOptions.parse({"IpcMode": "container:web"}, auto_remove=False)
    assert shared.ipc_container == "web" and shared.start_refusal() is None
    # `no` and AutoRemove go together (the CLI sends `no` by default)
    assert not HostOptions.parse(
        {"RestartPolicy": {"Name": "no"}}, auto_remove=True
    ).restart_policy.restarts


def test_which_exits_a_policy_restarts() -> None:
    assert RestartPolicy("always").restarts_after(0, 50)
    assert RestartPolicy("unless-stopped").restarts_after(137, 0)
    assert not RestartPolicy("no").restarts_after(1, 0)
    assert not RestartPolicy("").restarts_after(1, 0)
    on_failure = RestartPolicy("on-failure", 2)
    assert not on_failure.restarts_after(0, 0)
    assert on_failure.restarts_after(3, 1)
    assert not on_failure.restarts_after(3, 2)
    assert RestartPolicy("on-failure").restarts_after(1, 1000)  # no limit given


def test_sizes_as_go_units_reads_them() -> None:
    assert parse_size("10m") == 10 * 1024**2
    assert parse_size("1.5g") == int(1.5 * 1024**3)
    assert parse_size("512kb") == 512 * 1024
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("100") == 100
    assert parse_size("abc") is None
    assert parse_size("-1m") is None


def test_config_fields_are_echoed_as_given() -> None:
    echo = ConfigEcho.parse(
        {"User": "1000", "WorkingDir": "/tmp", "AttachStdout": True, "StopTimeout": 5}
    )
    assert (echo.user, echo.working_dir, echo.attach_stdout, echo.stop_timeout) == (
        "1000",
        "/tmp",
        True,
        5,
    )
    with pytest.raises(CreateOptionsError, match=r"Config\.User must be a string"):
        ConfigEcho.parse({"User": 1000})
