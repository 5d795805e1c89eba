"""Placement constraints (`--constraint node.role==manager`), parsed and matched as Swarm does.

An expression is `key==value` or `key!=value`. Keys: node.id, node.hostname, node.role,
node.ip (an address or a CIDR), node.platform.os, node.platform.arch, node.labels.<label>,
engine.labels.<label>. Values compare without regard to case; label names are case sensitive.
A node missing the attribute matches as if it were the empty string. An unknown key parses but
matches no node, as in Swarm (the task then stays pending with the scheduler's explanation).

Parse errors carry swarmkit's wording, which the API passes on at service create.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address, ip_network

from controlplane.pb.objects_pb2 import Node

OPERATORS = ("==", "!=")
NODE_LABEL_PREFIX = "node.labels."
ENGINE_LABEL_PREFIX = "engine.labels."
_KEY = re.compile(r"^[a-z_][a-z0-9\-_.]+$", re.IGNORECASE)
_VALUE = re.compile(r"^[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+$", re.IGNORECASE)


class ConstraintError(ValueError):
    """A malformed constraint expression."""


@dataclass(frozen=True)
class Constraint:
    key: str
    equal: bool  # True for ==, False for !=
    value: str

    def accepts(self, *candidates: str) -> bool:
        found = any(self.value.casefold() == c.casefold() for c in candidates)
        return found if self.equal else not found


def parse(expressions: Iterable[str]) -> list[Constraint]:
    out: list[Constraint] = []
    for expr in expressions:
        op = next((o for o in OPERATORS if o in expr), None)
        if op is None:
            raise ConstraintError(f"constraint expected one operator from {', '.join(OPERATORS)}")
        key, value = (part.strip() for part in expr.split(op, 1))
        if not _KEY.match(key):
            raise ConstraintError(f"key '{key}' is invalid")
        if not _VALUE.match(value):
            raise ConstraintError(f"value '{value}' is invalid")
        out.append(Constraint(key, op == "==", value))
    return out


def node_matches(constraints: Iterable[Constraint], node: Node) -> bool:
    return all(_matches(c, node) for c in constraints)


def node_takes_global_task(constraints: list[Constraint] | None, node: Node) -> bool:
    """A global service's or global job's new task goes to a ready, active node that matches
    the constraints (None: constraints that did not parse, which match no node)."""
    return (
        node.status.state == "ready"
        and (node.spec.availability or "active") == "active"
        and constraints is not None
        and node_matches(constraints, node)
    )


def _matches(c: Constraint, node: Node) -> bool:
    key = c.key.lower()
    if key == "node.id":
        return c.accepts(node.id)
    if key == "node.hostname":
        return c.accepts(node.description.hostname)
    if key == "node.role":
        return c.accepts(node.role or node.spec.desired_role or "worker")
    if key == "node.ip":
        return _ip_matches(c, node.status.addr)
    if key == "node.platform.os":
        return c.accepts(node.description.os)
    if key == "node.platform.arch":
        return c.accepts(node.description.architecture)
    if key.startswith(NODE_LABEL_PREFIX) and len(key) > len(NODE_LABEL_PREFIX):
        return c.accepts(node.spec.annotations.labels.get(c.key[len(NODE_LABEL_PREFIX) :], ""))
    if key.startswith(ENGINE_LABEL_PREFIX) and len(key) > len(ENGINE_LABEL_PREFIX):
        return c.accepts(node.description.engine_labels.get(c.key[len(ENGINE_LABEL_PREFIX) :], ""))
    return False


def _ip_matches(c: Constraint, addr: str) -> bool:
    """An address compares equal; a CIDR compares by containment; anything else matches none."""
    try:
        node_ip = ip_address(addr)
    except ValueError:
        node_ip = None
    try:
        inside = node_ip == ip_address(c.value)
    except ValueError:
        try:
            inside = node_ip is not None and node_ip in ip_network(c.value, strict=False)
        except ValueError:
            return False
    return inside == c.equal
