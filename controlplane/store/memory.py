"""The cluster store: the replicated state machine every manager applies committed entries to.

Every replica must reach the same state from the same entries, so `apply` depends on nothing
but the store and the entry: no clock (timestamps travel inside the objects, set by the
proposer), no randomness, no iteration over unordered sets. Whether a write is allowed is
decided here, at apply time, on the one order Raft committed: that is what makes two managers
racing to create the same name safe (the second create to commit is refused on every replica).

The store belongs to one thread (the event loop of the manager, or a simulation); reads return
copies, so callers may edit what they get and propose it back as an update.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError

from controlplane.pb import objects_pb2
from controlplane.pb.objects_pb2 import (
    StoreAction,
    StoreSnapshot,
    StoreTransaction,
    StoreTransactionResult,
)
from controlplane.store.errors import ErrorKind, StoreError
from controlplane.store.kinds import (
    KINDS,
    ObjT,
    StoreObject,
    check_kind,
    kind_label,
    labels_of,
    name_conflict_message,
    name_of,
    snapshot_field,
)
from controlplane.store.references import check_references
from controlplane.store.table import Table, name_key
from controlplane.store.watch import Action, Event, Predicate, Watch
from controlplane.wire import length_delimited

_OK = StoreTransactionResult(ok=True).SerializeToString()
_Decoded = TypeVar("_Decoded", StoreTransaction, StoreSnapshot)


class Store:
    """One replica's tables; Raft calls `apply`/`restore`, everyone else reads and watches."""

    def __init__(self) -> None:
        self._tables = _empty_tables()
        self._applied_index = 0
        self._watches: list[Watch] = []

    @property
    def applied_index(self) -> int:
        """Index of the last entry applied (refused ones included) or restored."""
        return self._applied_index

    # ---- reads ---------------------------------------------------------------------------

    def get(self, kind: type[ObjT], object_id: str) -> ObjT | None:
        obj = self._table(kind).get(object_id)
        return obj if isinstance(obj, kind) else None

    def get_by_name(self, kind: type[ObjT], name: str) -> ObjT | None:
        """Case-insensitive, as Swarm; only for kinds unique by name (`UNIQUE_NAME_KINDS`)."""
        table = self._table(kind)
        if not table.unique_names:
            raise ValueError(
                f"{kind_label(kind)}s are not unique by name; use list({kind.__name__}, name=...)"
            )
        owner = table.owner_of_name(name)
        return None if owner is None else self.get(kind, owner)

    def list(
        self,
        kind: type[ObjT],
        *,
        name: str | None = None,
        name_prefix: str | None = None,
        labels: Mapping[str, str | None] | None = None,
    ) -> builtins.list[ObjT]:
        """Objects in id order, filtered like Docker's `name=` and `label=` filters.

        Names compare without regard to case; a label filter value of None only asks for the key.
        """
        rows = self._table(kind).sorted_rows()
        if name is None and name_prefix is None and not labels:  # no filter: no name to derive
            return [obj for obj in rows if isinstance(obj, kind)]
        return [
            obj
            for obj in rows
            if isinstance(obj, kind) and _matches(obj, name, name_prefix, labels)
        ]

    # ---- replicated writes ---------------------------------------------------------------

    def apply(self, index: int, data: bytes) -> bytes:
        """Apply the committed entry `data` at Raft `index`; return a StoreTransactionResult.

        All actions apply, or none (the result then says why). Never raises on a bad entry:
        a replica that crashed on it would crash again on every restart.
        """
        return self.apply_batch(index, [data])[0]

    def apply_batch(self, index: int, transactions: Sequence[bytes]) -> builtins.list[bytes]:
        """Apply the transactions of one batch entry in order, each as `apply` would (its own
        result; all of its actions or none); their objects share the version `index`."""
        if index <= self._applied_index:
            refused = StoreError(
                ErrorKind.INVALID,
                f"entry {index} is not after the applied index {self._applied_index}; ignored",
            ).to_result()
            return [refused] * len(transactions)
        self._applied_index = index
        return [self._apply_one(index, data) for data in transactions]

    def _apply_one(self, index: int, data: bytes) -> bytes:
        try:
            events = self._apply_transaction(index, _decode(StoreTransaction, data, "entry"))
        except StoreError as err:
            return err.to_result()
        self._publish(events)
        return _OK

    def snapshot(self) -> bytes:
        """The whole store as a StoreSnapshot; equal stores give equal bytes."""
        # Rows are stored serialized, so the snapshot is their concatenation, each framed as
        # an element of StoreSnapshot's repeated field for its kind: the same bytes protobuf's
        # deterministic serialization would give, without decoding a single row.
        out = bytearray()
        for kind, table in self._tables.items():
            number = StoreSnapshot.DESCRIPTOR.fields_by_name[snapshot_field(kind)].number
            for row in table.sorted_raw():
                out += length_delimited(number, row)
        return bytes(out)

    def restore(self, data: bytes, index: int) -> None:
        """Replace everything with a snapshot taken at `index`, then tell every watch.

        Raises StoreError, leaving the store as it was, if the snapshot is corrupt.
        """
        snapshot = _decode(StoreSnapshot, data, "snapshot")
        tables = _empty_tables()
        for kind, table in tables.items():
            obj: StoreObject
            for obj in getattr(snapshot, snapshot_field(kind)):
                _check_id(obj)
                if table.get(obj.id) is not None:
                    raise StoreError(
                        ErrorKind.INVALID, f"snapshot holds {kind_label(kind)} {obj.id} twice"
                    )
                _check_name(table, obj)
                table.put(obj)
        self._tables = tables
        self._applied_index = index
        self._publish([Event(Action.RESTORED, index)])

    # ---- watches -------------------------------------------------------------------------

    def watch(
        self,
        kinds: Iterable[type[StoreObject]] | None = None,
        predicate: Predicate | None = None,
        maxsize: int = 1024,
    ) -> Watch:
        """Events of the given kinds (all if None) accepted by `predicate`, from now on."""
        kind_set = None if kinds is None else frozenset(kinds)
        for kind in kind_set or ():
            check_kind(kind)
        watch = Watch(kind_set, predicate, maxsize)
        self._watches.append(watch)
        return watch

    # ---- internals -----------------------------------------------------------------------

    def _table(self, kind: type[StoreObject]) -> Table:
        check_kind(kind)
        return self._tables[kind]

    def _apply_transaction(self, index: int, txn: StoreTransaction) -> builtins.list[Event]:
        changes = _Changes(index, announce=bool(self._watches))
        try:
            for action in txn.actions:
                self._apply_action(action, changes)
        except StoreError:
            changes.rollback()
            raise
        return changes.events

    def _apply_action(self, action: StoreAction, changes: _Changes) -> None:
        target = action.WhichOneof("target")
        if target is None:
            raise StoreError(ErrorKind.INVALID, "store action has no target object")
        obj: StoreObject = getattr(action, target)
        table = self._tables[type(obj)]
        label = kind_label(table.kind)
        _check_id(obj)
        changes.claim(table.kind, obj.id)
        current = table.get(obj.id)
        check_references(self._tables, action.kind, obj, current)
        # The module's constants are plain ints; StoreActionKind.X goes through a Python
        # __getattr__ for every case tried (5% of an apply, measured with cProfile).
        match action.kind:
            case objects_pb2.STORE_ACTION_CREATE:
                if current is not None:
                    raise StoreError(ErrorKind.EXISTS, f"{label} {obj.id} already exists")
                _check_name(table, obj)
                changes.put(table, obj, Action.CREATED, previous=None)
            case objects_pb2.STORE_ACTION_UPDATE:
                if current is None:
                    raise StoreError(ErrorKind.NOT_FOUND, f"{label} {obj.id} not found")
                if obj.meta.version.index != current.meta.version.index:
                    raise StoreError(ErrorKind.CONFLICT, "update out of sequence")
                _check_name(table, obj)
                changes.put(table, obj, Action.UPDATED, previous=current)
            case objects_pb2.STORE_ACTION_DELETE:
                if current is None:
                    raise StoreError(ErrorKind.NOT_FOUND, f"{label} {obj.id} not found")
                changes.pop(table, obj.id)
            case _:
                raise StoreError(ErrorKind.INVALID, f"unknown store action kind {action.kind}")

    def _publish(self, events: builtins.list[Event]) -> None:
        # A watch that fails (full buffer) is dropped here; it reports why to its reader.
        if self._watches:
            self._watches = [w for w in self._watches if all(w.push(e) for e in events)]


class _Changes:
    """One transaction's writes so far: what to undo if a later action is refused, and what to
    announce once all of them are applied."""

    def __init__(self, index: int, announce: bool) -> None:
        self.index = index
        self._announce = announce  # no watch, no events to build
        self.events: list[Event] = []
        self._undo: list[tuple[Table, str, StoreObject | None]] = []
        self._touched: set[tuple[type[StoreObject], str]] = set()

    def claim(self, kind: type[StoreObject], object_id: str) -> None:
        """One action per object: a second update could not know the version the first sets."""
        if (kind, object_id) in self._touched:
            raise StoreError(
                ErrorKind.INVALID,
                f"transaction changes {kind_label(kind)} {object_id} more than once",
            )
        self._touched.add((kind, object_id))

    def put(
        self, table: Table, obj: StoreObject, action: Action, previous: StoreObject | None
    ) -> None:
        obj.meta.version.index = self.index  # obj belongs to the decoded entry: ours to change
        table.put(obj)
        self._undo.append((table, obj.id, previous))
        if self._announce:
            self.events.append(Event(action, self.index, table.kind, obj))

    def pop(self, table: Table, object_id: str) -> None:
        removed = table.pop(object_id)
        self._undo.append((table, object_id, removed))
        if self._announce:
            self.events.append(Event(Action.DELETED, self.index, table.kind, removed))

    def rollback(self) -> None:
        for table, object_id, previous in reversed(self._undo):
            if previous is None:
                table.pop(object_id)
            else:
                table.put(previous)


def _empty_tables() -> dict[type[StoreObject], Table]:
    return {kind: Table(kind) for kind in KINDS}


def _decode(message_type: type[_Decoded], data: bytes, what: str) -> _Decoded:
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise StoreError(
            ErrorKind.INVALID, f"{what} is not a valid {message_type.__name__}: {exc}"
        ) from exc
    return message


def _check_id(obj: StoreObject) -> None:
    if not obj.id:
        raise StoreError(ErrorKind.INVALID, f"{kind_label(type(obj))} has an empty id")


def _check_name(table: Table, obj: StoreObject) -> None:
    """Kinds unique by name need a name that no other object of the kind holds."""
    if not table.unique_names:
        return
    name = name_of(obj)
    if not name:
        raise StoreError(ErrorKind.INVALID, f"{kind_label(table.kind)} {obj.id} has no name")
    owner = table.owner_of_name(name)
    if owner is not None and owner != obj.id:
        raise StoreError(ErrorKind.EXISTS, name_conflict_message(table.kind, name))


def _matches(
    obj: StoreObject,
    name: str | None,
    name_prefix: str | None,
    labels: Mapping[str, str | None] | None,
) -> bool:
    key = name_key(name_of(obj))
    if name is not None and key != name_key(name):
        return False
    if name_prefix is not None and not key.startswith(name_key(name_prefix)):
        return False
    own = labels_of(obj)
    return all(k in own and (v is None or own[k] == v) for k, v in (labels or {}).items())
