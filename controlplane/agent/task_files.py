"""The secrets and configs the dispatcher handed this node, and the files a task's container
gets from them.

The dispatcher sends a node only the secrets and configs its tasks refer to, before the tasks
themselves; the session keeps them here as the assignments come (a complete set replaces
them). Where a file goes follows Docker on Linux: a secret's target is a name under
/run/secrets/ unless it is an absolute path; a config's target is a path from the root. Its
owner and permission bits are the reference's, as given: the CLI sends 0444 and uid/gid 0
by default, and an API body's `Mode: 0` makes a file nobody but root reads (`----------`), as
dockerd writes it.

`target_problem` is what the managers check at service create and update, so that a target
dockerd 20.10 accepts and then fails every task of at start (a config over `/` or `/etc`, a
secret over `/run/secrets` itself, a user id that is not a number) or that escapes
/run/secrets (`../../etc/passwd`, which dockerd mounts over the image's /etc/passwd) is
refused before any task exists.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from controlplane.durable import write_atomic
from controlplane.numbers import is_number
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
    mode: int = 0o444  # the CLI's default
    modified_ns: int = 0  # when the container's runtime wrote it (0: not yet)

    def stamped(self, at_ns: int) -> TaskFile:
        return dataclasses.replace(self, modified_ns=at_ns)


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
            path = target_path("secret", ref.file.name or ref.secret_name)
            files.append(_file(path, secret.spec.data, ref.file.uid, ref.file.gid, ref.file.mode))
        for cref in container.configs:
            config = self.configs.get(cref.config_id)
            if config is None:
                raise MissingFileError(f"config {cref.config_name} ({cref.config_id}) not found")
            path = target_path("config", cref.file.name or cref.config_name)
            files.append(
                _file(path, config.spec.data, cref.file.uid, cref.file.gid, cref.file.mode)
            )
        return files


# Directories of every Linux image (the FHS's, and the secrets' own): a file target there is a
# bind mount of a file onto a directory, which runc refuses when the task starts.
IMAGE_DIRECTORIES = frozenset(
    (
        *("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt"),
        *("/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var"),
        *("/usr/bin", "/usr/sbin", "/usr/lib", "/usr/local", "/usr/share", "/var/lib"),
        *("/var/log", "/var/run", "/var/tmp", "/var/cache", SECRETS_DIR),
    )
)


def target_path(kind: str, target: str) -> str:
    """Where a `kind` ("secret" or "config") reference's target lands in the container."""
    if kind == "secret" and not target.startswith("/"):
        target = f"{SECRETS_DIR}/{target}"
    return container_path(target)


def target_problem(kind: str, reference: str, target: str, uid: str, gid: str) -> str | None:
    """Why `kind` reference `reference` (its secret's or config's name) cannot write its
    file `target` owned by `uid`:`gid` (None: it can), naming what to give instead."""
    where = f"{kind} reference '{reference}'"
    components = target.split("/")
    if kind == "secret" and ".." in components:
        return (
            f"invalid {where}: target '{target}' has a '..' (dockerd 20.10 writes it at "
            f"{target_path(kind, target)}, over whatever the image has there); give a name "
            f"under {SECRETS_DIR} such as 'db_password', or an absolute path without '..'"
        )
    path = target_path(kind, target)
    if components[-1] in ("", ".", "..") or path in IMAGE_DIRECTORIES:
        return (
            f"invalid {where}: target '{target}' is the directory {path} of the container, and "
            "a secret or config is a file (dockerd 20.10 accepts it, then every task fails to "
            "start: 'Are you trying to mount a directory onto a file (or vice-versa)?'); give "
            f"a file path such as {'app_secret' if kind == 'secret' else '/etc/app.conf'}"
        )
    for field, value in (("UID", uid), ("GID", gid)):
        if not is_number(value):
            return (
                f"invalid {where}: File.{field} '{value}' is not a number (dockerd 20.10 "
                f"accepts it, then every task fails to start: 'strconv.Atoi: parsing "
                f'"{value}": invalid syntax\'); give a numeric id such as 0'
            )
    return None


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
    """The file as the reference says (a reference from before the managers checked ids has
    uid/gid "": root's)."""
    return TaskFile(path, data, uid or "0", gid or "0", mode)


def write_tree(files: list[TaskFile], directory: Path) -> None:
    """Write `files` under `directory` at their paths (a kernel-mode container runs on the
    host's file system: those under /run are copied from there, owners and modes kept, to a
    tmpfs over its /run; the others it reads there). Each gets its reference's mode and, when
    the node runs as root (as the kernel data path does), its owner. Only `directory` is
    private: the folders in it get Docker's 0755, which the copy keeps."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for file in files:
        target = directory / container_path(file.path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        write_atomic(target, file.data, file.mode)
        if os.geteuid() == 0:
            os.chown(target, int(file.uid), int(file.gid))


def stamp(files: list[TaskFile]) -> list[TaskFile]:
    """`files` as written now (their time in `ls -l`)."""
    now = time.time_ns()
    return [file.stamped(now) for file in files]


def remove_tree(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
