"""The Raft-only manager's Engine API, loaded when its first client connects."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest
from aiohttp import web

from controlplane.manager.cluster import ClusterSettings, new_cluster
from controlplane.process import NodeError
from controlplane.raft_lab import EngineApiOnDemand

LISTEN = "127.77.150.1:2375"


def test_the_api_loads_on_the_first_connection_and_answers_it() -> None:
    built: list[web.Application] = []

    def make_app() -> web.Application:
        async def version(_request: web.Request) -> web.Response:
            return web.json_response({"ApiVersion": "1.43"})

        app = web.Application()
        app.router.add_get("/version", version)
        built.append(app)
        return app

    async def scenario() -> None:
        api = EngineApiOnDemand(LISTEN, make_app)
        api.start()
        try:
            await asyncio.sleep(0.1)
            assert built == [], "nothing is loaded before a client connects"
            async with aiohttp.ClientSession() as session:
                for _ in range(2):
                    async with session.get(f"http://{LISTEN}/version") as response:
                        assert await response.json() == {"ApiVersion": "1.43"}
            assert len(built) == 1
        finally:
            await api.stop()

    asyncio.run(scenario())


def test_an_address_that_cannot_be_bound_is_a_clear_error() -> None:
    async def scenario() -> None:
        first = EngineApiOnDemand(LISTEN, web.Application)
        first.start()
        try:
            with pytest.raises(NodeError, match=f"cannot serve the Engine API on {LISTEN}"):
                EngineApiOnDemand(LISTEN, web.Application).start()
            with pytest.raises(NodeError, match="cannot serve the Engine API on nowhere"):
                EngineApiOnDemand("nowhere", web.Application).start()
        finally:
            await first.stop()

    asyncio.run(scenario())


def test_a_raft_only_manager_imports_no_api_crypto_or_gossip() -> None:
    """What `swarmlab manager run` loads before its first Engine API client (each of these
    costs megabytes of RSS in every manager: see bench/README.md)."""
    probe = (
        "import sys, controlplane.cli, controlplane.raft_lab\n"
        "print(sorted({m.split('.')[0] if not m.startswith('controlplane') else m"
        " for m in sys.modules}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    for heavy in ("'aiohttp'", "'cryptography'", "'controlplane.gossip", "'controlplane.api"):
        assert heavy not in loaded, f"{heavy} is imported by a Raft-only manager"


def test_a_cluster_without_a_root_ca_has_no_join_tokens() -> None:
    cluster = new_cluster("c1", ClusterSettings(), root=None)
    assert cluster.spec.annotations.name == "default"
    assert not cluster.root_ca.ca_cert_pem and not cluster.root_ca.ca_key_pem
    assert not cluster.root_join_tokens.worker and not cluster.root_join_tokens.manager
