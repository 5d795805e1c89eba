"""`/networks`: swarm-scope overlay networks kept in the replicated store.

Decisions where Docker is silent or where we differ on purpose:
- Only swarm-scope `overlay` networks can be created here; local drivers (bridge, macvlan,
  ...) are refused with a message saying so, an unknown driver gets dockerd's `plugin "X" not
  found`. The node's own local networks (`none`, and where the node really has them `bridge`
  and `docker_gwbridge`: `predefined_networks.py`) are listed, inspected and filtered beside
  the swarm's, and refused at `rm` as dockerd refuses its predefined ones. swarmkit's
  predefined swarm-scope `host` and `bridge` (`node_local_networks.py`) are not listed;
  their ids inspect as dockerd shows them, and `rm` of one is dockerd's `not found`.
- `GET /networks/{id}` takes a full id, an exact name, or a unique id prefix, in that order: an
  exact name wins over an id prefix (real Docker lets the prefix win).
- Subnet and VNI are allocated when the network is created, by the leader alone (as swarmkit's
  control API: `manager/network_create.py`; a follower forwards the create to it), so `inspect`
  shows them at once as on a real swarm. Overlapping subnets are refused up front.
- Reads are answered from the local store, so they work without quorum; writes need it.
- A node's own data path (`LOCAL_NETWORKS`) adds what only that node knows: a worker (no store)
  inspects the overlays its containers are attached to, as dockerd does, and a Windows node
  says in the network's options (`com.swarmlab.encryption`, which the docker CLI prints) that
  it does not apply the network's encryption.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

from controlplane.api.backend import EngineBackend
from controlplane.api.common import (
    Handler,
    add_route,
    backend,
    caught_up,
    go_time,
    json_body,
    json_response,
    parse_filters,
    require_manager,
)
from controlplane.api.errors import ApiError, bad_request, from_store_error, not_found
from controlplane.api.predefined_networks import (
    LocalNetwork,
    absent_reason,
    local_network_json,
    removal_refusal,
)
from controlplane.datapath.attachments import INGRESS_SANDBOX
from controlplane.datapath.network_view import LocalNetworkView
from controlplane.manager.tasks import is_attachment, is_terminal, wants_running
from controlplane.node_local_networks import is_predefined
from controlplane.pb.objects_pb2 import IPAMConfig, Network, NetworkSpec, Service, Task
from controlplane.store import ErrorKind, Store, StoreError, Transaction
from controlplane.store.references import network_in_use_message

__all__ = ["Handler", "register"]

VXLAN_ID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
ENCRYPTION_NOTE_OPTION = "com.swarmlab.encryption"


class LocalNetworks(Protocol):
    """The overlays this node's data path takes part in (`NodeDataPath`)."""

    def networks(self) -> Sequence[Network]: ...

    def platform_note(self, network_id: str) -> str: ...

    def local_view(self, network_id: str) -> LocalNetworkView | None: ...


LOCAL_NETWORKS: web.AppKey[Callable[[], LocalNetworks | None]] = web.AppKey("local_networks")
# The containers on one of this node's local networks, by its name, as its inspect shows
# them (`bridge_settings.py`).
LOCAL_CONTAINERS: web.AppKey[Callable[[str], dict[str, Any]]] = web.AppKey("local_containers")
# This node's engine-local networks (`predefined_networks.local_networks`), set by the node.
NODE_NETWORKS: web.AppKey[Callable[[], list[LocalNetwork]]] = web.AppKey("node_networks")
# The ids of this node's containers by name, set where the node's containers are served
# (api/system.py).
CONTAINER_IDS: web.AppKey[Callable[[], dict[str, str]]] = web.AppKey("container_ids")
LOCAL_DRIVERS = frozenset({"bridge", "host", "null", "macvlan", "ipvlan"})
PREDEFINED = frozenset({"bridge", "host", "none", "default"})
LIST_FILTERS = frozenset({"name", "id", "driver", "label", "scope", "type", "dangling"})
PRUNE_FILTERS = frozenset({"label", "label!", "until"})
_DNS_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")


def register(app: web.Application) -> None:
    add_route(app, "GET", "/networks", list_networks)
    add_route(app, "POST", "/networks/create", create_network)
    add_route(app, "POST", "/networks/prune", prune_networks)
    add_route(app, "GET", "/networks/{id}", inspect_network)
    add_route(app, "DELETE", "/networks/{id}", delete_network)


# ---- representation --------------------------------------------------------------------


def network_json(net: Network) -> dict[str, Any]:
    """The NetworkResource shape dockerd returns for a swarm network (network-inspect-cli28)."""
    spec = net.spec
    config: list[dict[str, str]] = []
    for pool in net.ipam or spec.ipam:
        entry = {"Subnet": pool.subnet}
        if pool.range:
            entry["IPRange"] = pool.range
        if pool.gateway:
            entry["Gateway"] = pool.gateway
        config.append(entry)
    options = dict(sorted(spec.driver_options.items()))
    if net.vni:
        options[VXLAN_ID_OPTION] = str(net.vni)
    predefined = is_predefined(net)  # swarmkit's `host`, `bridge`: no IPAM driver, no options
    return {
        "Name": spec.annotations.name,
        "Id": net.id,
        "Created": go_time(net.meta.created_at_ns),
        "Scope": "swarm",
        "Driver": spec.driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "" if predefined else "default", "Options": None, "Config": config},
        "Internal": spec.internal,
        "Attachable": spec.attachable,
        "Ingress": spec.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": None,
        "Options": None if predefined else dict(sorted(options.items())),
        "Labels": dict(spec.annotations.labels) or None,
    }


# ---- lookup ----------------------------------------------------------------------------


def find_network(store: Store, ref: str) -> Network:
    """Full id, then exact name, then unique id prefix; dockerd's 404 otherwise."""
    return find_among(store.list(Network), ref)


def find_among(networks: Sequence[Network], ref: str) -> Network:
    """`find_network`'s rules over a list of networks."""
    by_id = [n for n in networks if n.id == ref]
    by_name = [n for n in networks if n.spec.annotations.name == ref]
    if by_id or by_name:
        return (by_id or by_name)[0]
    matches = [n for n in networks if ref and n.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise bad_request(
            f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)"
        )
    raise not_found(f"network {ref} not found")


def _in_use(store: Store, net: Network) -> str | None:
    """Why the network cannot be removed (swarmkit's wording), or None."""
    for svc in store.list(Service):
        if any(att.target in (net.id, net.spec.annotations.name) for att in svc.spec.networks):
            return network_in_use_message(net.id, "service", svc.id)
    for task in store.list(Task):
        if not _holds_network(store, task):
            continue
        if any(att.network_id == net.id for att in task.networks):
            return network_in_use_message(net.id, "task", task.id)
    return None


def _holds_network(store: Store, task: Task) -> bool:
    """swarmkit's RemoveNetwork counts a task only while it is meant to run and has not
    finished; a task of a removed service is on its way out too (the orchestrator is about to
    stop it), so `docker stack rm`, which removes the services and then their networks at
    once, is not refused."""
    if is_terminal(task) or not wants_running(task):
        return False
    return is_attachment(task) or store.get(Service, task.service_id) is not None


# ---- list / inspect --------------------------------------------------------------------


def _match(pattern: str, value: str) -> bool:
    """dockerd's filters.Match: equal, or the filter value as a regular expression."""
    if pattern == value:
        return True
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return False


def _labels_match(wanted: list[str], labels: dict[str, str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _truthy(values: list[str], key: str) -> bool:
    """A boolean filter's one value, refused in dockerd's words otherwise."""
    if len(values) > 1:
        raise bad_request(f'got more than one value for filter key "{key}"')
    if values[0].lower() not in ("true", "1", "false", "0"):
        raise bad_request(
            f'invalid value for filter \'{key}\', must be "true" (or "1"), or "false" (or "0")'
        )
    return values[0].lower() in ("true", "1")


def _dangling(filters: dict[str, list[str]]) -> bool | None:
    for t in filters.get("type", []):
        if t not in ("custom", "builtin"):
            raise bad_request(f"invalid filter: 'type'='{t}'")
    return _truthy(filters["dangling"], "dangling") if "dangling" in filters else None


def _local_filtered(nets: list[LocalNetwork], filters: dict[str, list[str]]) -> list[LocalNetwork]:
    """dockerd's filters over the local networks: no labels; a predefined network or one
    in use (docker_gwbridge holds the ingress sandbox) is never dangling."""
    dangling = _dangling(filters)
    return [
        net
        for net in nets
        if all(
            [
                not filters.get("name") or any(_match(p, net.name) for p in filters["name"]),
                not filters.get("id") or any(_match(p, net.id) for p in filters["id"]),
                not filters.get("driver") or net.driver in filters["driver"],
                not filters.get("label"),
                not filters.get("scope") or "local" in filters["scope"],
                not filters.get("type")
                or ("builtin" if net.builtin else "custom") in filters["type"],
                not dangling,
            ]
        )
    ]


def _filtered(
    store: Store, filters: dict[str, list[str]], networks: Sequence[Network] | None = None
) -> list[Network]:
    """The swarm networks of `store` (or `networks`) that pass `filters`."""
    dangling = _dangling(filters)
    out: list[Network] = []
    for net in store.list(Network) if networks is None else networks:
        if is_predefined(net):
            continue  # listed as the node's own `host` and `bridge`, as dockerd lists them
        name, labels = net.spec.annotations.name, dict(net.spec.annotations.labels)
        checks = [
            not filters.get("name") or any(_match(p, name) for p in filters["name"]),
            not filters.get("id") or any(_match(p, net.id) for p in filters["id"]),
            not filters.get("driver") or net.spec.driver in filters["driver"],
            _labels_match(filters.get("label", []), labels),
            not filters.get("scope") or "swarm" in filters["scope"],
            not filters.get("type") or "custom" in filters["type"],
            dangling is None or (_in_use(store, net) is None) == dangling,
        ]
        if all(checks):
            out.append(net)
    return out


def _node_networks(request: web.Request) -> list[LocalNetwork]:
    return request.app[NODE_NETWORKS]() if NODE_NETWORKS in request.app else []


async def list_networks(request: web.Request) -> web.Response:
    """A manager lists the swarm's networks; a worker, as dockerd's, those its data path
    takes part in (ingress, overlays of its tasks and containers); both their local ones."""
    b = await _read_backend(request)
    filters = parse_filters(request, LIST_FILTERS)
    overlays: Sequence[Network] | None = None
    if b.local_state().role != "manager" and LOCAL_NETWORKS in request.app:
        datapath = request.app[LOCAL_NETWORKS]()
        overlays = datapath.networks() if datapath is not None else []
    swarm = [network_json(n) for n in _filtered(b.store, filters, overlays)]
    local = [local_network_json(n, {}) for n in _local_filtered(_node_networks(request), filters)]
    return json_response(swarm + local)


def _find_local(nets: list[LocalNetwork], ref: str) -> LocalNetwork | None:
    """A local network by full id, name or unique id prefix (as `find_among`), or None."""
    exact = [n for n in nets if ref in (n.id, n.name)]
    prefixed = [n for n in nets if ref and n.id.startswith(ref)]
    if exact or len(prefixed) == 1:
        return (exact or prefixed)[0]
    return None


async def _read_backend(request: web.Request) -> EngineBackend:
    """The backend, caught up first on a manager (`caught_up`); a worker lists its own."""
    b = backend(request)
    return await caught_up(b) if b.local_state().role == "manager" else b


async def inspect_network(request: web.Request) -> web.Response:
    store = (await _read_backend(request)).store
    ref = request.match_info["id"]
    scope = request.query.get("scope", "")
    if scope and scope not in ("swarm", "global", "local"):
        raise not_found(f"network {ref} not found")
    node_net = _find_local(_node_networks(request), ref) if scope != "swarm" else None
    if node_net is not None and scope != "global":
        members = request.app.get(LOCAL_CONTAINERS)
        return json_response(
            local_network_json(node_net, members(node_net.name) if members else {})
        )
    absent = f"network {ref} not found"
    if NODE_NETWORKS in request.app:
        reason = absent_reason(ref)
        absent += f": {reason}" if reason else ""
    if scope == "local":
        raise not_found(absent)
    local = request.app[LOCAL_NETWORKS]() if LOCAL_NETWORKS in request.app else None
    try:
        net = find_network(store, ref)
    except ApiError as err:
        if err.status != 404:
            raise
        if local is None:
            raise not_found(absent) from None
        try:
            net = find_among(local.networks(), ref)
        except ApiError as local_err:
            if local_err.status != 404:
                raise
            raise not_found(absent) from None
    body = network_json(net)
    note = local.platform_note(net.id) if local is not None else ""
    if note:
        body["Options"][ENCRYPTION_NOTE_OPTION] = note
    view = local.local_view(net.id) if local is not None else None
    if view is not None:
        naming = request.app.get(CONTAINER_IDS)
        verbose = request.query.get("verbose", "") in ("1", "true", "True")
        _add_local_view(body, net, view, naming() if naming is not None else {}, verbose=verbose)
    return json_response(body)


def _add_local_view(
    body: dict[str, Any],
    net: Network,
    view: LocalNetworkView,
    container_ids: dict[str, str],
    *,
    verbose: bool,
) -> None:
    """What dockerd adds on a node where the network has a local instance: the containers
    attached here (by container id; the endpoint id is derived from the network and the
    container name; the node's ingress sandbox as dockerd names it), the peers, and with
    `verbose` the services and their tasks."""
    pools = net.ipam or net.spec.ipam
    prefix = pools[0].subnet.partition("/")[2] if pools else "24"
    body["Containers"] = {
        container_ids.get(c.name, c.name): {
            "Name": "ingress-endpoint" if c.name == INGRESS_SANDBOX else c.name,
            "EndpointID": endpoint_id(net.id, c.name),
            "MacAddress": c.mac,
            "IPv4Address": f"{c.ip}/{prefix}",
            "IPv6Address": "",
        }
        for c in view.containers
    }
    body["Labels"] = body["Labels"] or {}
    body["Peers"] = [{"Name": p.node_id[:12], "IP": p.ip} for p in view.peers]
    if verbose:
        body["Services"] = {
            name: {
                "VIP": service.vip or "<nil>",  # Go's text of libnetwork's nil IP
                "Ports": list(service.ports),
                "LocalLBIndex": service.lb_index,
                "Tasks": [
                    {
                        "Name": "ingress-endpoint" if t.name == INGRESS_SANDBOX else t.name,
                        "EndpointID": endpoint_id(net.id, t.name),
                        "EndpointIP": t.ip,
                        "Info": {"Host IP": t.host_ip},
                    }
                    for t in service.tasks
                ],
            }
            for name, service in view.services.items()
        }


def endpoint_id(network_id: str, container_name: str) -> str:
    """A container's endpoint on a network, named as dockerd names one (64 hex digits)."""
    return hashlib.sha256(f"{network_id}/{container_name}".encode()).hexdigest()


# ---- create ----------------------------------------------------------------------------


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request(f"invalid {key}: expected a string, got {value!r}")
    return value


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"invalid {key}: expected true or false, got {value!r}")
    return value


def _str_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise bad_request(f"invalid {key}: expected a map of strings to strings")
    return dict(value)


def _ipam_requests(body: dict[str, Any]) -> list[IPAMConfig]:
    ipam = body.get("IPAM")
    if ipam is None:
        return []
    if not isinstance(ipam, dict):
        raise bad_request("invalid IPAM: expected an object")
    driver = _str(ipam, "Driver")
    if driver not in ("", "default"):
        raise bad_request(
            f"IPAM driver {driver} is not supported: Swarmlab overlays use the default IPAM driver"
        )
    configs = ipam.get("Config") or []
    if not isinstance(configs, list):
        raise bad_request("invalid IPAM.Config: expected a list")
    requests: list[IPAMConfig] = []
    for cfg in configs:
        if not isinstance(cfg, dict):
            raise bad_request("invalid IPAM.Config entry: expected an object")
        subnet, gateway, rng = _str(cfg, "Subnet"), _str(cfg, "Gateway"), _str(cfg, "IPRange")
        if not subnet and (gateway or rng):
            raise bad_request(
                "ipam configuration: a gateway or ip-range needs a subnet; give --subnet too"
            )
        if subnet:
            requests.append(IPAMConfig(subnet=subnet, range=rng, gateway=gateway))
    return requests


def _spec_from_body(body: dict[str, Any]) -> NetworkSpec:
    name = _str(body, "Name")
    if not name.strip():
        raise bad_request("network name must not be empty: give a Name")
    if name in PREDEFINED:
        raise ApiError(403, f"operation is not permitted on predefined {name} network")
    if len(name) > 63 or not _DNS_NAME.fullmatch(name):
        raise bad_request(
            "rpc error: code = InvalidArgument desc = name must be valid as a DNS name component"
        )
    driver = _str(body, "Driver") or "bridge"
    if driver in LOCAL_DRIVERS:
        raise bad_request(
            f"driver {driver} makes a local-scope network, which Swarmlab does not emulate; "
            "use -d overlay"
        )
    if driver != "overlay":
        raise not_found(f'plugin "{driver}" not found')
    scope = _str(body, "Scope")
    if scope not in ("", "swarm"):
        raise bad_request(f"scope {scope} is not supported for overlay networks; use swarm")
    if _bool(body, "EnableIPv6"):
        raise bad_request("IPv6 overlay networks are not supported by Swarmlab; drop --ipv6")
    if _bool(body, "ConfigOnly") or body.get("ConfigFrom"):
        raise bad_request("config-only networks (--config-only, --config-from) are not supported")
    spec = NetworkSpec()
    spec.annotations.name = name
    spec.annotations.labels.update(_str_map(body, "Labels"))
    spec.driver = driver
    spec.driver_options.update(_str_map(body, "Options"))
    spec.internal = _bool(body, "Internal")
    spec.attachable = _bool(body, "Attachable")
    spec.ingress = _bool(body, "Ingress")
    spec.ipam.extend(_ipam_requests(body))
    return spec


async def create_network(request: web.Request) -> web.Response:
    b = require_manager(request)
    network = await b.create_network(_spec_from_body(await json_body(request)))
    return json_response({"Id": network.id, "Warning": ""}, status=201)


# ---- delete / prune --------------------------------------------------------------------


async def _propose_delete(b: EngineBackend, net: Network) -> StoreError | None:
    return StoreError.from_result(await b.propose(Transaction().delete(Network, net.id).encode()))


async def _delete(b: EngineBackend, net: Network) -> None:
    err = await _propose_delete(b, net)
    if err is not None:
        if err.kind == ErrorKind.NOT_FOUND:
            raise not_found(f"network {net.id} not found")
        raise from_store_error(err)


async def delete_network(request: web.Request) -> web.Response:
    ref = request.match_info["id"]
    node_net = _find_local(_node_networks(request), ref)
    refusal = removal_refusal(node_net.name if node_net is not None else ref)
    if refusal is not None:
        raise ApiError(403, refusal)  # dockerd's status for its predefined networks
    b = require_manager(request)
    await b.prepare_write()  # a manager just back must not answer "not found", nor "unused"
    net = find_network(b.store, request.match_info["id"])
    if is_predefined(net):  # dockerd looks among the networks it lists
        raise not_found(f"network {request.match_info['id']} not found")
    reason = _in_use(b.store, net)
    if reason is not None:
        raise bad_request(reason)
    await _delete(b, net)
    return web.Response(status=204)


def _until(values: list[str]) -> int | None:
    """`until` as a Unix timestamp (seconds, fractions allowed) or RFC 3339; nanoseconds."""
    if not values:
        return None
    text = values[0]
    try:
        return int(float(text) * 1_000_000_000)
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        raise bad_request(f"invalid until filter {text!r}: give a timestamp") from None


async def prune_networks(request: web.Request) -> web.Response:
    """Remove every network no service or running task uses (ingress is kept, as Docker)."""
    b = require_manager(request)
    filters = parse_filters(request, PRUNE_FILTERS)
    until = _until(filters.get("until", []))
    await b.prepare_write()  # what is in use is read from the store
    deleted: list[str] = []
    for net in b.store.list(Network):
        labels = dict(net.spec.annotations.labels)
        if net.spec.ingress or is_predefined(net) or _in_use(b.store, net) is not None:
            continue
        if not _labels_match(filters.get("label", []), labels):
            continue
        if any(_labels_match([item], labels) for item in filters.get("label!", [])):
            continue
        if until is not None and net.meta.created_at_ns >= until:
            continue
        err = await _propose_delete(b, net)
        if err is not None and err.kind in (ErrorKind.IN_USE, ErrorKind.NOT_FOUND):
            continue  # a service took it, or someone removed it, since the check: not pruned
        if err is not None:
            raise from_store_error(err)
        deleted.append(net.spec.annotations.name)
    return json_response({"NetworksDeleted": deleted or None})
