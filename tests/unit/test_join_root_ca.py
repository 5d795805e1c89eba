"""`join.fetch_root_ca`: the joiner reads the root from a real TLS handshake and trusts it
only when it hashes to the token's digest (the first step of `docker swarm join`)."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from controlplane.join import JoinError, fetch_root_ca
from controlplane.manager.ca import NodeIdentity, RootCA
from controlplane.manager.roles import MANAGER_ROLE, WORKER_ROLE
from controlplane.manager.tokens import generate_token, parse_token, root_ca_digest

HOST = "127.77.248.1"


def _manager_context(root: RootCA) -> ssl.SSLContext:
    """What 2377 presents: the manager's certificate followed by the swarm root."""
    identity = NodeIdentity.create("manager-1")
    identity = identity.with_certificate(
        root.issue(identity.csr_pem, "manager-1", MANAGER_ROLE, "cluster-1"), root
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        chain, key = Path(tmp, "chain.pem"), Path(tmp, "key.pem")
        chain.write_bytes(identity.require_cert() + root.cert_pem)
        key.write_bytes(identity.key_pem)
        context.load_cert_chain(chain, key)
    return context


def _with_manager(root: RootCA, scenario: Callable[[str], Awaitable[None]]) -> None:
    async def main() -> None:
        async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(answer, HOST, 0, ssl=_manager_context(root))
        port = server.sockets[0].getsockname()[1]
        async with server:
            await scenario(f"{HOST}:{port}")

    asyncio.run(main())


def test_the_root_that_matches_the_token_is_trusted() -> None:
    root = RootCA.create()
    token = parse_token(generate_token(root.cert_pem, WORKER_ROLE))

    async def scenario(address: str) -> None:
        fetched = await fetch_root_ca(address, token)
        assert fetched.cert_pem == root.cert_pem
        assert fetched.key is None  # a joiner never gets the signing key

    _with_manager(root, scenario)


def test_an_impostor_managers_root_is_refused_naming_both_digests() -> None:
    impostor, real = RootCA.create(), RootCA.create()
    token = parse_token(generate_token(real.cert_pem, WORKER_ROLE))

    async def scenario(address: str) -> None:
        with pytest.raises(JoinError) as err:
            await fetch_root_ca(address, token)
        message = str(err.value)
        assert message.startswith("the manager's root CA does not match the digest")
        assert root_ca_digest(real.cert_pem) in message
        assert root_ca_digest(impostor.cert_pem) in message  # the top of the served chain

    _with_manager(impostor, scenario)


def test_no_manager_at_the_address_is_a_join_error() -> None:
    token = parse_token(generate_token(RootCA.create().cert_pem, WORKER_ROLE))

    async def scenario() -> None:
        # Port 1 on our loopback address: nothing listens there.
        with pytest.raises(JoinError, match=f"could not connect to the manager at {HOST}:1"):
            await fetch_root_ca(f"{HOST}:1", token)

    asyncio.run(scenario())
