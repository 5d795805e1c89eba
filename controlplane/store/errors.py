"""Why the store refused a transaction, in a form that survives the trip through Raft."""

from __future__ import annotations

from enum import StrEnum

from controlplane.pb.objects_pb2 import StoreTransactionResult


class ErrorKind(StrEnum):
    """The `error_kind` of a StoreTransactionResult; the API maps each to a Docker status."""

    CONFLICT = "conflict"  # stale meta.version.index ("update out of sequence")
    NOT_FOUND = "not_found"
    EXISTS = "exists"  # id or name already taken
    INVALID = "invalid"  # the entry itself is malformed
    IN_USE = "in_use"  # removing it would break a reference (a network a service names)


class StoreError(Exception):
    """A refused transaction; every replica refuses it the same way, so it is not a crash."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def to_result(self) -> bytes:
        return StoreTransactionResult(
            ok=False, error=self.message, error_kind=self.kind.value
        ).SerializeToString()

    @classmethod
    def from_result(cls, data: bytes) -> StoreError | None:
        """For proposers: the error carried by `Store.apply`'s result, or None if it succeeded."""
        result = StoreTransactionResult.FromString(data)
        if result.ok:
            return None
        try:
            kind = ErrorKind(result.error_kind)
        except ValueError:
            kind = ErrorKind.INVALID
        return cls(kind, result.error)
