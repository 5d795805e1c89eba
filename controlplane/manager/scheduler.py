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

from controlplane.manager import constraints
from controlplane.manager.task_index import Load, Placement, host_ports
from controlplane.manager.tasks import MSG_ASSIGNED, MSG_PENDING, set_status, wants_running
from controlplane.manager.view import ClusterView
from controlplane.node_local_networks import is_node_local
from controlplane.pb.objects_pb2 import Node, Task
from controlplane.store import Transaction

OVERLAY_TASKS_PER_HOST = 1000


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


class _PassLoad:
    """The view's load (kept by its task index) plus what this pass assigned so far, which
    stays the pass's own: a transaction that does not commit leaves the index as it was."""

    def __init__(self, base: Load) -> None:
        self._base = base
        self._added = Load()

    def add(self, task: Task, node_id: str) -> None:
        self._added.add(Placement.of(task, node_id))

    def total(self, node_id: str) -> int:
        return self._base.total[node_id] + self._added.total[node_id]

    def of_service(self, node_id: str, service_id: str) -> int:
        key = (node_id, service_id)
        return self._base.by_service[key] + self._added.by_service[key]

    def on_network(self, node_id: str, network_id: str) -> int:
        key = (node_id, network_id)
        return self._base.by_network[key] + self._added.by_network[key]

    def holds_port(self, node_id: str, protocol: str, port: int) -> bool:
        key = (node_id, protocol, port)
        return bool(self._base.host_ports[key] or self._added.host_ports[key])

    def fits(self, task: Task, node: Node) -> bool:
        """The node has the task's reservations left (swarmkit's ResourceFilter)."""
        wanted = task.spec.resources.reservations
        base, added = self._base, self._added
        free_cpus = (
            node.description.nano_cpus - base.reserved_cpus[node.id] - added.reserved_cpus[node.id]
        )
        free_memory = (
            node.description.memory_bytes
            - base.reserved_memory[node.id]
            - added.reserved_memory[node.id]
        )
        return (not wanted.nano_cpus or wanted.nano_cpus <= free_cpus) and (
            not wanted.memory_bytes or wanted.memory_bytes <= free_memory
        )


def schedule(view: ClusterView, now_ns: int) -> Transaction | None:
    pending = sorted(
        (t for t in view.index.in_state("pending") if wants_running(t)),
        key=lambda t: (t.meta.created_at_ns, t.id),
    )
    if not pending:
        return None  # nothing to place: no nodes to sort
    load = _PassLoad(view.index.load)
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
    view: ClusterView, load: _PassLoad, task: Task, nodes: list[Node]
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
        elif any(load.holds_port(node.id, *port) for port in host_ports(task)):
            refuse("host_ports")
        elif max_replicas and load.of_service(node.id, task.service_id) >= max_replicas:
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
                load.of_service(n.id, task.service_id),
                load.total(n.id),
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


def _group_counts(
    view: ClusterView, load: _PassLoad, service_id: str, descriptor: str
) -> Counter[str]:
    """Tasks of the service per value of `descriptor` over the nodes."""
    counts: Counter[str] = Counter()
    for node in view.nodes.values():
        counts[spread_value(node, descriptor)] += load.of_service(node.id, service_id)
    return counts


def _full_network(view: ClusterView, load: _PassLoad, task: Task, node: Node) -> str | None:
    for att in task.networks:
        if is_node_local(view.networks.get(att.network_id)):
            continue  # the node's own `host` or `bridge`: no overlay port to run out of
        if load.on_network(node.id, att.network_id) >= OVERLAY_TASKS_PER_HOST:
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
