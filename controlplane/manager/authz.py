"""Who may call what on 2377: every gRPC method is authorized by the caller's certificate.

TLS on 2377 verifies a client certificate when one is presented but admits clients without
one (as swarmkit's `VerifyClientCertIfGiven`), because a joining node has no certificate until
the CA issues it. So authorization is per service, here, with a closed list: a service that is
not listed is refused to everyone, so a new service cannot be left open by mistake.

- `NodeCA`: anyone (the join token is checked by the CA itself);
- `Dispatcher`: managers and workers of this cluster;
- `Raft`, `Control`: managers of this cluster only;
- `Logs` (subscribing to task logs, for the Engine API): managers only; `LogBroker` (agents
  listening for subscriptions and publishing lines): managers and workers.

A node removed from the swarm (`removed_nodes.py`) is refused on every service but the public
one, whatever its certificate says.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import grpc
from cryptography import x509

from controlplane.manager.ca import (
    MANAGER_ROLE,
    WORKER_ROLE,
    CertificateError,
    NodeInfo,
    PermissionDeniedError,
    RootCA,
    node_info,
    peer_certificate,
    require_role,
    verify_node_cert,
)
from controlplane.manager.removed_nodes import RemovedNodes

PUBLIC: Final[tuple[str, ...]] = ()

SERVICE_ROLES: Final[Mapping[str, tuple[str, ...]]] = {
    "controlplane.v1.NodeCA": PUBLIC,
    "controlplane.v1.Dispatcher": (MANAGER_ROLE, WORKER_ROLE),
    "controlplane.v1.Raft": (MANAGER_ROLE,),
    "controlplane.v1.Control": (MANAGER_ROLE,),
    "controlplane.v1.Logs": (MANAGER_ROLE,),
    "controlplane.v1.LogBroker": (MANAGER_ROLE, WORKER_ROLE),
}

MAX_REMEMBERED: Final = 10_000  # verified certificates kept; nodes x renewals stay far below

Context = grpc.aio.ServicerContext[Any, Any]

if TYPE_CHECKING:  # generic only in the type stubs
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


def service_of(method: str) -> str:
    """'/controlplane.v1.Raft/Stream' -> 'controlplane.v1.Raft'."""
    return method.lstrip("/").partition("/")[0]


class RoleInterceptor(_ServerInterceptor):
    """Wraps each handler with a check of the caller's certificate: issued by this swarm's
    root (TLS also trusts the public anonymous CA, see `ca.server_credentials`), of this
    cluster, with a role `SERVICE_ROLES` allows."""

    def __init__(
        self,
        root: RootCA,
        cluster_id: str,
        roles: Mapping[str, tuple[str, ...]] = SERVICE_ROLES,
        *,
        removed: RemovedNodes | None = None,
    ) -> None:
        """`removed`: the nodes removed from the swarm, refused whatever their certificates
        say (none if not given: a Raft-only manager has no swarm nodes)."""
        self._root = root
        self._cluster_id = cluster_id
        self._roles = roles
        self._removed = removed
        self._verified: dict[bytes, x509.Certificate] = {}  # verified against the root

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method
        roles = self._roles.get(service_of(method))
        if roles == PUBLIC:
            return handler
        return _guarded(handler, lambda context: self._check(context, roles, method))

    def caller(self, peer_cert: bytes | None, roles: tuple[str, ...]) -> NodeInfo:
        """The caller's claims, once its certificate is known to come from this swarm's root
        and to carry one of `roles` (each certificate is verified once, then remembered)."""
        if peer_cert is None:
            raise PermissionDeniedError("Permission denied: the caller presented no certificate")
        cert = self._verified.get(peer_cert)
        if cert is None:
            try:
                cert = x509.load_pem_x509_certificate(peer_cert)
                verify_node_cert(cert, self._root)
            except (CertificateError, ValueError) as exc:
                raise PermissionDeniedError(
                    "Permission denied: the caller presented no certificate of this swarm"
                ) from exc
            if len(self._verified) >= MAX_REMEMBERED:
                self._verified.clear()
            self._verified[peer_cert] = cert
        info = require_role(cert, *roles, cluster_id=self._cluster_id)
        if self._removed is not None:
            self._removed.check(info.node_id)
        return info

    async def _check(self, context: Context, roles: tuple[str, ...] | None, method: str) -> None:
        if roles is None:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Permission denied: {method} is not served here",
            )
            return
        try:
            self.caller(peer_certificate(context), roles)
        except (PermissionDeniedError, CertificateError) as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))


def _guarded(
    handler: Any, check: Callable[[Context], Awaitable[None]]
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler behind `check`; `Any` because grpc's stubs type handlers for the
    synchronous server while grpc.aio's are coroutines and async generators."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            await check(context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.stream_unary is not None:
        collect = handler.stream_unary

        async def stream_unary(requests: Any, context: Context) -> Any:
            await check(context)
            return await collect(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    streaming = handler.unary_stream or handler.stream_stream

    async def streamed(request: Any, context: Context) -> AsyncIterator[Any]:
        await check(context)
        result = streaming(request, context)
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        else:  # a servicer that writes with context.write() and returns
            await result

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streamed, **codec)
    return grpc.stream_stream_rpc_method_handler(streamed, **codec)


def caller_node_id(context: Context) -> str | None:
    """The node id in the caller's certificate, for servicers behind `RoleInterceptor` (which
    has verified that certificate already)."""
    cert = peer_certificate(context)
    if cert is None:
        return None
    try:
        return node_info(x509.load_pem_x509_certificate(cert)).node_id
    except (CertificateError, ValueError):
        return None
