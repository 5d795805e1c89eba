"""What a node's own data path adds to the Engine API: a worker (no store) inspects the
overlays its containers are attached to, a Windows node notes in the network's options that it
does not encrypt, and `/info` carries the node's OS and warnings."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from controlplane.api import create_app
from controlplane.api.local import LocalBackend
from controlplane.api.networks import ENCRYPTION_NOTE_OPTION, LOCAL_NETWORKS
from controlplane.datapath.network_view import LocalNetworkView
from controlplane.pb.objects_pb2 import IPAMConfig, Network

NOTE = "encryption is not applied on Windows nodes"


class NodeNetworks:
    """A node's data path as the API sees it: its networks, and a note for some of them."""

    def __init__(self, networks: Sequence[Network], notes: dict[str, str]) -> None:
        self._networks = list(networks)
        self._notes = notes

    def networks(self) -> Sequence[Network]:
        return self._networks

    def platform_note(self, network_id: str) -> str:
        return self._notes.get(network_id, "")

    def local_view(self, network_id: str) -> LocalNetworkView | None:
        """No endpoints in these tests: the network has no local instance to show."""
        return None


def overlay(network_id: str, name: str) -> Network:
    net = Network(id=network_id, vni=4097)
    net.spec.annotations.name = name
    net.spec.driver = "overlay"
    net.spec.driver_options["encrypted"] = ""
    net.ipam.append(IPAMConfig(subnet="10.0.1.0/24", gateway="10.0.1.1"))
    return net


def run(
    backend: LocalBackend,
    local: NodeNetworks | None,
    test: Callable[[TestClient[Any, Any]], Awaitable[None]],
) -> None:
    async def main() -> None:
        app = create_app(backend)
        app[LOCAL_NETWORKS] = lambda: local
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(main())


def test_a_worker_inspects_its_attached_overlays_and_a_windows_node_notes_no_encryption() -> None:
    backend = LocalBackend()
    backend.set_role("worker")
    local = NodeNetworks([overlay("sec0123456789", "sec")], {"sec0123456789": NOTE})

    async def t(client: TestClient[Any, Any]) -> None:
        for ref in ("sec", "sec0123456789", "sec01"):
            resp = await client.get(f"/v1.41/networks/{ref}")
            assert resp.status == 200, ref
            body = await resp.json()
            assert body["Name"] == "sec" and body["Options"]["encrypted"] == ""
            assert body["Options"][ENCRYPTION_NOTE_OPTION] == NOTE
        missing = await client.get("/v1.41/networks/other")
        assert missing.status == 404
        assert (await missing.json())["message"] == "network other not found"

    run(backend, local, t)


def test_a_worker_lists_the_overlays_its_data_path_is_on() -> None:
    backend = LocalBackend()
    backend.set_role("worker")
    local = NodeNetworks([overlay("sec0123456789", "sec")], {})

    async def t(client: TestClient[Any, Any]) -> None:
        listed = await (await client.get("/v1.41/networks")).json()
        assert [(n["Name"], n["Scope"]) for n in listed] == [("sec", "swarm")]
        query = {"filters": '{"scope":{"local":true}}'}
        assert await (await client.get("/v1.41/networks", params=query)).json() == []

    run(backend, local, t)


def test_a_linux_node_adds_no_note() -> None:
    backend = LocalBackend()
    backend.set_role("worker")
    local = NodeNetworks([overlay("sec0123456789", "sec")], {})

    async def t(client: TestClient[Any, Any]) -> None:
        body = await (await client.get("/v1.41/networks/sec")).json()
        assert ENCRYPTION_NOTE_OPTION not in body["Options"]

    run(backend, local, t)


def test_info_shows_the_os_and_the_node_warnings() -> None:
    backend = LocalBackend()
    backend._info = dataclasses.replace(
        backend.node_info(), os="windows", warnings=("WARNING: " + NOTE,)
    )

    async def t(client: TestClient[Any, Any]) -> None:
        info = await (await client.get("/v1.41/info")).json()
        assert info["OSType"] == "windows" and info["Warnings"] == ["WARNING: " + NOTE]

    run(backend, None, t)
