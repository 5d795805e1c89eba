"""Refusals of a call the leader serves for a follower (a network name taken, a subnet that
overlaps, a pool exhausted), as they cross gRPC: a status code for any gRPC client, and a
`swarmlab-refusal` trailer naming the refusal's family and kind, from which the forwarding
manager raises the very error the leader raised. The Engine API then answers with the same
status and words whichever manager the user called."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from controlplane.manager.ipam import AllocatorError
from controlplane.store import ErrorKind, StoreError

REFUSAL_TRAILER = "swarmlab-refusal"

Refusal = StoreError | AllocatorError
REFUSALS = (StoreError, AllocatorError)

_STORE_CODES = {
    ErrorKind.EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.CONFLICT: grpc.StatusCode.ABORTED,
    ErrorKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
}
_ALLOCATOR_CODES = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "conflict": grpc.StatusCode.INVALID_ARGUMENT,
    "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _label(refusal: Refusal) -> tuple[str, grpc.StatusCode]:
    if isinstance(refusal, StoreError):
        return f"store:{refusal.kind.value}", _STORE_CODES[refusal.kind]
    return f"allocator:{refusal.kind}", _ALLOCATOR_CODES.get(refusal.kind, grpc.StatusCode.UNKNOWN)


async def abort_refused(context: grpc.aio.ServicerContext[Any, Any], refusal: Refusal) -> NoReturn:
    """End the call with `refusal` (server side)."""
    label, code = _label(refusal)
    await context.abort(code, str(refusal), ((REFUSAL_TRAILER, label),))
    raise AssertionError("unreachable")  # abort raises


def refusal_from(err: grpc.aio.AioRpcError) -> Refusal | None:
    """The refusal a failed call carries (client side), or None if it carries none."""
    for item in err.trailing_metadata() or ():
        key, value = item[0], item[1]  # type: ignore[index]
        if key != REFUSAL_TRAILER or not isinstance(value, str):
            continue
        family, _, kind = value.partition(":")
        message = err.details() or ""
        if family == "store":
            try:
                return StoreError(ErrorKind(kind), message)
            except ValueError:
                return StoreError(ErrorKind.INVALID, message)
        if family == "allocator":
            return AllocatorError(message, kind)
    return None
