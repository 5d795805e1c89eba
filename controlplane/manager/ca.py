"""The cluster root CA and node identities: what makes every 2377 connection mutual TLS.

Modelled on moby/swarmkit `ca/` (read, not copied): the root is a self-signed ECDSA P-256
certificate with CN "swarm-ca" valid 20 years; a node makes its own key and a CSR, and the CA
signs it with a subject it chooses itself (CN = node id, OU = role, O = cluster id), valid 90
days and backdated one hour against clock skew, with the role and node id as DNS names (plus
"swarm-ca" for managers) so clients can name the server they expect by role. Servers authorize
callers by the OU of the verified peer certificate, as swarmkit's `AuthorizeOrgAndRole`.

Everything here is pure library code: no sockets, only `grpc` credential objects; the node
process wires it in.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, NamedTuple

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.durable import write_atomic
from controlplane.manager.cluster import NODE_CERT_VALIDITY as NODE_CERT_VALIDITY
from controlplane.manager.roles import CA_ROLE as CA_ROLE
from controlplane.manager.roles import MANAGER_ROLE as MANAGER_ROLE
from controlplane.manager.roles import WORKER_ROLE as WORKER_ROLE

ROOT_CN: Final = "swarm-ca"
ROLES: Final = (MANAGER_ROLE, WORKER_ROLE)
# Certificates of the public "anonymous" CA (see `anonymous_client_credentials`) carry this OU:
# never a member's role.
ANONYMOUS_ROLE: Final = "swarm-anonymous"
ANONYMOUS_CN: Final = "swarmlab-anonymous-ca"

# swarmkit ca/certificates.go: RootCAExpiration "630720000s", DefaultNodeCertExpiration 2160h,
# CertBackdate 1h.
ROOT_CA_VALIDITY: Final = timedelta(seconds=630_720_000)
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
CERT_BACKDATE: Final = timedelta(hours=1)

# File names as swarmkit's (ca/config.go), in the node's certificates directory.
ROOT_CERT_FILE: Final = "swarm-root-ca.crt"
NODE_CERT_FILE: Final = "swarm-node.crt"
NODE_KEY_FILE: Final = "swarm-node.key"


class CAError(Exception):
    """Base of every CA failure; `str()` names what was wrong and what to do."""


class CertificateError(CAError):
    """A certificate, key or CSR is unusable: bad encoding, wrong issuer, expired, ..."""


class PermissionDeniedError(CAError):
    """A verified peer lacks the role (or cluster) a service requires."""


class IdentityStoreError(CAError):
    """A node's identity directory is missing a file or holds a damaged one."""


class NodeInfo(NamedTuple):
    """What a node certificate asserts, once verified."""

    node_id: str
    role: str
    cluster_id: str


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_cert(pem: bytes | str, what: str) -> x509.Certificate:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"{what} is not a PEM X.509 certificate: {exc}") from exc


def _load_key(pem: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{what} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{what} is not an ECDSA key (swarm keys are ECDSA P-256)")
    return key


def _first(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return ""
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def cert_pem(cert: x509.Certificate) -> bytes:
    """Canonical PEM: the exact bytes served to joiners and hashed into join tokens."""
    return cert.public_bytes(serialization.Encoding.PEM)


def _self_signed(
    key: ec.EllipticCurvePrivateKey, common_name: str, start: datetime, end: datetime
) -> x509.Certificate:
    """A CA certificate for `key`, allowed to sign certificates and nothing else."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True, slots=True)
class RootCA:
    """The cluster's trust anchor; `key` is None on nodes that only verify (workers)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | None = None

    @classmethod
    def create(cls, *, now: datetime | None = None) -> RootCA:
        """A new self-signed root, as `swarm init` makes (swarmkit `CreateRootCA`)."""
        key = _new_key()
        start = _now(now) - CERT_BACKDATE
        return cls(
            cert=_self_signed(key, ROOT_CN, start, start + CERT_BACKDATE + ROOT_CA_VALIDITY),
            key=key,
        )

    @classmethod
    def from_pem(cls, root_cert_pem: bytes | str, key_pem: bytes | None = None) -> RootCA:
        """Load a root, refusing anything that is not a self-signed CA (or a key of another)."""
        cert = _load_cert(root_cert_pem, "the root CA certificate")
        try:
            cert.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CertificateError(
                "the root CA certificate is not self-signed; a swarm root must be"
            ) from exc
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise CertificateError("the root CA certificate is not marked as a CA")
        key = None
        if key_pem is not None:
            key = _load_key(key_pem, "the root CA key")
            if not _same_key(cert, key):
                raise CertificateError("the root CA key does not belong to the root certificate")
        return cls(cert=cert, key=key)

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    def key_pem(self) -> bytes:
        """The signing key in PKCS#8 PEM, for the managers' replicated state."""
        if self.key is None:
            raise CAError("this root CA has no signing key (only managers hold it)")
        return _key_pem(self.key)

    def issue(
        self,
        csr_pem: bytes | str,
        node_id: str,
        role: str,
        cluster_id: str,
        *,
        now: datetime | None = None,
        validity: timedelta = NODE_CERT_VALIDITY,
    ) -> bytes:
        """Sign a node's CSR; the CA, not the CSR, decides the subject, so a joiner cannot
        claim a role or an id (swarmkit `PrepareCSR`)."""
        if self.key is None:
            raise CAError("this root CA has no signing key; only a manager can issue certificates")
        if role not in (*ROLES, ANONYMOUS_ROLE):
            raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
        if not node_id or not cluster_id:
            raise ValueError("a node certificate needs a node id and a cluster id")
        if validity <= timedelta(0):
            raise ValueError(f"certificate validity must be positive, got {validity}")
        data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(data)
        except ValueError as exc:
            raise CertificateError(f"the certificate request is not a PEM CSR: {exc}") from exc
        if not csr.is_signature_valid:
            raise CertificateError("the certificate request's signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CertificateError("the certificate request's key is not ECDSA")
        start = _now(now) - CERT_BACKDATE
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            ]
        )
        dns = [role, node_id] + ([CA_ROLE] if role == MANAGER_ROLE else [])
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + CERT_BACKDATE + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in dns]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert_pem(cert)


def node_info(cert: x509.Certificate) -> NodeInfo:
    """Read the subject a swarm CA wrote; no trust decision is made here."""
    node_id = _first(cert.subject, NameOID.COMMON_NAME)
    role = _first(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    cluster_id = _first(cert.subject, NameOID.ORGANIZATION_NAME)
    if not node_id or not cluster_id or role not in ROLES:
        raise CertificateError(
            f"certificate subject {cert.subject.rfc4514_string()!r} is not a swarm node's "
            "(needs CN=<node id>, OU=swarm-manager|swarm-worker, O=<cluster id>)"
        )
    return NodeInfo(node_id, role, cluster_id)


def verify_node_cert(
    cert: bytes | str | x509.Certificate, root: RootCA, *, now: datetime | None = None
) -> NodeInfo:
    """Check a node certificate was signed by this root and is valid now; return its claims."""
    parsed = cert if isinstance(cert, x509.Certificate) else _load_cert(cert, "node certificate")
    try:
        parsed.verify_directly_issued_by(root.cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(
            f"the certificate of {parsed.subject.rfc4514_string()!r} was not issued by this "
            "swarm's root CA; the node belongs to another swarm (leave it and join again)"
        ) from exc
    moment = _now(now)
    if moment < parsed.not_valid_before_utc:
        raise CertificateError(
            f"the node certificate is not valid before {_when(parsed.not_valid_before_utc)}; "
            "check this machine's clock"
        )
    if moment > parsed.not_valid_after_utc:
        raise CertificateError(
            f"the node certificate expired at {_when(parsed.not_valid_after_utc)}; "
            "the node must be issued a new one (rejoin the swarm)"
        )
    return node_info(parsed)


def require_role(
    peer_cert: bytes | str | x509.Certificate | None,
    *roles: str,
    cluster_id: str | None = None,
) -> NodeInfo:
    """Authorize a caller whose certificate TLS already verified: its OU must be one of
    `roles` (and its O the cluster, when given). Wording as swarmkit's `AuthorizeOrgAndRole`."""
    if not roles:
        raise ValueError("require_role needs at least one role")
    if peer_cert is None:
        raise PermissionDeniedError("Permission denied: the caller presented no certificate")
    cert = (
        peer_cert
        if isinstance(peer_cert, x509.Certificate)
        else _load_cert(peer_cert, "peer certificate")
    )
    ous = [
        a.value if isinstance(a.value, str) else a.value.decode()
        for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    ]
    if not set(ous) & set(roles):
        raise PermissionDeniedError(
            f"Permission denied: remote certificate not part of OUs: [{' '.join(roles)}]"
        )
    info = node_info(cert)
    if cluster_id is not None and info.cluster_id != cluster_id:
        raise PermissionDeniedError(
            f"Permission denied: remote certificate not part of organization: {cluster_id}"
        )
    return info


def peer_certificate(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    """The verified client certificate (PEM) of a gRPC call over mutual TLS, if any."""
    certs = list(context.auth_context().get("x509_pem_cert", ()))
    return certs[0] if certs else None


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node's own key, the CSR it sends when joining, and (once issued) its certificate."""

    node_id: str
    key: ec.EllipticCurvePrivateKey
    csr_pem: bytes
    cert_pem: bytes | None = None

    @classmethod
    def create(cls, node_id: str) -> NodeIdentity:
        """A fresh key and CSR; the key never leaves the node, only the CSR does."""
        return cls._from_key(node_id, _new_key())

    @classmethod
    def _from_key(cls, node_id: str, key: ec.EllipticCurvePrivateKey) -> NodeIdentity:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .sign(key, hashes.SHA256())
        )
        return cls(node_id=node_id, key=key, csr_pem=csr.public_bytes(serialization.Encoding.PEM))

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def with_certificate(self, cert: bytes | str, root: RootCA) -> NodeIdentity:
        """Accept a certificate issued for this key by `root` (refusing anything else)."""
        parsed = _load_cert(cert, "the issued node certificate")
        info = verify_node_cert(parsed, root)
        if not _same_key(parsed, self.key):
            raise CertificateError("the issued certificate is not for this node's key")
        return NodeIdentity(
            node_id=info.node_id, key=self.key, csr_pem=self.csr_pem, cert_pem=cert_pem(parsed)
        )

    def require_cert(self) -> bytes:
        if self.cert_pem is None:
            raise CAError(f"node {self.node_id} has no certificate yet; it must join a swarm")
        return self.cert_pem

    def info(self) -> NodeInfo:
        return node_info(_load_cert(self.require_cert(), "node certificate"))


def server_credentials(identity: NodeIdentity, root: RootCA) -> grpc.ServerCredentials:
    """Server side of 2377: present our certificate followed by the root (so a joiner can
    read the root from the handshake and check it against its token's digest), verify a
    client certificate against the swarm root when one is given, and admit clients without
    one: joiners have none until the CA issues it. Python's gRPC cannot ask for a client
    certificate without requiring one, so a client without a certificate presents one of the
    public anonymous CA (`anonymous_client_credentials`): the handshake admits it and
    `authz.RoleInterceptor` treats it as no certificate at all (public services only)."""
    return grpc.ssl_server_credentials(
        [(identity.key_pem, identity.require_cert() + root.cert_pem)],
        root_certificates=root.cert_pem + anonymous_ca().cert_pem,
        require_client_auth=True,
    )


def channel_credentials(identity: NodeIdentity, root: RootCA) -> grpc.ChannelCredentials:
    """Client side of 2377: trust only the swarm root and present our own certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=root.cert_pem,
        private_key=identity.key_pem,
        certificate_chain=identity.require_cert(),
    )


# Anyone can derive this key: it proves nothing, which is the point. It only lets a client
# that has no certificate yet (a joiner) through a handshake that requires one.
_ANONYMOUS_SEED: Final = b"swarmlab anonymous client CA, v1"
_ANONYMOUS_EPOCH: Final = datetime(2020, 1, 1, tzinfo=UTC)


@functools.cache
def anonymous_ca() -> RootCA:
    """The public CA of anonymous clients, identical (but for signature bytes) everywhere."""
    secret = int.from_bytes(hashlib.sha256(_ANONYMOUS_SEED).digest(), "big")
    key = ec.derive_private_key(secret % (_P256_ORDER - 1) + 1, ec.SECP256R1())
    end = _ANONYMOUS_EPOCH + ROOT_CA_VALIDITY * 4
    return RootCA(cert=_self_signed(key, ANONYMOUS_CN, _ANONYMOUS_EPOCH, end), key=key)


@functools.cache
def anonymous_client() -> NodeIdentity:
    identity = NodeIdentity.create("anonymous")
    cert = anonymous_ca().issue(identity.csr_pem, "anonymous", ANONYMOUS_ROLE, "none")
    return NodeIdentity("anonymous", identity.key, identity.csr_pem, cert)


def anonymous_client_credentials(root_pem: bytes) -> grpc.ChannelCredentials:
    """Client side of 2377 for a node that has no certificate yet: trust `root_pem` (checked
    against the join token first) and present an anonymous certificate."""
    client = anonymous_client()
    return grpc.ssl_channel_credentials(
        root_certificates=root_pem,
        private_key=client.key_pem,
        certificate_chain=client.require_cert(),
    )


def channel_options(server_name: str = MANAGER_ROLE) -> list[tuple[str, str]]:
    """Channel options that check the server by role (a DNS name in every manager's
    certificate) rather than by address, which node certificates do not carry."""
    return [("grpc.ssl_target_name_override", server_name)]


# --- persistence -------------------------------------------------------------------------------


def save_identity(directory: str | Path, identity: NodeIdentity, root: RootCA) -> None:
    """Persist key (0600), certificate and root certificate under swarmkit's file names.
    Each file is replaced atomically; a crash between two files leaves a key that does not
    match the certificate, which `load_identity` reports instead of using."""
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path / ROOT_CERT_FILE, root.cert_pem, 0o644)
    write_atomic(path / NODE_CERT_FILE, identity.require_cert(), 0o644)
    write_atomic(path / NODE_KEY_FILE, identity.key_pem, 0o600)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IdentityStoreError(
            f"{path} is missing; this node has no complete swarm identity "
            "(join a swarm, or restore the directory from a backup)"
        ) from None
    except OSError as exc:
        raise IdentityStoreError(f"cannot read {path}: {exc.strerror}") from exc


def load_identity(
    directory: str | Path, *, now: datetime | None = None
) -> tuple[NodeIdentity, RootCA]:
    """Load and cross-check a saved identity: the key must match the certificate and the
    certificate must chain to the saved root and be valid now."""
    path = Path(directory)
    damaged = "; remove the directory and join the swarm again"
    root_file, cert_file, key_file = (
        path / ROOT_CERT_FILE,
        path / NODE_CERT_FILE,
        path / NODE_KEY_FILE,
    )
    try:
        root = RootCA.from_pem(_read(root_file))
    except CertificateError as exc:
        raise IdentityStoreError(f"{root_file} is damaged: {exc}{damaged}") from exc
    try:
        cert = _load_cert(_read(cert_file), "the node certificate")
    except CertificateError as exc:
        raise IdentityStoreError(f"{cert_file} is damaged: {exc}{damaged}") from exc
    try:
        key = _load_key(_read(key_file), "the node key")
    except CertificateError as exc:
        raise IdentityStoreError(f"{key_file} is damaged: {exc}{damaged}") from exc
    if not _same_key(cert, key):
        raise IdentityStoreError(f"{key_file} does not belong to {cert_file}{damaged}")
    try:
        info = verify_node_cert(cert, root, now=now)
    except CertificateError as exc:
        raise IdentityStoreError(f"{cert_file}: {exc}") from exc
    identity = NodeIdentity._from_key(info.node_id, key)
    return (
        NodeIdentity(
            node_id=info.node_id, key=key, csr_pem=identity.csr_pem, cert_pem=cert_pem(cert)
        ),
        root,
    )
