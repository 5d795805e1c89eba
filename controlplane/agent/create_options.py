"""The settings of a container create body that the emulation keeps to show back, as dockerd
20.10 fills and checks them: the restart policy, `/dev/shm`'s size, the IPC, cgroup namespace
and runtime modes, the logging driver, and the `Config` fields given as they are (user,
working directory, ...).

Of these only the restart policy (`agent/standalone.py` restarts the container) and the
logging driver (`none` keeps no log; json-file's file is written, `container_dir.py`) change
what a container does: an emulated container has no `/dev/shm`, IPC namespace, cgroup, user
or working directory. Bad values get dockerd's words, at create, or at start where dockerd
checks them only then (`start_refusal`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SHM_SIZE = 64 * 1024 * 1024  # dockerd's `--default-shm-size`
DEFAULT_IPC_MODE = "private"  # dockerd 20.10's `--default-ipc-mode`
# dockerd 20.10 on cgroup v2 (the emulation's `docker info` says CgroupVersion 2)
DEFAULT_CGROUPNS_MODE = "private"
DEFAULT_RUNTIME = "runc"
# What `docker info` lists as Runtimes: the names dockerd 20.10 registers, all runc.
RUNTIMES = ("io.containerd.runc.v2", "io.containerd.runtime.v1.linux", "runc")
RESTART_POLICIES = ("", "no", "always", "unless-stopped", "on-failure")
IPC_MODES = ("", "private", "host", "none", "shareable")
CGROUPNS_MODES = ("", "host", "private")

JSON_FILE = "json-file"
# The logging drivers emulated, with the options each takes (dockerd's own lists; `mode`
# and `max-buffer-size` are every driver's).
LOG_DRIVER_OPTIONS: dict[str, frozenset[str]] = {
    JSON_FILE: frozenset(
        {"max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex", "tag"}
    ),
    "local": frozenset({"max-file", "max-size", "compress"}),
    "none": frozenset(),
}
_EVERY_DRIVER_OPTIONS = frozenset({"mode", "max-buffer-size"})
# dockerd's other built-in drivers: it accepts them; they send logs off the machine.
_UNEMULATED_LOG_DRIVERS = frozenset(
    {"awslogs", "fluentd", "gcplogs", "gelf", "journald", "logentries", "splunk", "syslog"}
)

# What dockerd 20.10 masks and makes read-only in a container that is not privileged.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


# HostConfig lists dockerd shows as the body gave them (the CLI sends them empty, a raw body
# leaves them out: null); none is acted on (`Dns`: the emulated resolver is the node's).
ECHOED_LISTS = (
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
    "Devices",
    "Ulimits",
)


def _task_lists() -> dict[str, list[Any] | None]:
    """What swarmkit's executor gives dockerd: no lists but its ulimits (none)."""
    return {name: [] if name == "Ulimits" else None for name in ECHOED_LISTS}


class CreateOptionsError(ValueError):
    """A create body dockerd refuses (its words)."""


@dataclass(frozen=True)
class RestartPolicy:
    """`HostConfig.RestartPolicy`. `name` "" is the API's unset (a task container's, or a
    body without one); the CLI sends "no"."""

    name: str = ""
    maximum_retry_count: int = 0

    @classmethod
    def parse(cls, value: object) -> RestartPolicy:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise CreateOptionsError(f"HostConfig.RestartPolicy must be an object, got {value!r}")
        name = value.get("Name") or ""
        count = value.get("MaximumRetryCount") or 0
        if not isinstance(name, str) or name not in RESTART_POLICIES:
            raise CreateOptionsError(f"invalid restart policy '{name}'")
        if not isinstance(count, int) or isinstance(count, bool):
            raise CreateOptionsError(
                f"RestartPolicy.MaximumRetryCount must be a number, got {count!r}"
            )
        if name == "on-failure" and count < 0:
            raise CreateOptionsError("maximum retry count cannot be negative")
        if name in ("no", "always", "unless-stopped") and count != 0:
            raise CreateOptionsError(
                f"maximum retry count cannot be used with restart policy '{name}'"
            )
        return cls(name, count)

    @property
    def restarts(self) -> bool:
        """Whether it ever restarts the container (`--rm` cannot go with it)."""
        return self.name not in ("", "no")

    def restarts_after(self, exit_code: int, restart_count: int) -> bool:
        """Whether a container that exited by itself with `exit_code`, restarted
        `restart_count` times already, is started again (a `docker stop` or `kill` is never
        followed by a restart: dockerd's "manually stopped")."""
        if self.name in ("always", "unless-stopped"):
            return True
        if self.name != "on-failure" or exit_code == 0:
            return False
        return self.maximum_retry_count == 0 or restart_count < self.maximum_retry_count

    def json(self) -> dict[str, Any]:
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retry_count}


@dataclass(frozen=True)
class LogConfig:
    """`HostConfig.LogConfig`: the driver and its options, as given."""

    type: str = JSON_FILE
    config: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, value: object) -> LogConfig:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise CreateOptionsError(f"HostConfig.LogConfig must be an object, got {value!r}")
        driver = value.get("Type") or JSON_FILE
        options = value.get("Config") or {}
        if not isinstance(driver, str) or not isinstance(options, dict):
            raise CreateOptionsError(f"HostConfig.LogConfig is malformed: {value!r}")
        if driver in _UNEMULATED_LOG_DRIVERS:
            raise CreateOptionsError(
                f"logging driver {driver} is not emulated by this engine (it would send the "
                f"logs off the machine): use one of {', '.join(sorted(LOG_DRIVER_OPTIONS))}"
            )
        if driver not in LOG_DRIVER_OPTIONS:
            raise CreateOptionsError(
                f'error looking up logging plugin {driver}: plugin "{driver}" not found'
            )
        allowed = LOG_DRIVER_OPTIONS[driver] | _EVERY_DRIVER_OPTIONS
        for key in sorted(options):
            if key not in allowed:
                raise CreateOptionsError(f"unknown log opt '{key}' for {driver} log driver")
        return cls(driver, tuple(sorted((str(k), str(v)) for k, v in options.items())))

    @property
    def keeps_logs(self) -> bool:
        """dockerd's `none` driver keeps nothing: `docker logs` has nothing to read."""
        return self.type != "none"

    def json(self) -> dict[str, Any]:
        return {"Type": self.type, "Config": dict(self.config)}


def _string(body: dict[str, Any], key: str, where: str) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str):
        raise CreateOptionsError(f"{where}.{key} must be a string, got {value!r}")
    return value


@dataclass(frozen=True)
class HostOptions:
    """The `HostConfig` fields dockerd fills when the body leaves them out. A task
    container's are these defaults with `isolation` "default" and `init` False (what
    swarmkit's executor sends)."""

    restart_policy: RestartPolicy = RestartPolicy()
    log_config: LogConfig = LogConfig()
    shm_size: int = DEFAULT_SHM_SIZE
    ipc_mode: str = DEFAULT_IPC_MODE
    cgroupns_mode: str = DEFAULT_CGROUPNS_MODE
    runtime: str = DEFAULT_RUNTIME
    console_size: tuple[int, int] = (0, 0)
    isolation: str = ""
    init: bool | None = None  # shown only when given
    lists: dict[str, list[Any] | None] = field(default_factory=_task_lists)  # ECHOED_LISTS

    @classmethod
    def parse(cls, host_config: dict[str, Any], *, auto_remove: bool) -> HostOptions:
        """CreateOptionsError for what dockerd refuses at create."""
        policy = RestartPolicy.parse(host_config.get("RestartPolicy"))
        if auto_remove and policy.restarts:
            raise CreateOptionsError("can't create 'AutoRemove' container with restart policy")
        shm_size = host_config.get("ShmSize") or 0
        if not isinstance(shm_size, int) or isinstance(shm_size, bool):
            raise CreateOptionsError(f"HostConfig.ShmSize must be a number, got {shm_size!r}")
        if shm_size < 0:
            raise CreateOptionsError("SHM size can not be less than 0")
        cgroupns = _string(host_config, "CgroupnsMode", "HostConfig")
        if cgroupns not in CGROUPNS_MODES:
            raise CreateOptionsError(f"invalid cgroup namespace mode: {cgroupns}")
        runtime = _string(host_config, "Runtime", "HostConfig") or DEFAULT_RUNTIME
        if runtime not in RUNTIMES:
            raise CreateOptionsError(f"Unknown runtime specified {runtime}")
        size = host_config.get("ConsoleSize")
        console = (size[0], size[1]) if isinstance(size, list) and _two_numbers(size) else (0, 0)
        init = host_config.get("Init")
        return cls(
            restart_policy=policy,
            log_config=LogConfig.parse(host_config.get("LogConfig")),
            shm_size=shm_size or DEFAULT_SHM_SIZE,
            ipc_mode=_string(host_config, "IpcMode", "HostConfig") or DEFAULT_IPC_MODE,
            cgroupns_mode=cgroupns or DEFAULT_CGROUPNS_MODE,
            runtime=runtime,
            console_size=console,
            isolation=_string(host_config, "Isolation", "HostConfig"),
            init=init if isinstance(init, bool) else None,
            lists={
                name: list(value) if isinstance(value := host_config.get(name), list) else None
                for name in ECHOED_LISTS
            },
        )

    @property
    def ipc_container(self) -> str:
        """The container whose IPC namespace `container:NAME` shares ("" for other modes)."""
        return (
            self.ipc_mode.removeprefix("container:")
            if self.ipc_mode.startswith("container:")
            else ""
        )

    def start_refusal(self) -> str | None:
        """dockerd's refusal at start of what it accepted at create, or None: an IPC mode it
        does not know, a json-file `max-size` that is not a size."""
        if self.ipc_mode not in IPC_MODES and not self.ipc_container:
            return f"Invalid IPC mode: {self.ipc_mode}"
        size = dict(self.log_config.config).get("max-size")
        if size is not None and parse_size(size) is None:
            return f"failed to initialize logging driver: invalid size: '{size}'"
        return None


_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kmgtp])?i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def parse_size(text: str) -> int | None:
    """go-units' RAMInBytes (`10m`, `1.5g`, `512kb`, `2GiB`), None if it is not a size."""
    match = _SIZE.fullmatch(text)
    if match is None:
        return None
    return int(float(match[1]) * _UNITS[(match[2] or "").lower()])


def _two_numbers(value: list[Any]) -> bool:
    return len(value) == 2 and all(isinstance(n, int) for n in value)


@dataclass(frozen=True)
class ConfigEcho:
    """`Config` fields the emulation shows as given and does not act on."""

    user: str = ""
    working_dir: str = ""
    domainname: str = ""
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    stop_signal: str = ""
    stop_timeout: int | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ConfigEcho:
        timeout = body.get("StopTimeout")
        return cls(
            user=_string(body, "User", "Config"),
            working_dir=_string(body, "WorkingDir", "Config"),
            domainname=_string(body, "Domainname", "Config"),
            attach_stdin=bool(body.get("AttachStdin")),
            attach_stdout=bool(body.get("AttachStdout")),
            attach_stderr=bool(body.get("AttachStderr")),
            stop_signal=_string(body, "StopSignal", "Config"),
            stop_timeout=timeout if isinstance(timeout, int) else None,
        )
