"""The Control service's listing (`swarmlab store ls`): every kind, but a secret's data never
leaves the managers, as swarmkit's ListSecrets clears it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from controlplane.manager.control import ControlService
from controlplane.manager.network_create import NetworkCreator
from controlplane.pb import control_pb2
from controlplane.pb.objects_pb2 import Config, Secret
from controlplane.raft.driver import RaftDriver
from controlplane.store import Store, Transaction


def test_a_listing_shows_secrets_without_their_data() -> None:
    store = Store()
    secret = Secret(id="s1")
    secret.spec.annotations.name = "db_pass"
    secret.spec.data = b"hunter2\n"
    config = Config(id="c1")
    config.spec.annotations.name = "site"
    config.spec.data = b"listen 80;\n"
    store.apply(1, Transaction().create(secret).create(config).encode())
    service = ControlService(cast(RaftDriver, None), store, cast(NetworkCreator, None))

    async def listing(kind: str) -> control_pb2.ListResponse:
        request = control_pb2.ListRequest(kind=kind)
        return await service.List(request, cast(Any, None))

    for kind in ("", "secret"):
        [shown] = asyncio.run(listing(kind)).objects.secrets
        assert shown.spec.annotations.name == "db_pass" and shown.spec.data == b""
    [config_shown] = asyncio.run(listing("config")).objects.configs
    assert config_shown.spec.data == b"listen 80;\n"  # a config's data is no secret
    kept = store.get(Secret, "s1")  # the store's copy keeps it
    assert kept is not None and kept.spec.data == b"hunter2\n"
