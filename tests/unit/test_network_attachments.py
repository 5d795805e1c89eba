"""Standalone containers' network attachments on the managers' side: only attachable overlays,
Docker's refusals, the per-host limit, an address from the allocator pass that no other
holder has, freed when the attachment is deleted, and tasks nobody else touches."""

from __future__ import annotations

import grpc
import pytest

from controlplane.manager.allocation import allocate
from controlplane.manager.assignments import node_tasks
from controlplane.manager.network_attachments import AttachRefused, attachment_task
from controlplane.manager.orchestrator import ORPHAN_DELAY_NS
from controlplane.manager.scheduler import OVERLAY_TASKS_PER_HOST
from controlplane.pb.dispatcher_pb2 import AttachNetworkRequest
from controlplane.pb.objects_pb2 import Node, Task
from controlplane.store import Transaction
from tests.unit.cluster_builders import T0, SyncCluster, overlay

DENIED = grpc.StatusCode.PERMISSION_DENIED


def cluster(attachable: bool = True) -> SyncCluster:
    c = SyncCluster(nodes=2)
    net = overlay("net1", "my-net", "10.0.1.0/24", 4097)
    net.spec.attachable = attachable
    c.apply(Transaction().create(net))
    return c


def request(container: str, target: str = "my-net", node: str = "node1") -> AttachNetworkRequest:
    return AttachNetworkRequest(
        node_id=node, container_id=container * 8, container_name=container, target=target
    )


def attach(c: SyncCluster, container: str, node: str = "node1") -> Task:
    task = attachment_task(c.store, request(container, node=node), T0)
    c.apply(Transaction().create(task))
    c.converge()
    current = c.store.get(Task, task.id)
    assert current is not None
    return current


def test_attachment_gets_an_address_of_its_own_and_stays_with_its_node() -> None:
    c = cluster()
    web, client = attach(c, "web"), attach(c, "client", node="node2")
    assert [(t.status.state, t.node_id) for t in (web, client)] == [
        ("assigned", "node1"),
        ("assigned", "node2"),
    ]
    assert web.networks[0].network_id == "net1"
    assert web.networks[0].addresses != client.networks[0].addresses
    assert web.networks[0].addresses[0].startswith("10.0.1.")
    assert web.desired_state == "running"  # the orchestrator left it alone
    assert web.id not in node_tasks(c.store, "node1")  # not an assignment to run


def test_a_detached_address_is_free_again() -> None:
    c = cluster()
    first = attach(c, "web")
    c.apply(Transaction().delete(Task, first.id))
    again = attach(c, "web2")
    assert again.networks[0].addresses == first.networks[0].addresses


@pytest.mark.parametrize(
    ("attachable", "target", "code", "message"),
    [
        (False, "my-net", DENIED, "network my-net not manually attachable"),
        (True, "nope", grpc.StatusCode.NOT_FOUND, "network nope not found"),
        (True, "ingress", DENIED, "network ingress not manually attachable"),
    ],
)
def test_refusals_have_dockers_words(
    attachable: bool, target: str, code: grpc.StatusCode, message: str
) -> None:
    c = cluster(attachable)
    with pytest.raises(AttachRefused) as refused:
        attachment_task(c.store, request("web", target), T0)
    assert (refused.value.code, str(refused.value)) == (code, message)


def test_a_container_already_on_the_network_is_refused() -> None:
    c = cluster()
    attach(c, "web")
    for target in ("my-net", "net1"):  # by name or id: the same network
        with pytest.raises(AttachRefused) as refused:
            attachment_task(c.store, request("web", target), T0)
        assert refused.value.code is grpc.StatusCode.ALREADY_EXISTS
        assert str(refused.value) == "endpoint with name web already exists in network my-net"
    assert attachment_task(c.store, request("other"), T0).attachment.container_id == "other" * 8


def test_a_request_without_container_is_refused() -> None:
    c = cluster()
    bad = AttachNetworkRequest(node_id="node1", target="my-net")
    with pytest.raises(AttachRefused, match="container_id is required"):
        attachment_task(c.store, bad, T0)


def test_the_per_host_limit_refuses_the_next_one_and_only_on_that_host() -> None:
    c = cluster()
    txn = Transaction()
    for i in range(OVERLAY_TASKS_PER_HOST):
        txn.create(attachment_task(c.store, request(f"c{i:04d}"), T0))
    c.apply(txn)
    with pytest.raises(AttachRefused) as refused:
        attachment_task(c.store, request("one-more"), T0)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "already has 1000 containers on this node" in str(refused.value)
    assert attachment_task(c.store, request("elsewhere", node="node2"), T0).node_id == "node2"


def test_attachments_of_a_node_down_for_a_day_are_swept_and_their_addresses_freed() -> None:
    c = cluster()
    lost, kept = attach(c, "web"), attach(c, "client", node="node2")
    node = c.store.get(Node, "node1")
    assert node is not None
    node.status.state = "down"
    node.meta.updated_at_ns = c.now
    c.apply(Transaction().update(node))
    # Down, but perhaps only cut off: its container may still use the address for a while.
    assert c.converge() == c.now + ORPHAN_DELAY_NS  # the orchestrator's wake-up
    assert c.store.get(Task, lost.id) is not None
    c.now += ORPHAN_DELAY_NS
    c.converge()
    assert c.store.get(Task, lost.id) is None
    assert c.store.get(Task, kept.id) is not None  # its node is up: its own business
    back = c.store.get(Node, "node1")
    assert back is not None
    back.status.state = "ready"
    c.apply(Transaction().update(back))
    again = attach(c, "again")
    assert again.networks[0].addresses == lost.networks[0].addresses  # lowest free, reused


def test_attachments_of_a_removed_node_are_swept() -> None:
    c = cluster()
    orphan, other = attach(c, "web"), attach(c, "db")
    orphan.status.state = "orphaned"  # what `docker node rm` does to a removed node's tasks
    c.apply(Transaction().update(orphan).delete(Node, "node1"))
    c.converge()
    assert c.store.get(Task, orphan.id) is None
    assert c.store.get(Task, other.id) is None  # on the removed node too: its node is gone


def test_the_address_asked_for_is_given_or_refused_with_the_reason() -> None:
    """`docker run --ip` / `network connect --ip`: that address (dockerd ignored none of
    them); one in use or outside the subnets is refused at once, where dockerd waits for its
    attach deadline and says only `context deadline exceeded`."""
    c = cluster()

    def asking(container: str, address: str) -> AttachNetworkRequest:
        wanted = request(container)
        wanted.addresses.append(address)
        return wanted

    task = attachment_task(c.store, asking("fixed", "10.0.1.77"), T0)
    c.apply(Transaction().create(task))
    c.converge()
    fixed = c.store.get(Task, task.id)
    assert fixed is not None and fixed.status.state == "assigned"
    assert list(fixed.networks[0].addresses) == ["10.0.1.77/24"]
    assert attach(c, "next").networks[0].addresses[0] == "10.0.1.2/24"  # the pool goes on

    refusals = {
        "10.0.1.77": "address 10.0.1.77 is in use on network my-net, or is not one it hands out",
        "10.0.1.2": "address 10.0.1.2 is in use on network my-net",
        "10.0.1.1": "address 10.0.1.1 is in use on network my-net",  # the gateway
        "10.9.9.9": "address 10.9.9.9 is not in network my-net's subnets (10.0.1.0/24): ",
        "bogus": "invalid IPv4 address: bogus",
    }
    for address, words in refusals.items():
        with pytest.raises(AttachRefused) as refused:
            attachment_task(c.store, asking("other", address), T0)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert str(refused.value).startswith(words), address


def test_the_allocator_refuses_an_address_taken_meanwhile() -> None:
    """Two containers asking for one address before either is allocated: the allocator pass
    gives it to one and rejects the other's attachment with the reason."""
    c = cluster()
    first, second = request("first"), request("second")
    for wanted in (first, second):
        wanted.addresses.append("10.0.1.50")
    tasks = [attachment_task(c.store, wanted, T0) for wanted in (first, second)]
    c.apply(Transaction().create(tasks[0]).create(tasks[1]))
    c.apply(allocate(c.view(), c.now).transaction or Transaction())
    states = [c.store.get(Task, t.id) for t in tasks]
    assert sorted(t.status.state for t in states if t is not None) == ["assigned", "rejected"]
    [rejected] = [t for t in states if t is not None and t.status.state == "rejected"]
    assert rejected.status.err.startswith("address 10.0.1.50 is in use on network my-net")
