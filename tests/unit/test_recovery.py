"""raft/recovery.py: forcing a new cluster out of a manager's Raft directory."""

from __future__ import annotations

from pathlib import Path

from controlplane.raft.codec import encode_conf_change
from controlplane.raft.driver import bootstrap
from controlplane.raft.recovery import force_new_cluster, known_members
from controlplane.raft.storage import RaftStorage
from controlplane.raft.types import ConfChange, ConfChangeType, Entry, EntryType, HardState


def _cluster_of_three(raft_dir: Path) -> None:
    storage = RaftStorage.create(raft_dir, cluster_id=0xC1, node_id=1)
    bootstrap(storage, 1, "127.0.0.1:2377")
    changes = [
        ConfChange(ConfChangeType.ADD_LEARNER, 2, "127.0.0.2:2377"),
        ConfChange(ConfChangeType.PROMOTE, 2, "127.0.0.2:2377"),
        ConfChange(ConfChangeType.ADD_LEARNER, 3, "127.0.0.3:2377"),
        ConfChange(ConfChangeType.REMOVE, 3),
    ]
    entries = [
        Entry(term=1, index=i, type=EntryType.CONF_CHANGE, data=encode_conf_change(c))
        for i, c in enumerate(changes, start=2)
    ]
    storage.save(entries, HardState(term=1, vote=1, commit=5))
    storage.close()


def test_known_members_replays_the_log_before_the_driver_starts(tmp_path: Path) -> None:
    _cluster_of_three(tmp_path / "raft")
    storage, recovered = RaftStorage.open(tmp_path / "raft")
    storage.close()
    assert known_members(recovered) == {1: "127.0.0.1:2377", 2: "127.0.0.2:2377"}


def test_forced_cluster_has_one_voter_the_state_and_a_new_id(tmp_path: Path) -> None:
    raft_dir = tmp_path / "raft"
    _cluster_of_three(raft_dir)
    kept = force_new_cluster(
        raft_dir, b"the store", applied_index=5, term=3, address="127.0.0.1:2377", cluster_id=0xC2
    )
    assert kept.is_dir() and kept != raft_dir  # the old log is kept for inspection
    storage, recovered = RaftStorage.open(raft_dir)
    storage.close()
    assert (recovered.cluster_id, recovered.node_id) == (0xC2, 1)
    assert recovered.snapshot is not None
    assert recovered.snapshot.meta.index == 5
    assert recovered.snapshot.meta.conf.voters == (1,)
    assert recovered.hard_state.commit == 5
    assert known_members(recovered) == {1: "127.0.0.1:2377"}
