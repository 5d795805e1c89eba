"""Docker's ServiceSpec JSON <-> the store's ServiceSpec, both ways.

Parsing checks types and swarmkit's rules with swarmkit's wording (dockerd passes them on as
`rpc error: code = InvalidArgument desc = ...`). Rendering gives the shape dockerd 20.10
returns (reference: real-swarm/api-transcripts/service-*.json): fields the client left out
stay out (UpdateConfig, RestartPolicy, StopGracePeriod, ...), except where dockerd always
fills them (DNSConfig, Isolation, Resources, Placement, ForceUpdate, Runtime). With
`insertDefaults` Swarm's defaults are filled in, as `docker service inspect` asks.
ContainerSpec and TaskTemplate fields this emulator does not act on
(UNMODELLED_CONTAINER_FIELDS: mounts, healthcheck, ...; UNMODELLED_TASK_FIELDS: the log
driver) are kept as sent and shown back, so `inspect` and `service update
--mount-add` see what the user asked for; the emulated containers do not apply them, but
for the healthcheck, which is checked here and which the agent runs from there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from controlplane.agent.health import HealthConfig, HealthConfigError
from controlplane.agent.task_files import target_problem
from controlplane.api.errors import ApiError, bad_request, rpc_error
from controlplane.manager import constraints
from controlplane.manager.jobs import is_job
from controlplane.manager.rolling_update import default_update_config
from controlplane.manager.tasks import DEFAULT_RESTART_DELAY_NS, DEFAULT_STOP_GRACE_NS
from controlplane.pb.objects_pb2 import (
    ContainerSpec,
    FileTarget,
    PortConfig,
    Resources,
    RestartPolicy,
    ServiceSpec,
    UpdateConfig,
)

_DNS_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")
_SPACE = re.compile(r"\s")  # what str.isspace() accepts
RESTART_CONDITIONS = ("none", "on-failure", "any")
FAILURE_ACTIONS = ("pause", "continue", "rollback")
UPDATE_ORDERS = ("stop-first", "start-first")
ENDPOINT_MODES = ("vip", "dnsrr")
PROTOCOLS = ("tcp", "udp", "sctp")
PUBLISH_MODES = ("ingress", "host")
MOUNT_TYPES = ("bind", "volume", "tmpfs", "npipe")
# Docker's ContainerSpec fields in the order dockerd writes them (Go's struct order).
CONTAINER_FIELD_ORDER = (
    "Image", "Labels", "Command", "Args", "Hostname", "Env", "Dir", "User", "Groups",
    "Privileges", "Init", "StopSignal", "TTY", "OpenStdin", "ReadOnly", "Mounts",
    "StopGracePeriod", "Healthcheck", "Hosts", "DNSConfig", "Secrets", "Configs", "Isolation",
    "Sysctls", "CapabilityAdd", "CapabilityDrop", "Ulimits",
)  # fmt: skip
UNMODELLED_TASK_FIELDS = ("LogDriver",)  # the logs are kept by the node whatever the driver
# What dockerd shows of these when the spec has none (empty values aside): a client that
# sends them back (an update made from `inspect`) does not change the spec.
SHOWN_BY_DEFAULT: dict[str, Any] = {"Isolation": "default"}
UNMODELLED_CONTAINER_FIELDS = (
    "Privileges", "ReadOnly", "Mounts", "Healthcheck", "Hosts", "DNSConfig", "Isolation",
    "Sysctls", "CapabilityAdd", "CapabilityDrop", "Ulimits",
)  # fmt: skip
_UNMODELLED_CONTAINER = frozenset(UNMODELLED_CONTAINER_FIELDS)


def invalid(description: str) -> ApiError:
    return rpc_error("InvalidArgument", description)


# ---- typed access to a JSON body -------------------------------------------------------


class _Obj:
    """One JSON object of the body, with the path to name in errors."""

    def __init__(self, value: Any, where: str) -> None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise bad_request(f"invalid {where}: expected an object, got {_kind(value)}")
        self.value: dict[str, Any] = value
        self.where = where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return self.value.get(key) is not None

    def obj(self, key: str) -> _Obj:
        return _Obj(self.value.get(key), self._path(key))

    def text(self, key: str) -> str:
        value = self.value.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise bad_request(f"invalid {self._path(key)}: expected a string, got {_kind(value)}")
        return value

    def integer(self, key: str, *, minimum: int | None = 0) -> int:
        value = self.value.get(key)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"invalid {self._path(key)}: expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise bad_request(f"invalid {self._path(key)}: {value} is below {minimum}")
        return value

    def number(self, key: str) -> float:
        value = self.value.get(key)
        if value is None:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad_request(f"invalid {self._path(key)}: expected a number, got {_kind(value)}")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.value.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise bad_request(f"invalid {self._path(key)}: expected true or false")
        return value

    def texts(self, key: str) -> list[str]:
        value = self.value.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad_request(f"invalid {self._path(key)}: expected a list of strings")
        return list(value)

    def text_map(self, key: str) -> dict[str, str]:
        value = self.value.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise bad_request(f"invalid {self._path(key)}: expected a map of strings to strings")
        return dict(value)

    def objs(self, key: str) -> list[_Obj]:
        value = self.value.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise bad_request(f"invalid {self._path(key)}: expected a list")
        return [_Obj(v, f"{self._path(key)}[{i}]") for i, v in enumerate(value)]


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


# ---- parse -----------------------------------------------------------------------------


def parse_spec(body: Mapping[str, Any]) -> ServiceSpec:
    """The ServiceSpec of a create or update body. Network targets are kept as given (the
    caller resolves them); the name may be empty (the caller picks one at create)."""
    root = _Obj(dict(body), "")
    spec = ServiceSpec()
    spec.annotations.name = root.text("Name")
    if spec.annotations.name and (
        len(spec.annotations.name) > 63 or not _DNS_NAME.fullmatch(spec.annotations.name)
    ):
        raise invalid("name must be valid as a DNS name component")
    spec.annotations.labels.update(root.text_map("Labels"))
    template = root.obj("TaskTemplate")
    _parse_runtime(template)
    _parse_container(template.obj("ContainerSpec"), spec.container)
    _parse_resources(template.obj("Resources"), spec)
    if template.has("RestartPolicy"):
        _parse_restart(template.obj("RestartPolicy"), spec.restart_policy)
    placement = template.obj("Placement")
    spec.placement.constraints.extend(placement.texts("Constraints"))
    spec.placement.max_replicas = placement.integer("MaxReplicas")
    for preference in placement.objs("Preferences"):
        # An empty descriptor (`--placement-pref spread=`) is kept as dockerd keeps it: it
        # groups every node under one value, so it spreads nothing.
        spec.placement.spread_descriptors.append(preference.obj("Spread").text("SpreadDescriptor"))
    try:
        constraints.parse(spec.placement.constraints)
    except constraints.ConstraintError as err:
        raise rpc_error("Unknown", str(err)) from None
    spec.force_update = template.integer("ForceUpdate")
    unmodelled = {k: template.value[k] for k in UNMODELLED_TASK_FIELDS if template.value.get(k)}
    if unmodelled:
        spec.unmodelled_task_json = json.dumps(unmodelled, separators=(",", ":"))
    networks = template.objs("Networks") or root.objs("Networks")
    for net in networks:
        target = net.text("Target")
        if not target:
            raise bad_request(f"invalid {net.where}: Target must name a network")
        spec.networks.add(target=target, aliases=net.texts("Aliases"))
    _parse_mode(root.obj("Mode"), spec)
    if root.has("UpdateConfig") and is_job(spec):
        raise invalid("Jobs may not have an update config")  # swarmkit's words
    if root.has("UpdateConfig"):
        _parse_update(root.obj("UpdateConfig"), spec.update_config, "update")
    if root.has("RollbackConfig"):
        _parse_update(root.obj("RollbackConfig"), spec.rollback_config, "rollback")
    _parse_endpoint(root.obj("EndpointSpec"), spec)
    return spec


def _parse_runtime(template: _Obj) -> None:
    runtime = template.text("Runtime")
    if runtime not in ("", "container"):
        raise rpc_error("Unimplemented", "RuntimeSpec: unimplemented runtime in service spec")
    if template.has("PluginSpec") or template.has("NetworkAttachmentSpec"):
        raise rpc_error("Unimplemented", "RuntimeSpec: unimplemented runtime in service spec")


def _parse_container(body: _Obj, c: ContainerSpec) -> None:
    c.image = body.text("Image")
    if not c.image:
        raise invalid("ContainerSpec: image reference must be provided")
    if _SPACE.search(c.image) or c.image != c.image.strip("/:@"):
        raise invalid(f'ContainerSpec: "{c.image}" is not a valid repository/tag')
    c.command.extend(body.texts("Command"))
    c.args.extend(body.texts("Args"))
    c.env.extend(body.texts("Env"))
    c.hostname = body.text("Hostname")
    c.labels.update(body.text_map("Labels"))
    c.dir = body.text("Dir")
    c.user = body.text("User")
    c.groups.extend(body.texts("Groups"))
    c.stop_signal = body.text("StopSignal")
    if body.has("StopGracePeriod"):
        c.stop_grace_period_ns = body.integer("StopGracePeriod")
    if body.has("Init"):
        c.init = body.flag("Init")
    c.tty = body.flag("TTY")
    c.open_stdin = body.flag("OpenStdin")
    for ref_id, ref_name, target in _file_refs(body, "secret"):
        c.secrets.add(secret_id=ref_id, secret_name=ref_name, file=target)
    for ref in body.objs("Configs"):
        if ref.has("Runtime"):
            raise bad_request(
                f"invalid {ref.where}: runtime config targets (credential specs) are not "
                "supported by Swarmlab; give a File target"
            )
    for ref_id, ref_name, target in _file_refs(body, "config"):
        c.configs.add(config_id=ref_id, config_name=ref_name, file=target)
    _check_mounts(body)
    try:  # the agent runs it (`agent/health.py`) from the spec kept as sent
        HealthConfig.parse(body.value.get("Healthcheck"), "HealthConfig")
    except HealthConfigError as err:
        raise invalid(f"ContainerSpec: {err}") from None
    if body.value.keys() & _UNMODELLED_CONTAINER:  # most specs have none: no per-field look
        unmodelled = {
            k: body.value[k]
            for k in UNMODELLED_CONTAINER_FIELDS
            if body.value.get(k) not in (None, "", [], {}, SHOWN_BY_DEFAULT.get(k))
        }
        if unmodelled:
            c.unmodelled_json = json.dumps(unmodelled, separators=(",", ":"))


def _check_mounts(body: _Obj) -> None:
    """The mounts' shape, and swarmkit's rule of one mount per target (its words)."""
    targets: set[str] = set()
    for mount in body.objs("Mounts"):
        kind, target = mount.text("Type"), mount.text("Target")
        if kind not in MOUNT_TYPES:
            raise bad_request(f'invalid MountType: "{kind}"')
        if not target.startswith("/"):
            raise bad_request(f"invalid mount target, must be an absolute path: {target}")
        if kind == "bind" and not mount.text("Source").startswith("/"):
            raise bad_request(
                f"invalid bind mount source, must be an absolute path: {mount.text('Source')}"
            )
        if target in targets:
            raise invalid(f"invalid duplicate mount point: {target}")
        targets.add(target)


def _file_refs(body: _Obj, what: str) -> list[tuple[str, str, FileTarget]]:
    """The container's secret or config references (`what`) as (id, name, file), checked as
    swarmkit's validateSecretRefsSpec / validateConfigRefsSpec, with their words: an id and a
    name, a File target with a name, and no two references to the same file."""
    key = what.capitalize()
    refs: list[tuple[str, str, FileTarget]] = []
    targets: dict[str, str] = {}  # file name -> name of the first reference writing it
    for ref in body.objs(f"{key}s"):
        ref_id, ref_name = ref.text(f"{key}ID"), ref.text(f"{key}Name")
        if not ref_id or not ref_name:
            raise invalid(f"malformed {what} reference")
        if not ref.has("File"):
            raise invalid(f"malformed {what} reference, no target provided")
        file = ref.obj("File")
        target = FileTarget(
            name=file.text("Name"),
            uid=file.text("UID"),
            gid=file.text("GID"),
            mode=file.integer("Mode"),
        )
        if not target.name:
            raise invalid(f"malformed file {what} reference, invalid target file name provided")
        problem = target_problem(what, ref_name, target.name, target.uid, target.gid)
        if problem is not None:
            raise invalid(problem)
        if target.name in targets:
            raise invalid(
                f"{what} references '{targets[target.name]}' and '{ref_name}' have a "
                f"conflicting target: '{target.name}'"
            )
        targets[target.name] = ref_name
        refs.append((ref_id, ref_name, target))
    return refs


def _parse_resources(body: _Obj, spec: ServiceSpec) -> None:
    for key, target in (
        ("Limits", spec.resources.limits),
        ("Reservations", spec.resources.reservations),
    ):
        part = body.obj(key)
        target.nano_cpus = part.integer("NanoCPUs")
        target.memory_bytes = part.integer("MemoryBytes")
        if target.nano_cpus and target.nano_cpus < 1_000_000:
            raise invalid(f"invalid cpu value {target.nano_cpus / 1e9:g}: Must be at least 0.001")
        if target.memory_bytes and target.memory_bytes < 4 * 1024 * 1024:
            raise invalid(f"invalid memory value {target.memory_bytes}: Must be at least 4MiB")


def _parse_restart(body: _Obj, policy: RestartPolicy) -> None:
    condition = body.text("Condition")
    if condition and condition not in RESTART_CONDITIONS:
        raise bad_request(f'invalid RestartCondition: "{condition}"')  # dockerd's words
    policy.condition = condition
    if body.has("Delay"):
        policy.delay_ns = body.integer("Delay", minimum=None)
        if policy.delay_ns < 0:
            raise invalid("TaskSpec: restart-delay cannot be negative")
    policy.max_attempts = body.integer("MaxAttempts")
    policy.window_ns = body.integer("Window", minimum=None)
    if policy.window_ns < 0:
        raise invalid("TaskSpec: restart-window cannot be negative")


def _parse_mode(body: _Obj, spec: ServiceSpec) -> None:
    given = [k for k in ("Replicated", "Global", "ReplicatedJob", "GlobalJob") if k in body.value]
    if len(given) > 1:
        raise bad_request(f"must specify only one service mode (got {' and '.join(given)})")
    mode = given[0] if given else "Replicated"
    if mode == "Global":
        body.obj("Global")
        setattr(spec, "global", True)  # a Python keyword, so only reachable by name
        return
    if mode == "GlobalJob":
        body.obj("GlobalJob")
        spec.global_job.SetInParent()
        return
    if mode == "ReplicatedJob":
        job = body.obj("ReplicatedJob")
        # dockerd's defaults: one at a time, and as many completions as may run at once
        spec.replicated_job.max_concurrent = (
            job.integer("MaxConcurrent") if job.has("MaxConcurrent") else 1
        )
        spec.replicated_job.total_completions = (
            job.integer("TotalCompletions")
            if job.has("TotalCompletions")
            else spec.replicated_job.max_concurrent
        )
        return
    replicated = body.obj("Replicated")
    replicas = replicated.integer("Replicas", minimum=None) if replicated.has("Replicas") else 1
    if replicas < 0:
        raise invalid("Number of replicas must be non-negative")
    spec.replicas = replicas


def _parse_update(body: _Obj, config: UpdateConfig, flag: str) -> None:
    config.parallelism = body.integer("Parallelism")
    config.delay_ns = body.integer("Delay", minimum=None)
    if config.delay_ns < 0:
        raise invalid(f"TaskSpec: {flag}-delay cannot be negative")
    config.monitor_ns = body.integer("Monitor", minimum=None)
    if config.monitor_ns < 0:
        raise invalid(f"TaskSpec: {flag}-monitor cannot be negative")
    config.max_failure_ratio = body.number("MaxFailureRatio")
    if not 0 <= config.max_failure_ratio <= 1:
        raise invalid(f"TaskSpec: {flag}-maxfailureratio cannot be less than 0 or bigger than 1")
    config.failure_action = body.text("FailureAction")
    if config.failure_action and config.failure_action not in FAILURE_ACTIONS:
        raise bad_request(f"unrecognized update failure action {config.failure_action}")
    config.order = body.text("Order")
    if config.order and config.order not in UPDATE_ORDERS:
        raise bad_request(f"unrecognized update order {config.order}")


def _parse_endpoint(body: _Obj, spec: ServiceSpec) -> None:
    mode = body.text("Mode")
    if mode and mode not in ENDPOINT_MODES:
        raise bad_request(f'invalid resolution mode: "{mode}"')
    spec.endpoint_mode = mode
    seen: set[tuple[str, int]] = set()
    for port in body.objs("Ports"):
        pc = PortConfig(
            name=port.text("Name"),
            protocol=port.text("Protocol") or "tcp",
            target_port=port.integer("TargetPort"),
            published_port=port.integer("PublishedPort"),
            publish_mode=port.text("PublishMode") or "ingress",
        )
        if pc.protocol not in PROTOCOLS:
            raise bad_request(f"invalid protocol value {pc.protocol}: use one of tcp, udp, sctp")
        if pc.publish_mode not in PUBLISH_MODES:
            raise bad_request(
                f"invalid publish mode value {pc.publish_mode}: use one of ingress, host"
            )
        if not 1 <= pc.target_port <= 65535:
            raise bad_request(f"invalid {port.where}.TargetPort {pc.target_port}: use 1-65535")
        if pc.published_port > 65535:
            raise bad_request(
                f"invalid {port.where}.PublishedPort {pc.published_port}: use 1-65535, or 0 "
                "for a port from the dynamic range"
            )
        if pc.publish_mode == "ingress" and mode == "dnsrr":
            raise invalid(
                "EndpointSpec: port published with ingress mode can't be used with dnsrr mode"
            )
        if pc.published_port:
            key = (pc.protocol, pc.published_port)
            if key in seen:
                raise invalid("EndpointSpec: duplicate published ports provided")
            seen.add(key)
        spec.ports.append(pc)


# ---- render ----------------------------------------------------------------------------


def port_json(p: PortConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.name:
        out["Name"] = p.name
    out["Protocol"] = p.protocol or "tcp"
    out["TargetPort"] = p.target_port
    if p.published_port:
        out["PublishedPort"] = p.published_port
    out["PublishMode"] = p.publish_mode or "ingress"
    return out


def _duration_or_default(present: bool, value: int, default: int, defaults: bool) -> int | None:
    if present:
        return value
    return default if defaults else None


def container_json(c: ContainerSpec, *, defaults: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"Image": c.image}
    if c.labels:
        out["Labels"] = dict(sorted(c.labels.items()))
    for key, values in (("Command", c.command), ("Args", c.args)):
        if values:
            out[key] = list(values)
    if c.hostname:
        out["Hostname"] = c.hostname
    if c.env:
        out["Env"] = list(c.env)
    for key, text in (("Dir", c.dir), ("User", c.user)):
        if text:
            out[key] = text
    if c.groups:
        out["Groups"] = list(c.groups)
    if c.tty:
        out["TTY"] = True
    if c.open_stdin:
        out["OpenStdin"] = True
    if c.stop_signal:
        out["StopSignal"] = c.stop_signal
    if c.HasField("init"):
        out["Init"] = c.init
    if c.secrets:
        out["Secrets"] = [
            {"File": _file_json(r.file), "SecretID": r.secret_id, "SecretName": r.secret_name}
            for r in c.secrets
        ]
    if c.configs:
        out["Configs"] = [
            {"File": _file_json(r.file), "ConfigID": r.config_id, "ConfigName": r.config_name}
            for r in c.configs
        ]
    grace = _duration_or_default(
        c.HasField("stop_grace_period_ns"), c.stop_grace_period_ns, DEFAULT_STOP_GRACE_NS, defaults
    )
    if grace is not None:
        out["StopGracePeriod"] = grace
    out["DNSConfig"] = {}
    out["Isolation"] = "default"
    if c.unmodelled_json:
        out.update(json.loads(c.unmodelled_json))
    return {k: out[k] for k in CONTAINER_FIELD_ORDER if k in out}


def _file_json(target: FileTarget) -> dict[str, Any]:
    return {"Name": target.name, "UID": target.uid, "GID": target.gid, "Mode": target.mode}


def _resources_json(r: Resources) -> dict[str, int]:
    out: dict[str, int] = {}
    if r.nano_cpus:
        out["NanoCPUs"] = r.nano_cpus
    if r.memory_bytes:
        out["MemoryBytes"] = r.memory_bytes
    return out


def task_template_json(spec: ServiceSpec, *, defaults: bool, runtime: bool) -> dict[str, Any]:
    """TaskTemplate of a service (`runtime`: with "Runtime", as dockerd shows services) or the
    Spec of a task (without it, as dockerd shows tasks)."""
    out: dict[str, Any] = {
        "ContainerSpec": container_json(spec.container, defaults=defaults),
        "Resources": {
            "Limits": _resources_json(spec.resources.limits),
            "Reservations": _resources_json(spec.resources.reservations),
        },
    }
    if spec.HasField("restart_policy") or defaults:
        policy = spec.restart_policy
        out["RestartPolicy"] = {
            "Condition": policy.condition or "any",
            "Delay": policy.delay_ns if policy.HasField("delay_ns") else DEFAULT_RESTART_DELAY_NS,
            "MaxAttempts": policy.max_attempts,
        }
        if policy.window_ns:
            out["RestartPolicy"]["Window"] = policy.window_ns
    placement: dict[str, Any] = {}
    if spec.placement.constraints:
        placement["Constraints"] = list(spec.placement.constraints)
    if spec.placement.spread_descriptors:
        placement["Preferences"] = [
            {"Spread": {"SpreadDescriptor": d}} for d in spec.placement.spread_descriptors
        ]
    if spec.placement.max_replicas:
        placement["MaxReplicas"] = spec.placement.max_replicas
    out["Placement"] = placement
    if spec.networks:
        out["Networks"] = [_attachment_json(n.target, list(n.aliases)) for n in spec.networks]
    if spec.unmodelled_task_json:
        out.update(json.loads(spec.unmodelled_task_json))
    out["ForceUpdate"] = spec.force_update
    if runtime:
        out["Runtime"] = "container"
    return out


def _attachment_json(target: str, aliases: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"Target": target}
    if aliases:
        out["Aliases"] = aliases
    return out


def update_config_json(config: UpdateConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"Parallelism": config.parallelism}
    if config.delay_ns:
        out["Delay"] = config.delay_ns
    out["FailureAction"] = config.failure_action or "pause"
    out["Monitor"] = config.monitor_ns
    ratio = config.max_failure_ratio
    out["MaxFailureRatio"] = int(ratio) if ratio.is_integer() else ratio  # Go prints 0, not 0.0
    out["Order"] = config.order or "stop-first"
    return out


def endpoint_spec_json(spec: ServiceSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"Mode": spec.endpoint_mode or "vip"}
    if spec.ports:
        out["Ports"] = [port_json(p) for p in spec.ports]
    return out


def mode_json(spec: ServiceSpec) -> dict[str, Any]:
    mode = spec.WhichOneof("mode")
    if mode == "global":
        return {"Global": {}}
    if mode == "global_job":
        return {"GlobalJob": {}}
    if mode == "replicated_job":
        job = spec.replicated_job
        return {
            "ReplicatedJob": {
                "MaxConcurrent": job.max_concurrent,
                "TotalCompletions": job.total_completions,
            }
        }
    return {"Replicated": {"Replicas": spec.replicas}}


def spec_json(spec: ServiceSpec, *, defaults: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Name": spec.annotations.name,
        "Labels": dict(sorted(spec.annotations.labels.items())),
        "TaskTemplate": task_template_json(spec, defaults=defaults, runtime=True),
    }
    out["Mode"] = mode_json(spec)
    for key, present, config in (
        ("UpdateConfig", spec.HasField("update_config"), spec.update_config),
        ("RollbackConfig", spec.HasField("rollback_config"), spec.rollback_config),
    ):
        if present or defaults:
            out[key] = update_config_json(config if present else default_update_config())
    out["EndpointSpec"] = endpoint_spec_json(spec)
    return out
