"""`/services`: create, list, inspect, update, remove, over the replicated store.

The API writes only the service; the leader's loops do the rest (VIPs and published ports,
tasks, placement), as in Swarm. What the API checks itself, with Docker's wording: the spec
(see servicespec.py), that every network exists and is not the ingress network, that the
ingress network exists when ports are published through it, that no other service publishes
the same port, and the name. Port checks race with other managers' creates, so a create or
update of a service with ports also rewrites the Cluster object at the version it read: of two
racing writes one is refused and retried on the new state.

Decisions where Docker is silent:
- A service created without a name gets a random `adjective_noun` name, as Swarm does.
- `GET /services/{id}` resolves a full id, then an exact name, then a unique id prefix.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from controlplane.api.backend import EngineBackend
from controlplane.api.common import (
    add_route,
    by_id_prefix,
    go_time,
    json_body,
    json_response,
    parse_filters,
    require_manager,
    require_manager_read,
)
from controlplane.api.configs import CONFIGS
from controlplane.api.errors import ApiError, bad_request, from_store_error, not_found, rpc_error
from controlplane.api.file_objects import check_references
from controlplane.api.networks import find_network
from controlplane.api.secrets import SECRETS
from controlplane.api.servicespec import endpoint_spec_json, parse_spec, port_json, spec_json
from controlplane.datapath.ingress import unserved_port_warnings
from controlplane.ids import new_object_id
from controlplane.manager.jobs import is_job
from controlplane.manager.rolling_update import (
    ROLLBACK_STARTED,
)
from controlplane.manager.tasks import DESIRED_COMPLETE, DESIRED_RUNNING, shown_desired_state
from controlplane.pb.objects_pb2 import Cluster, Network, Service, ServiceSpec, Task
from controlplane.store import ErrorKind, Store, StoreError, Transaction

LIST_FILTERS = frozenset({"id", "name", "label", "mode"})
MODE_FILTERS = {
    "replicas": "replicated",
    "global": "global",
    "replicated_job": "replicated-job",
    "global_job": "global-job",
}
"""`--filter mode=`: the value naming each mode of the spec."""
_WRITE_ATTEMPTS = 5
_WRITE_LOCK: web.AppKey[asyncio.Lock] = web.AppKey("services_write_lock")

_ADJECTIVES = (
    "brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid", "merry", "nimble",
    "proud", "quick", "quiet", "sharp", "steady", "sunny", "tender", "vivid", "witty", "zen",
)  # fmt: skip
_NOUNS = (
    "otter", "falcon", "heron", "lynx", "maple", "harbor", "comet", "cedar", "delta", "ember",
    "fjord", "glacier", "island", "meadow", "nebula", "orbit", "pebble", "quartz", "river",
    "summit",
)  # fmt: skip


def register(app: web.Application) -> None:
    app[_WRITE_LOCK] = asyncio.Lock()
    add_route(app, "GET", "/services", list_services)
    add_route(app, "POST", "/services/create", create_service)
    add_route(app, "GET", "/services/{id}", inspect_service)
    add_route(app, "POST", "/services/{id}/update", update_service)
    add_route(app, "DELETE", "/services/{id}", delete_service)


# ---- representation --------------------------------------------------------------------


def _virtual_ips(service: Service, store: Store) -> list[dict[str, str]]:
    """Ingress first, then the networks in the spec's order (as dockerd lists them)."""
    vips = dict(service.endpoint.virtual_ips)
    order = [n.id for n in store.list(Network) if n.spec.ingress]
    order += [a.target for a in service.spec.networks]
    ordered = [nid for nid in dict.fromkeys(order) if nid in vips]
    ordered += sorted(set(vips) - set(ordered))
    # none on a node-local network (`host`, `bridge`): dockerd leaves Addr out
    return [{"NetworkID": nid} | ({"Addr": vips[nid]} if vips[nid] else {}) for nid in ordered]


def service_json(
    service: Service,
    store: Store,
    *,
    defaults: bool = False,
    tasks: list[Task] | None = None,
) -> dict[str, Any]:
    """The service as dockerd shows it; with `tasks` (all of the store's, for `status=true`)
    also its ServiceStatus."""
    body: dict[str, Any] = {
        "ID": service.id,
        "Version": {"Index": service.meta.version.index},
        "CreatedAt": go_time(service.meta.created_at_ns),
        "UpdatedAt": go_time(service.meta.updated_at_ns),
        "Spec": spec_json(service.spec, defaults=defaults),
    }
    if service.HasField("previous_spec"):
        body["PreviousSpec"] = spec_json(service.previous_spec, defaults=defaults)
    # A service with neither published ports nor VIPs (no network, or dnsrr) has no
    # allocated endpoint: dockerd shows an empty one.
    endpoint: dict[str, Any] = {"Spec": {}}
    vips = _virtual_ips(service, store)
    if service.endpoint.ports or vips:
        endpoint["Spec"] = endpoint_spec_json(service.spec)
    if service.endpoint.ports:
        endpoint["Ports"] = [port_json(p) for p in service.endpoint.ports]
    if vips:
        endpoint["VirtualIPs"] = vips
    body["Endpoint"] = endpoint
    if service.update_status.state:
        update = service.update_status
        body["UpdateStatus"] = {"State": update.state, "StartedAt": go_time(update.started_at_ns)}
        if update.completed_at_ns:
            body["UpdateStatus"]["CompletedAt"] = go_time(update.completed_at_ns)
        body["UpdateStatus"]["Message"] = update.message
    if service.HasField("job_status"):
        body["JobStatus"] = job_status_json(service)
    if tasks is not None:
        body["ServiceStatus"] = _service_status(service, tasks)
    return body


def _service_status(service: Service, tasks: list[Task]) -> dict[str, int]:
    """Counted as dockerd does for `docker service ls`: the tasks running, those being
    stopped included (a scale to 0 shows `1/0` until the task has stopped), and the desired
    count (the replicas; a replicated job's MaxConcurrent; for a global service the tasks
    meant to run, for a global job those not yet completed). A job counts only the tasks of
    its current iteration, and how many of them completed."""
    mode = service.spec.WhichOneof("mode")
    iteration = service.job_status.job_iteration if is_job(service.spec) else None
    running = desired = completed = 0
    for task in tasks:
        if task.service_id != service.id:
            continue
        if iteration is not None:
            if not task.HasField("job_iteration") or task.job_iteration != iteration:
                continue
            if task.status.state == "complete":
                completed += 1
            elif task.desired_state == DESIRED_COMPLETE:
                desired += 1
        if task.status.state == "running":
            running += 1
        if shown_desired_state(task) == DESIRED_RUNNING:
            desired += 1
    if mode == "replicated_job":
        desired = service.spec.replicated_job.max_concurrent
    elif mode not in ("global", "global_job"):
        desired = service.spec.replicas
    return {"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": completed}


def job_status_json(service: Service) -> dict[str, Any]:
    iteration = service.job_status.job_iteration
    return {
        "JobIteration": {"Index": iteration} if iteration else {},
        "LastExecution": go_time(service.job_status.last_execution_ns),
    }


# ---- lookup ----------------------------------------------------------------------------


def find_service(store: Store, ref: str) -> Service:
    """Full id, then exact name, then unique id prefix; dockerd's errors otherwise."""
    service = store.get(Service, ref)
    if service is None and ref:
        service = store.get_by_name(Service, ref)
    if service is not None:
        return service
    return by_id_prefix(store.list(Service), ref, "service")


# ---- list / inspect --------------------------------------------------------------------


def _wanted(service: Service, filters: dict[str, list[str]]) -> bool:
    for mode in filters.get("mode", []):
        if mode not in MODE_FILTERS.values():
            raise bad_request(f"Invalid filter: 'mode'='{mode}'")
    name = service.spec.annotations.name
    labels = service.spec.annotations.labels
    mode = MODE_FILTERS[service.spec.WhichOneof("mode") or "replicas"]
    checks = [
        not filters.get("id") or any(service.id.startswith(v) for v in filters["id"]),
        not filters.get("name") or any(name.startswith(v) for v in filters["name"]),
        not filters.get("mode") or mode in filters["mode"],
        all(_label_matches(labels, item) for item in filters.get("label", [])),
    ]
    return all(checks)


def _label_matches(labels: Any, wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)


async def list_services(request: web.Request) -> web.Response:
    b = await require_manager_read(request)
    filters = parse_filters(request, LIST_FILTERS)
    with_status = request.query.get("status", "").lower() in ("1", "true")
    tasks = b.store.list(Task) if with_status else None
    services = [s for s in b.store.list(Service) if _wanted(s, filters)]
    return json_response([service_json(s, b.store, tasks=tasks) for s in services])


async def inspect_service(request: web.Request) -> web.Response:
    b = await require_manager_read(request)
    service = find_service(b.store, request.match_info["id"])
    defaults = request.query.get("insertDefaults", "").lower() in ("1", "true")
    return json_response(service_json(service, b.store, defaults=defaults))


# ---- checks shared by create and update ------------------------------------------------


def _resolve_networks(store: Store, spec: ServiceSpec) -> None:
    """Network targets become ids; the network must exist and must not be ingress."""
    for att in spec.networks:
        net = find_network(store, att.target)  # dockerd's "network X not found" (404)
        if net.spec.ingress:
            raise rpc_error(
                "InvalidArgument",
                "Service cannot be explicitly attached to the ingress network "
                f'"{net.spec.annotations.name}"',
            )
        att.target = net.id


def _check_files(store: Store, spec: ServiceSpec) -> None:
    """The secrets and configs the spec refers to exist (swarmkit checks secrets first)."""
    check_references(SECRETS, store, spec.container)
    check_references(CONFIGS, store, spec.container)


def _check_ports(store: Store, spec: ServiceSpec, service_id: str) -> None:
    """swarmkit's checkPortConflicts: a published port belongs to one service."""
    if any((p.publish_mode or "ingress") == "ingress" for p in spec.ports) and not any(
        n.spec.ingress for n in store.list(Network)
    ):
        raise rpc_error(
            "FailedPrecondition", "service needs ingress network, but no ingress network is present"
        )
    wanted = {
        (p.protocol or "tcp", p.published_port, p.publish_mode or "ingress")
        for p in spec.ports
        if p.published_port
    }
    if not wanted:
        return  # nothing published by number: no other service to read
    for other in store.list(Service):
        if other.id == service_id:
            continue
        for p in [*other.spec.ports, *other.endpoint.ports]:
            if not p.published_port:
                continue
            proto, mode = p.protocol or "tcp", p.publish_mode or "ingress"
            for w_proto, w_port, w_mode in wanted:
                if (w_proto, w_port) != (proto, p.published_port):
                    continue
                if mode == "ingress" or w_mode == "ingress" or mode == w_mode == "host":
                    how = "an ingress port" if mode == "ingress" else "a host-published port"
                    raise rpc_error(
                        "InvalidArgument",
                        f"port '{p.published_port}' is already in use by service "
                        f"'{other.spec.annotations.name}' ({other.id}) as {how}",
                    )


def _cluster(store: Store) -> Cluster | None:
    clusters = store.list(Cluster)
    return clusters[0] if clusters else None


def _random_name(store: Store) -> str:
    while True:
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
        if store.get_by_name(Service, name) is None:
            return name


def _name_conflict(name: str) -> ApiError:
    return rpc_error(
        "AlreadyExists",
        f"name conflicts with an existing object: service {name} already exists",
    )


async def _write(b: EngineBackend, build: Callable[[], tuple[Transaction, ServiceSpec]]) -> None:
    """Propose `build()`'s transaction (for a service of the spec it returns) with the cluster
    guard when that spec has ports, secrets or configs, retrying when the guard (not the
    caller's own checks) refused it. The guard, checked at apply time, is what keeps the port
    and reference checks of `build()` valid (a secret or config removal carries it too), so
    the store needs no linearizable read before it on a settled leader (`prepare_write`). A
    spec without them has nothing of the kind to keep valid (its name is unique by the
    store's own check at apply time): it is written without the guard, so writes of such
    services neither carry the Cluster object nor refuse each other."""
    for attempt in range(_WRITE_ATTEMPTS):
        await b.prepare_write()
        txn, spec = build()
        guarded = spec.ports or spec.container.secrets or spec.container.configs
        cluster = _cluster(b.store) if guarded else None
        if cluster is not None:
            txn.update(cluster)
        err = StoreError.from_result(await b.propose(txn.encode()))
        if err is None:
            return
        if err.kind != ErrorKind.CONFLICT or attempt == _WRITE_ATTEMPTS - 1:
            raise _store_failure(err)


def _store_failure(err: StoreError) -> ApiError:
    if err.kind == ErrorKind.EXISTS and err.message.startswith("name conflicts"):
        return rpc_error("AlreadyExists", err.message)
    if err.kind == ErrorKind.CONFLICT:
        return rpc_error("Unknown", err.message)
    return from_store_error(err)


# ---- create ----------------------------------------------------------------------------


async def create_service(request: web.Request) -> web.Response:
    b = require_manager(request)
    spec = parse_spec(await json_body(request))
    service_id = new_object_id()

    def build() -> tuple[Transaction, ServiceSpec]:
        store = b.store
        if not spec.annotations.name:
            spec.annotations.name = _random_name(store)
        if store.get_by_name(Service, spec.annotations.name) is not None:
            raise _name_conflict(spec.annotations.name)
        _resolve_networks(store, spec)
        _check_files(store, spec)
        _check_ports(store, spec, service_id)
        service = Service(id=service_id)
        service.meta.created_at_ns = service.meta.updated_at_ns = time.time_ns()
        service.spec.CopyFrom(spec)
        if is_job(spec):
            service.job_status.last_execution_ns = service.meta.created_at_ns
        return Transaction().create(service), spec

    async with request.app[_WRITE_LOCK]:
        await _write(b, build)
    answer: dict[str, Any] = {"ID": service_id}
    warnings = unserved_port_warnings(spec.ports)
    if warnings:  # a list, as dockerd's (see spec.DOCKERD_CORRECTIONS); omitted when empty
        answer["Warnings"] = warnings
    return json_response(answer, status=201)


# ---- update ----------------------------------------------------------------------------


def _version(request: web.Request) -> int:
    text = request.query.get("version", "")
    try:
        value = int(text)
        if value < 0:
            raise ValueError
    except ValueError:
        raise bad_request(
            f'invalid service version: strconv.ParseUint: parsing "{text}": invalid syntax; '
            "pass the Version.Index of the service as inspected"
        ) from None
    return value


async def update_service(request: web.Request) -> web.Response:
    b = require_manager(request)
    version = _version(request)
    rollback = request.query.get("rollback", "")
    if rollback not in ("", "previous"):
        raise bad_request(f"invalid rollback value {rollback!r}: the only value is 'previous'")
    body = await json_body(request)
    ref = request.match_info["id"]
    written: list[ServiceSpec] = []  # the spec as the last attempt wrote it

    def build() -> tuple[Transaction, ServiceSpec]:
        store = b.store
        service = find_service(store, ref)
        if service.meta.version.index != version:
            raise rpc_error("Unknown", "update out of sequence")
        if rollback:
            if not service.HasField("previous_spec"):
                raise rpc_error(
                    "FailedPrecondition", f"service {service.id} does not have a previous spec"
                )
            spec = ServiceSpec()
            spec.CopyFrom(service.previous_spec)
        else:
            spec = parse_spec(body)
            if not spec.annotations.name:
                spec.annotations.name = service.spec.annotations.name
        if spec.annotations.name != service.spec.annotations.name:
            raise rpc_error("Unimplemented", "renaming services is not supported")
        if spec.WhichOneof("mode") != service.spec.WhichOneof("mode"):
            raise rpc_error("Unimplemented", "service mode change is not allowed")
        _resolve_networks(store, spec)
        _check_files(store, spec)
        _check_ports(store, spec, service.id)
        now = time.time_ns()
        # As swarmkit's controlapi: a rollback starts at once; any other update drops the
        # status (an update paused resumes so), and the orchestrator starts a new one if a
        # task must change. A job has no rolling update: its update starts a new iteration.
        service.ClearField("update_status")
        if is_job(spec):
            service.job_status.job_iteration += 1
            service.job_status.last_execution_ns = now
        if rollback:
            status = service.update_status
            status.state = ROLLBACK_STARTED
            status.message = "manually requested rollback"
            status.started_at_ns = now
        if rollback:  # swarmkit's controlapi: the spec versions trade places too
            previous_version = service.previous_spec_version
            service.previous_spec_version = service.spec_version
            service.spec_version = previous_version
        else:
            service.previous_spec_version = service.spec_version
            service.spec_version = service.meta.version.index
        service.previous_spec.CopyFrom(service.spec)
        service.spec.CopyFrom(spec)
        service.meta.updated_at_ns = now
        written.append(spec)
        return Transaction().update(service), spec

    async with request.app[_WRITE_LOCK]:
        await _write(b, build)
    warnings = unserved_port_warnings(written[-1].ports) if written else []
    return json_response({"Warnings": warnings or None})


# ---- delete ----------------------------------------------------------------------------


async def delete_service(request: web.Request) -> web.Response:
    """The service goes at once; the orchestrator stops and then removes its tasks."""
    b = require_manager(request)
    await b.prepare_write()
    service = find_service(b.store, request.match_info["id"])
    err = StoreError.from_result(
        await b.propose(Transaction().delete(Service, service.id).encode())
    )
    if err is not None:
        if err.kind == ErrorKind.NOT_FOUND:
            raise not_found(f"service {request.match_info['id']} not found")
        raise from_store_error(err)
    return web.Response(status=200)


__all__ = ["find_service", "register", "service_json"]
