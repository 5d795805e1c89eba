"""A node removed with `docker node rm --force` keeps a certificate the swarm's root signed and
that has not expired; the managers refuse it anyway, with swarmkit's words (real node
processes on 127.77.164.x, the removed node's own certificate over real mutual TLS)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from controlplane.lab.swarm_lab import SwarmLab, until
from controlplane.manager import ca
from controlplane.pb import dispatcher_pb2, dispatcher_pb2_grpc

pytestmark = pytest.mark.integration

TIMEOUT = 90.0


def test_a_removed_nodes_certificate_is_refused_by_the_managers(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=1, lab=164)
        try:
            await lab.up()
            await until(lab.all_ready, TIMEOUT, "the lab to be ready")
            manager, worker = lab.node("manager-1"), lab.node("worker-1")
            identity, root = ca.load_identity(worker.data_dir / "certificates")
            credentials = ca.channel_credentials(identity, root)

            async def heartbeat() -> None:
                async with grpc.aio.secure_channel(
                    f"{manager.address}:2377", credentials, ca.channel_options()
                ) as channel:
                    stub = dispatcher_pb2_grpc.DispatcherStub(channel)
                    request = dispatcher_pb2.HeartbeatRequest(node_id=identity.node_id)
                    await stub.Heartbeat(request, timeout=10)

            with pytest.raises(grpc.aio.AioRpcError) as member:
                await heartbeat()  # a member: let in (then told it has no session here)
            assert member.value.code() == grpc.StatusCode.NOT_FOUND
            async with lab.engine(manager) as engine:
                await engine.request(
                    "DELETE", f"/nodes/{identity.node_id}", params={"force": "true"}
                )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await heartbeat()
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refused.value.details() == (
                f"Permission denied: node {identity.node_id} was removed from swarm"
            )
        finally:
            lab.stop()

    asyncio.run(scenario())
