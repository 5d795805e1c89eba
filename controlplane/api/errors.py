"""Errors as the Docker Engine API reports them: a status code and `{"message": ...}`.

Status codes follow dockerd's errdefs mapping (InvalidParameter 400, Forbidden 403,
NotFound 404, Conflict 409, Unavailable 503, anything else 500).
"""

from __future__ import annotations

from controlplane.manager.ipam import AllocatorError
from controlplane.raft.core import RaftError
from controlplane.raft.errors import TransportError
from controlplane.store import ErrorKind, StoreError

NOT_A_MANAGER_MESSAGE = (
    "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster "
    "state. Please run this command on a manager node or promote the current node to a manager."
)
"""dockerd's errNoManager (daemon/cluster/errors.go). It is a notAvailableError there, so the
API answers 503 Service Unavailable: the same type and status as its sibling errNoSwarm, which
the reference transcript node-ls-single-cli28.earlier-run1.json shows as `GET /v1.41/nodes` 503."""


NO_SWARM_MESSAGE = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to '
    "connect this node to swarm and try again."
)
"""dockerd's errNoSwarm, 503 (node-ls-single-cli28.earlier-run1.json)."""
SWARM_EXISTS_MESSAGE = (
    'This node is already part of a swarm. Use "docker swarm leave" to leave this swarm and '
    "join another one."
)
NOT_IN_SWARM_MESSAGE = "This node is not part of a swarm"


class ApiError(Exception):
    """An error the API answers with `status` and `{"message": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def not_a_manager() -> ApiError:
    return ApiError(503, NOT_A_MANAGER_MESSAGE)


_GRPC_STATUS = {
    "InvalidArgument": 400,
    "FailedPrecondition": 400,
    "NotFound": 404,
    "AlreadyExists": 409,
    "Unimplemented": 501,
    "Unknown": 500,
}


def rpc_error(code: str, description: str) -> ApiError:
    """A swarmkit refusal as dockerd passes it on: the gRPC status text, and the HTTP status
    dockerd maps that gRPC code to."""
    return ApiError(_GRPC_STATUS[code], f"rpc error: code = {code} desc = {description}")


_STORE_STATUS = {
    ErrorKind.EXISTS: 409,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 500,  # swarmkit's "update out of sequence" reaches the CLI as a 500
    ErrorKind.INVALID: 400,
    ErrorKind.IN_USE: 400,  # as the API's own "network ... is in use by" refusal
}


def from_store_error(err: StoreError) -> ApiError:
    return ApiError(_STORE_STATUS.get(err.kind, 500), err.message)


def from_allocator_error(err: AllocatorError) -> ApiError:
    """dockerd answers an unparsable `--subnet` with 500 (bad-subnet-notcidr-cli28.json); the
    other refusals are bad parameters (400), running out of addresses or VNIs is a 500."""
    message = str(err)
    if err.kind == "exhausted" or message.startswith("Invalid subnet "):
        return ApiError(500, message)
    return ApiError(400, message)


def from_exception(err: BaseException) -> ApiError:
    """Map what the backend raised; Raft errors (no leader, timeout) are 500s with their text,
    as dockerd passes swarmkit's errors through."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, StoreError):
        return from_store_error(err)
    if isinstance(err, AllocatorError):
        return from_allocator_error(err)
    if isinstance(err, RaftError | TransportError):
        return ApiError(500, str(err))
    return ApiError(500, f"internal error: {type(err).__name__}: {err}")
