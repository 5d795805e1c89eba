"""A node's named volumes (`docker volume create/ls/inspect/rm`, `-v NAME:/path`, a service's
`--mount type=volume`), kept in the node's state directory as dockerd keeps them in its
data root: one folder per volume, its content in `_data` (the `Mountpoint`), what it was
created with in `volume.json` (written crash-safe). The `local` driver only, as a lab's
dockerd without plugins. Every container that mounts a volume sees the same folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.durable import fsync_dir, write_atomic

log = logging.getLogger("controlplane.agent.volumes")

LOCAL_DRIVER = "local"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_METADATA = "volume.json"
_DATA = "_data"


class VolumeError(Exception):
    """A volume request that cannot be met; the message is dockerd's where it has one."""


class NoSuchVolumeError(VolumeError):
    pass


class VolumeInUseError(VolumeError):
    pass


class InvalidVolumeError(VolumeError):
    pass


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: Path
    created_at_ns: int
    driver: str = LOCAL_DRIVER
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)


def anonymous_name() -> str:
    """dockerd's name for a volume nobody named (`-v /path`): 64 random hex digits."""
    return secrets.token_hex(32)


class Volumes:
    """See the module docstring. `root` is created on the first volume."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(
        self,
        name: str = "",
        *,
        driver: str = LOCAL_DRIVER,
        labels: dict[str, str] | None = None,
        options: dict[str, str] | None = None,
    ) -> Volume:
        """The volume `name` (a new anonymous one without a name); an existing one as it
        is, as dockerd answers a create of a name it has."""
        name = name or anonymous_name()
        if len(name) == 1:
            raise InvalidVolumeError(
                f"create {name}: volume name is too short, names should be at least two "
                "alphanumeric characters"
            )
        if not _NAME.fullmatch(name):
            raise InvalidVolumeError(
                f'create {name}: "{name}" includes invalid characters for a local volume '
                'name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass '
                "a host directory, use absolute path"
            )
        if driver != LOCAL_DRIVER:
            raise InvalidVolumeError(
                f'create {name}: volume driver "{driver}" is not emulated: Swarmlab has the '
                f'"{LOCAL_DRIVER}" driver only'
            )
        existing = self._load(name)
        if existing is not None:
            return existing
        self.mountpoint(name).mkdir(parents=True, exist_ok=True)
        volume = Volume(
            name, self.mountpoint(name), time.time_ns(), driver, labels or {}, options or {}
        )
        record = {
            "Driver": driver,
            "Labels": volume.labels,
            "Options": volume.options,
            "CreatedAt": volume.created_at_ns,
        }
        write_atomic(self.root / name / _METADATA, json.dumps(record).encode())
        fsync_dir(self.root)
        log.info("event=volume_created name=%s", name)
        return volume

    def mountpoint(self, name: str) -> Path:
        """Where volume `name`'s content is (its `Mountpoint`), whether it exists or not."""
        return self.root / name / _DATA

    def get(self, name: str) -> Volume:
        volume = self._load(name) if _NAME.fullmatch(name) else None
        if volume is None:
            raise NoSuchVolumeError(f"get {name}: no such volume")
        return volume

    def listed(self) -> list[Volume]:
        if not self.root.is_dir():
            return []
        found = (self._load(entry.name) for entry in sorted(self.root.iterdir()))
        return [volume for volume in found if volume is not None]

    def size(self, name: str) -> int:
        """The bytes of the files in the volume (`docker system df`'s SIZE), as found now."""
        total = 0
        for directory, _, names in os.walk(self.get(name).mountpoint):
            for file in names:
                with contextlib.suppress(OSError):  # gone meanwhile
                    total += os.lstat(os.path.join(directory, file)).st_size
        return total

    def remove(self, name: str, users: list[str]) -> None:
        """Remove it and its content; VolumeInUseError (dockerd's words) while containers
        (`users`, their ids) mount it."""
        self.get(name)
        if users:
            raise VolumeInUseError(f"remove {name}: volume is in use - [{', '.join(users)}]")
        (self.root / name / _METADATA).unlink()
        shutil.rmtree(self.root / name)
        fsync_dir(self.root)
        log.info("event=volume_removed name=%s", name)

    def _load(self, name: str) -> Volume | None:
        folder = self.root / name
        try:
            record = json.loads((folder / _METADATA).read_text())
        except (OSError, ValueError):
            return None
        return Volume(
            name,
            self.mountpoint(name),
            int(record["CreatedAt"]),
            str(record["Driver"]),
            dict(record["Labels"]),
            dict(record["Options"]),
        )
