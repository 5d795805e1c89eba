"""`docker swarm init` and `docker swarm update` settings that reach the Cluster: the task
history limit and the node certificate expiry are kept (and shown by `docker info`), and what
Swarmlab does not emulate is refused at init as at update."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from controlplane.api import create_app
from controlplane.api.backend import SwarmInit, SwarmJoin
from controlplane.api.local import LocalBackend
from controlplane.manager import cluster as clusters
from controlplane.manager.tasks import HISTORY_LIMIT, history_limit

HOUR_NS = 3600 * 10**9


class RecordingControl:
    """A node's swarm control that only records the init it was asked for."""

    def __init__(self) -> None:
        self.inits: list[SwarmInit] = []

    async def swarm_init(self, request: SwarmInit) -> str:
        self.inits.append(request)
        return "node00000000000000000000"

    async def swarm_join(self, request: SwarmJoin) -> None:
        raise AssertionError("not asked")

    async def swarm_leave(self, force: bool) -> None:
        raise AssertionError("not asked")


def init(spec: dict[str, Any]) -> tuple[int, Any, list[SwarmInit]]:
    async def main() -> tuple[int, Any, list[SwarmInit]]:
        control = RecordingControl()
        app = create_app(LocalBackend(), control)
        async with TestClient(TestServer(app)) as client:
            body = {"ListenAddr": "0.0.0.0:2377", "Spec": spec}
            response = await client.post("/v1.41/swarm/init", json=body)
            return response.status, await response.json(), control.inits

    return asyncio.run(main())


def test_init_keeps_the_history_limit_and_the_cert_expiry() -> None:
    spec = {
        "Orchestration": {"TaskHistoryRetentionLimit": 2},
        "CAConfig": {"NodeCertExpiry": 48 * HOUR_NS},
    }
    status, _, [request] = init(spec)
    assert status == 200
    assert (request.task_history_limit, request.node_cert_expiry_ns) == (2, 48 * HOUR_NS)
    settings = clusters.ClusterSettings(task_history_limit=2, node_cert_expiry_ns=48 * HOUR_NS)
    cluster = clusters.new_cluster("c", settings, None)
    assert history_limit(cluster) == 2
    assert clusters.node_cert_validity(cluster).total_seconds() == 48 * 3600
    default = clusters.new_cluster("c", clusters.ClusterSettings(), None)
    assert history_limit(default) == HISTORY_LIMIT
    assert clusters.node_cert_validity(default) == clusters.NODE_CERT_VALIDITY


def test_init_refuses_what_is_not_emulated() -> None:
    for spec, words in (
        ({"EncryptionConfig": {"AutoLockManagers": True}}, "autolock is not emulated"),
        ({"CAConfig": {"NodeCertExpiry": HOUR_NS // 2}}, "minimum certificate expiry time is"),
        ({"CAConfig": {"ExternalCAs": [{"Protocol": "cfssl", "URL": "https://ca"}]}}, "external"),
    ):
        status, body, inits = init(spec)
        assert status == 400 and words in body["message"], body
        assert inits == []
