"""One kind's rows, indexed by id and, for kinds unique by name, by lower-cased name.

The table only indexes; it does not judge. The store decides what may be written and keeps
the table free of id or name collisions, so `put` can trust its input.
"""

from __future__ import annotations

from collections.abc import Iterator

from controlplane.store.kinds import UNIQUE_NAME_KINDS, StoreObject, name_of


def name_key(name: str) -> str:
    """Swarm compares names without regard to case."""
    return name.lower()


class Table:
    def __init__(self, kind: type[StoreObject]) -> None:
        self.kind = kind
        self.unique_names = kind in UNIQUE_NAME_KINDS
        self._by_id: dict[str, StoreObject] = {}
        self._id_by_name: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, object_id: str) -> StoreObject | None:
        return self._by_id.get(object_id)

    def owner_of_name(self, name: str) -> str | None:
        """Id of the object holding `name`, for kinds unique by name."""
        return self._id_by_name.get(name_key(name))

    def put(self, obj: StoreObject) -> None:
        """Insert or replace by id, moving the name index entry on a rename."""
        old = self._by_id.get(obj.id)
        if self.unique_names:
            if old is not None:
                del self._id_by_name[name_key(name_of(old))]
            self._id_by_name[name_key(name_of(obj))] = obj.id
        self._by_id[obj.id] = obj

    def pop(self, object_id: str) -> StoreObject:
        obj = self._by_id.pop(object_id)
        if self.unique_names:
            del self._id_by_name[name_key(name_of(obj))]
        return obj

    def sorted_rows(self) -> Iterator[StoreObject]:
        """Rows in id order: the same on every replica, whatever order they were written in."""
        for object_id in sorted(self._by_id):
            yield self._by_id[object_id]
