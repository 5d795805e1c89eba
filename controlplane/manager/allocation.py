"""The leader's allocation pass: services get their endpoint (published ports, a VIP per
network), new tasks get an address on each of their networks and move to "pending", tasks
carry their service's endpoint as allocated (a port change reaches them without a restart),
every node gets its ingress sandbox address (its routing mesh's endpoint on `ingress`), and a
standalone container's network attachment gets its address and moves to "assigned" (its node
is known), or to "rejected" with the reason. A node-local network (swarmkit's predefined `host`
and `bridge`) has nothing to allocate: a task's attachment and its service's VIP entry there
have no address.

Pure: the allocator holds exactly what the store says is in use, whether this leader allocated
it a second ago or a previous leader did before a failover: rebuilt from the view
(`Allocator.restore`), or the leader's own kept equal to the store by its changes
(`store_allocation.py`, forgotten when a proposal does not commit); a proposal that is refused
leaks nothing. Addresses of
tasks that finished are free again because `restore` does not count terminal tasks, and
neither does it count tasks stopped before they reached a node (nothing will ever use them).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from controlplane.manager.allocator import Allocator, AllocatorError, PortSpec
from controlplane.manager.store_allocation import holds_addresses
from controlplane.manager.tasks import MSG_PENDING, is_attachment, set_status, wants_running
from controlplane.manager.view import ClusterView
from controlplane.node_local_networks import is_node_local
from controlplane.pb.objects_pb2 import (
    Endpoint,
    NetworkAttachment,
    NetworkAttachmentConfig,
    PortConfig,
    Service,
    Task,
)
from controlplane.store import Transaction


@dataclass
class AllocationResult:
    transaction: Transaction | None
    problems: list[str] = field(default_factory=list)
    # A failure that may have kept part of its claims or edited its object half-way (a
    # service's ports and VIPs are claimed one by one). A task's or a node's address that
    # cannot be had claims nothing and edits nothing: the allocator and view stay valid.
    partial: bool = False


def publishes_ingress(service: Service) -> bool:
    return any((p.publish_mode or "ingress") == "ingress" for p in service.spec.ports)


def allocate(
    view: ClusterView,
    now_ns: int,
    allocator: Allocator | None = None,
    focus: Collection[str] | None = None,
) -> AllocationResult:
    """Everything the store still lacks, as one transaction (None when nothing is missing).
    `problems` says what could not be allocated, or what the store holds twice, and why.

    `allocator`: one that holds exactly what the view's objects hold (the leader keeps one,
    `store_allocation.py`); it is changed as this pass allocates. By default one is restored
    from the view. `focus`: the ids of the only services whose endpoints may need work (the
    others were allocated by an earlier pass and have not changed since), nodes and the
    ingress network being unchanged since that pass too (the leader's loops focus a pass only
    then), so the nodes' ingress attachments are left as they are; None: all."""
    problems: list[str] = []
    if allocator is None:
        cluster = view.cluster
        allocator = Allocator.for_cluster(cluster) if cluster is not None else Allocator()
        holding = [t for t in view.tasks if holds_addresses(t)]
        problems = allocator.restore(
            view.networks.values(), view.services.values(), holding, _node_attachments(view)
        )
    txn = Transaction()
    failed: set[str] = set()  # services whose endpoint could not be allocated
    for service in view.services_in(focus):
        try:
            endpoint = _endpoint(allocator, view, service)
        except AllocatorError as err:
            problems.append(f"service {service.id}: {err}")
            failed.add(service.id)
            continue
        if endpoint != service.endpoint:
            service.endpoint.CopyFrom(endpoint)
            service.meta.updated_at_ns = now_ns
            txn.update(service)
    allocated: set[str] = set()
    for task in view.index.in_state("new"):
        if is_attachment(task):
            _attach_standalone(allocator, task, now_ns)
            txn.update(task)
            continue
        if (
            not wants_running(task)
            or task.service_id in failed
            or task.service_id not in view.services
        ):
            continue
        try:
            _attach(allocator, view, view.services[task.service_id], task)
        except AllocatorError as err:
            problems.append(f"task {task.id}: {err}")
            continue
        set_status(task, "pending", MSG_PENDING, now_ns)
        task.endpoint.CopyFrom(view.services[task.service_id].endpoint)
        txn.update(task)
        allocated.add(task.id)
    for task in _endpoint_holders(view, focus):
        owner = view.services.get(task.service_id)
        if task.id in allocated or owner is None or owner.id in failed:
            continue
        if task.endpoint != owner.endpoint:
            task.endpoint.CopyFrom(owner.endpoint)
            txn.update(task)
    if focus is None:
        _attach_nodes(allocator, view, txn, problems)
    return AllocationResult(txn if len(txn) else None, problems, partial=bool(failed))


def _endpoint_holders(view: ClusterView, focus: Collection[str] | None) -> list[Task]:
    """The tasks holding addresses whose endpoint may differ from their service's, in id
    order: a task's copy goes stale only when its service or the task itself changed, and
    either puts the service in the pass's focus."""
    if focus is None:
        tasks = view.tasks
    else:
        tasks = sorted(
            (t for service_id in focus for t in view.index.of_service(service_id)),
            key=lambda t: t.id,
        )
    return [t for t in tasks if holds_addresses(t)]


def _node_attachments(view: ClusterView) -> list[tuple[str, str, str]]:
    return [
        (node.id, att.network_id, cidr)
        for node in view.nodes.values()
        for att in node.attachments
        for cidr in att.addresses
    ]


def _attach_nodes(
    allocator: Allocator, view: ClusterView, txn: Transaction, problems: list[str]
) -> None:
    """Every node gets one address on the ingress network (and keeps it while both exist), as
    swarmkit allocates each node's ingress sandbox: the managers allocate it so no address is
    handed out twice."""
    ingress = view.ingress_network()
    ingress_id = ingress.id if ingress is not None and allocator.has_network(ingress.id) else ""
    for node in sorted(view.nodes.values(), key=lambda n: n.id):
        kept = [a for a in node.attachments if a.network_id == ingress_id]
        if ingress_id and not kept:
            try:
                address = allocator.allocate_attachment(node.id, ingress_id)
            except AllocatorError as err:
                problems.append(f"node {node.id}: ingress sandbox: {err}")
            else:
                kept = [NetworkAttachment(network_id=ingress_id, addresses=[address])]
        if kept != list(node.attachments):
            del node.attachments[:]
            node.attachments.extend(kept)
            txn.update(node)


def _networks_of(
    view: ClusterView, attachments: Iterable[NetworkAttachmentConfig], ingress: bool
) -> list[str]:
    """Network ids in spec order, the ingress network first when ports are published there."""
    wanted: list[str] = []
    ingress_net = view.ingress_network() if ingress else None  # a scan: only when needed
    if ingress_net is not None:
        wanted.append(ingress_net.id)
    for att in attachments:
        if att.target in view.networks and att.target not in wanted:
            wanted.append(att.target)
    return wanted


def _endpoint(allocator: Allocator, view: ClusterView, service: Service) -> Endpoint:
    specs = [
        PortSpec(p.target_port, p.published_port, p.protocol, p.publish_mode, p.name)
        for p in service.spec.ports
    ]
    endpoint = Endpoint()
    for p in allocator.allocate_ports(service.id, service.spec.annotations.name, specs):
        endpoint.ports.append(
            PortConfig(
                name=p.name,
                protocol=p.protocol,
                target_port=p.target_port,
                published_port=p.published_port,
                publish_mode=p.publish_mode,
            )
        )
    wanted = (
        _networks_of(view, service.spec.networks, publishes_ingress(service))
        if service.spec.endpoint_mode != "dnsrr"
        else []
    )
    for nid in list(service.endpoint.virtual_ips):
        if nid not in wanted:
            allocator.release_vip(service.id, nid)
    for nid in wanted:
        # a node-local network (`host`, `bridge`) is listed with no address, as swarmkit's
        local = is_node_local(view.networks.get(nid))
        endpoint.virtual_ips[nid] = "" if local else allocator.allocate_vip(service.id, nid)
    return endpoint


def _attach(allocator: Allocator, view: ClusterView, service: Service, task: Task) -> None:
    """An address per network; nothing is kept if one of them cannot be had."""
    attachments: list[NetworkAttachment] = []
    try:
        for nid in _networks_of(view, task.spec.networks, publishes_ingress(service)):
            aliases = [alias for a in task.spec.networks if a.target == nid for alias in a.aliases]
            local = is_node_local(view.networks.get(nid))  # the node's own: no address
            attachments.append(
                NetworkAttachment(
                    network_id=nid,
                    addresses=[] if local else [allocator.allocate_task_address(task.id, nid)],
                    aliases=list(aliases),
                )
            )
    except AllocatorError:
        allocator.release_task(task.id)
        raise
    del task.networks[:]
    task.networks.extend(attachments)


MSG_ATTACHED = "network attachment allocated"


def _attach_standalone(allocator: Allocator, task: Task, now_ns: int) -> None:
    """The address of an attachment task on its one network, or the reason there is none."""
    target = task.spec.networks[0] if task.spec.networks else None
    if target is None:
        set_status(task, "rejected", "no network to attach to", now_ns, err="no network")
        return
    try:
        wanted = target.addresses[0] if target.addresses else ""
        address = allocator.allocate_task_address(task.id, target.target, wanted)
    except AllocatorError as err:
        set_status(task, "rejected", "network attachment failed", now_ns, err=str(err))
        return
    del task.networks[:]
    task.networks.append(
        NetworkAttachment(network_id=target.target, addresses=[address], aliases=target.aliases)
    )
    set_status(task, "assigned", MSG_ATTACHED, now_ns)
