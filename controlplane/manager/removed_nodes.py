"""Nodes removed with `docker node rm` stay out: their certificates do not.

A removed node keeps its certificate, which stays valid (signed by the swarm's root, unexpired)
for up to NODE_CERT_VALIDITY (or the cluster's `--cert-expiry`, when longer). As swarmkit
keeps "blacklisted certificates" in its cluster object, the removal writes the node's id into
the Cluster object (`removal`), with the time by which every certificate it can hold has
expired; the managers' gRPC interceptor (`authz.RoleInterceptor`) then refuses that id on
every service with swarmkit's words, and the entry is forgotten once it has expired (TLS
refuses the certificate itself from then on). A node that joins again gets a new id, so
nothing it does later is refused.
"""

from __future__ import annotations

import time

from controlplane.manager.ca import NODE_CERT_VALIDITY, PermissionDeniedError
from controlplane.manager.cluster import node_cert_validity_ns
from controlplane.manager.followed_cluster import FollowedCluster
from controlplane.manager.tasks import is_terminal, set_status
from controlplane.pb.objects_pb2 import Cluster, Node, RemovedNode, Task
from controlplane.store import Store, Transaction

ORPHANED_MESSAGE = "Task belonged to a node that has been deleted"
_VALIDITY_NS = int(NODE_CERT_VALIDITY.total_seconds()) * 1_000_000_000


def removed_message(node_id: str) -> str:
    """swarmkit's refusal of a removed node's certificate."""
    return f"Permission denied: node {node_id} was removed from swarm"


def removal(store: Store, node: Node, now_ns: int) -> tuple[Transaction, int]:
    """The write of `docker node rm`: the node's unfinished tasks orphaned, its id remembered
    in the Cluster object (at the version read: a concurrent Cluster write makes the store
    refuse it, and the caller builds it again), and the node deleted. Returns the write and
    the number of tasks orphaned."""
    txn = Transaction()
    orphaned = 0
    for task in store.list(Task):
        if task.node_id == node.id and not is_terminal(task):
            set_status(task, "orphaned", ORPHANED_MESSAGE, now_ns)
            txn.update(task)
            orphaned += 1
    clusters = store.list(Cluster)
    if clusters:
        cluster = clusters[0]
        kept = [
            r for r in cluster.removed_nodes if r.expires_at_ns > now_ns and r.node_id != node.id
        ]
        del cluster.removed_nodes[:]
        cluster.removed_nodes.extend(kept)
        # Certificates live up to the cluster's expiry (`--cert-expiry`), or the default one
        # under which the node may have got its certificate before.
        validity_ns = max(_VALIDITY_NS, node_cert_validity_ns(cluster))
        cluster.removed_nodes.append(
            RemovedNode(node_id=node.id, expires_at_ns=now_ns + validity_ns)
        )
        txn.update(cluster)
    txn.delete(Node, node.id)
    return txn, orphaned


class RemovedNodes:
    """The removed node ids of a manager's store, read again only when the Cluster changes
    (the interceptor asks on every call)."""

    def __init__(self, store: Store) -> None:
        self._expiry = FollowedCluster(store, _expiries)

    def check(self, node_id: str, now_ns: int | None = None) -> None:
        """Raise PermissionDeniedError if `node_id` was removed from the swarm."""
        expiry = self._expiry.current().get(node_id)
        if expiry is not None and (now_ns if now_ns is not None else time.time_ns()) < expiry:
            raise PermissionDeniedError(removed_message(node_id))


def _expiries(cluster: Cluster | None) -> dict[str, int]:
    removed = cluster.removed_nodes if cluster is not None else ()
    return {r.node_id: r.expires_at_ns for r in removed}
