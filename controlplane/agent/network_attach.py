"""The node's requests for overlay attachments of its standalone containers, sent to the
leader's dispatcher over the agent's session channel (the managers allocate the address; see
`manager/network_attachments.py`). A refusal keeps dockerd's words:
`Could not attach to network N: rpc error: code = PermissionDenied desc = ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import grpc

from controlplane.pb import dispatcher_pb2, dispatcher_pb2_grpc
from controlplane.pb.dispatcher_pb2 import AttachNetworkResponse

if TYPE_CHECKING:
    from controlplane.pb.dispatcher_pb2_grpc import DispatcherAsyncStub

log = logging.getLogger("controlplane.agent.network_attach")

SESSION_WAIT = 15.0  # seconds an attach waits for the agent's session to the leader
CALL_TIMEOUT = 30.0


class NetworkAttachError(RuntimeError):
    """The network could not be attached; the message is the one dockerd shows, `code` the
    managers' answer when they refused it."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


def go_code(code: grpc.StatusCode) -> str:
    """gRPC's status name as Go prints it (`PERMISSION_DENIED` -> `PermissionDenied`)."""
    return "".join(part.capitalize() for part in code.name.split("_"))


class NetworkAttacher:
    """Lives on the agent's session: `listen` is a session companion holding the channel."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._channel: grpc.aio.Channel | None = None
        self._connected = asyncio.Event()

    async def listen(self, channel: grpc.aio.Channel) -> None:
        """Offer `channel` (the session's, to the leader) until the session ends."""
        self._channel = channel
        self._connected.set()
        try:
            await asyncio.Event().wait()
        finally:
            self._connected.clear()
            self._channel = None

    async def _stub(self, target: str) -> DispatcherAsyncStub:
        try:
            async with asyncio.timeout(SESSION_WAIT):
                await self._connected.wait()
        except TimeoutError:
            raise NetworkAttachError(
                f"Could not attach to network {target}: this node has no session with the "
                f"swarm's leader (waited {SESSION_WAIT:.0f}s); check `docker info` and retry"
            ) from None
        assert self._channel is not None
        return dispatcher_pb2_grpc.DispatcherStub(self._channel)

    async def attach(
        self, container_id: str, name: str, target: str, aliases: list[str], ipv4: str = ""
    ) -> AttachNetworkResponse:
        """`ipv4`: the address the user asked for (`--ip`), "" for the allocator's next."""
        stub = await self._stub(target)
        request = dispatcher_pb2.AttachNetworkRequest(
            node_id=self.node_id,
            container_id=container_id,
            container_name=name,
            target=target,
            aliases=aliases,
            addresses=[ipv4] if ipv4 else [],
        )
        try:
            response = await stub.AttachNetwork(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            raise NetworkAttachError(
                f"Could not attach to network {target}: rpc error: code = "
                f"{go_code(err.code())} desc = {err.details()}",
                err.code(),
            ) from None
        log.info(
            "event=network_attached container=%s network=%s address=%s",
            container_id[:12],
            target,
            ",".join(response.attachment.addresses),
        )
        return response

    async def detach(self, attachment_id: str) -> bool:
        """Best effort: a detach that cannot reach the leader is logged (the address stays
        held until the attachment task is removed) and answers False."""
        request = dispatcher_pb2.DetachNetworkRequest(
            node_id=self.node_id, attachment_id=attachment_id
        )
        with contextlib.suppress(NetworkAttachError):
            stub = await self._stub("(detach)")
            try:
                await stub.DetachNetwork(request, timeout=CALL_TIMEOUT)
                return True
            except grpc.aio.AioRpcError as err:
                log.warning(
                    "event=network_detach_failed attachment=%s error=%s",
                    attachment_id,
                    err.details(),
                )
                return False
        log.warning("event=network_detach_failed attachment=%s error=no session", attachment_id)
        return False
