"""The in-memory Raft log: entries after the last compaction, commit and apply cursors.

The log keeps a dummy entry at position 0 whose index and term are those of the last compacted
entry (or of the installed snapshot), so `term(i)` answers for the entry just before the first
retained one, which the leader needs to build an append message. Entries above `stable_index`
have not been persisted yet: the driver receives them in the next `Ready`.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.raft.types import Entry, EntryType, Snapshot, SnapshotMeta


class CompactedError(Exception):
    """The entries asked for were discarded by compaction: the peer needs a snapshot."""


class RaftLog:
    def __init__(self, snapshot: Snapshot | None, entries: Sequence[Entry], commit: int) -> None:
        meta = snapshot.meta if snapshot is not None else SnapshotMeta()
        self.snapshot: Snapshot = snapshot if snapshot is not None else Snapshot()
        self._entries: list[Entry] = [Entry(term=meta.term, index=meta.index)]
        for entry in entries:
            if entry.index > meta.index:
                self._entries.append(entry)
        for position, entry in enumerate(self._entries):
            if entry.index != meta.index + position:
                raise ValueError(f"log is not contiguous at index {entry.index}")
        self.stable_index = self.last_index()
        self.committed = min(max(commit, meta.index), self.last_index())
        self.applied = meta.index
        # A snapshot received from the leader that the driver has not persisted and applied yet.
        self.pending_snapshot: Snapshot | None = None

    # ---- positions --------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Index of the dummy entry: the last index covered by compaction or a snapshot."""
        return self._entries[0].index

    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self._entries[-1].index

    def last_term(self) -> int:
        return self._entries[-1].term

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`, or None when it is compacted away or not there yet."""
        position = index - self.offset
        if position < 0 or position >= len(self._entries):
            return None
        return self._entries[position].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft's election restriction: is a candidate's log at least as new as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The last index at or below `index` whose term is at most `term`, and that term.

        Used on both sides of a rejected append: no entry between the result and `index` can
        match the other log, so probing may skip them all."""
        i = min(index, self.last_index())
        while i > self.offset:
            entry_term = self.term(i)
            assert entry_term is not None
            if entry_term <= term:
                return i, entry_term
            i -= 1
        return self.offset, self._entries[0].term

    def has_unapplied_conf_change(self) -> bool:
        """A committed membership change not applied yet: campaigning now could use a stale
        voter set (etcd-io/raft refuses too)."""
        lo = max(self.applied + 1, self.first_index())
        return any(
            e.type is EntryType.CONF_CHANGE
            for e in self._entries[lo - self.offset : self.committed + 1 - self.offset]
        )

    # ---- reading ----------------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries in [lo, hi), at least one, then as many as fit in `max_bytes` of payload."""
        if lo <= self.offset:
            raise CompactedError(lo)
        start = lo - self.offset
        end = min(hi, self.last_index() + 1) - self.offset
        out: list[Entry] = []
        size = 0
        for entry in self._entries[start:end]:
            size += len(entry.data) + 16
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    def unstable_entries(self) -> list[Entry]:
        return self._entries[self.stable_index - self.offset + 1 :]

    def next_committed(self, max_bytes: int) -> list[Entry]:
        """Committed entries not yet handed out for applying (never past a pending snapshot)."""
        if self.pending_snapshot is not None or self.committed <= self.applied:
            return []
        return self.slice(self.applied + 1, self.committed + 1, max_bytes)

    # ---- writing ----------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, discarding any existing suffix they overwrite."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise AssertionError(f"overwriting committed entry {first} (commit {self.committed})")
        if first > self.last_index() + 1:
            raise AssertionError(f"gap: appending {first} after {self.last_index()}")
        del self._entries[first - self.offset :]
        self._entries.extend(entries)
        self.stable_index = min(self.stable_index, first - 1)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """A follower's handling of an append: the last index now known to match, or None."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self._find_conflict(entries)
        if conflict:
            self.append([e for e in entries if e.index >= conflict])
        self.commit_to(min(commit, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or differs from ours (0 if all match)."""
        for entry in entries:
            if entry.index <= self.offset:
                continue
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Leader commit rule: only an entry of the current term is committed by counting."""
        if index > self.committed and self.term(index) == term:
            self.committed = index
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        if self.term(index) == term and index > self.stable_index:
            self.stable_index = index

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = index

    # ---- snapshots --------------------------------------------------------------------------

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        meta = snapshot.meta
        self._entries = [Entry(term=meta.term, index=meta.index)]
        self.snapshot = snapshot
        self.pending_snapshot = snapshot
        self.stable_index = meta.index
        self.committed = meta.index

    def snapshot_applied(self) -> None:
        if self.pending_snapshot is not None:
            self.applied = max(self.applied, self.pending_snapshot.meta.index)
            self.pending_snapshot = None

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """Record a snapshot the local state machine took (for lagging followers)."""
        if snapshot.meta.index > self.snapshot.meta.index:
            self.snapshot = snapshot

    def compact(self, index: int) -> None:
        """Discard entries up to `index` (which must be applied)."""
        if index <= self.offset:
            return
        if index > self.applied:
            raise AssertionError(f"compacting {index} beyond applied {self.applied}")
        self._entries = self._entries[index - self.offset :]
        self._entries[0] = Entry(term=self._entries[0].term, index=index)
