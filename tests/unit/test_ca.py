"""Swarm join tokens and the cluster CA: token format and errors in Docker's words, node
certificates, authorization by role, identity persistence, and mutual TLS over real gRPC."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.api.spec import shared_path
from controlplane.manager.authz import RoleInterceptor, caller_node_id
from controlplane.manager.ca import (
    MANAGER_ROLE,
    NODE_CERT_FILE,
    NODE_KEY_FILE,
    ROOT_CERT_FILE,
    WORKER_ROLE,
    CAError,
    CertificateError,
    IdentityStoreError,
    NodeIdentity,
    NodeInfo,
    PermissionDeniedError,
    RootCA,
    anonymous_ca,
    anonymous_client_credentials,
    channel_credentials,
    channel_options,
    load_identity,
    require_role,
    save_identity,
    server_credentials,
    verify_node_cert,
)
from controlplane.manager.tokens import (
    InvalidJoinTokenError,
    JoinTokenRefusedError,
    JoinTokens,
    ParsedToken,
    RootCAMismatchError,
    check_root_ca,
    generate_token,
    parse_token,
    root_ca_digest,
)

TRANSCRIPTS = shared_path("reference/real-swarm/api-transcripts")
# A token a real Docker 20.10 swarm printed (swarm-join-worker-cli28.json).
REAL_TOKEN = "SWMTKN-1-57lsnkz5z51twys0v3pfvpw0h6lrz4a48l5fyv50fyka0u7pfo-allpgxk91brp0ssthtf9qv2ql"
TOKEN_RE = re.compile(r"SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}")
CLUSTER = "cluster-7f3a"
LAB_ADDR = "127.77.202.1"


@pytest.fixture(scope="module")
def root() -> RootCA:
    return RootCA.create()


@pytest.fixture(scope="module")
def other_root() -> RootCA:
    return RootCA.create()


def issued(root: RootCA, node_id: str, role: str, **kwargs: Any) -> NodeIdentity:
    identity = NodeIdentity.create(node_id)
    cert = root.issue(identity.csr_pem, node_id, role, CLUSTER, **kwargs)
    return NodeIdentity(identity.node_id, identity.key, identity.csr_pem, cert)


def to_base36(value: int) -> str:
    out = ""
    while value:
        value, digit = divmod(value, 36)
        out = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + out
    return out


# --- tokens: format --------------------------------------------------------------------------


def test_token_round_trip(root: RootCA) -> None:
    token = generate_token(root.cert_pem, WORKER_ROLE)
    parsed = parse_token(token)
    assert parsed == ParsedToken(
        version=1,
        ca_digest=hashlib.sha256(root.cert_pem).hexdigest(),
        secret=token.rsplit("-", 1)[1],
        fips=False,
    )
    assert parsed.ca_digest == root_ca_digest(root.cert_pem)


def test_token_has_swarms_exact_shape(root: RootCA) -> None:
    for role in (WORKER_ROLE, MANAGER_ROLE):
        token = generate_token(root.cert_pem, role)
        assert TOKEN_RE.fullmatch(token), token
        assert len(token) == len("SWMTKN-1-") + 50 + 1 + 25 == 85
        assert token.startswith("SWMTKN-1-")
        _, _, digest36, secret = token.split("-")
        # The digest part is the SHA-256 of the served root PEM, in base 36, left-padded with 0.
        sha = hashlib.sha256(root.cert_pem).digest()
        assert digest36 == to_base36(int.from_bytes(sha)).rjust(50, "0")
        assert int(secret, 36) < 2**128  # 16 bytes of entropy, as swarmkit


def test_tokens_differ_every_time(root: RootCA) -> None:
    secrets = {generate_token(root.cert_pem, WORKER_ROLE).rsplit("-", 1)[1] for _ in range(50)}
    assert len(secrets) == 50


@pytest.mark.parametrize(
    ("entropy", "secret"),
    [
        (b"\x00" * 15 + b"\x01", "0" * 24 + "1"),
        (b"\x00" * 16, "0" * 25),
        (b"\xff" * 16, to_base36(2**128 - 1)),
    ],
)
def test_secret_is_zero_padded_base36(
    root: RootCA, monkeypatch: pytest.MonkeyPatch, entropy: bytes, secret: str
) -> None:
    monkeypatch.setattr("controlplane.manager.tokens.secrets.token_bytes", lambda n: entropy[:n])
    token = generate_token(root.cert_pem, WORKER_ROLE)
    assert token.rsplit("-", 1)[1] == secret
    assert len(secret) == 25


def test_a_token_from_a_real_swarm_parses() -> None:
    parsed = parse_token(REAL_TOKEN)
    assert parsed.version == 1
    assert parsed.secret == "allpgxk91brp0ssthtf9qv2ql"
    assert len(parsed.ca_digest) == 64
    assert int(parsed.ca_digest, 16) == int(
        "57lsnkz5z51twys0v3pfvpw0h6lrz4a48l5fyv50fyka0u7pfo", 36
    )


def test_version_2_tokens_parse_as_swarmkit_does() -> None:
    body = REAL_TOKEN.removeprefix("SWMTKN-1-")
    assert parse_token(f"SWMTKN-2-1-{body}").fips is True
    parsed = parse_token(f"SWMTKN-2-0-{body}")
    assert (parsed.version, parsed.fips) == (2, False)


def test_generate_refuses_unknown_roles(root: RootCA) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        generate_token(root.cert_pem, "swarm-admin")


# --- tokens: errors in Docker's words ---------------------------------------------------------

DIGEST = "57lsnkz5z51twys0v3pfvpw0h6lrz4a48l5fyv50fyka0u7pfo"
SECRET = "allpgxk91brp0ssthtf9qv2ql"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "SWMTKN-1-garbage",  # what the real CLI was given (bad-swarm-join-malformed-cli28.json)
        "SWMTKN",
        "SWMTKN-1",
        f"swmtkn-1-{DIGEST}-{SECRET}",  # prefix is case-sensitive
        f"SWMTKM-1-{DIGEST}-{SECRET}",
        f"SWMTKN-0-{DIGEST}-{SECRET}",  # unknown version
        f"SWMTKN-3-{DIGEST}-{SECRET}",
        f"SWMTKN-1-0-{DIGEST}-{SECRET}",  # version 1 has four parts
        f"SWMTKN-2-{DIGEST}-{SECRET}",  # version 2 has five
        f"SWMTKN-2-x-{DIGEST}-{SECRET}",  # FIPS flag must be 0 or 1
        f"SWMTKN-1-{DIGEST[:-1]}-{SECRET}",  # digest one short
        f"SWMTKN-1-{DIGEST}0-{SECRET}",  # digest one long
        f"SWMTKN-1-{DIGEST}-{SECRET[:-1]}",  # secret one short
        f"SWMTKN-1-{DIGEST}-{SECRET}0",  # secret one long
        f"SWMTKN-1-{DIGEST}-{SECRET}\n",  # pasted with its newline
        f"SWMTKN-1-{DIGEST}-",
        f"SWMTKN-1--{SECRET}",
        f"SWMTKN-1-{DIGEST[:-1]}_-{SECRET}",  # int(..., 36) would accept "_", Go does not
        f"SWMTKN-1-+{DIGEST[1:]}-{SECRET}",
        f"SWMTKN-1- {DIGEST[1:]}-{SECRET}",
        f"SWMTKN-1-{DIGEST[:-1]}é-{SECRET}",
        f"SWMTKN-1-{'z' * 50}-{SECRET}",  # more than 256 bits: no SHA-256 digest
        f" SWMTKN-1-{DIGEST}-{SECRET}",
    ],
)
def test_malformed_tokens_are_invalid_join_token(token: str) -> None:
    with pytest.raises(InvalidJoinTokenError) as err:
        parse_token(token)
    assert str(err.value) == "invalid join token"


def load_transcript(name: str) -> dict[str, Any]:
    path = TRANSCRIPTS / name
    if not path.exists():
        pytest.skip(f"the real-swarm transcripts are not at {TRANSCRIPTS}")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def test_malformed_message_is_dockers() -> None:
    transcript = load_transcript("bad-swarm-join-malformed-cli28.json")
    token = transcript["exchanges"][-1]["request_body"]["JoinToken"]
    with pytest.raises(InvalidJoinTokenError) as err:
        parse_token(token)
    assert transcript["exchanges"][-1]["response_body"] == {"message": str(err.value)}


def test_wrong_secret_is_refused_in_dockers_words(root: RootCA) -> None:
    transcript = load_transcript("bad-swarm-join-wrong-secret-cli28.json")
    docker_message = transcript["exchanges"][-1]["response_body"]["message"]
    tokens = JoinTokens.create(root.cert_pem)
    digest36 = tokens.worker.split("-")[2]
    wrong = f"SWMTKN-1-{digest36}-{'a' * 25}"  # well-formed, this cluster's CA, no such secret
    parse_token(wrong)
    with pytest.raises(JoinTokenRefusedError) as err:
        tokens.role_for(wrong)
    assert docker_message.endswith(str(err.value))
    assert str(err.value) == "A valid join token is necessary to join this cluster"


def test_manager_refuses_tokens_of_another_cluster_and_garbage(
    root: RootCA, other_root: RootCA
) -> None:
    tokens = JoinTokens.create(root.cert_pem)
    other = JoinTokens.create(other_root.cert_pem)
    for token in (other.worker, other.manager, "SWMTKN-1-garbage", ""):
        with pytest.raises(JoinTokenRefusedError):
            tokens.role_for(token)


def test_roles_come_from_which_token_matches(root: RootCA) -> None:
    tokens = JoinTokens.create(root.cert_pem)
    assert tokens.role_for(tokens.worker) == WORKER_ROLE
    assert tokens.role_for(tokens.manager) == MANAGER_ROLE
    assert tokens.token(WORKER_ROLE) == tokens.worker
    assert tokens.token(MANAGER_ROLE) == tokens.manager
    assert tokens.worker != tokens.manager
    # Same CA digest in both; only the secret tells the roles apart.
    assert parse_token(tokens.worker).ca_digest == parse_token(tokens.manager).ca_digest


def test_joiner_refuses_a_manager_whose_root_ca_does_not_match(
    root: RootCA, other_root: RootCA
) -> None:
    token = generate_token(root.cert_pem, WORKER_ROLE)
    assert check_root_ca(token, root.cert_pem) == parse_token(token)
    with pytest.raises(RootCAMismatchError) as err:
        check_root_ca(token, other_root.cert_pem)
    message = str(err.value)
    assert message.startswith("the manager's root CA does not match the digest in the join token")
    assert root_ca_digest(root.cert_pem) in message
    assert root_ca_digest(other_root.cert_pem) in message
    # A single changed byte of the served root (e.g. trailing whitespace) is a mismatch too.
    with pytest.raises(RootCAMismatchError):
        check_root_ca(parse_token(token), root.cert_pem + b"\n")
    with pytest.raises(InvalidJoinTokenError):
        check_root_ca("SWMTKN-1-garbage", root.cert_pem)


def test_rotation_replaces_one_roles_secret(root: RootCA) -> None:
    tokens = JoinTokens.create(root.cert_pem)
    rotated = tokens.rotate(WORKER_ROLE)
    assert rotated.manager == tokens.manager
    assert rotated.worker != tokens.worker
    assert TOKEN_RE.fullmatch(rotated.worker)
    old, new = parse_token(tokens.worker), parse_token(rotated.worker)
    assert new.ca_digest == old.ca_digest and new.secret != old.secret
    assert rotated.role_for(rotated.worker) == WORKER_ROLE
    with pytest.raises(JoinTokenRefusedError):
        rotated.role_for(tokens.worker)
    assert rotated.role_for(tokens.manager) == MANAGER_ROLE

    again = rotated.rotate(MANAGER_ROLE)
    assert again.worker == rotated.worker
    with pytest.raises(JoinTokenRefusedError):
        again.role_for(tokens.manager)
    assert again.role_for(again.manager) == MANAGER_ROLE
    with pytest.raises(ValueError):
        tokens.rotate("swarm-ca")


# --- CA: root and node certificates -----------------------------------------------------------


def test_root_ca_is_swarms(root: RootCA) -> None:
    cert = root.cert
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "swarm-ca"
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert span == timedelta(seconds=630_720_000) + timedelta(hours=1)  # 20 years + backdate
    cert.verify_directly_issued_by(cert)
    assert RootCA.from_pem(root.cert_pem).cert == cert
    assert RootCA.from_pem(root.cert_pem, root.key_pem()).key is not None


@pytest.mark.parametrize("role", [MANAGER_ROLE, WORKER_ROLE])
def test_issue_and_verify_node_certificates(root: RootCA, role: str) -> None:
    identity = NodeIdentity.create("node-abc")
    before = datetime.now(UTC).replace(microsecond=0)
    pem = root.issue(identity.csr_pem, "node-abc", role, CLUSTER)
    assert verify_node_cert(pem, root) == NodeInfo("node-abc", role, CLUSTER)
    node_id, got_role, cluster = verify_node_cert(pem, root)
    assert (node_id, got_role, cluster) == ("node-abc", role, CLUSTER)

    cert = x509.load_pem_x509_certificate(pem)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-abc"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == CLUSTER
    assert cert.issuer == root.cert.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    expected = [role, "node-abc"] + (["swarm-ca"] if role == MANAGER_ROLE else [])
    assert sans.get_values_for_type(x509.DNSName) == expected
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # 90 days (swarmkit's 2160h), backdated one hour against clock skew.
    assert cert.not_valid_before_utc >= before - timedelta(hours=1, seconds=1)
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert span == timedelta(hours=2160 + 1)
    assert identity.with_certificate(pem, root).info() == NodeInfo("node-abc", role, CLUSTER)


def test_the_ca_not_the_csr_decides_the_subject(root: RootCA) -> None:
    sneaky = NodeIdentity.create("I-am-a-manager")
    pem = root.issue(sneaky.csr_pem, "assigned-id", WORKER_ROLE, CLUSTER)
    assert verify_node_cert(pem, root) == NodeInfo("assigned-id", WORKER_ROLE, CLUSTER)


def test_a_certificate_from_another_ca_is_refused(root: RootCA, other_root: RootCA) -> None:
    stranger = issued(other_root, "stranger", MANAGER_ROLE)
    with pytest.raises(CertificateError, match="not issued by this swarm's root CA"):
        verify_node_cert(stranger.require_cert(), root)
    with pytest.raises(CertificateError):
        NodeIdentity.create("x").with_certificate(stranger.require_cert(), root)


def test_expired_and_not_yet_valid_certificates_are_refused(root: RootCA) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    old = issued(root, "old-node", WORKER_ROLE, now=past, validity=timedelta(days=1))
    with pytest.raises(CertificateError, match="expired at"):
        verify_node_cert(old.require_cert(), root)
    # It was fine while it lasted.
    assert verify_node_cert(old.require_cert(), root, now=past).node_id == "old-node"
    fresh = issued(root, "fresh", WORKER_ROLE)
    with pytest.raises(CertificateError, match="not valid before"):
        verify_node_cert(fresh.require_cert(), root, now=past)


def test_issue_refuses_bad_requests(root: RootCA) -> None:
    csr = NodeIdentity.create("n").csr_pem
    with pytest.raises(CertificateError, match="not a PEM CSR"):
        root.issue(b"garbage", "n", WORKER_ROLE, CLUSTER)
    with pytest.raises(ValueError, match="unknown role"):
        root.issue(csr, "n", "swarm-admin", CLUSTER)
    with pytest.raises(ValueError):
        root.issue(csr, "", WORKER_ROLE, CLUSTER)
    with pytest.raises(ValueError):
        root.issue(csr, "n", WORKER_ROLE, CLUSTER, validity=timedelta(0))
    verify_only = RootCA.from_pem(root.cert_pem)
    with pytest.raises(CAError, match="no signing key"):
        verify_only.issue(csr, "n", WORKER_ROLE, CLUSTER)
    # A CSR whose signature does not cover its content (one byte of the DER flipped).
    req = x509.load_pem_x509_csr(csr)
    der = bytearray(req.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateError, match="signature"):
        root.issue(tampered, "n", WORKER_ROLE, CLUSTER)


def test_root_loading_refuses_wrong_material(root: RootCA, other_root: RootCA) -> None:
    node = issued(root, "n", MANAGER_ROLE)
    with pytest.raises(CertificateError, match="not self-signed"):
        RootCA.from_pem(node.require_cert())
    with pytest.raises(CertificateError, match="does not belong"):
        RootCA.from_pem(root.cert_pem, other_root.key_pem())
    with pytest.raises(CertificateError, match="not a PEM"):
        RootCA.from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(CAError):
        RootCA.from_pem(root.cert_pem).key_pem()


# --- authorization ---------------------------------------------------------------------------


def test_require_role(root: RootCA) -> None:
    manager = issued(root, "m1", MANAGER_ROLE).require_cert()
    worker = issued(root, "w1", WORKER_ROLE).require_cert()
    assert require_role(manager, MANAGER_ROLE) == NodeInfo("m1", MANAGER_ROLE, CLUSTER)
    assert require_role(worker, WORKER_ROLE, MANAGER_ROLE).role == WORKER_ROLE
    with pytest.raises(PermissionDeniedError) as err:
        require_role(worker, MANAGER_ROLE)
    assert (
        str(err.value) == "Permission denied: remote certificate not part of OUs: [swarm-manager]"
    )
    with pytest.raises(PermissionDeniedError, match="not part of organization: other"):
        require_role(manager, MANAGER_ROLE, cluster_id="other")
    assert require_role(manager, MANAGER_ROLE, cluster_id=CLUSTER).node_id == "m1"
    with pytest.raises(PermissionDeniedError, match="no certificate"):
        require_role(None, MANAGER_ROLE)


# --- persistence ------------------------------------------------------------------------------


def test_identity_save_load_round_trip(root: RootCA, tmp_path: Path) -> None:
    directory = tmp_path / "certificates"
    identity = issued(root, "node-1", WORKER_ROLE)
    save_identity(directory, identity, root)
    loaded, loaded_root = load_identity(directory)
    assert loaded.node_id == "node-1"
    assert loaded.cert_pem == identity.cert_pem
    assert loaded.key_pem == identity.key_pem
    assert loaded_root.cert_pem == root.cert_pem
    assert loaded_root.key is None  # a node's directory never holds the CA's key
    assert loaded.info() == NodeInfo("node-1", WORKER_ROLE, CLUSTER)
    # The regenerated CSR is for the same key, so it can be used to renew.
    renewed = root.issue(loaded.csr_pem, "node-1", WORKER_ROLE, CLUSTER)
    assert loaded.with_certificate(renewed, root).cert_pem == renewed

    assert stat.S_IMODE(os.stat(directory / NODE_KEY_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [NODE_KEY_FILE, NODE_CERT_FILE, ROOT_CERT_FILE]
    )
    # Saving again (a renewal) replaces the files in place.
    save_identity(directory, loaded.with_certificate(renewed, root), root)
    assert load_identity(directory)[0].cert_pem == renewed
    assert len(list(directory.iterdir())) == 3


def test_key_stays_private_under_a_permissive_umask(root: RootCA, tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        save_identity(tmp_path, issued(root, "n", WORKER_ROLE), root)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / NODE_KEY_FILE).st_mode) == 0o600


@pytest.mark.parametrize("name", [ROOT_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE])
def test_missing_files_are_named(root: RootCA, tmp_path: Path, name: str) -> None:
    save_identity(tmp_path, issued(root, "n", WORKER_ROLE), root)
    (tmp_path / name).unlink()
    with pytest.raises(IdentityStoreError, match=f"{name} is missing"):
        load_identity(tmp_path)


@pytest.mark.parametrize("name", [ROOT_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE])
@pytest.mark.parametrize(
    "content", [b"", b"not pem at all", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END"]
)
def test_corrupt_files_are_named(root: RootCA, tmp_path: Path, name: str, content: bytes) -> None:
    save_identity(tmp_path, issued(root, "n", WORKER_ROLE), root)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(IdentityStoreError, match=rf"{name} is damaged.*join the swarm again"):
        load_identity(tmp_path)


def test_mismatched_or_foreign_files_are_refused(
    root: RootCA, other_root: RootCA, tmp_path: Path
) -> None:
    save_identity(tmp_path, issued(root, "n", WORKER_ROLE), root)
    (tmp_path / NODE_KEY_FILE).write_bytes(NodeIdentity.create("x").key_pem)
    with pytest.raises(IdentityStoreError, match="does not belong"):
        load_identity(tmp_path)
    save_identity(tmp_path, issued(root, "n", WORKER_ROLE), root)
    (tmp_path / ROOT_CERT_FILE).write_bytes(other_root.cert_pem)
    with pytest.raises(IdentityStoreError, match="not issued by this swarm's root CA"):
        load_identity(tmp_path)
    past = datetime.now(UTC) - timedelta(days=10)
    save_identity(tmp_path, issued(root, "n", WORKER_ROLE, now=past, validity=timedelta(1)), root)
    with pytest.raises(IdentityStoreError, match="expired"):
        load_identity(tmp_path)


def test_saving_without_a_certificate_is_refused(root: RootCA, tmp_path: Path) -> None:
    with pytest.raises(CAError, match="no certificate yet"):
        save_identity(tmp_path, NodeIdentity.create("n"), root)


# --- mutual TLS over real gRPC ---------------------------------------------------------------

SERVICE = "swarmlab.test.Probe"  # managers and workers
MANAGERS = "swarmlab.test.ManagerProbe"  # managers only
ROLES = {SERVICE: (MANAGER_ROLE, WORKER_ROLE), MANAGERS: (MANAGER_ROLE,)}


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def _who(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return (caller_node_id(context) or "").encode()


def _handlers() -> tuple[grpc.GenericRpcHandler[Any, Any], ...]:
    return (
        grpc.method_handlers_generic_handler(
            SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
        ),
        grpc.method_handlers_generic_handler(
            MANAGERS, {"Who": grpc.unary_unary_rpc_method_handler(_who)}
        ),
    )


async def _call(port: int, creds: grpc.ChannelCredentials, method: str) -> bytes:
    service = MANAGERS if method == "Who" else SERVICE
    async with grpc.aio.secure_channel(f"{LAB_ADDR}:{port}", creds, channel_options()) as channel:
        stub = channel.unary_unary(
            f"/{service}/{method}", request_serializer=None, response_deserializer=None
        )
        result = await stub(b"ping", timeout=5)
        assert isinstance(result, bytes)
        return result


async def _status(port: int, creds: grpc.ChannelCredentials, method: str) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(port, creds, method)
    return err.value.code()


def test_mutual_tls_round_trip_and_refusals(root: RootCA, other_root: RootCA) -> None:
    server_identity = issued(root, "manager-1", MANAGER_ROLE)
    manager = issued(root, "manager-2", MANAGER_ROLE)
    worker = issued(root, "worker-1", WORKER_ROLE)
    stranger = issued(other_root, "stranger", MANAGER_ROLE)

    async def scenario() -> None:
        server = grpc.aio.server(interceptors=[RoleInterceptor(root, CLUSTER, ROLES)])
        server.add_generic_rpc_handlers(_handlers())
        port = server.add_secure_port(f"{LAB_ADDR}:0", server_credentials(server_identity, root))
        assert port > 0
        await server.start()
        try:
            assert await _call(port, channel_credentials(manager, root), "Echo") == b"ping"
            assert await _call(port, channel_credentials(manager, root), "Who") == b"manager-2"
            # A worker is a member (its TLS handshake succeeds) but not a manager.
            assert await _call(port, channel_credentials(worker, root), "Echo") == b"ping"
            code = await _status(port, channel_credentials(worker, root), "Who")
            assert code == grpc.StatusCode.PERMISSION_DENIED
            # A client whose certificate comes from another CA is refused at the handshake,
            # even though it trusts this swarm's root.
            foreign = grpc.ssl_channel_credentials(
                root_certificates=root.cert_pem,
                private_key=stranger.key_pem,
                certificate_chain=stranger.require_cert(),
            )
            assert await _status(port, foreign, "Echo") == grpc.StatusCode.UNAVAILABLE
            # A client with no certificate at all fails the handshake.
            bare = grpc.ssl_channel_credentials(root_certificates=root.cert_pem)
            assert await _status(port, bare, "Echo") == grpc.StatusCode.UNAVAILABLE
            # An anonymous client (a joiner) gets through the handshake, to reach the CA, but
            # the role check refuses it everywhere else...
            anonymous = anonymous_client_credentials(root.cert_pem)
            assert await _status(port, anonymous, "Echo") == grpc.StatusCode.PERMISSION_DENIED
            # ...even with a manager certificate it signed itself with the public key.
            forged = issued(anonymous_ca(), "forger", MANAGER_ROLE)
            forged_creds = grpc.ssl_channel_credentials(
                root_certificates=root.cert_pem,
                private_key=forged.key_pem,
                certificate_chain=forged.require_cert(),
            )
            assert await _status(port, forged_creds, "Echo") == grpc.StatusCode.PERMISSION_DENIED
            # And a client of another swarm does not trust this server.
            other = channel_credentials(stranger, other_root)
            assert await _status(port, other, "Echo") == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(None)

    asyncio.run(scenario())
