"""The scheduler: pending tasks get a node. Pure: a ClusterView and the time in, a transaction
out.

A node is a candidate when it passes every filter, in Swarm's order: ready and active (a
paused or drained node takes no new task), its resources (the CPUs and memory the node
reports, less the reservations of the tasks that may still run there, must hold the task's
reservations), the service's placement constraints, the host-mode
published ports (a node where a task that may still run holds the same protocol and port in
host mode cannot take another: swarmkit's HostPortFilter; ports left to the node, published 0,
never clash), its `max_replicas` per node, and the per-host limit of OVERLAY_TASKS_PER_HOST
tasks on one overlay network (a Linux bridge has 1024 ports; Docker stops at 1000). Among
candidates the spread strategy picks, level by level of the service's spread preferences
(`--placement-pref spread=node.labels.zone`: the nodes grouped by that label's value, nodes
without it in one group), the group with the fewest tasks of the service, then the node with
the fewest tasks of the service, then the fewest tasks overall (ties: the lowest node id, so
every replica decides the same). A task that
fits nowhere stays pending with Swarm's explanation, `no suitable node (<why, per filter, most
failures first>)`; the explanation is written only when it changes, so an unschedulable task
costs nothing until the cluster changes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from controlplane.manager import constraints
from controlplane.manager.tasks import (
    MSG_ASSIGNED,
    MSG_PENDING,
    is_active,
    may_hold_resources,
    set_status,
    wants_running,
)
from controlplane.manager.view import ClusterView
from controlplane.pb.objects_pb2 import Node, Task
from controlplane.store import Transaction

OVERLAY_TASKS_PER_HOST = 1000


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


@dataclass
class _Load:
    """What runs where, kept current as this pass assigns tasks."""

    total: Counter[str]
    by_service: Counter[tuple[str, str]]
    by_network: Counter[tuple[str, str]]
    host_ports: set[tuple[str, str, int]]  # (node, protocol, published port) in host mode
    reserved_cpus: Counter[str]  # nano CPUs reserved per node
    reserved_memory: Counter[str]  # bytes reserved per node

    @classmethod
    def of(cls, tasks: list[Task]) -> _Load:
        load = cls(Counter(), Counter(), Counter(), set(), Counter(), Counter())
        for task in tasks:
            if task.node_id and task.status.state not in ("new", "pending"):
                load.add(task, task.node_id)
        return load

    def add(self, task: Task, node_id: str) -> None:
        if is_active(task):
            self.total[node_id] += 1
            self.by_service[(node_id, task.service_id)] += 1
        if may_hold_resources(task):
            for att in task.networks:
                self.by_network[(node_id, att.network_id)] += 1
            self.host_ports.update((node_id, *port) for port in host_ports(task))
            reservations = task.spec.resources.reservations
            self.reserved_cpus[node_id] += reservations.nano_cpus
            self.reserved_memory[node_id] += reservations.memory_bytes

    def fits(self, task: Task, node: Node) -> bool:
        """The node has the task's reservations left (swarmkit's ResourceFilter)."""
        wanted = task.spec.resources.reservations
        free_cpus = node.description.nano_cpus - self.reserved_cpus[node.id]
        free_memory = node.description.memory_bytes - self.reserved_memory[node.id]
        return (not wanted.nano_cpus or wanted.nano_cpus <= free_cpus) and (
            not wanted.memory_bytes or wanted.memory_bytes <= free_memory
        )


def host_ports(task: Task) -> set[tuple[str, int]]:
    """(protocol, published port) of the task's ports published in host mode on a fixed port."""
    return {
        (p.protocol or "tcp", p.published_port)
        for p in task.endpoint.ports
        if p.publish_mode == "host" and p.published_port
    }


def schedule(view: ClusterView, now_ns: int) -> Transaction | None:
    pending = sorted(
        (t for t in view.tasks if t.status.state == "pending" and wants_running(t)),
        key=lambda t: (t.meta.created_at_ns, t.id),
    )
    if not pending:
        return None  # nothing to place: no load to count, no nodes to sort
    load = _Load.of(view.tasks)
    nodes = sorted(view.nodes.values(), key=lambda n: n.id)
    txn = Transaction()
    for task in pending:
        if task.node_id:  # global: its node was chosen when the task was made
            candidates = [view.nodes[task.node_id]] if task.node_id in view.nodes else []
        else:
            candidates = nodes
        chosen, why = _choose(view, load, task, candidates)
        if chosen is not None:
            task.node_id = chosen.id
            set_status(task, "assigned", MSG_ASSIGNED, now_ns)
            load.add(task, chosen.id)
            txn.update(task)
            continue
        err = f"no suitable node ({why})" if why else "no suitable node"
        if task.status.err != err:
            set_status(task, "pending", MSG_PENDING, now_ns, err=err)
            txn.update(task)
    return txn if len(txn) else None


def _choose(
    view: ClusterView, load: _Load, task: Task, nodes: list[Node]
) -> tuple[Node | None, str]:
    """The best candidate, or None and the explanation of why every node was refused."""
    try:
        placement = constraints.parse(task.spec.placement.constraints)
        parsed = True
    except constraints.ConstraintError:
        placement, parsed = [], False
    max_replicas = task.spec.placement.max_replicas
    failures: Counter[str] = Counter()
    order: list[str] = []

    def refuse(reason: str) -> None:
        if reason not in failures:
            order.append(reason)
        failures[reason] += 1

    candidates: list[Node] = []
    for node in nodes:
        if node.status.state != "ready" or (node.spec.availability or "active") != "active":
            refuse("ready")
        elif not load.fits(task, node):
            refuse("resources")
        elif not parsed or not constraints.node_matches(placement, node):
            refuse("constraints")
        elif any((node.id, *port) in load.host_ports for port in host_ports(task)):
            refuse("host_ports")
        elif max_replicas and load.by_service[(node.id, task.service_id)] >= max_replicas:
            refuse("max_replicas")
        elif (full := _full_network(view, load, task, node)) is not None:
            refuse(f"overlay:{full}")
        else:
            candidates.append(node)
    if candidates:
        descriptors = list(task.spec.placement.spread_descriptors)
        groups = [_group_counts(view, load, task.service_id, d) for d in descriptors]
        best = min(
            candidates,
            key=lambda n: (
                [counts[spread_value(n, d)] for counts, d in zip(groups, descriptors, strict=True)],
                load.by_service[(n.id, task.service_id)],
                load.total[n.id],
                n.id,
            ),
        )
        return best, ""
    ranked = sorted(order, key=lambda r: -failures[r])  # stable: filter order breaks ties
    return None, "; ".join(_explain(view, reason, failures[reason]) for reason in ranked)


def spread_value(node: Node, descriptor: str) -> str:
    """The node's value for a spread descriptor: a node or engine label ("" when the node
    has none, as for any other descriptor, which swarmkit ignores)."""
    key = descriptor.lower()
    if key.startswith(constraints.NODE_LABEL_PREFIX):
        return node.spec.annotations.labels.get(
            descriptor[len(constraints.NODE_LABEL_PREFIX) :], ""
        )
    if key.startswith(constraints.ENGINE_LABEL_PREFIX):
        return node.description.engine_labels.get(
            descriptor[len(constraints.ENGINE_LABEL_PREFIX) :], ""
        )
    return ""


def _group_counts(view: ClusterView, load: _Load, service_id: str, descriptor: str) -> Counter[str]:
    """Tasks of the service per value of `descriptor` over the nodes."""
    counts: Counter[str] = Counter()
    for node in view.nodes.values():
        counts[spread_value(node, descriptor)] += load.by_service[(node.id, service_id)]
    return counts


def _full_network(view: ClusterView, load: _Load, task: Task, node: Node) -> str | None:
    for att in task.networks:
        if load.by_network[(node.id, att.network_id)] >= OVERLAY_TASKS_PER_HOST:
            return att.network_id
    return None


def _explain(view: ClusterView, reason: str, count: int) -> str:
    if reason == "ready":
        return _plural(count, "node", "nodes") + " not available for new tasks"
    if reason == "resources":
        return "insufficient resources on " + _plural(count, "node", "nodes")
    if reason == "constraints":
        return "scheduling constraints not satisfied on " + _plural(count, "node", "nodes")
    if reason == "host_ports":
        return "host-mode port already in use on " + _plural(count, "node", "nodes")
    if reason == "max_replicas":
        return "max replicas per node limit exceed"
    network_id = reason.removeprefix("overlay:")
    net = view.networks.get(network_id)
    name = net.spec.annotations.name if net is not None else network_id
    return (
        f"{_plural(count, 'node', 'nodes')} already running {OVERLAY_TASKS_PER_HOST} tasks on "
        f"overlay network {name}, the most one host can attach"
    )
