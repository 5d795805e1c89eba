"""`GET /containers/{id}/json`: a container as dockerd 20.10 shows it, every field in
dockerd's order (the CLI prints the body as it comes, so a raw `docker inspect` diffs line for
line against a real node's), and the parts `docker ps` shows too (its networks, mounts).

Settings an emulated container never has (cgroup limits, devices, capabilities, DNS options,
IPv6 ...) show their zero values; those a create body gives (restart policy, `/dev/shm` size,
IPC mode, logging driver, user, working directory ...) show as given, with dockerd's defaults
(`agent/create_options.py`); the file paths are the container's folder on the node
(`agent/container_dir.py`), set from its first start as dockerd's are. Its storage driver is
the emulation's (`swarmlab`, as `docker info` says): no layer folders (`GraphDriver.Data`
empty).
"""

from __future__ import annotations

from typing import Any

from controlplane.agent.create_options import JSON_FILE, MASKED_PATHS, READONLY_PATHS
from controlplane.agent.mounts import VOLUME, host_config_json
from controlplane.agent.runtime import Container, ContainerConfig, ContainerState
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api import container_ports
from controlplane.api.bridge_settings import address_settings, local_networks_json
from controlplane.api.images import image_id
from controlplane.api.networks import endpoint_id
from controlplane.datapath.program import mac_for
from controlplane.go_time import go_time

STORAGE_DRIVER = "swarmlab"  # `docker info`'s Driver

_NO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time, as dockerd shows a time never set

# The HostConfig fields of settings no emulated container has, with dockerd's zero values.
_UNSET_SECURITY: dict[str, Any] = {
    "VolumeDriver": "",
    "VolumesFrom": None,
    "CapAdd": None,
    "CapDrop": None,
}
_UNSET_DNS: dict[str, Any] = {
    "Dns": None,  # as given (ECHOED_LISTS)
    "DnsOptions": None,  # as given (ECHOED_LISTS)
    "DnsSearch": None,  # as given (ECHOED_LISTS)
    "ExtraHosts": None,
    "GroupAdd": None,
}
_UNSET_NAMESPACES: dict[str, Any] = {
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": False,
}
_UNSET_ISOLATION: dict[str, Any] = {
    "ReadonlyRootfs": False,
    "SecurityOpt": None,
    "UTSMode": "",
    "UsernsMode": "",
}
_UNSET_BLKIO_AND_CPUS: dict[str, Any] = {
    "CgroupParent": "",
    "BlkioWeight": 0,
    "BlkioWeightDevice": None,  # as given (ECHOED_LISTS)
    "BlkioDeviceReadBps": None,  # as given (ECHOED_LISTS)
    "BlkioDeviceWriteBps": None,  # as given (ECHOED_LISTS)
    "BlkioDeviceReadIOps": None,  # as given (ECHOED_LISTS)
    "BlkioDeviceWriteIOps": None,  # as given (ECHOED_LISTS)
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0,
    "CpusetCpus": "",
    "CpusetMems": "",
    "Devices": None,  # as given (ECHOED_LISTS)
    "DeviceCgroupRules": None,
    "DeviceRequests": None,
    "KernelMemory": 0,
    "KernelMemoryTCP": 0,
    "MemoryReservation": 0,
}
_UNSET_LIMITS: dict[str, Any] = {
    "OomKillDisable": False,
    "PidsLimit": None,
    "Ulimits": None,  # as given (ECHOED_LISTS)
    "CpuCount": 0,
    "CpuPercent": 0,
    "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0,
}
HOST_SANDBOX_KEY = "/var/run/docker/netns/default"
_UNSET_NETWORK_SETTINGS: dict[str, Any] = {
    "Bridge": "",
    "SandboxID": "",
    "HairpinMode": False,
    "LinkLocalIPv6Address": "",
    "LinkLocalIPv6PrefixLen": 0,
    "Ports": {},
    "SandboxKey": "",
    "SecondaryIPAddresses": None,
    "SecondaryIPv6Addresses": None,
    "EndpointID": "",  # a swarm network's container has no default-bridge endpoint
    "Gateway": "",
    "GlobalIPv6Address": "",
    "GlobalIPv6PrefixLen": 0,
    "IPAddress": "",
    "IPPrefixLen": 0,
    "IPv6Gateway": "",
    "MacAddress": "",
}


def networks_json(registry: StandaloneContainers, container: Container) -> dict[str, Any]:
    """The container's swarm networks as dockerd shows an overlay endpoint: no gateway (the
    default route is the gwbridge's), Docker's MAC for the address, the endpoint id `docker
    network inspect` shows, and the short container id among the aliases (a task's too)."""
    out: dict[str, Any] = {}
    for nid, network in registry.networks_of(container).items():
        attachment = container.networks.get(nid)
        address = attachment.addresses[0] if attachment and attachment.addresses else ""
        ip, _, prefix = address.partition("/")
        aliases = list(attachment.aliases) if attachment else []
        out[network.spec.annotations.name] = {
            "IPAMConfig": {"IPv4Address": ip} if ip else None,
            "Links": None,
            "Aliases": list(dict.fromkeys([*aliases, container.id[:12]])),
            "NetworkID": nid,
            "EndpointID": endpoint_id(nid, container.name),
            "Gateway": "",
            "IPAddress": ip,
            "IPPrefixLen": int(prefix or 0),
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "MacAddress": mac_for(ip) if ip else "",
            "DriverOpts": None,
        }
    mode = "" if registry.left_network_mode(container) else registry.network_of(container)
    bridge = registry.bridge_endpoint(container)
    return out | local_networks_json(registry.local_network_ids, mode, bridge, container.name)


def mounts_json(registry: StandaloneContainers, container: Container) -> list[dict[str, Any]]:
    """dockerd's MountPoints of the container, by destination as dockerd sorts them."""
    points = []
    for mount in sorted(container.mounts, key=lambda m: m.target):
        folder = registry.runtime.volumes.mountpoint(mount.source) if mount.type == VOLUME else ""
        points.append(mount.point_json(str(folder)))
    return points


def _healthcheck_json(container: ContainerConfig) -> dict[str, Any]:
    """Config.Healthcheck, as the client gave it (fields it left out stay out; `["NONE"]`
    for `--no-healthcheck`, as dockerd shows it)."""
    if container.healthcheck_disabled:
        return {"Healthcheck": {"Test": ["NONE"]}}
    config = container.healthcheck
    if config is None:
        return {}
    given = {
        "Test": list(config.test),
        "Interval": config.interval_ns,
        "Timeout": config.timeout_ns,
        "StartPeriod": config.start_period_ns,
        "Retries": config.retries,
    }
    return {"Healthcheck": {k: v for k, v in given.items() if v}}


def _time_or_zero(ns: int) -> str:
    return go_time(ns) if ns else _NO_TIME


def _state_json(c: Container) -> dict[str, Any]:
    running = c.state is ContainerState.RUNNING
    return {
        "Status": c.status,
        "Running": running or c.restarting,  # dockerd's: restarting counts as running
        "Paused": False,
        "Restarting": c.restarting,
        "OOMKilled": False,
        "Dead": False,
        "Pid": c.pid if running else 0,
        "ExitCode": c.exit_code or 0,
        "Error": c.error,
        "StartedAt": _time_or_zero(c.started_at_ns),
        "FinishedAt": _time_or_zero(c.finished_at_ns),
        **({"Health": c.health.to_json(go_time)} if c.health is not None else {}),
    }


def _paths_json(c: Container) -> dict[str, str]:
    """dockerd's paths of the container's files: empty until its first start, the log's
    only with the json-file driver."""
    folder = c.folder
    json_file = c.config.host_options.log_config.type == JSON_FILE
    return {
        "ResolvConfPath": str(folder.resolv_conf) if folder else "",
        "HostnamePath": str(folder.hostname) if folder else "",
        "HostsPath": str(folder.hosts) if folder else "",
        "LogPath": str(folder.log) if folder and json_file else "",
    }


def _host_config_json(registry: StandaloneContainers, c: Container) -> dict[str, Any]:
    options = c.config.host_options
    mounts = host_config_json(c.mounts)
    ports = container_ports.host_config_ports(registry, c)
    shown = {
        "Binds": mounts["Binds"],
        "ContainerIDFile": "",
        "LogConfig": options.log_config.json(),
        "NetworkMode": registry.network_of(c) or "default",
        "PortBindings": ports["PortBindings"],
        "RestartPolicy": options.restart_policy.json(),
        "AutoRemove": registry.auto_remove(c),
        **_UNSET_SECURITY,
        "CgroupnsMode": options.cgroupns_mode,
        **_UNSET_DNS,
        "IpcMode": options.ipc_mode,
        **_UNSET_NAMESPACES,
        "PublishAllPorts": ports["PublishAllPorts"],
        **_UNSET_ISOLATION,
        "ShmSize": options.shm_size,
        "Runtime": options.runtime,
        "ConsoleSize": list(options.console_size),
        "Isolation": options.isolation,
        "CpuShares": 0,
        # its limits (a service's `--limit-cpu`/`--limit-memory`); dockerd doubles the
        # memory limit for memory+swap when no swap limit is given
        "Memory": c.config.memory_bytes,
        "NanoCpus": c.config.nano_cpus,
        **_UNSET_BLKIO_AND_CPUS,
        "MemorySwap": 2 * c.config.memory_bytes,
        "MemorySwappiness": None,
        **_UNSET_LIMITS,
        **({"Mounts": mounts["Mounts"]} if "Mounts" in mounts else {}),
        "MaskedPaths": list(MASKED_PATHS),
        "ReadonlyPaths": list(READONLY_PATHS),
        **({"Init": options.init} if options.init is not None else {}),
    }
    shown.update(options.lists)  # in their places above
    return shown


def config_env(c: Container) -> list[str]:
    """`Config.Env` as dockerd merges it: the given variables, then the image's that they
    do not set."""
    given = list(c.config.env)
    names = {entry.partition("=")[0] for entry in given}
    return given + [e for e in c.image.env if e.partition("=")[0] not in names]


def _command_json(c: Container) -> dict[str, Any]:
    """`Config.Cmd` and `Entrypoint` as dockerd merges the image's in: without a given
    entrypoint, the given command or the image's, and the image's entrypoint; with one, the
    given command alone."""
    if c.config.command:
        return {"Cmd": c.config.args or None, "Entrypoint": c.config.command}
    return {
        "Cmd": c.config.args or list(c.image.cmd) or None,
        "Entrypoint": list(c.image.entrypoint) or None,
    }


def _config_json(registry: StandaloneContainers, c: Container) -> dict[str, Any]:
    echo = c.config.config_echo
    command = _command_json(c)
    # the image's WORKDIR when none is given ("/", the emulated default, is none)
    image_dir = c.image.workdir if c.image.workdir != "/" else ""
    exposed = container_ports.exposed_ports(registry, c)
    return {
        "Hostname": c.hostname,
        "Domainname": echo.domainname,
        "User": echo.user,
        "AttachStdin": echo.attach_stdin,
        "AttachStdout": echo.attach_stdout,
        "AttachStderr": echo.attach_stderr,
        **({"ExposedPorts": exposed} if exposed else {}),
        "Tty": c.config.tty,
        "OpenStdin": c.config.open_stdin,  # `docker attach` sends stdin only then
        "StdinOnce": c.config.stdin_once,
        "Env": config_env(c),
        "Cmd": command["Cmd"],
        **_healthcheck_json(c.config),
        "Image": c.config.image,
        "Volumes": {m.target: {} for m in c.mounts if m.origin == "volume"} or None,
        "WorkingDir": echo.working_dir or image_dir,
        "Entrypoint": command["Entrypoint"],
        "OnBuild": None,
        "Labels": {**c.image.labels, **c.config.labels},  # dockerd merges the image's in
        **({"StopSignal": echo.stop_signal} if echo.stop_signal else {}),
        **({"StopTimeout": echo.stop_timeout} if echo.stop_timeout is not None else {}),
    }


def inspect_json(registry: StandaloneContainers, c: Container) -> dict[str, Any]:
    return {
        "Id": c.id,
        "Created": go_time(c.created_at_ns),
        "Path": c.argv[0] if c.argv else "",
        "Args": c.argv[1:],
        "State": _state_json(c),
        "Image": image_id(c.reference.repository),
        **_paths_json(c),
        "Name": f"/{c.name}",
        "RestartCount": c.restart_count,
        "Driver": STORAGE_DRIVER,
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": [s.id for s in registry.execs.running(c.id)] or None,
        "HostConfig": _host_config_json(registry, c),
        "GraphDriver": {"Data": {}, "Name": STORAGE_DRIVER},
        "Mounts": mounts_json(registry, c),
        "Config": _config_json(registry, c),
        "NetworkSettings": {
            **_UNSET_NETWORK_SETTINGS,
            **address_settings(registry.local_network_ids, registry.bridge_endpoint(c), c.name),
            # the host's own namespace, as dockerd names it (its exec root's netns/default)
            "SandboxKey": HOST_SANDBOX_KEY if registry.network_of(c) == "host" else "",
            "Ports": container_ports.network_ports(registry, c),
            "Networks": networks_json(registry, c),
        },
    }
