"""`/nodes`: the swarm's nodes as the store holds them, with the live Raft view of managers
(leader, reachability) that Swarm also computes at request time rather than storing; node
update (role, availability, labels, name) and removal, refused as swarmkit's control API
refuses them.

The API only writes the desired role (`Spec.Role`); the leader's role manager
(`manager/role_manager.py`) then changes the Raft membership and the node's observed role. A
demotion is refused here when it would leave the swarm without a manager or without a
reachable Raft majority, judged on the leader's view of the membership. Removing a node marks
its unfinished tasks orphaned in the same transaction (swarmkit does so: no agent will report
on them again), and the orchestrator replaces them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from controlplane.api.backend import EngineBackend, ManagerInfo
from controlplane.api.common import (
    add_route,
    go_time,
    json_body,
    json_response,
    parse_filters,
    require_manager,
    require_manager_read,
)
from controlplane.api.errors import ApiError, bad_request, from_store_error, not_found, rpc_error
from controlplane.api.swarm import tls_info
from controlplane.manager.cluster import the_cluster
from controlplane.manager.removed_nodes import removal
from controlplane.numbers import is_number
from controlplane.pb.objects_pb2 import Node, NodeSpec
from controlplane.raft.core import RaftError
from controlplane.raft.errors import TransportError
from controlplane.store import ErrorKind, Store, StoreError, Transaction

log = logging.getLogger("controlplane.api.nodes")

_FILTERS = frozenset({"id", "name", "role", "membership", "node.label", "label"})


ROLES = ("worker", "manager")
AVAILABILITIES = ("active", "pause", "drain")
REMOVAL_ATTEMPTS = 5
LEADER_VIEW_TIMEOUT = 1.0  # seconds a follower waits for the leader's view of the managers


def register(app: web.Application) -> None:
    add_route(app, "GET", "/nodes", list_nodes)
    add_route(app, "GET", "/nodes/{id}", inspect_node)
    add_route(app, "POST", "/nodes/{id}/update", update_node)
    add_route(app, "DELETE", "/nodes/{id}", delete_node)


# The engine's plugins a node reports: what the emulated engine has (`docker info` lists the
# same under Plugins).
PLUGINS = (("Log", "json-file"), ("Network", "overlay"), ("Volume", "local"))


def node_json(node: Node, manager: ManagerInfo | None, tls: dict[str, str]) -> dict[str, Any]:
    """`tls`: the swarm's TLSInfo (every node's certificate comes from the one root CA)."""
    resources: dict[str, int] = {}
    if node.description.nano_cpus:
        resources["NanoCPUs"] = node.description.nano_cpus
    if node.description.memory_bytes:
        resources["MemoryBytes"] = node.description.memory_bytes
    engine: dict[str, Any] = {"EngineVersion": node.description.engine_version}
    if node.description.engine_labels:  # dockerd --label
        engine["Labels"] = dict(node.description.engine_labels)
    engine["Plugins"] = [{"Type": kind, "Name": name} for kind, name in PLUGINS]
    body: dict[str, Any] = {
        "ID": node.id,
        "Version": {"Index": node.meta.version.index},
        "CreatedAt": go_time(node.meta.created_at_ns),
        "UpdatedAt": go_time(node.meta.updated_at_ns),
        "Spec": {
            **({"Name": node.spec.annotations.name} if node.spec.annotations.name else {}),
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
            "Resources": resources,
            "Engine": engine,
            "TLSInfo": tls,
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


async def _managers(request: web.Request) -> dict[str, ManagerInfo]:
    """The managers' statuses as the leader sees them: only it hears from every manager
    (swarmkit answers node listings from the leader), so a follower asks it; without an
    answer within LEADER_VIEW_TIMEOUT (no leader, a partition) the follower's own view, where
    the managers other than itself and the leader are "unknown"."""
    b = require_manager(request)
    info = b.node_info()
    managers = {m.node_id: m for m in info.managers}
    if info.is_leader or not any(m.leader for m in managers.values()):
        return managers
    try:
        members = await asyncio.wait_for(b.raft_members(), LEADER_VIEW_TIMEOUT)
    except (TimeoutError, RaftError, TransportError):
        return managers
    return {
        node_id: m
        if m.leader
        else replace(m, reachability="reachable" if node_id in members.reachable else "unreachable")
        for node_id, m in managers.items()
    }


def _wanted(node: Node, filters: dict[str, list[str]]) -> bool:
    return all(any(_matches(node, key, v) for v in values) for key, values in filters.items())


def _matches(node: Node, key: str, value: str) -> bool:
    if key == "id":
        return node.id.startswith(value)
    if key == "name":
        return value in node.description.hostname
    if key == "role":
        return value.lower() == (node.spec.desired_role or node.role)
    if key == "membership":
        return value.lower() == "accepted"
    if key == "label":  # the engine's labels (dockerd --label), as dockerd filters
        return _label(node.description.engine_labels, value)
    return _label(node.spec.annotations.labels, value)


def _label(labels: Mapping[str, str], wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _check_choices(filters: dict[str, list[str]]) -> None:
    """dockerd's refusal of a role or membership it does not know (either case matches)."""
    for key, choices in (("role", ROLES), ("membership", ("accepted", "pending"))):
        for value in filters.get(key, []):
            if value.lower() not in choices:
                raise bad_request(f"Invalid {key} filter: '{value}'")


async def list_nodes(request: web.Request) -> web.Response:
    b = await require_manager_read(request)
    filters = parse_filters(request, _FILTERS)
    _check_choices(filters)
    managers = await _managers(request)
    nodes = [n for n in b.store.list(Node) if _wanted(n, filters)]
    tls = _tls(b.store)
    return json_response([node_json(n, managers.get(n.id), tls) for n in nodes])


async def inspect_node(request: web.Request) -> web.Response:
    b = await require_manager_read(request)
    node = find_node(b.store, request.match_info["id"])
    manager = (await _managers(request)).get(node.id)
    return json_response(node_json(node, manager, _tls(b.store)))


def _tls(store: Store) -> dict[str, str]:
    cluster = the_cluster(store)
    return tls_info(cluster) if cluster is not None else {}


# ---- update ----------------------------------------------------------------------------


def parse_version(request: web.Request) -> int:
    """The `version` query parameter, an unsigned integer as dockerd parses it."""
    text = request.query.get("version", "")
    if not is_number(text):
        raise bad_request(
            f"invalid node version '{text}': strconv.ParseUint: parsing {json.dumps(text)}: "
            "invalid syntax; pass the node's Version.Index as inspected"
        )
    value = int(text)
    if value >= 1 << 64:
        raise bad_request(
            f"invalid node version '{text}': strconv.ParseUint: parsing {json.dumps(text)}: "
            "value out of range"
        )
    return value


def parse_node_spec(body: dict[str, Any]) -> NodeSpec:
    """A NodeSpec from Docker's JSON. Role and Availability are required and matched without
    regard to case, with dockerd's words when they are not one of the known values."""
    spec = NodeSpec()
    name = body.get("Name", "")
    if not isinstance(name, str):
        raise bad_request(f"invalid node spec: Name must be a string, got {json.dumps(name)}")
    spec.annotations.name = name
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise bad_request(
            f"invalid node spec: Labels must map strings to strings, got {json.dumps(labels)}"
        )
    spec.annotations.labels.update(labels)
    spec.desired_role = _choice(body, "Role", ROLES)
    spec.availability = _choice(body, "Availability", AVAILABILITIES)
    return spec


def _choice(body: dict[str, Any], field: str, allowed: tuple[str, ...]) -> str:
    value = body.get(field, "")
    if not isinstance(value, str) or value.lower() not in allowed:
        shown = value if isinstance(value, str) else json.dumps(value)
        raise bad_request(
            f"invalid {field}: {json.dumps(shown)} (expected one of {', '.join(allowed)})"
        )
    return value.lower()


async def _check_demotion(b: EngineBackend, node: Node) -> None:
    """swarmkit's demotion safeguards: a manager must remain, and the Raft members left
    must still have a reachable majority."""
    managers = [n for n in b.store.list(Node) if n.role == "manager"]
    if len(managers) == 1 and managers[0].id == node.id:
        raise rpc_error("FailedPrecondition", "attempting to demote the last manager of the swarm")
    members = await b.raft_members()
    if not members.is_member(node.id):
        raise rpc_error("NotFound", "can't find manager in raft memberlist")
    if not members.can_remove(node.id):
        raise rpc_error(
            "FailedPrecondition",
            "can't remove member from the raft: this would result in a loss of quorum",
        )


async def update_node(request: web.Request) -> web.Response:
    b = require_manager(request)
    body = await json_body(request)
    version = parse_version(request)  # dockerd's order: the body, the version, the spec
    spec = parse_node_spec(body)
    await b.prepare_write()
    node = find_node(b.store, request.match_info["id"])
    if node.spec.desired_role == "manager" and spec.desired_role == "worker":
        await _check_demotion(b, node)
    updated = Node()
    updated.CopyFrom(node)
    updated.spec.CopyFrom(spec)
    updated.meta.version.index = version
    updated.meta.updated_at_ns = time.time_ns()
    err = StoreError.from_result(await b.propose(Transaction().update(updated).encode()))
    if err is not None:
        raise _refusal(err, node.id)
    log.info(
        "event=node_updated node=%s role=%s availability=%s",
        node.id,
        spec.desired_role,
        spec.availability,
    )
    return web.Response(status=200)


def _refusal(err: StoreError, node_id: str) -> ApiError:
    if err.kind == ErrorKind.CONFLICT:
        return rpc_error("Unknown", err.message)
    if err.kind == ErrorKind.NOT_FOUND:
        return rpc_error("NotFound", f"node {node_id} not found")
    return from_store_error(err)


# ---- remove ----------------------------------------------------------------------------


def _force(request: web.Request) -> bool:
    """dockerd's BoolValue: anything but "", 0, no, false or none is true."""
    return request.query.get("force", "").strip().lower() not in ("", "0", "no", "false", "none")


async def delete_node(request: web.Request) -> web.Response:
    b = require_manager(request)
    force = _force(request)
    await b.prepare_write()
    node = find_node(b.store, request.match_info["id"])
    if node.spec.desired_role == "manager" and (await b.raft_members()).is_member(node.id):
        raise rpc_error(
            "FailedPrecondition",
            f"node {node.id} is a cluster manager and is a member of the raft cluster. "
            "It must be demoted to worker before removal",
        )
    if not force and node.status.state == "ready":
        raise rpc_error("FailedPrecondition", f"node {node.id} is not down and can't be removed")
    for attempt in range(REMOVAL_ATTEMPTS):  # the Cluster object may move meanwhile
        txn, orphaned = removal(b.store, node, time.time_ns())
        err = StoreError.from_result(await b.propose(txn.encode()))
        if err is None:
            break
        if err.kind != ErrorKind.CONFLICT or attempt == REMOVAL_ATTEMPTS - 1:
            raise _refusal(err, node.id)
        node = find_node(b.store, node.id)
    log.info("event=node_removed node=%s forced=%s orphaned_tasks=%d", node.id, force, orphaned)
    return web.Response(status=200)
