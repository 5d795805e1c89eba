"""Identifiers in Swarm's shapes."""

from __future__ import annotations

import base64
import secrets

BASE36_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def to_base36(value: int, width: int) -> str:
    """`value` in base 36, zero-padded on the left to `width` characters."""
    digits: list[str] = []
    while value:
        value, rem = divmod(value, 36)
        digits.append(BASE36_ALPHABET[rem])
    return "".join(reversed(digits)).rjust(width, "0")


def new_object_id() -> str:
    """A Swarm object id (nodes, networks, services, tasks, the cluster): 128 random bits in
    base 36, 25 characters, as swarmkit's `identity.NewID`."""
    return to_base36(secrets.randbits(128), 25)


def raft_cluster_id(cluster_id: str) -> int:
    """The Raft cluster id `swarm init` gives the swarm `cluster_id` (a swarm id above, or
    the 16 hex digits swarms made before took; both read as base 36): 63 of its bits,
    never zero (the Raft layer's ids are non-zero 63-bit numbers)."""
    return (int(cluster_id, 36) & ((1 << 63) - 1)) or 1


def new_engine_id() -> str:
    """An engine's own id (`docker info`'s ID, which it keeps across swarms): dockerd's shape,
    a key id of 240 bits in base 32, twelve groups of four characters joined by colons."""
    text = base64.b32encode(secrets.token_bytes(30)).decode()
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))
