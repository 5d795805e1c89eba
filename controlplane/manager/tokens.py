"""Swarm join tokens: `SWMTKN-1-<root CA digest>-<secret>`, byte for byte in Swarm's format.

The format follows moby/swarmkit `ca/config.go` (`GenerateJoinToken`, `ParseJoinToken`,
`generatedSecretEntropyBytes`, `base36DigestLen`, `maxGeneratedSecretLength`):

- version 1 tokens have four dash-separated parts: `SWMTKN`, `1`, the digest, the secret
  (version 2, `SWMTKN-2-<0|1 FIPS>-...`, is accepted by the parser as swarmkit does; we never
  generate it);
- the digest is the SHA-256 of the root CA certificate bundle *as served to joiners* (swarmkit
  hashes the PEM bytes it returns from `GetRootCACertificate`, see `NewRootCA` and `GetRemoteCA`
  in `ca/certificates.go`), written in base 36 and zero-padded on the left to 50 characters
  (ceil(log36(2**256)));
- the secret is 16 random bytes (128 bits) written in base 36 (`0-9a-z`) and zero-padded on the
  left to 25 characters (ceil(log36(2**128))).

Who checks what, as in Swarm: the joiner parses the token ("invalid join token" when it is
malformed) and refuses a manager whose root CA does not hash to the token's digest *before*
trusting it; the manager compares the whole token, in constant time, with its current worker
and manager tokens ("A valid join token is necessary to join this cluster" otherwise), so a
token of a rotated-away secret stops working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from typing import Final

from controlplane.ids import to_base36
from controlplane.manager.roles import MANAGER_ROLE, WORKER_ROLE

PREFIX: Final = "SWMTKN"
VERSION: Final = 1
DIGEST_LEN: Final = 50
SECRET_LEN: Final = 25
SECRET_ENTROPY_BYTES: Final = 16

# Docker's own words (swarmkit `errInvalidJoinToken` and `ca/server.go` IssueNodeCertificate).
INVALID_TOKEN_MESSAGE: Final = "invalid join token"
REFUSED_TOKEN_MESSAGE: Final = "A valid join token is necessary to join this cluster"
ROOT_CA_MISMATCH_MESSAGE: Final = (
    "the manager's root CA does not match the digest in the join token"
)

# Go's big.Int.SetString(s, 36) accepts both cases; Python's int() would also take "_", "+" and
# surrounding spaces, which Go refuses, hence the explicit pattern.
_BASE36 = re.compile(r"[0-9A-Za-z]+")


class JoinTokenError(Exception):
    """Base of every join token failure; `str()` is the message a user sees."""


class InvalidJoinTokenError(JoinTokenError):
    """The token is not in Swarm's shape; raised by the joiner before any network traffic."""

    def __init__(self) -> None:
        super().__init__(INVALID_TOKEN_MESSAGE)


class JoinTokenRefusedError(JoinTokenError):
    """The manager knows no such token (wrong, of another cluster, or rotated away)."""

    def __init__(self) -> None:
        super().__init__(REFUSED_TOKEN_MESSAGE)


class RootCAMismatchError(JoinTokenError):
    """The manager presented a root CA other than the one the token pins: never trust it."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            f"{ROOT_CA_MISMATCH_MESSAGE} (token pins sha256:{expected}, the manager presented "
            f"sha256:{actual}); check that the token and the manager address belong to the "
            "same swarm"
        )
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A syntactically valid token; `ca_digest` is the 64-character hex SHA-256."""

    version: int
    ca_digest: str
    secret: str
    fips: bool = False


def root_ca_digest(root_ca_pem: bytes) -> str:
    """The hex SHA-256 a token pins: over the exact root CA bytes the manager serves."""
    return hashlib.sha256(root_ca_pem).hexdigest()


def _check_role(role: str) -> None:
    if role not in (MANAGER_ROLE, WORKER_ROLE):
        raise ValueError(f"unknown role {role!r}: expected {MANAGER_ROLE!r} or {WORKER_ROLE!r}")


def _token_for_digest(digest_hex: str) -> str:
    secret = to_base36(int.from_bytes(secrets.token_bytes(SECRET_ENTROPY_BYTES)), SECRET_LEN)
    return f"{PREFIX}-{VERSION}-{to_base36(int(digest_hex, 16), DIGEST_LEN)}-{secret}"


def generate_token(root_ca_pem: bytes, role: str) -> str:
    """A fresh v1 token pinning this root CA; the role is not encoded (as in Swarm), the
    manager tells roles apart by which of its two tokens matches."""
    _check_role(role)
    return _token_for_digest(root_ca_digest(root_ca_pem))


def parse_token(text: str) -> ParsedToken:
    """Parse as swarmkit's `ParseJoinToken` does; any bad shape is "invalid join token"."""
    parts = text.split("-")
    if len(parts) < 4 or parts[0] != PREFIX:
        raise InvalidJoinTokenError()
    fips = False
    if parts[1] == "1":
        if len(parts) != 4:
            raise InvalidJoinTokenError()
        version = 1
    elif parts[1] == "2":
        if len(parts) != 5 or parts[2] not in ("0", "1"):
            raise InvalidJoinTokenError()
        version, fips = 2, parts[2] == "1"
    else:
        raise InvalidJoinTokenError()
    digest36, secret = parts[-2], parts[-1]
    if len(digest36) != DIGEST_LEN or len(secret) != SECRET_LEN:
        raise InvalidJoinTokenError()
    if not _BASE36.fullmatch(digest36):
        raise InvalidJoinTokenError()
    value = int(digest36, 36)
    if value >= 1 << 256:  # 50 base-36 digits can exceed 256 bits; no SHA-256 looks like that
        raise InvalidJoinTokenError()
    return ParsedToken(version=version, ca_digest=f"{value:064x}", secret=secret, fips=fips)


def check_root_ca(token: str | ParsedToken, root_ca_pem: bytes) -> ParsedToken:
    """The joiner's check before it trusts a manager: the served root CA must hash to the
    token's digest, or the manager may be an impostor."""
    parsed = parse_token(token) if isinstance(token, str) else token
    actual = root_ca_digest(root_ca_pem)
    if not hmac.compare_digest(parsed.ca_digest, actual):
        raise RootCAMismatchError(parsed.ca_digest, actual)
    return parsed


@dataclass(frozen=True, slots=True)
class JoinTokens:
    """The cluster's current worker and manager tokens (immutable, so a value replicated
    through Raft); rotation returns a new value and the old token no longer matches."""

    worker: str
    manager: str

    @classmethod
    def create(cls, root_ca_pem: bytes) -> JoinTokens:
        return cls(
            worker=generate_token(root_ca_pem, WORKER_ROLE),
            manager=generate_token(root_ca_pem, MANAGER_ROLE),
        )

    def token(self, role: str) -> str:
        _check_role(role)
        return self.manager if role == MANAGER_ROLE else self.worker

    def rotate(self, role: str) -> JoinTokens:
        """`docker swarm join-token --rotate <role>`: a new secret, same CA digest."""
        _check_role(role)
        digest = parse_token(self.token(role)).ca_digest
        if role == MANAGER_ROLE:
            return replace(self, manager=_token_for_digest(digest))
        return replace(self, worker=_token_for_digest(digest))

    def role_for(self, token: str) -> str:
        """The role a joining node gets, compared in constant time over the whole token as
        swarmkit's CA server does; anything else is Docker's "A valid join token..." refusal."""
        given = token.encode()
        if hmac.compare_digest(self.manager.encode(), given):
            return MANAGER_ROLE
        if hmac.compare_digest(self.worker.encode(), given):
            return WORKER_ROLE
        raise JoinTokenRefusedError()
