"""The gossip keyring: one primary AES-GCM key that seals, older keys that still open.

Swarm rotates the gossip key by distributing a new key to every node, making it primary once
all nodes hold it, then removing the old one; between those steps a node must accept packets
sealed with any installed key, or the cluster would partition during a rotation.

Every key has a short id, the first `KEY_ID_SIZE` bytes of its SHA-256 (the same value
``sha256sum`` prints, so operators can match a key file to a log line). A sealed packet carries
the id of its key so the receiver tries only that key, instead of paying one failed
decryption per installed key for every packet.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SIZES = (16, 24, 32)
"""AES-128, AES-192 and AES-256; Swarm's managers distribute 16-byte keys."""

DEFAULT_KEY_SIZE = 16
KEY_ID_SIZE = 4


def key_id(key: bytes) -> bytes:
    """The id a sealed packet carries to name its key; not secret (a hash of the key)."""
    return hashlib.sha256(key).digest()[:KEY_ID_SIZE]


def generate_key(size: int = DEFAULT_KEY_SIZE) -> bytes:
    """A fresh random key from the OS CSPRNG, for managers and tests."""
    _check_size(size)
    return os.urandom(size)


def _check_size(size: int) -> None:
    if size not in KEY_SIZES:
        raise ValueError(
            f"a gossip key must be 16, 24 or 32 bytes (AES-128/192/256), got {size} bytes"
        )


def _checked(key: bytes) -> bytes:
    """The key as immutable bytes, or an error that says what is wrong with it."""
    if isinstance(key, bytearray | memoryview):
        key = bytes(key)
    if not isinstance(key, bytes):
        raise TypeError(
            f"a gossip key must be bytes, got {type(key).__name__}"
            " (decode a base64 or hex key before installing it)"
        )
    _check_size(len(key))
    return key


class Keyring:
    """The keys this node seals and opens gossip packets with; `keys` lists the primary first.

    Keys are never shown by `repr` or in error messages, only their ids.
    """

    def __init__(self, primary: bytes, others: Iterable[bytes] = ()) -> None:
        primary = _checked(primary)
        self._keys: list[bytes] = [primary]
        # key -> (its id, its cipher); the id is hashed once, not once per packet
        self._ciphers: dict[bytes, tuple[bytes, AESGCM]] = {
            primary: (key_id(primary), AESGCM(primary))
        }
        for key in others:
            self.install(key)

    @property
    def primary(self) -> bytes:
        """The key new packets are sealed with."""
        return self._keys[0]

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Every installed key, the primary first, then the others in installation order."""
        return tuple(self._keys)

    def install(self, key: bytes) -> None:
        """Accept packets sealed with `key`; installing a key twice changes nothing."""
        key = _checked(key)
        if key not in self._ciphers:
            self._keys.append(key)
            self._ciphers[key] = (key_id(key), AESGCM(key))

    def use(self, key: bytes) -> None:
        """Seal new packets with `key`, which must be installed first (so every step of a
        rotation is a key the other nodes can already open)."""
        key = _checked(key)
        if key not in self._ciphers:
            raise ValueError(
                f"cannot make key {key_id(key).hex()} primary: it is not installed;"
                " install it first"
            )
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        """Stop accepting packets sealed with `key`; the primary cannot be removed, or this
        node could no longer seal anything."""
        key = _checked(key)
        if key not in self._ciphers:
            raise ValueError(f"cannot remove key {key_id(key).hex()}: it is not installed")
        if key == self._keys[0]:
            raise ValueError(
                f"cannot remove key {key_id(key).hex()}: it is the primary key;"
                " make another key primary with use() first"
            )
        self._keys.remove(key)
        del self._ciphers[key]

    def sealing_cipher(self) -> tuple[bytes, AESGCM]:
        """The primary key's id and cipher, for sealing."""
        return self._ciphers[self._keys[0]]

    def opening_ciphers(self, kid: bytes) -> Iterator[AESGCM]:
        """The ciphers of every installed key whose id is `kid`, primary first.

        Usually one; more only if two installed keys share an id (a 1 in 2**32 chance per pair),
        which is why this yields every match rather than the first.
        """
        for key in self._keys:
            this_id, cipher = self._ciphers[key]
            if this_id == kid:
                yield cipher

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and key in self._ciphers

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        ids = [self._ciphers[key][0].hex() for key in self._keys]
        return f"<Keyring primary={ids[0]} others=[{', '.join(ids[1:])}]>"
