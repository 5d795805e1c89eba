"""The role names a swarm certificate carries (its OU), as Swarm spells them.

Their own module, not `ca.py`'s, so that code naming a role (join tokens, the Cluster object)
need not import `cryptography` (12 MB of a manager's RSS) unless it signs or checks a
certificate."""

from __future__ import annotations

from typing import Final

CA_ROLE: Final = "swarm-ca"
MANAGER_ROLE: Final = "swarm-manager"
WORKER_ROLE: Final = "swarm-worker"
