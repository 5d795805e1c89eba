"""`/nodes`: the swarm's nodes as the store holds them, with the live Raft view of managers
(leader, reachability) that Swarm also computes at request time rather than storing."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controlplane.api.backend import ManagerInfo
from controlplane.api.common import (
    add_route,
    go_time,
    json_response,
    parse_filters,
    require_manager,
)
from controlplane.api.errors import bad_request, not_found
from controlplane.pb.objects_pb2 import Node
from controlplane.store import Store

_FILTERS = frozenset({"id", "name", "role", "membership", "node.label"})


def register(app: web.Application) -> None:
    add_route(app, "GET", "/nodes", list_nodes)
    add_route(app, "GET", "/nodes/{id}", inspect_node)


def node_json(node: Node, manager: ManagerInfo | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ID": node.id,
        "Version": {"Index": node.meta.version.index},
        "CreatedAt": go_time(node.meta.created_at_ns),
        "UpdatedAt": go_time(node.meta.updated_at_ns),
        "Spec": {
            "Labels": dict(node.spec.annotations.labels),
            "Role": node.spec.desired_role or node.role,
            "Availability": node.spec.availability or "active",
        },
        "Description": {
            "Hostname": node.description.hostname,
            "Platform": {
                "Architecture": node.description.architecture,
                "OS": node.description.os,
            },
            "Engine": {"EngineVersion": node.description.engine_version},
        },
        "Status": {"State": node.status.state or "unknown", "Addr": node.status.addr},
    }
    if manager is not None:
        body["ManagerStatus"] = {
            "Leader": manager.leader,
            "Reachability": manager.reachability,
            "Addr": manager.addr,
        }
    return body


def find_node(store: Store, ref: str) -> Node:
    """Full id, then hostname, then unique id prefix, as `docker node inspect` resolves."""
    node = store.get(Node, ref)
    if node is not None:
        return node
    nodes = store.list(Node)
    by_name = [n for n in nodes if n.description.hostname == ref]
    if len(by_name) == 1:
        return by_name[0]
    matches = [n for n in nodes if ref and n.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1 or len(by_name) > 1:
        raise bad_request(f"node {ref} is ambiguous ({len(matches) or len(by_name)} matches)")
    raise not_found(f"node {ref} not found")


def _managers(request: web.Request) -> dict[str, ManagerInfo]:
    return {m.node_id: m for m in require_manager(request).node_info().managers}


def _wanted(node: Node, filters: dict[str, list[str]]) -> bool:
    return all(any(_matches(node, key, v) for v in values) for key, values in filters.items())


def _matches(node: Node, key: str, value: str) -> bool:
    if key == "id":
        return node.id.startswith(value)
    if key == "name":
        return value in node.description.hostname
    if key == "role":
        return value == (node.spec.desired_role or node.role)
    if key == "membership":
        return value == "accepted"
    return _label(node, value)


def _label(node: Node, wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    labels = node.spec.annotations.labels
    return key in labels and (not sep or labels[key] == value)


async def list_nodes(request: web.Request) -> web.Response:
    b = require_manager(request)
    filters = parse_filters(request, _FILTERS)
    managers = _managers(request)
    nodes = [n for n in b.store.list(Node) if _wanted(n, filters)]
    return json_response([node_json(n, managers.get(n.id)) for n in nodes])


async def inspect_node(request: web.Request) -> web.Response:
    b = require_manager(request)
    node = find_node(b.store, request.match_info["id"])
    return json_response(node_json(node, _managers(request).get(node.id)))
