"""The secrets and configs the dispatcher handed this node, and the files a task's container
gets from them.

The dispatcher sends a node only the secrets and configs its tasks refer to, before the tasks
themselves; the session keeps them here as the assignments come (a complete set replaces
them). Where a file goes follows Docker on Linux: a secret's target is a name under
/run/secrets/ unless it is an absolute path; a config's target is a path from the root.
"""

from __future__ import annotations

import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from controlplane.durable import write_atomic
from controlplane.pb.dispatcher_pb2 import AssignmentChange
from controlplane.pb.objects_pb2 import Config, Secret, Task

Held = TypeVar("Held", Secret, Config)
SECRETS_DIR = "/run/secrets"


class MissingFileError(LookupError):
    """A task refers to a secret or config the node was not given (swarmkit's agent fails the
    task the same way)."""


@dataclass(frozen=True)
class TaskFile:
    """One file of a container: its absolute path, bytes, owner and permission bits."""

    path: str
    data: bytes
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444


class TaskFiles:
    def __init__(self) -> None:
        self.secrets: dict[str, Secret] = {}
        self.configs: dict[str, Config] = {}

    def clear(self) -> None:
        """A complete assignment set follows: forget everything."""
        self.secrets.clear()
        self.configs.clear()

    def apply(self, change: AssignmentChange) -> bool:
        """Take a secret or config change; False if the change is about something else."""
        item = change.assignment.WhichOneof("item")
        removed = change.action == AssignmentChange.ACTION_REMOVE
        if item == "secret":
            _keep(self.secrets, change.assignment.secret, removed)
        elif item == "config":
            _keep(self.configs, change.assignment.config, removed)
        else:
            return False
        return True

    def files_for(self, task: Task) -> list[TaskFile]:
        """The files of the task's container, in the spec's order; MissingFileError names the
        first secret or config this node does not hold."""
        container = task.spec.container
        files: list[TaskFile] = []
        for ref in container.secrets:
            secret = self.secrets.get(ref.secret_id)
            if secret is None:
                raise MissingFileError(f"secret {ref.secret_name} ({ref.secret_id}) not found")
            target = ref.file.name or ref.secret_name
            path = container_path(target if target.startswith("/") else f"{SECRETS_DIR}/{target}")
            files.append(_file(path, secret.spec.data, ref.file.uid, ref.file.gid, ref.file.mode))
        for cref in container.configs:
            config = self.configs.get(cref.config_id)
            if config is None:
                raise MissingFileError(f"config {cref.config_name} ({cref.config_id}) not found")
            path = container_path(cref.file.name or cref.config_name)
            files.append(
                _file(path, config.spec.data, cref.file.uid, cref.file.gid, cref.file.mode)
            )
        return files


def container_path(target: str) -> str:
    """`target` as an absolute path in the container's file system, `..` resolved there: as
    Docker scopes a mount's path to the container's root, `/run/secrets/../../x` is `/x`, and
    no target gets out of the root (on the host, for a kernel-mode container's files)."""
    return "/" + posixpath.normpath("/" + target).lstrip("/")


def _keep(held: dict[str, Held], obj: Held, removed: bool) -> None:
    if removed:
        held.pop(obj.id, None)
    else:
        held[obj.id] = obj


def _file(path: str, data: bytes, uid: str, gid: str, mode: int) -> TaskFile:
    return TaskFile(path, data, uid or "0", gid or "0", mode or 0o444)


def write_tree(files: list[TaskFile], directory: Path) -> None:
    """Write `files` under `directory` at their paths (a kernel-mode container runs on the
    host's file system: those under /run are copied from there to a tmpfs over its /run, the
    others it reads there). Owners stay the node's user. Only `directory` is private: the
    folders in it get Docker's 0755, which the copy keeps."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for file in files:
        target = directory / container_path(file.path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        write_atomic(target, file.data, file.mode)


def remove_tree(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
