"""The proposer's side: build one StoreTransaction to put in a Raft entry."""

from __future__ import annotations

import secrets
from typing import Self

from controlplane.pb.objects_pb2 import StoreActionKind, StoreTransaction
from controlplane.store.kinds import StoreObject, check_kind, kind_label


class Transaction:
    """Actions that every replica will apply together or not at all.

    Objects are copied in when added, so the caller may keep editing its own. Set
    `meta.version.index` on updates to the index of the copy you read: a replica refuses the
    update if the object changed since ("update out of sequence").
    """

    def __init__(self) -> None:
        # Random, so a proposer recognises its own entry among those committed by others.
        self._message = StoreTransaction(proposal_id=secrets.token_bytes(16))

    @property
    def proposal_id(self) -> bytes:
        return self._message.proposal_id

    def __len__(self) -> int:
        return len(self._message.actions)

    def create(self, obj: StoreObject) -> Self:
        self._add(StoreActionKind.STORE_ACTION_CREATE, obj)
        return self

    def update(self, obj: StoreObject) -> Self:
        self._add(StoreActionKind.STORE_ACTION_UPDATE, obj)
        return self

    def delete(self, kind: type[StoreObject], object_id: str) -> Self:
        self._add(StoreActionKind.STORE_ACTION_DELETE, kind(id=object_id))
        return self

    def encode(self) -> bytes:
        # deterministic: label maps serialise in key order, so equal transactions are equal bytes.
        return self._message.SerializeToString(deterministic=True)

    def _add(self, action_kind: StoreActionKind.ValueType, obj: StoreObject) -> None:
        check_kind(type(obj))
        action = self._message.actions.add(kind=action_kind)
        getattr(action, kind_label(type(obj))).CopyFrom(obj)
