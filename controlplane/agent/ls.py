"""busybox `ls [-1aln] [PATH...]` over the files an emulated container holds: Docker's /etc
files, its secrets and its configs, each with the owner and mode its reference gave (`ls -l
/run/secrets` shows what dockerd would write), and the folders they are in. The image's other
files are not emulated, so they are not listed.

Columns are busybox's: mode, links, user and group (`root` for 0, as the image's /etc/passwd
names it, else the number; `-n` always numbers), size, modification time, name; a folder's
listing starts with `total`, its 1K blocks as a tmpfs counts them (a page per non-empty file).
"""

from __future__ import annotations

import posixpath
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.agent.mounts import MountedFiles
from controlplane.agent.process import Exec
from controlplane.agent.task_files import TaskFile

FLAGS = "1aln"
DIRECTORY_SIZE = 4096
PAGE_KB = 4


@dataclass(frozen=True)
class _Entry:
    name: str
    mode: int
    uid: str
    gid: str
    size: int
    modified_ns: int


def _entries(files: Mapping[str, TaskFile], folder: str) -> list[_Entry] | None:
    """What `folder` holds (None: it is no folder of the container's files)."""
    prefix = folder.rstrip("/") + "/"
    children: dict[str, _Entry] = {}
    for path, file in files.items():
        if not path.startswith(prefix):
            continue
        name, _, rest = path[len(prefix) :].partition("/")
        if rest:
            stamp = max(file.modified_ns, children[name].modified_ns if name in children else 0)
            children[name] = _folder(name, stamp)
        else:
            children[name] = _file_entry(name, file)
    if not children and folder != "/":
        mounted = isinstance(files, MountedFiles) and files.is_folder(folder)
        return [] if mounted else None
    return [children[name] for name in sorted(children)]


def _folder(name: str, modified_ns: int) -> _Entry:
    return _Entry(name, stat.S_IFDIR | 0o755, "0", "0", DIRECTORY_SIZE, modified_ns)


def _file_entry(name: str, file: TaskFile) -> _Entry:
    mode = stat.S_IFREG | file.mode
    return _Entry(name, mode, file.uid, file.gid, len(file.data), file.modified_ns)


def _owner(number: str, numeric: bool) -> str:
    return "root" if number == "0" and not numeric else number


def _kb(entry: _Entry) -> int:
    return -(-entry.size // (PAGE_KB * 1024)) * PAGE_KB


def _line(entry: _Entry, numeric: bool) -> str:
    when = time.strftime("%b %e %H:%M", time.localtime(entry.modified_ns / 1e9))
    user, group = _owner(entry.uid, numeric), _owner(entry.gid, numeric)
    links = 2 if stat.S_ISDIR(entry.mode) else 1
    return (
        f"{stat.filemode(entry.mode)} {links:4d} {user:<8.8} {group:<8.8} "
        f"{entry.size:9d} {when} {entry.name}"
    )


async def ls(process: Exec, argv: list[str]) -> int:
    flags: set[str] = set()
    paths: list[str] = []
    for arg in argv[1:]:
        if arg.startswith("-") and len(arg) > 1:
            unknown = set(arg[1:]) - set(FLAGS)
            if unknown:
                process.err(f"ls: unrecognized option: {sorted(unknown)[0]}")
                process.err(f"Usage: ls [-{FLAGS}] [FILE]...  (the options Swarmlab emulates)")
                return 1
            flags.update(arg[1:])
        else:
            paths.append(arg)
    long, numeric = "l" in flags or "n" in flags, "n" in flags
    status = 0
    listed: list[tuple[str, list[_Entry]]] = []
    singles: list[_Entry] = []
    for path in paths or ["."]:
        where = posixpath.normpath(posixpath.join("/", path))
        file = process.container_files.get(where)
        if file is not None:
            singles.append(_file_entry(path, file))
            continue
        entries = _entries(process.container_files, where)
        if entries is None:
            process.err(f"ls: {path}: No such file or directory")
            status = 1
            continue
        listed.append((path, entries))
    for entry in singles:
        process.out(_line(entry, numeric) if long else entry.name)
    for index, (path, entries) in enumerate(listed):
        if len(paths) > 1:
            if index or singles:
                process.out("")
            process.out(f"{path}:")
        if "a" in flags:
            stamp = max((e.modified_ns for e in entries), default=0)
            entries = [_folder(".", stamp), _folder("..", stamp), *entries]
        if long:
            process.out(f"total {sum(_kb(e) for e in entries)}")
        for entry in entries:
            process.out(_line(entry, numeric) if long else entry.name)
    return status
