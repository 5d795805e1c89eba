"""What a container mounts, from what the API gave (`-v NAME:/path[:ro]` binds, `--mount`
objects, `-v /path` anonymous volumes, a service's `Mounts`), and the container's files seen
through its volumes.

Named and anonymous volumes (`volumes.py`, kept by the node) and tmpfs mounts are emulated;
a bind mount of a host path is refused with a reason (a lab's containers are emulated: they
have no host filesystem to see). An emulated container's `cat` and `ls` read a volume's
folder at the moment they run (`MountedFiles`), so what one container or the user puts in a
volume, every container that mounts it sees. A kernel-mode container's processes (real ones,
on the host's filesystem) see it mounted at its target in the container's mount namespace
(`datapath/kernel/containers.py`, which makes a missing target there without touching the
host's file system).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.agent.task_files import TaskFile

VOLUME = "volume"
TMPFS = "tmpfs"
BIND = "bind"


class MountError(Exception):
    """A mount the API cannot take; the message is dockerd's where it has one."""


@dataclass(frozen=True)
class Mount:
    type: str  # VOLUME or TMPFS
    target: str
    source: str = ""  # the volume's name ("" for an anonymous one until it is made)
    read_only: bool = False
    named: bool = True  # False: an anonymous volume, removed with `rm -v` and `--rm`
    origin: str = "mount"  # "bind" (`-v NAME:/path`), "mount" (`--mount`), "volume" (`-v /path`)

    def point_json(self, mountpoint: str) -> dict[str, Any]:
        """dockerd's MountPoint of it (`docker inspect`'s Mounts), its volume's folder at
        `mountpoint`; dockerd shows mode `z` for a named volume."""
        if self.type == TMPFS:
            return {
                "Type": TMPFS,
                "Source": "",
                "Destination": self.target,
                "Mode": "",
                "RW": not self.read_only,
                "Propagation": "",
            }
        return {
            "Type": VOLUME,
            "Name": self.source,
            "Source": mountpoint,
            "Destination": self.target,
            "Driver": self.driver,
            "Mode": "z" if self.named else "",
            "RW": not self.read_only,
            "Propagation": "",
        }

    labels: dict[str, str] = field(default_factory=dict)
    driver: str = "local"
    driver_options: dict[str, str] = field(default_factory=dict)


def parse_bind(spec: str) -> Mount:
    """One `HostConfig.Binds` entry, `NAME:/path[:MODE]`."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise MountError(f"invalid volume specification: '{spec}'")
    source, target = parts[0], parts[1]
    modes = parts[2].split(",") if len(parts) == 3 else []
    unknown = [m for m in modes if m not in ("ro", "rw", "z", "Z", "nocopy")]
    if unknown:
        raise MountError(f"invalid mode: {parts[2]}")
    if source.startswith("/") or source.startswith("."):
        raise _no_bind(BIND)
    return Mount(VOLUME, target, source, "ro" in modes, origin="bind")


def parse_mount(body: Mapping[str, Any]) -> Mount:
    """One mount object as the API carries it (`--mount`, a service's `Mounts`)."""
    kind = str(body.get("Type") or "")
    target = str(body.get("Target") or "")
    source = str(body.get("Source") or "")
    if kind == BIND:
        raise _no_bind(kind)
    if kind not in (VOLUME, TMPFS):
        raise MountError(f"mount type unknown: {kind!r}: use volume or tmpfs")
    if not target:
        raise MountError(f'invalid mount config for type "{kind}": field Target must not be empty')
    if kind == TMPFS:
        if source:
            raise MountError(
                'invalid mount config for type "tmpfs": field Source must not be specified'
            )
        return Mount(TMPFS, target, read_only=bool(body.get("ReadOnly")))
    options = body.get("VolumeOptions") or {}
    driver = options.get("DriverConfig") or {}
    return Mount(
        VOLUME,
        target,
        source,
        bool(body.get("ReadOnly")),
        named=bool(source),
        labels={str(k): str(v) for k, v in (options.get("Labels") or {}).items()},
        driver=str(driver.get("Name") or "local"),
        driver_options={str(k): str(v) for k, v in (driver.get("Options") or {}).items()},
    )


def _no_bind(kind: str) -> MountError:
    return MountError(
        f'invalid mount config for type "{kind}": Swarmlab does not emulate bind mounts of '
        "host paths (its containers have no host filesystem); use a named volume "
        "(-v NAME:/path or --mount type=volume,source=NAME,target=/path)"
    )


def container_mounts(
    binds: Sequence[str], mounts: Sequence[Mapping[str, Any]], volumes: Sequence[str]
) -> list[Mount]:
    """A container's mounts from `HostConfig.Binds`, `HostConfig.Mounts` and the anonymous
    volumes of `Config.Volumes` (those no other mount covers); MountError for a bad one or
    two on one path (dockerd's `Duplicate mount point`)."""
    found = [parse_bind(b) for b in binds] + [parse_mount(m) for m in mounts]
    seen: set[str] = set()
    for mount in found:
        if mount.target in seen:
            raise MountError(f"Duplicate mount point: {mount.target}")
        seen.add(mount.target)
    anonymous = [
        Mount(VOLUME, path, named=False, origin="volume") for path in volumes if path not in seen
    ]
    return found + anonymous


def host_config_json(mounts: Sequence[Mount]) -> dict[str, Any]:
    """`HostConfig.Binds` and `HostConfig.Mounts` as the container was given them."""
    binds = [
        f"{m.source}:{m.target}{':ro' if m.read_only else ''}" for m in mounts if m.origin == "bind"
    ]
    objects = []
    for m in mounts:
        if m.origin == "mount":
            source = {"Source": m.source} if m.named and m.type == VOLUME else {}
            read_only = {"ReadOnly": True} if m.read_only else {}
            objects.append({"Type": m.type, **source, "Target": m.target, **read_only})
    return {"Binds": binds or None, **({"Mounts": objects} if objects else {})}


class MountedFiles(Mapping[str, TaskFile]):
    """A container's files (`files`, by path) with the folders of its volumes (`mounts`:
    target path, host folder) read as they are when asked, over whatever is below them, and
    what its programs wrote (`write`: the emulated `sh`'s `>` and `>>`)."""

    def __init__(
        self,
        files: Mapping[str, TaskFile],
        mounts: Sequence[tuple[str, Path]],
        read_only: Collection[str] = (),
    ):
        """`read_only`: the targets of the mounts that refuse writes (`:ro`)."""
        self._files = files
        self._read_only = {target.rstrip("/") or "/" for target in read_only}
        self._written: dict[str, TaskFile] = {}  # outside its volumes, kept in memory
        # the deepest mount first: /data/logs wins over /data
        self._mounts = sorted(
            ((target.rstrip("/") or "/", folder) for target, folder in mounts),
            key=lambda m: -len(m[0]),
        )

    def _mount_of(self, path: str) -> tuple[str, Path] | None:
        for target, folder in self._mounts:
            if path == target or path.startswith(target + "/"):
                return target, folder
        return None

    def __getitem__(self, path: str) -> TaskFile:
        mount = self._mount_of(path)
        if mount is None:
            written = self._written.get(path)
            return written if written is not None else self._files[path]
        target, folder = mount
        host = folder / path[len(target) :].lstrip("/")
        try:
            info = host.stat()
            if not stat.S_ISREG(info.st_mode):
                raise KeyError(path)
            data = host.read_bytes()
        except OSError:
            raise KeyError(path) from None
        mode = stat.S_IMODE(info.st_mode)
        return TaskFile(path, data, str(info.st_uid), str(info.st_gid), mode, info.st_mtime_ns)

    def write(self, path: str, data: bytes, *, append: bool) -> None:
        """Write `data` to the file at `path` (after what it holds, with `append`), creating
        it: in its volume's folder when under a volume (OSError as the kernel gives it, e.g.
        for a missing folder), else in the container's own files."""
        mount = self._mount_of(path)
        if mount is not None:
            target, folder = mount
            if target in self._read_only:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
            with (folder / path[len(target) :].lstrip("/")).open("ab" if append else "wb") as f:
                f.write(data)
            return
        if append and path in self:
            data = self[path].data + data
        self._written[path] = TaskFile(path, data, mode=0o644, modified_ns=time.time_ns())

    def is_folder(self, path: str) -> bool:
        """Whether `path` is a folder of a volume (an empty one lists as empty, not missing)."""
        mount = self._mount_of(path)
        if mount is None:
            return False
        target, folder = mount
        return (folder / path[len(target) :].lstrip("/")).is_dir()

    def __iter__(self) -> Iterator[str]:
        for path in self._files:
            if self._mount_of(path) is None and path not in self._written:
                yield path
        yield from self._written
        for target, folder in self._mounts:
            for directory, _, names in os.walk(folder):
                below = Path(directory).relative_to(folder)
                for name in names:
                    path = f"{target.rstrip('/')}/{below / name if str(below) != '.' else name}"
                    if self._mount_of(path) == (target, folder):
                        yield path

    def __len__(self) -> int:
        return sum(1 for _ in self)
