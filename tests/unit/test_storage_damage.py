"""Raft data directories damaged in ways a crash cannot leave but a disk, a user or a copy can:
records that frame correctly yet make no sense where they stand, segments cut to nothing,
stray files, snapshot files that are short or misnamed. `open` names the file and what is
wrong, and changes nothing on disk (what a crash leaves is in test_storage.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.pb import raft_pb2
from controlplane.raft import codec
from controlplane.raft.storage import CorruptLogError, RaftStorage, StorageError
from controlplane.raft.storage import _frame as frame
from controlplane.raft.storage import _RecordType as RecordType
from controlplane.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta

CLUSTER, NODE = 0xC1, 0x2


def ents(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, data=f"entry-{i}".encode()) for i in range(first, last + 1)]


def entry_record(entry: Entry) -> bytes:
    return frame(RecordType.ENTRY, codec.entry_to_pb(entry).SerializeToString())


def metadata_record(cluster_id: int, node_id: int) -> bytes:
    meta = raft_pb2.WalMetadata(cluster_id=cluster_id, node_id=node_id)
    return frame(RecordType.METADATA, meta.SerializeToString())


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A closed directory holding entries 1-5 (term 1) in one segment."""
    directory = tmp_path / "raft"
    storage = RaftStorage.create(directory, cluster_id=CLUSTER, node_id=NODE)
    storage.save(ents(1, 5), HardState(1, NODE, 3))
    storage.close()
    yield directory


def segment(data_dir: Path) -> Path:
    (only,) = sorted((data_dir / "wal").glob("*.wal"))
    return only


def refused_unchanged(data_dir: Path, error: type[StorageError], match: str) -> StorageError:
    """`open` raises `error` matching `match`, and every file is as it was."""
    files = sorted(p for p in data_dir.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    with pytest.raises(error, match=match) as info:
        RaftStorage.open(data_dir)
    assert sorted(p for p in data_dir.rglob("*") if p.is_file()) == files
    assert {p: p.read_bytes() for p in files} == before
    return info.value


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (frame(99, b"x"), "unknown record type 99"),  # type: ignore[arg-type]
        (metadata_record(CLUSTER, NODE), "metadata record in the middle of a segment"),
        (entry_record(Entry(1, 7)), "entry 7 leaves a gap after index 5"),
        (frame(RecordType.ENTRY, b"\xff\xff\xff"), "ENTRY record"),
    ],
)
def test_a_well_framed_record_that_makes_no_sense_is_corruption(
    data_dir: Path, record: bytes, problem: str
) -> None:
    path = segment(data_dir)
    offset = path.stat().st_size
    with path.open("ab") as f:
        f.write(record)
    error = refused_unchanged(data_dir, CorruptLogError, problem)
    assert isinstance(error, CorruptLogError)
    assert (error.path, error.offset) == (path, offset)


def test_an_entry_at_or_below_the_snapshot_is_corruption(tmp_path: Path) -> None:
    data_dir = tmp_path / "raft"
    storage = RaftStorage.create(data_dir, cluster_id=CLUSTER, node_id=NODE)
    storage.save(ents(1, 5), None)
    storage.save_snapshot(Snapshot(SnapshotMeta(5, 1, ConfState(voters=(NODE,))), b"state"))
    storage.save(ents(6, 6), None)
    storage.close()
    with segment(data_dir).open("ab") as f:
        f.write(entry_record(Entry(1, 3)))
    refused_unchanged(data_dir, CorruptLogError, "entry 3 is at or below snapshot index 5")


@pytest.mark.parametrize("keep", [0, 5])  # cut to nothing; cut inside the metadata record
def test_a_segment_without_its_metadata_record_is_corruption(data_dir: Path, keep: int) -> None:
    path = segment(data_dir)
    path.write_bytes(path.read_bytes()[:keep])
    refused_unchanged(data_dir, CorruptLogError, "does not start with a metadata record")


def test_a_later_segment_of_another_node_is_corruption(tmp_path: Path) -> None:
    data_dir = tmp_path / "raft"
    storage = RaftStorage.create(data_dir, cluster_id=CLUSTER, node_id=NODE, segment_bytes=150)
    for i in range(1, 10):
        storage.save(ents(i, i), None)
    storage.close()
    second = sorted((data_dir / "wal").glob("*.wal"))[1]
    data = second.read_bytes()
    header = metadata_record(CLUSTER, NODE)
    assert data.startswith(header)
    second.write_bytes(metadata_record(CLUSTER, 0x3) + data[len(header) :])
    error = refused_unchanged(data_dir, CorruptLogError, "names another node or cluster")
    assert isinstance(error, CorruptLogError) and error.path == second


@pytest.mark.parametrize(
    ("folder", "name", "says"),
    [
        ("wal", "notes.wal", "WAL segments are named <seq:016x>-<first_index:016x>.wal"),
        ("snap", "backup.snap", "snapshots are named <term:016x>-<index:016x>.snap"),
    ],
)
def test_a_stray_file_is_named(data_dir: Path, folder: str, name: str, says: str) -> None:
    (data_dir / folder / name).write_bytes(b"")
    error = refused_unchanged(data_dir, StorageError, f"unexpected file .*{name}")
    assert says in str(error)


def test_a_snapshot_file_shorter_than_its_header_or_misnamed_is_corruption(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "raft"
    storage = RaftStorage.create(data_dir, cluster_id=CLUSTER, node_id=NODE)
    storage.save(ents(1, 5), None)
    storage.save_snapshot(Snapshot(SnapshotMeta(5, 1, ConfState(voters=(NODE,))), b"state"))
    storage.close()
    (path,) = (data_dir / "snap").glob("*.snap")
    good = path.read_bytes()
    path.write_bytes(good[:5])
    refused_unchanged(data_dir, CorruptLogError, "5 bytes is shorter than the file header")
    path.write_bytes(good)
    misnamed = path.with_name(f"{2:016x}-{5:016x}.snap")  # term 2, where the file holds term 1
    path.rename(misnamed)
    refused_unchanged(data_dir, CorruptLogError, "index 5 term 1, not the one its name says")


def test_no_segment_at_all_says_to_create_the_log(tmp_path: Path) -> None:
    (tmp_path / "raft" / "wal").mkdir(parents=True)
    refused_unchanged(tmp_path / "raft", StorageError, "holds no Raft log")
