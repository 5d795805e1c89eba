"""Object ids as Swarm makes them, for every object the managers or the API create."""

from __future__ import annotations

import secrets

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id() -> str:
    """128 random bits in base 36, 25 characters (swarmkit's identity.NewID)."""
    n = secrets.randbits(128)
    digits = ""
    while n:
        n, r = divmod(n, 36)
        digits = _DIGITS[r] + digits
    return digits.rjust(25, "0")
