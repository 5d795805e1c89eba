"""`/tasks`: the swarm's tasks as the store holds them, in dockerd 20.10's shape.

Filters as dockerd takes them: `service` and `node` by id, name or id prefix (resolved
first, as dockerd does: one that names nothing is its 404 `service X not found`, not an
empty list), `id` and `name` by prefix (a task's name is
`<service>.<slot>.<id>`, or `<service>.<node id>.<id>` when global), `desired-state`
(running, shutdown or accepted), `label` (the task's container labels), and the CLI's
internal `_up-to-date` (tasks made from the service's current spec).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controlplane.api.common import (
    add_route,
    by_id_prefix,
    go_time,
    json_response,
    parse_filters,
    require_manager_read,
)
from controlplane.api.errors import bad_request
from controlplane.api.networks import VXLAN_ID_OPTION
from controlplane.api.nodes import find_node
from controlplane.api.services import find_service
from controlplane.api.servicespec import port_json, task_template_json
from controlplane.manager.tasks import STATES, is_attachment, is_up_to_date, shown_desired_state
from controlplane.node_local_networks import is_node_local
from controlplane.pb.objects_pb2 import IPAMConfig, Network, Service, Task
from controlplane.store import Store
from controlplane.store.kinds import name_of

LIST_FILTERS = frozenset({"id", "name", "label", "service", "node", "desired-state", "_up-to-date"})
DESIRED_STATE_FILTERS = STATES
"""dockerd takes any task state name (a job's tasks are desired "complete")."""


def register(app: web.Application) -> None:
    add_route(app, "GET", "/tasks", list_tasks)
    add_route(app, "GET", "/tasks/{id}", inspect_task)


# ---- representation --------------------------------------------------------------------


def swarm_network_json(net: Network) -> dict[str, Any]:
    """A network as swarmkit's object (what a task's NetworksAttachments carry), which is not
    the NetworkResource of `/networks`."""
    spec = net.spec
    options = dict(sorted(spec.driver_options.items()))
    driver_config: dict[str, Any] = {}
    if not spec.ingress:
        driver_config["Name"] = spec.driver or "overlay"
        if options:
            driver_config["Options"] = options
    spec_json: dict[str, Any] = {
        "Name": spec.annotations.name,
        "Labels": dict(sorted(spec.annotations.labels.items())),
        "DriverConfiguration": driver_config,
    }
    if spec.internal:
        spec_json["Internal"] = True
    if spec.attachable:
        spec_json["Attachable"] = True
    if spec.ingress:
        spec_json["Ingress"] = True
    local = is_node_local(net)  # a predefined `host` or `bridge`: nothing allocated
    if not local:
        spec_json["IPAMOptions"] = {"Driver": {} if spec.ingress else {"Name": "default"}}
    if spec.ipam:  # what the user asked for (--subnet ...), as swarmkit keeps it in the spec
        spec_json["IPAMOptions"]["Configs"] = [_ipam_json(p) for p in spec.ipam]
    spec_json["Scope"] = "swarm"
    body: dict[str, Any] = {
        "ID": net.id,
        "Version": {"Index": net.meta.version.index},
        "CreatedAt": go_time(net.meta.created_at_ns),
        "UpdatedAt": go_time(net.meta.updated_at_ns),
        "Spec": spec_json,
    }
    if local:
        return body | {"DriverState": {"Name": spec.driver}, "IPAMOptions": {"Driver": {}}}
    state_options = {VXLAN_ID_OPTION: str(net.vni), **options}
    configs = [_ipam_json(pool) for pool in net.ipam]
    return body | {
        "DriverState": {"Name": spec.driver or "overlay", "Options": state_options},
        "IPAMOptions": {"Driver": {"Name": "default"}, "Configs": configs},
    }


def _ipam_json(pool: IPAMConfig) -> dict[str, str]:
    config = {"Subnet": pool.subnet}
    if pool.range:
        config["Range"] = pool.range
    if pool.gateway:
        config["Gateway"] = pool.gateway
    return config


def task_json(task: Task, networks: dict[str, Network]) -> dict[str, Any]:
    status: dict[str, Any] = {
        "Timestamp": go_time(task.status.timestamp_ns),
        "State": task.status.state,
        "Message": task.status.message,
    }
    if task.status.err:
        status["Err"] = task.status.err
    if task.status.container_id:
        status["ContainerStatus"] = {
            "ContainerID": task.status.container_id,
            "PID": task.status.pid,
            "ExitCode": task.status.exit_code,
        }
    status["PortStatus"] = (
        {"Ports": [port_json(p) for p in task.status.port_status]}
        if task.status.port_status
        else {}
    )
    body: dict[str, Any] = {
        "ID": task.id,
        "Version": {"Index": task.meta.version.index},
        "CreatedAt": go_time(task.meta.created_at_ns),
        "UpdatedAt": go_time(task.meta.updated_at_ns),
        "Labels": {},
        "Spec": task_template_json(task.spec, defaults=False, runtime=False),
        "ServiceID": task.service_id,
    }
    if task.slot:
        body["Slot"] = task.slot
    if task.node_id:
        body["NodeID"] = task.node_id
    body["Status"] = status
    body["DesiredState"] = shown_desired_state(task)
    if task.HasField("job_iteration"):
        body["JobIteration"] = {"Index": task.job_iteration} if task.job_iteration else {}
    attachments = [
        {"Network": swarm_network_json(networks[a.network_id])}
        | ({"Addresses": list(a.addresses)} if a.addresses else {})  # none on `host`, `bridge`
        for a in task.networks
        if a.network_id in networks
    ]
    if attachments:
        body["NetworksAttachments"] = attachments
    return body


# ---- list / inspect --------------------------------------------------------------------


def _resolve(store: Store, filters: dict[str, list[str]]) -> None:
    """`service` and `node` filters name objects by id, name or prefix: turn them into ids
    (dockerd's 404 or ambiguity error for a reference that names no single object)."""
    if "service" in filters:
        filters["service"] = [find_service(store, ref).id for ref in filters["service"]]
    if "node" in filters:
        filters["node"] = [find_node(store, ref).id for ref in filters["node"]]


def _wanted(task: Task, filters: dict[str, list[str]], services: dict[str, Service]) -> bool:
    name = name_of(task)
    if "_up-to-date" in filters:
        service = services.get(task.service_id)
        if service is None or not is_up_to_date(task, service):
            return False
    labels = task.spec.container.labels
    checks = [
        not filters.get("id") or any(task.id.startswith(v) for v in filters["id"]),
        not filters.get("name") or any(name.startswith(v) for v in filters["name"]),
        not filters.get("service") or task.service_id in filters["service"],
        not filters.get("node") or task.node_id in filters["node"],
        not filters.get("desired-state") or shown_desired_state(task) in filters["desired-state"],
        all(
            k in labels and (not sep or labels[k] == v)
            for k, sep, v in (item.partition("=") for item in filters.get("label", []))
        ),
    ]
    return all(checks)


async def list_tasks(request: web.Request) -> web.Response:
    b = await require_manager_read(request)
    filters = parse_filters(request, LIST_FILTERS)
    for state in filters.get("desired-state", []):
        if state not in DESIRED_STATE_FILTERS:
            raise bad_request(f"Invalid desired-state filter: '{state}'")
    _resolve(b.store, filters)
    services = {s.id: s for s in b.store.list(Service)}
    networks = {n.id: n for n in b.store.list(Network)}
    tasks = [
        t for t in b.store.list(Task) if not is_attachment(t) and _wanted(t, filters, services)
    ]
    return json_response([task_json(t, networks) for t in tasks])


def find_task(store: Store, ref: str) -> Task:
    task = store.get(Task, ref)
    if task is not None:
        return task
    return by_id_prefix(store.list(Task), ref, "task")


async def inspect_task(request: web.Request) -> web.Response:
    b = await require_manager_read(request)
    task = find_task(b.store, request.match_info["id"])
    networks = {n.id: n for n in b.store.list(Network)}
    return json_response(task_json(task, networks))
