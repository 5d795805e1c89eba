"""The runtime's errors as the Engine API answers them: dockerd's status code per kind, the
runtime's message (dockerd's words) as the body."""

from __future__ import annotations

from controlplane.agent.exec_sessions import InvalidExecError, NoSuchExecError
from controlplane.agent.images import ImageError, NoSuchImageError
from controlplane.agent.mounts import MountError
from controlplane.agent.network_attach import NetworkAttachError
from controlplane.agent.runtime import (
    AmbiguousContainerError,
    ContainerStateError,
    NoSuchContainerError,
    StartError,
)
from controlplane.agent.standalone import (
    InvalidConfigError,
    NameConflictError,
    NetworkNotFoundError,
    NotRunningError,
    TaskContainerError,
)
from controlplane.agent.top import TopArgumentsError, TopError
from controlplane.agent.volumes import InvalidVolumeError, NoSuchVolumeError, VolumeInUseError
from controlplane.api.errors import ApiError

_STATUS: dict[type[Exception], int] = {
    NoSuchContainerError: 404,
    AmbiguousContainerError: 500,
    NoSuchImageError: 404,
    NoSuchExecError: 404,
    ImageError: 400,
    InvalidConfigError: 400,
    InvalidExecError: 400,
    NetworkNotFoundError: 404,
    NameConflictError: 409,
    ContainerStateError: 409,
    NotRunningError: 409,
    TaskContainerError: 409,
    StartError: 500,
    TopError: 500,
    TopArgumentsError: 400,
    NetworkAttachError: 500,
    MountError: 400,
    InvalidVolumeError: 400,
    NoSuchVolumeError: 404,
    VolumeInUseError: 409,
}


def container_error(err: Exception) -> ApiError:
    """The API error for a runtime error; anything else is re-raised (a bug: the API's
    middleware answers it with a 500)."""
    for kind, status in _STATUS.items():
        if isinstance(err, kind):
            return ApiError(status, str(err))
    raise err
