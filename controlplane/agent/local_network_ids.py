"""The ids and creation times of a node's engine-local networks (`bridge`, `host`, `none`,
`docker_gwbridge`), as dockerd 20.10 keeps them: random (64 hex digits, each node its own),
made when the node first needs them and kept in its data dir across restarts; except
`bridge`, which dockerd deletes and makes again at each start (a new id and `Created` per
start, measured: `host`, `none` and `docker_gwbridge` kept theirs).

Kept in one JSON file, written whole to a temporary file, fsynced, then renamed over the old
one, so a crash leaves either the old ids or the new ones.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("controlplane.agent.local_network_ids")

REMADE_AT_EACH_START = frozenset({"bridge"})
LOCAL_NETWORKS_FILE = "local-networks.json"  # in the node's data dir


@dataclass(frozen=True)
class LocalNetworkIdentity:
    id: str
    created_ns: int


class LocalNetworkIds:
    """This node's local network identities, by name; `path` keeps them (None: this
    process's memory only)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._known: dict[str, LocalNetworkIdentity] = {
            name: identity
            for name, identity in self._load().items()
            if name not in REMADE_AT_EACH_START
        }

    def _load(self) -> dict[str, LocalNetworkIdentity]:
        if self._path is None or not self._path.exists():
            return {}
        try:
            stored = json.loads(self._path.read_text())
            return {
                str(name): LocalNetworkIdentity(str(entry["id"]), int(entry["created_ns"]))
                for name, entry in stored.items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            # a damaged file: new ids, as a dockerd whose network store is gone makes them
            log.warning("event=local_network_ids_unreadable path=%s error=%s", self._path, err)
            return {}

    def get(self, name: str) -> LocalNetworkIdentity:
        """Network `name`'s identity, made (and kept) the first time it is asked for."""
        identity = self._known.get(name)
        if identity is None:
            identity = LocalNetworkIdentity(secrets.token_hex(32), time.time_ns())
            self._known[name] = identity
            self._save()
            log.info("event=local_network_made name=%s id=%s", name, identity.id[:12])
        return identity

    def id(self, name: str) -> str:
        return self.get(name).id

    def _save(self) -> None:
        if self._path is None:
            return
        document = {
            name: {"id": identity.id, "created_ns": identity.created_ns}
            for name, identity in sorted(self._known.items())
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_suffix(".tmp")
        with temporary.open("w") as file:
            json.dump(document, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self._path)
        directory = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
