"""Recovery from a lost quorum (`docker swarm init --force-new-cluster`), and how a manager
that was left behind by one finds out.

Forcing a new cluster rewrites one surviving manager's Raft directory: its committed state
becomes a snapshot of a cluster whose only voter is itself, under a new Raft cluster id (the
old log is kept beside it, renamed, for inspection). The new id is what stops the old
managers from coming back into it by accident: their messages are those of another cluster.
What stops them from forming a second cluster among themselves is `left_behind`: a manager
that restarts first asks the members it knew, and one that answers with another cluster id
means a new cluster was forced out of this one (this works while that manager is reachable; if
none of the old members answers, nothing can tell, as in Swarm).
"""

from __future__ import annotations

import time
from pathlib import Path

from controlplane.pb import raft_pb2
from controlplane.raft.codec import decode_conf_change
from controlplane.raft.storage import RaftStorage, RecoveredState
from controlplane.raft.types import (
    ConfChangeType,
    ConfState,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMeta,
)


def known_members(recovered: RecoveredState) -> dict[int, str]:
    """Member id -> address as the persisted snapshot and log say (what the driver rebuilds
    when it starts), readable before starting it."""
    members: dict[int, str] = {}
    if recovered.snapshot is not None:
        payload = raft_pb2.SnapshotPayload.FromString(recovered.snapshot.data)
        members = {m.node_id: m.address for m in payload.members}
    for entry in recovered.entries:
        if entry.type is not EntryType.CONF_CHANGE:
            continue
        change = decode_conf_change(entry.data)
        if change.type is ConfChangeType.REMOVE:
            members.pop(change.node_id, None)
        elif change.address:
            members[change.node_id] = change.address
    return members


def force_new_cluster(
    raft_dir: Path, state: bytes, applied_index: int, term: int, address: str, cluster_id: int
) -> Path:
    """Rewrite `raft_dir` as a one-voter cluster `cluster_id` holding `state` (the store as
    applied up to `applied_index`). Returns where the old directory was kept."""
    storage, recovered = RaftStorage.open(raft_dir)
    node_id = recovered.node_id
    storage.close()
    kept = raft_dir.with_name(f"{raft_dir.name}.before-force-new-cluster.{time.time_ns()}")
    raft_dir.rename(kept)
    payload = raft_pb2.SnapshotPayload(
        members=[raft_pb2.Member(node_id=node_id, address=address)], state=state
    )
    index = max(applied_index, 1)
    snapshot = Snapshot(
        SnapshotMeta(index=index, term=max(term, 1), conf=ConfState(voters=(node_id,))),
        payload.SerializeToString(),
    )
    fresh = RaftStorage.create(raft_dir, cluster_id=cluster_id, node_id=node_id)
    try:
        fresh.save_snapshot(snapshot)
        fresh.save([], HardState(term=max(term, 1), vote=0, commit=index))
    finally:
        fresh.close()
    return kept
