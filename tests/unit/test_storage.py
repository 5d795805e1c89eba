"""The WAL and snapshot files: recovery, truncation, rotation, compaction, crashes, damage."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controlplane.raft import storage as storage_mod
from controlplane.raft.storage import (
    CorruptLogError,
    DataDirMismatchError,
    RaftStorage,
    RecoveredState,
    StorageError,
)
from controlplane.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

CLUSTER, NODE = 0xC1, 0x2
LOGGER = "controlplane.raft.storage"


def ents(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, data=f"entry-{i}-{term}".encode()) for i in range(first, last + 1)]


def snap(index: int, term: int = 1, data: bytes = b"state") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState(voters=(NODE, 7))), data)


def reopen(
    storage: RaftStorage, directory: Path, **kwargs: int
) -> tuple[RaftStorage, RecoveredState]:
    storage.close()
    return RaftStorage.open(directory, **kwargs)


def wal_files(directory: Path) -> list[Path]:
    return sorted((directory / "wal").glob("*.wal"))


def snap_files(directory: Path) -> list[Path]:
    return sorted((directory / "snap").glob("*.snap"))


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "raft"


@pytest.fixture
def store(data_dir: Path) -> Iterator[RaftStorage]:
    storage = RaftStorage.create(data_dir, cluster_id=CLUSTER, node_id=NODE)
    yield storage
    storage.close()


def test_round_trip_across_reopen(data_dir: Path, store: RaftStorage) -> None:
    assert RaftStorage.exists(data_dir)
    store.save(ents(1, 5), HardState(term=1, vote=NODE, commit=2))
    store.save([*ents(6, 6), Entry(2, 7, EntryType.CONF_CHANGE, b"cc")], HardState(2, 0, 6))
    store.save([], HardState(2, 5, 7))
    store, rec = reopen(store, data_dir)
    assert (rec.cluster_id, rec.node_id) == (CLUSTER, NODE)
    assert rec.hard_state == HardState(2, 5, 7)
    assert rec.snapshot is None
    assert rec.entries == [*ents(1, 6), Entry(2, 7, EntryType.CONF_CHANGE, b"cc")]

    store.save_snapshot(snap(5, data=b"x" * 1000))
    store.save(ents(8, 9, term=2), None)
    store, rec = reopen(store, data_dir, expect_cluster_id=CLUSTER, expect_node_id=NODE)
    assert rec.snapshot == snap(5, data=b"x" * 1000)
    assert [e.index for e in rec.entries] == [6, 7, 8, 9]
    assert rec.hard_state == HardState(2, 5, 7)
    store.close()


def test_create_and_open_refuse_the_wrong_directory(data_dir: Path, tmp_path: Path) -> None:
    assert not RaftStorage.exists(data_dir)
    with pytest.raises(StorageError, match=r"holds no Raft log.*create it first"):
        RaftStorage.open(data_dir)
    RaftStorage.create(data_dir, cluster_id=CLUSTER, node_id=NODE).close()
    with pytest.raises(StorageError, match="already holds Raft state"):
        RaftStorage.create(data_dir, cluster_id=CLUSTER, node_id=NODE)


def test_overwrite_discards_the_conflicting_suffix(data_dir: Path, store: RaftStorage) -> None:
    store.save(ents(1, 10), HardState(1, 0, 3))
    store.save(ents(6, 7, term=2), HardState(2, 0, 3))
    store, rec = reopen(store, data_dir)
    assert rec.entries == ents(1, 5) + ents(6, 7, term=2)
    store.save(ents(3, 3, term=3), None)  # again, after a restart
    store.save(ents(4, 4, term=3), None)
    store, rec = reopen(store, data_dir)
    assert rec.entries == ents(1, 2) + ents(3, 4, term=3)
    store.close()


def test_gaps_and_unordered_batches_are_refused(data_dir: Path, store: RaftStorage) -> None:
    store.save(ents(1, 3), None)
    with pytest.raises(StorageError, match=r"log ends at index 3.*gap"):
        store.save(ents(5, 5), HardState(1, 0, 0))
    with pytest.raises(StorageError, match="not contiguous: 6 after 4"):
        store.save([*ents(4, 4), *ents(6, 6)], None)
    with pytest.raises(StorageError, match="entry 0"):
        store.save([Entry(1, 0)], None)
    store, rec = reopen(store, data_dir)
    assert rec.entries == ents(1, 3)
    assert rec.hard_state == HardState()
    store.close()


def test_rotation_starts_segments_with_metadata_and_hard_state(data_dir: Path) -> None:
    store = RaftStorage.create(data_dir, cluster_id=CLUSTER, node_id=NODE, segment_bytes=256)
    store.save([], HardState(3, NODE, 0))
    for i in range(1, 41):
        store.save(ents(i, i), None)
    names = [p.name for p in wal_files(data_dir)]
    assert len(names) >= 4
    assert names[0] == f"{0:016x}-{1:016x}.wal"
    # Each segment is named after the index it starts at, and holds that entry first.
    first_indexes = [int(n[17:33], 16) for n in names]
    assert first_indexes == sorted(first_indexes)
    store, rec = reopen(store, data_dir, segment_bytes=256)
    assert rec.entries == ents(1, 40)
    assert rec.hard_state == HardState(3, NODE, 0)
    # The oldest segments (the only ones where the hard state was saved) can go.
    store.save_snapshot(snap(38))
    assert len(wal_files(data_dir)) < len(names)
    store, rec = reopen(store, data_dir)
    assert rec.hard_state == HardState(3, NODE, 0)
    assert rec.entries == ents(39, 40)
    store.close()


def test_snapshots_compact_segments_and_old_snapshot_files(data_dir: Path) -> None:
    store = RaftStorage.create(
        data_dir, cluster_id=CLUSTER, node_id=NODE, segment_bytes=200, keep_snapshots=2
    )
    for i in range(1, 61):
        store.save(ents(i, i), HardState(1, NODE, i - 1))
    segments_before = len(wal_files(data_dir))
    for index in (20, 40, 50):
        store.save_snapshot(snap(index))
        starts = [int(p.name[17:33], 16) for p in wal_files(data_dir)]
        # Every kept segment but the oldest starts above the snapshot's entry.
        assert starts[0] <= index < starts[1]
    assert len(wal_files(data_dir)) < segments_before
    assert [p.name for p in snap_files(data_dir)] == [
        f"{1:016x}-{40:016x}.snap",
        f"{1:016x}-{50:016x}.snap",
    ]
    store, rec = reopen(store, data_dir)
    assert rec.snapshot == snap(50)
    assert rec.entries == ents(51, 60)
    assert rec.hard_state == HardState(1, NODE, 59)
    store.close()


def test_load_snapshot_reads_back_the_newest(data_dir: Path, store: RaftStorage) -> None:
    with pytest.raises(StorageError, match="holds no snapshot"):
        store.load_snapshot()
    store.save(ents(1, 30), None)
    store.save_snapshot(snap(10, data=b"older"))
    store.save_snapshot(snap(20, data=b"newer"))
    assert store.load_snapshot() == snap(20, data=b"newer")
    flip(snap_files(data_dir)[-1], 30)
    with pytest.raises(CorruptLogError, match="checksum mismatch"):
        store.load_snapshot()


def test_snapshot_beyond_the_log_replaces_it(data_dir: Path, store: RaftStorage) -> None:
    store.save(ents(1, 5), None)
    store.save_snapshot(snap(100, term=4))
    with pytest.raises(StorageError, match="log ends at index 100"):
        store.save(ents(102, 102, term=4), None)
    with pytest.raises(StorageError, match="compacted up to snapshot index 100"):
        store.save(ents(100, 100, term=4), None)
    store, rec = reopen(store, data_dir)
    assert rec.entries == []
    store.save(ents(101, 101, term=4), None)
    store, rec = reopen(store, data_dir)
    assert rec.snapshot == snap(100, term=4)
    assert rec.entries == ents(101, 101, term=4)
    store.close()


def test_snapshot_keeps_only_entries_that_follow_it(data_dir: Path, store: RaftStorage) -> None:
    store.save(ents(1, 10), None)
    store.save_snapshot(snap(4, term=1))  # the log holds entry 4 of term 1: keep what follows
    store, rec = reopen(store, data_dir)
    assert rec.entries == ents(5, 10)
    # A leader's snapshot whose entry 8 has another term: entries 9.. are a divergent history.
    store.save_snapshot(snap(8, term=2))
    store, rec = reopen(store, data_dir)
    assert rec.snapshot == snap(8, term=2)
    assert rec.entries == []
    store.save(ents(9, 9, term=2), None)
    store, rec = reopen(store, data_dir)
    assert rec.entries == ents(9, 9, term=2)
    with pytest.raises(StorageError, match="not newer than the stored one at index 8"):
        store.save_snapshot(snap(8, term=2))
    store.close()


def test_crash_at_every_byte_of_the_tail(
    tmp_path: Path,
    data_dir: Path,
    store: RaftStorage,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One record per save, so each file size is a record boundary with a known content.
    store.save(ents(1, 3), HardState(1, NODE, 1))
    (segment,) = wal_files(data_dir)
    states = [(segment.stat().st_size, ents(1, 3), HardState(1, NODE, 1))]
    for i in range(4, 8):
        store.save([Entry(1, i, data=b"d" * i)], None)
        states.append(
            (segment.stat().st_size, states[-1][1] + [Entry(1, i, data=b"d" * i)], states[-1][2])
        )
        store.save([], HardState(1, NODE, i))
        states.append((segment.stat().st_size, states[-1][1], HardState(1, NODE, i)))
    store.close()
    original = segment.read_bytes()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    # Hundreds of reopenings: what is checked is parsing and repair, not the disk's durability.
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    crashed = tmp_path / "crashed"
    shutil.copytree(data_dir, crashed)  # one copy, its segment rewritten for every cut

    for cut in range(states[0][0], len(original) + 1):
        size, entries, hard_state = max((s for s in states if s[0] <= cut), key=lambda s: s[0])
        (crashed / "wal" / segment.name).write_bytes(original[:cut])
        caplog.clear()

        storage, rec = RaftStorage.open(crashed)
        assert (rec.entries, rec.hard_state) == (entries, hard_state), f"cut at {cut}"
        torn = [r.getMessage() for r in caplog.records if "torn tail" in r.getMessage()]
        if cut == size:
            assert torn == []
        else:
            assert len(torn) == 1
            assert f"file={crashed / 'wal' / segment.name}" in torn[0]
            assert f"offset={size}" in torn[0]
        assert (crashed / "wal" / segment.name).stat().st_size == size

        following = entries[-1].index + 1
        storage.save(ents(following, following, term=2), HardState(2, NODE, 1))
        storage, rec = reopen(storage, crashed)
        assert rec.entries == [*entries, *ents(following, following, term=2)]
        assert rec.hard_state == HardState(2, NODE, 1)
        storage.close()


def test_trailing_zeros_are_a_torn_tail(
    data_dir: Path, store: RaftStorage, caplog: pytest.LogCaptureFixture
) -> None:
    store.save(ents(1, 4), HardState(1, 0, 2))
    store.close()
    (segment,) = wal_files(data_dir)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(bytes(4096))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        store, rec = RaftStorage.open(data_dir)
    assert rec.entries == ents(1, 4)
    assert f"offset={size}" in caplog.text
    assert segment.stat().st_size == size
    store.close()


def _one_record_per_save(data_dir: Path, store: RaftStorage, count: int) -> list[int]:
    """Offsets at which the records of entries 1..count start."""
    offsets = []
    for i in range(1, count + 1):
        offsets.append(wal_files(data_dir)[-1].stat().st_size)
        store.save(ents(i, i), None)
    store.close()
    return offsets


@pytest.mark.parametrize("where", [0, 4, 8, 9, 15])  # length, crc, type, payload bytes
def test_damage_followed_by_valid_records_is_corruption(
    data_dir: Path, store: RaftStorage, where: int
) -> None:
    offsets = _one_record_per_save(data_dir, store, 10)
    (segment,) = wal_files(data_dir)
    flip(segment, offsets[4] + where)
    before = segment.read_bytes()
    with pytest.raises(CorruptLogError) as info:
        RaftStorage.open(data_dir)
    assert info.value.path == segment
    assert info.value.offset == offsets[4]
    assert str(segment) in str(info.value)
    assert f"byte offset {offsets[4]}" in str(info.value)
    assert segment.read_bytes() == before  # nothing was repaired away


def test_absurd_record_length_is_corruption(data_dir: Path, store: RaftStorage) -> None:
    offsets = _one_record_per_save(data_dir, store, 5)
    (segment,) = wal_files(data_dir)
    data = bytearray(segment.read_bytes())
    data[offsets[2] : offsets[2] + 4] = b"\xff\xff\xff\x7f"
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="over the 67108864-byte limit"):
        RaftStorage.open(data_dir)


def test_flipped_byte_in_the_final_record_is_truncated(
    data_dir: Path, store: RaftStorage, caplog: pytest.LogCaptureFixture
) -> None:
    offsets = _one_record_per_save(data_dir, store, 6)
    (segment,) = wal_files(data_dir)
    flip(segment, segment.stat().st_size - 2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        store, rec = RaftStorage.open(data_dir)
    assert rec.entries == ents(1, 5)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"file={segment}" in warning.getMessage()
    assert f"offset={offsets[5]}" in warning.getMessage()
    assert "checksum mismatch" in warning.getMessage()
    store.save(ents(6, 6, term=2), None)
    store, rec = reopen(store, data_dir)
    assert rec.entries == ents(1, 5) + ents(6, 6, term=2)
    store.close()


def test_damage_in_an_older_segment_is_corruption(data_dir: Path) -> None:
    store = RaftStorage.create(data_dir, cluster_id=CLUSTER, node_id=NODE, segment_bytes=150)
    for i in range(1, 20):
        store.save(ents(i, i), None)
    store.close()
    older = wal_files(data_dir)[1]
    size = older.stat().st_size
    with older.open("r+b") as f:
        f.truncate(size - 3)
    with pytest.raises(CorruptLogError, match="not the last") as info:
        RaftStorage.open(data_dir)
    assert info.value.path == older


def test_missing_segment_is_reported(data_dir: Path) -> None:
    store = RaftStorage.create(data_dir, cluster_id=CLUSTER, node_id=NODE, segment_bytes=150)
    for i in range(1, 20):
        store.save(ents(i, i), None)
    store.close()
    wal_files(data_dir)[1].unlink()
    with pytest.raises(StorageError, match="segment 0000000000000001 is missing"):
        RaftStorage.open(data_dir)


def test_other_node_or_cluster_is_refused(data_dir: Path, store: RaftStorage) -> None:
    store.close()
    with pytest.raises(DataDirMismatchError) as info:
        RaftStorage.open(data_dir, expect_node_id=0x3)
    assert str(info.value) == (
        f"data directory {data_dir} belongs to node 0x2 of cluster 0xc1, not node 0x3 of "
        "cluster 0xc1; use another --data-dir or remove it"
    )
    with pytest.raises(DataDirMismatchError, match="not node 0x2 of cluster 0xc2"):
        RaftStorage.open(data_dir, expect_cluster_id=0xC2, expect_node_id=NODE)
    RaftStorage.open(data_dir, expect_cluster_id=CLUSTER, expect_node_id=NODE)[0].close()


def test_corrupt_snapshot_file_is_refused(data_dir: Path, store: RaftStorage) -> None:
    store.save(ents(1, 5), None)
    store.save_snapshot(snap(5, data=b"s" * 100))
    store.close()
    (snapshot,) = snap_files(data_dir)
    flip(snapshot, 50)
    with pytest.raises(CorruptLogError, match="checksum mismatch") as info:
        RaftStorage.open(data_dir)
    assert info.value.path == snapshot
    assert str(snapshot) in str(info.value)
    snapshot.write_bytes(snapshot.read_bytes()[:30])
    with pytest.raises(CorruptLogError, match="payload bytes, file has"):
        RaftStorage.open(data_dir)


def test_snapshot_missing_behind_its_marker(data_dir: Path, store: RaftStorage) -> None:
    store.save(ents(1, 5), None)
    store.save_snapshot(snap(5))
    store.close()
    snap_files(data_dir)[0].unlink()
    with pytest.raises(StorageError, match=r"snapshot at index 5 but .* has no file for it"):
        RaftStorage.open(data_dir)


@pytest.mark.parametrize(("term", "kept"), [(1, ents(9, 10)), (5, [])])
def test_snapshot_file_written_before_a_crash_took_its_marker(
    tmp_path: Path, data_dir: Path, store: RaftStorage, term: int, kept: list[Entry]
) -> None:
    store.save(ents(1, 10), None)
    store.close()
    # Another directory makes the same snapshot file; copying it in is the crash window.
    other = RaftStorage.create(tmp_path / "other", cluster_id=CLUSTER, node_id=NODE)
    other.save_snapshot(snap(8, term))
    other.close()
    shutil.copy(snap_files(tmp_path / "other")[0], data_dir / "snap")

    store, rec = RaftStorage.open(data_dir)
    assert rec.snapshot == snap(8, term)
    assert rec.entries == kept
    store.save(ents(11 if kept else 9, 11 if kept else 9, term), None)
    store, rec = reopen(store, data_dir)  # later entries are not judged by the late marker
    assert [e.index for e in rec.entries] == ([9, 10, 11] if kept else [9])
    store.close()


def test_leftover_temporary_files_are_removed(data_dir: Path, store: RaftStorage) -> None:
    store.close()
    leftovers = [data_dir / "wal" / "x.wal.tmp", data_dir / "snap" / "y.snap.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    RaftStorage.open(data_dir)[0].close()
    assert not any(p.exists() for p in leftovers)


def test_a_batch_costs_one_fsync(store: RaftStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    store.save(ents(1, 200), HardState(1, NODE, 100))
    assert len(calls) == 1
    store.save([], None)
    assert len(calls) == 1


def test_write_failure_makes_the_storage_unusable(
    data_dir: Path, store: RaftStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(ents(1, 2), None)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(StorageError, match="Input/output error"):
        store.save(ents(3, 3), None)
    monkeypatch.undo()
    with pytest.raises(StorageError, match=r"unusable.*restart the node"):
        store.save(ents(3, 3), None)
    store, rec = RaftStorage.open(data_dir)  # the unsynced write may or may not be there
    assert rec.entries[:2] == ents(1, 2)
    store.close()


def test_oversized_entry_is_refused(store: RaftStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_mod, "MAX_RECORD_BYTES", 64)
    with pytest.raises(StorageError, match=r"entry 1 is .* bytes encoded, over the 64-byte"):
        store.save([Entry(1, 1, data=b"x" * 100)], None)


# ---- preallocated segments --------------------------------------------------------------


def _write_some(storage: RaftStorage) -> None:
    storage.save(ents(1, 3), HardState(1, NODE, 1))
    storage.save([Entry(1, 4, data=b"x" * 5000)], HardState(1, NODE, 3))  # over one chunk
    storage.save([], HardState(1, NODE, 4), sync=False)
    storage.save(ents(5, 9), None)


def test_preallocated_segments_close_to_the_same_bytes_as_growing_ones(tmp_path: Path) -> None:
    files = []
    for preallocate in (0, 4096):
        directory = tmp_path / f"raft-{preallocate}"
        RaftStorage.create(directory, cluster_id=CLUSTER, node_id=NODE).close()
        storage, _ = RaftStorage.open(directory, preallocate_bytes=preallocate)
        _write_some(storage)
        (segment,) = wal_files(directory)
        if preallocate:
            assert segment.read_bytes().endswith(bytes(1024))  # zeros ahead of the records
        storage.close()
        files.append(segment.read_bytes())
    assert files[0] == files[1]


def test_a_batch_in_preallocated_space_costs_one_data_sync(
    data_dir: Path, store: RaftStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.close()
    store, _ = RaftStorage.open(data_dir, preallocate_bytes=1 << 16)
    store.save(ents(1, 1), None)  # the first write zero-fills the space ahead (one fsync)
    calls: list[str] = []

    def counted(name: str) -> Callable[[int], None]:
        real = getattr(os, name)

        def sync(fd: int) -> None:
            calls.append(name)
            real(fd)

        return sync

    for name in ("fsync", "fdatasync"):
        monkeypatch.setattr(os, name, counted(name))
    store.save(ents(2, 50), HardState(1, NODE, 20))
    assert calls == ["fdatasync"]
    store.close()


def test_a_crash_leaves_zeros_that_open_cuts_keeping_every_synced_entry(
    data_dir: Path, store: RaftStorage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.close()
    store, _ = RaftStorage.open(data_dir, preallocate_bytes=1 << 16)
    store.save(ents(1, 5), HardState(1, NODE, 5))
    crashed = tmp_path / "crashed"
    shutil.copytree(data_dir, crashed)  # the disk as a crash leaves it: zeros past the records
    store.close()
    (closed,) = wal_files(data_dir)
    (segment,) = wal_files(crashed)
    assert segment.stat().st_size > closed.stat().st_size
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        store, rec = RaftStorage.open(crashed, preallocate_bytes=1 << 16)
    assert rec.entries == ents(1, 5) and rec.hard_state == HardState(1, NODE, 5)
    assert f"offset={closed.stat().st_size}" in caplog.text and "zeros to the end" in caplog.text
    assert segment.read_bytes() == closed.read_bytes()
    store.save(ents(6, 6), None)  # and it goes on from there
    store, rec = reopen(store, crashed)
    assert rec.entries == ents(1, 6)
    store.close()


def test_rotation_leaves_no_zeros_in_older_segments(
    data_dir: Path, store: RaftStorage, caplog: pytest.LogCaptureFixture
) -> None:
    store.close()
    store, _ = RaftStorage.open(data_dir, segment_bytes=300, preallocate_bytes=4096)
    for i in range(1, 21):
        store.save(ents(i, i), HardState(1, NODE, i))
    older = wal_files(data_dir)[:-1]
    assert len(older) >= 2
    assert all(not f.read_bytes().endswith(bytes(16)) for f in older)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        store, rec = reopen(store, data_dir)
    assert rec.entries == ents(1, 20)
    assert caplog.text == ""
    store.close()


def test_a_negative_preallocation_is_refused(data_dir: Path, store: RaftStorage) -> None:
    store.close()
    with pytest.raises(ValueError, match="preallocate_bytes must be 0 or more, got -1"):
        RaftStorage.open(data_dir, preallocate_bytes=-1)
