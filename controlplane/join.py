"""How a node joins a swarm: trust the manager's root CA only if it matches the join token,
then trade the token and a CSR for a node certificate.

As `docker swarm join` (swarmkit `GetRemoteCA` then `IssueNodeCertificate`):
1. TLS handshake with the manager without checking its certificate; its chain carries the
   swarm's root, and the root is trusted only if its PEM hashes to the token's digest (an
   impostor manager cannot produce a root with that digest);
2. over TLS that now verifies the manager against that root, ask the CA for a certificate
   (the token decides the role; the CA writes the subject);
3. keep the key, the certificate and the root (`ca.save_identity`): from then on every 2377
   connection is mutual TLS.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controlplane.manager import tokens
from controlplane.manager.ca import (
    NodeIdentity,
    RootCA,
    anonymous_client,
    anonymous_client_credentials,
    channel_credentials,
    channel_options,
)
from controlplane.pb import ca_pb2, ca_pb2_grpc

HANDSHAKE_TIMEOUT = 10.0


class JoinError(Exception):
    """Joining failed; the message is what `docker swarm join` prints after "Error response
    from daemon: "."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status the Engine API answers with


@dataclass(frozen=True)
class Joined:
    identity: NodeIdentity
    root: RootCA
    role: str  # "manager" | "worker"
    cluster_id: str
    data_path_port: int


def _chain_der(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The certificates the server sent, unverified (public API from Python 3.13; the same
    method exists privately on 3.10-3.12)."""
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = ssl_object._sslobj.get_unverified_chain  # type: ignore[attr-defined]
    return [
        c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
        for c in getter() or ()
    ]


def _handshake_context() -> ssl.SSLContext:
    """No server verification (the token's digest does that) and the anonymous client
    certificate, which 2377's handshake requires of everyone."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    client = anonymous_client()
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_bytes(client.require_cert())
        key.write_bytes(client.key_pem)
        context.load_cert_chain(cert, key)
    return context


async def fetch_root_ca(address: str, token: tokens.ParsedToken) -> RootCA:
    """The swarm root served by the manager at `address`, checked against the token."""
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            _reader, writer = await asyncio.open_connection(
                host, int(port), ssl=_handshake_context(), server_hostname=host
            )
    except (OSError, TimeoutError, ssl.SSLError) as err:
        raise JoinError(
            f"could not connect to the manager at {address}: {err or 'timed out'}"
        ) from err
    try:
        chain = _chain_der(writer.get_extra_info("ssl_object"))
    finally:
        writer.close()
    served = [
        x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        for der in chain
    ]
    mismatch = tokens.RootCAMismatchError(token.ca_digest, "nothing")
    for pem in served:
        try:
            tokens.check_root_ca(token, pem)
        except tokens.RootCAMismatchError as err:
            mismatch = err  # the last one (the top of the chain) is the one reported
            continue
        return RootCA.from_pem(pem)
    raise JoinError(str(mismatch))


async def join(
    address: str, token: str, identity: NodeIdentity, request: ca_pb2.IssueNodeCertificateRequest
) -> Joined:
    """Steps 1 and 2; the caller saves the identity. Errors carry Docker's words."""
    try:
        parsed = tokens.parse_token(token)
    except tokens.InvalidJoinTokenError as err:
        raise JoinError(str(err)) from err
    root = await fetch_root_ca(address, parsed)
    request.token = token
    request.csr_pem = identity.csr_pem
    creds = anonymous_client_credentials(root.cert_pem)
    async with grpc.aio.secure_channel(address, creds, channel_options()) as channel:
        try:
            response: ca_pb2.IssueNodeCertificateResponse = await ca_pb2_grpc.NodeCAStub(
                channel
            ).IssueNodeCertificate(request, timeout=30.0)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            status = 400 if code == grpc.StatusCode.INVALID_ARGUMENT else 500
            name = "".join(part.capitalize() for part in code.name.split("_"))
            raise JoinError(f"rpc error: code = {name} desc = {err.details()}", status) from err
    issued = identity.with_certificate(response.certificate_pem, root)
    return Joined(issued, root, response.role, response.cluster_id, response.data_path_port)


async def renew(address: str, identity: NodeIdentity, root: RootCA) -> Joined:
    """A new key and a certificate for the role the swarm now records for this node (after a
    promotion or demotion), asked over mutual TLS with the certificate it holds."""
    fresh = NodeIdentity.create(identity.node_id)
    creds = channel_credentials(identity, root)
    async with grpc.aio.secure_channel(address, creds, channel_options()) as channel:
        try:
            response: ca_pb2.IssueNodeCertificateResponse = await ca_pb2_grpc.NodeCAStub(
                channel
            ).RenewNodeCertificate(
                ca_pb2.RenewNodeCertificateRequest(csr_pem=fresh.csr_pem), timeout=30.0
            )
        except grpc.aio.AioRpcError as err:
            raise JoinError(
                f"could not renew the certificate through {address}: {err.details()}"
            ) from err
    renewed = fresh.with_certificate(response.certificate_pem, root)
    return Joined(renewed, root, response.role, response.cluster_id, response.data_path_port)
