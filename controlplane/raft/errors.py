"""Errors a manager's Raft layer reports to clients, and how they cross gRPC.

A follower forwards writes and linearizable reads to the leader; the leader's error travels
back as a gRPC status plus a `swarmlab-error` trailer naming its kind, so the follower raises
the same error with the same message. A failure without that trailer is a transport failure.
"""

from __future__ import annotations

import grpc

from controlplane.raft.core import ConfChangeError, NotLeaderError, QuorumLossError, RaftError

ERROR_TRAILER = "swarmlab-error"


class TransportError(Exception):
    """A request to a peer failed; the message says which peer and why."""


# Docker's own wording (measured on a real swarm: see reference/real-swarm/FINDINGS.md).
NO_LEADER_MESSAGE = (
    "The swarm does not have a leader. It's possible that too few managers are online. "
    "Make sure more than half of the managers are online."
)


class NoLeaderError(RaftError):
    def __init__(self, message: str = NO_LEADER_MESSAGE) -> None:
        super().__init__(message)


class ProposalTimeoutError(RaftError):
    """The deadline passed: the write may or may not have been committed."""

    def __init__(self, message: str = "context deadline exceeded") -> None:
        super().__init__(message)


class ProposalDroppedError(RaftError):
    """The entry was replaced by another leader's: it will never be applied. Safe to retry."""

    def __init__(
        self, message: str = "the write was lost in a leader change and not applied; retry it"
    ) -> None:
        super().__init__(message)


class RemoteNotLeaderError(RaftError):
    """A forwarded request reached a manager that was no longer the leader."""


class InvalidRequestError(RaftError, ValueError):
    pass


# kind name -> (class to rebuild on the caller's side, gRPC status code)
_KINDS: dict[str, tuple[type[RaftError], grpc.StatusCode]] = {
    "no_leader": (NoLeaderError, grpc.StatusCode.UNAVAILABLE),
    "timeout": (ProposalTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    "dropped": (ProposalDroppedError, grpc.StatusCode.ABORTED),
    "not_leader": (RemoteNotLeaderError, grpc.StatusCode.FAILED_PRECONDITION),
    "quorum_loss": (QuorumLossError, grpc.StatusCode.FAILED_PRECONDITION),
    "conf_change": (ConfChangeError, grpc.StatusCode.FAILED_PRECONDITION),
    "invalid": (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    "raft": (RaftError, grpc.StatusCode.FAILED_PRECONDITION),
}


def error_kind(err: BaseException) -> str | None:
    """The kind name of one of our errors (most specific first), or None if it is not ours."""
    if isinstance(err, NotLeaderError):
        return "not_leader"
    if isinstance(err, ValueError) and not isinstance(err, RaftError):
        return "invalid"
    for kind, (cls, _code) in _KINDS.items():
        if isinstance(err, cls):
            return kind
    return None


def status_code(kind: str) -> grpc.StatusCode:
    return _KINDS[kind][1]


def error_from_kind(kind: str, details: str) -> RaftError:
    cls = _KINDS.get(kind, (RaftError, grpc.StatusCode.UNKNOWN))[0]
    return cls(details)


def rpc_error(err: grpc.aio.AioRpcError) -> Exception:
    """Our error if the remote sent one, else an unknown-outcome timeout."""
    for item in err.trailing_metadata() or ():
        key, value = item[0], item[1]  # type: ignore[index]
        if key == ERROR_TRAILER and isinstance(value, str):
            return error_from_kind(value, err.details() or "")
    if err.code() is grpc.StatusCode.UNAVAILABLE:
        return TransportError(f"manager unreachable: {err.details()}")
    if err.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ProposalTimeoutError()
    return TransportError(f"{err.code().name}: {err.details()}")
