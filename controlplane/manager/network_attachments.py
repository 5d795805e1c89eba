"""Standalone containers on overlays, the managers' side (swarmkit's network attachment tasks).

A node whose container joins a swarm network (`docker run --network my-net`) asks the leader's
dispatcher; the leader checks the network may take it (it exists, it is attachable, the node
has fewer than OVERLAY_TASKS_PER_HOST endpoints on it, the container is not on it already:
`docker network connect` twice), records a task that runs nothing
(`Task.attachment` names the container, `node_id` the node), and answers once the allocator
pass has given that task its address. The address is therefore allocated by the leader, from
the same store-equal allocator as every task's, and never twice; deleting the task (detach)
frees it. The scheduler and the assignments leave these tasks alone; the orchestrator deletes
them only when their node is removed, or down for swarmkit's 24 hours (nothing runs the
container any more), as swarmkit's task reaper removes a gone node's orphaned attachments.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from ipaddress import IPv4Address, IPv4Network, ip_interface

import grpc

from controlplane.ids import new_object_id
from controlplane.manager.scheduler import OVERLAY_TASKS_PER_HOST
from controlplane.manager.store_allocation import holds_addresses
from controlplane.manager.tasks import (
    DESIRED_RUNNING,
    MSG_CREATED,
    is_attachment,
    may_hold_resources,
)
from controlplane.pb.dispatcher_pb2 import AttachNetworkRequest
from controlplane.pb.objects_pb2 import (
    AttachmentRuntime,
    Network,
    NetworkAttachmentConfig,
    Node,
    Service,
    Task,
    TaskStatus,
)
from controlplane.store import ErrorKind, Store, StoreError, Transaction

log = logging.getLogger("controlplane.manager.network_attachments")

ALLOCATION_TIMEOUT = 15.0  # seconds an attach waits for the leader's allocator
_POLL = 0.05
Propose = Callable[[bytes, float], Awaitable[tuple[int, bytes]]]


class AttachRefused(Exception):
    """The attachment cannot be made; `code` is the gRPC status the node gets (dockerd shows
    it as `rpc error: code = <code> desc = <message>`)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def find_target(store: Store, target: str) -> Network:
    """Full id, exact name, then unique id prefix, as dockerd looks networks up."""
    network = store.get(Network, target) or store.get_by_name(Network, target)
    if network is None:
        matches = [n for n in store.list(Network) if target and n.id.startswith(target)]
        network = matches[0] if len(matches) == 1 else None
    if network is None:
        raise AttachRefused(grpc.StatusCode.NOT_FOUND, f"network {target} not found")
    return network


def endpoints_on_node(store: Store, node_id: str, network_id: str) -> int:
    """Tasks (attachments included) that hold, or may still hold, an endpoint of the network
    on the node."""
    return sum(
        1
        for t in store.list(Task)
        if t.node_id == node_id and may_hold_resources(t) and network_id in _networks_of(t)
    )


def _networks_of(task: Task) -> set[str]:
    """An attachment holds its target from its creation, before it has an address."""
    held = {a.network_id for a in task.networks}
    if is_attachment(task):
        held.update(n.target for n in task.spec.networks)
    return held


def _addresses_held(store: Store, network_id: str) -> Iterator[str]:
    """The addresses (CIDR form) on a network that tasks, VIPs and nodes' sandboxes hold."""
    for task in store.list(Task):
        if holds_addresses(task):
            for att in task.networks:
                if att.network_id == network_id:
                    yield from att.addresses
    for service in store.list(Service):
        if network_id in service.endpoint.virtual_ips:
            yield service.endpoint.virtual_ips[network_id]
    for node in store.list(Node):
        for att in node.attachments:
            if att.network_id == network_id:
                yield from att.addresses


def refuse_unavailable_address(store: Store, network: Network, wanted: str) -> None:
    """AttachRefused (InvalidArgument) when `wanted` (`docker run --ip`) cannot be this
    container's: not IPv4, outside the network's subnets, its network, broadcast or gateway
    address, or held already. dockerd accepts such an address, waits for its attach deadline
    and says only `context deadline exceeded`; the allocator pass checks again."""
    name = network.spec.annotations.name
    try:
        ip = IPv4Address(wanted)
    except ValueError:
        raise AttachRefused(
            grpc.StatusCode.INVALID_ARGUMENT, f"invalid IPv4 address: {wanted}"
        ) from None
    if not network.ipam:
        return  # not allocated yet: the allocator pass checks the address
    subnets = [IPv4Network(pool.subnet) for pool in network.ipam]
    subnet = next((s for s in subnets if ip in s), None)
    if subnet is None:
        raise AttachRefused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"address {ip} is not in network {name}'s subnets "
            f"({', '.join(map(str, subnets))}): give an address of its subnet",
        )
    gateways = {IPv4Address(pool.gateway) for pool in network.ipam if pool.gateway}
    held = {ip_interface(cidr).ip for cidr in _addresses_held(store, network.id)}
    if ip in (subnet.network_address, subnet.broadcast_address) or ip in gateways | held:
        raise AttachRefused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"address {ip} is in use on network {name}, or is not one it hands out (its "
            "network, gateway or broadcast address): give another address, or none",
        )


def attachment_task(store: Store, request: AttachNetworkRequest, now_ns: int) -> Task:
    """The new attachment task for `request`; AttachRefused with Docker's words when the
    network cannot take the container."""
    if not request.container_id:
        raise AttachRefused(grpc.StatusCode.INVALID_ARGUMENT, "container_id is required")
    network = find_target(store, request.target)
    name = network.spec.annotations.name
    if network.spec.ingress or not network.spec.attachable:
        raise AttachRefused(
            grpc.StatusCode.PERMISSION_DENIED, f"network {name} not manually attachable"
        )
    if any(
        is_attachment(t)
        and t.attachment.container_id == request.container_id
        and network.id in _networks_of(t)
        for t in store.list(Task)
    ):
        raise AttachRefused(
            grpc.StatusCode.ALREADY_EXISTS,
            f"endpoint with name {request.container_name or request.container_id[:12]} "
            f"already exists in network {name}",
        )
    for wanted in request.addresses:
        refuse_unavailable_address(store, network, wanted)
    held = endpoints_on_node(store, request.node_id, network.id)
    if held >= OVERLAY_TASKS_PER_HOST:
        raise AttachRefused(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"network {name} already has {held} containers on this node, the most one host "
            f"can attach to one overlay ({OVERLAY_TASKS_PER_HOST}); remove a container from "
            "it or use another network",
        )
    task = Task(
        id=new_object_id(),
        node_id=request.node_id,
        desired_state=DESIRED_RUNNING,
        attachment=AttachmentRuntime(container_id=request.container_id),
        status=TaskStatus(timestamp_ns=now_ns, state="new", message=MSG_CREATED),
    )
    task.meta.created_at_ns = task.meta.updated_at_ns = now_ns
    task.spec.annotations.name = request.container_name or request.container_id[:12]
    task.spec.networks.append(
        NetworkAttachmentConfig(
            target=network.id, aliases=list(request.aliases), addresses=list(request.addresses)
        )
    )
    return task


class NetworkAttachments:
    """Attach and detach on the leader's store (the dispatcher checks leadership first)."""

    def __init__(self, store: Store, propose: Propose, timeout: float = ALLOCATION_TIMEOUT) -> None:
        self._store = store
        self._propose = propose
        self._timeout = timeout
        self._lock = asyncio.Lock()  # the per-host count and the creation, one at a time

    async def attach(self, request: AttachNetworkRequest) -> tuple[Task, Network]:
        """The attachment task once allocated, and its network."""
        async with self._lock:
            task = attachment_task(self._store, request, time.time_ns())
            await self._write(Transaction().create(task))
        log.info(
            "event=attachment_requested node=%s container=%s network=%s task=%s",
            request.node_id,
            request.container_id[:12],
            task.spec.networks[0].target,
            task.id,
        )
        deadline = asyncio.get_running_loop().time() + self._timeout
        while True:
            current = self._store.get(Task, task.id)
            if current is None:
                raise AttachRefused(grpc.StatusCode.ABORTED, "the attachment was removed")
            if current.status.state == "rejected":
                await self.detach(request.node_id, task.id)
                # With an address asked for, the allocator refused that address.
                code = grpc.StatusCode.INVALID_ARGUMENT if request.addresses else None
                raise AttachRefused(code or grpc.StatusCode.RESOURCE_EXHAUSTED, current.status.err)
            if current.networks and current.networks[0].addresses:
                network = self._store.get(Network, current.networks[0].network_id)
                if network is not None:
                    return current, network
            if asyncio.get_running_loop().time() >= deadline:
                await self.detach(request.node_id, task.id)
                raise AttachRefused(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"the leader allocated no address within {self._timeout:.0f}s; retry",
                )
            await asyncio.sleep(_POLL)

    async def detach(self, node_id: str, attachment_id: str) -> None:
        """Delete the attachment task (its address is free again); gone already is fine."""
        task = self._store.get(Task, attachment_id)
        if task is None:
            return
        if not is_attachment(task) or task.node_id != node_id:
            raise AttachRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"task {attachment_id} is not a network attachment of node {node_id}",
            )
        await self._write(Transaction().delete(Task, attachment_id))
        log.info("event=attachment_removed node=%s task=%s", node_id, attachment_id)

    async def _write(self, txn: Transaction) -> None:
        _, result = await self._propose(txn.encode(), ALLOCATION_TIMEOUT)
        error = StoreError.from_result(result)
        if error is not None:
            # The network went between the check and the write (a remove in flight).
            gone = error.kind == ErrorKind.NOT_FOUND
            code = grpc.StatusCode.NOT_FOUND if gone else grpc.StatusCode.UNAVAILABLE
            raise AttachRefused(code, error.message)
