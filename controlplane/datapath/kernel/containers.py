"""Containers of the kernel data path: each is the network namespace the backend made on its
first endpoint (`eth0`... on its overlays), running real commands, Debian's `busybox-static`
(`ping`, `wget`, `nslookup`, `httpd`, `nc`, `sh` as busybox applets).

Names: `ip netns exec` bind-mounts /etc/netns/<container>/resolv.conf (the backend writes
`nameserver 127.0.0.11`, Docker's) over /etc/resolv.conf, and `ContainerDns` serves the node's
embedded resolver (`datapath/dns.py`) on 127.0.0.11:53, UDP and TCP, from sockets the node
opens inside the container's namespace: the queries never leave the container's namespace, and
the resolver knows who asks (the networks of the namespace's container) without looking at
addresses. Chosen over a DNAT of 127.0.0.11 to a node address because the container has no
route to its node (only its overlays), as in Docker, where the resolver also listens inside
the container's namespace.

Processes: a container's command is its PID 1 (`run_container`), in namespaces of its own made
with util-linux's `unshare` (Python 3.11 has no os.unshare): a PID namespace, so when it ends,
or is stopped, everything it started ends with it (a shell loop's `nc` included), with its own
/proc mounted (`ps` in the container lists its processes only); a UTS namespace, where a first
shell stage sets the container's hostname; and a mount namespace, where `ip netns exec`
bind-mounts the files the node writes in /etc/netns/<container>/ (`write_identity`: `hosts`,
`hostname`, and the backend's `resolv.conf`) over /etc. That stage then says on a pipe that the
namespaces are ready, waits while the node reads PID 1's host PID (`unshare`'s only child), and
execs the command, keeping its PID, under the name the command gives it (a busybox applet
through a link named after it: `ps` shows `sh -c ...`, as under dockerd). When the container
has files under /run (its secrets at /run/secrets/<target>, configs whose target is there),
that stage first mounts a tmpfs over /run in the container's mount namespace, which `unshare`
made private and `ip netns exec` a slave of the host's (the mount never reaches the host's
/run), and copies them there from the node's directory of the container's files, keeping their
modes and owners: the container's commands, and its execs, which join that namespace, read them
where Docker puts them (with its /etc files that are links into /run on the host:
`keep_etc_links`). Its volumes and tmpfs mounts are mounted there too, by that stage, at
their targets: a target missing from the host's file system is made on a tmpfs of the
container's own, shadowing its deepest existing parent (`MOUNT_FUNCTIONS`; for a top-level
one the container's root becomes a tmpfs mirroring the host's, `pivot_root`), so the host's
file system never changes; what one container writes in a volume, the next one reads.
`setpriv --pdeathsig KILL` ends it if the node process dies. A stop sends
SIGTERM to the command (a busybox shell ignores it, as in Docker; the built-in servers of
`agent/kernel_image.py` exit), the runtime's SIGKILL follows. An exec (`run_exec`) joins PID
1's namespaces (`nsenter --target`), so it sees the container's hostname, files and processes,
and dies with it; it goes through the same handshake, so its host PID is dockerd's exec `Pid`.

Standard streams: each process is a session leader (`setsid`); with a TTY (`console.Console`)
its standard streams are a pseudo-terminal's slave, made its controlling terminal (`setsid
--ctty`), else its output comes line by line from pipes and its input is /dev/null or, with
`-i`, a pipe (`console.StdinPipe`). The filesystem (but for those /etc files and /run) and
users are the host's.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from controlplane.datapath.dns import DnsServer, Resolver
from controlplane.datapath.kernel import namespaces
from controlplane.datapath.kernel.console import Console, StdinPipe
from controlplane.datapath.kernel.namespaces import KernelError, socket_in
from controlplane.datapath.resolvconf import DNS_PORT, EMBEDDED_RESOLVER

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_GRACE = 2.0  # seconds a terminal's last output may take once its process has exited
EXEC_WAIT = 2.0  # seconds a start waits for its first stage to exec the command
PUMP_READ = 64 * 1024  # bytes a read of a process's output takes at most (a pipe's buffer)
# Every signal back to its default action before a container's process starts, as runc does
# for a container's init: a node started under `nohup` (SIGHUP ignored) or from a
# non-interactive shell's background job (SIGINT, SIGQUIT ignored) would otherwise pass the
# ignored dispositions on through exec, and its containers would not die of those signals.
# uvloop's spawn (libuv) resets signals 1-31 in the child already; asyncio's own loop (a node
# without uvloop, the tests) resets none, and neither resets the real-time ones. The C
# library's own two (glibc's 32 and 33) stay as they were: its sigaction refuses them.
DEFAULT_SIGNALS = ("env", "--default-signal")
# Docker's /etc/hosts head; the container's addresses follow, with its hostname.
HOSTS_HEAD = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def busybox() -> str:
    """The static busybox the containers run; KernelError saying how to install it."""
    found = shutil.which("busybox")
    if found is None:
        raise KernelError(
            "kernel-mode containers run Debian's busybox-static, which is not installed: "
            "apt-get install busybox-static"
        )
    return found


@functools.cache
def applets() -> frozenset[str]:
    """The programs busybox provides (`busybox --list`)."""
    listed = subprocess.run(
        [busybox(), "--list"], capture_output=True, text=True, timeout=30, check=True
    )
    return frozenset(listed.stdout.split())


def check_command(argv: Sequence[str]) -> None:
    """KernelError, before anything starts, when busybox cannot run `argv` (the built-in
    servers, nginx and the like, are not checked here: `agent/kernel_image.py` runs them)."""
    name = PurePosixPath(argv[0]).name if argv else ""
    if name not in applets():
        raise KernelError(
            f'exec: "{argv[0] if argv else ""}": kernel-mode containers run busybox applets and '
            f"this is none; run the node with --datapath userspace for the other programs of "
            "the built-in images"
        )


def command(netns: str, argv: Sequence[str], program: Sequence[str] = ()) -> list[str]:
    """The host command line running a one-off `argv` inside namespace `netns`, in a PID
    namespace of its own that dies with it: a busybox applet, or `program`'s own command
    line with `argv` as its arguments (a built-in image's server, `agent/kernel_image.py`)."""
    if not argv and not program:
        raise KernelError("a container command needs at least the program's name")
    return [
        *("setpriv", "--pdeathsig", "KILL"),
        *("unshare", "--pid", "--fork", "--kill-child=KILL"),
        *(shutil.which("ip") or "ip", "netns", "exec", netns),
        *(program or (busybox(),)),
        *argv,
    ]


def applet_link(name: str) -> str:
    """A path to busybox whose last component is applet `name`'s (for `/bin/sh`, `sh`):
    executing it names the process after the applet (its `comm`, `ps -o comm`), as the
    image's /bin/sh link to busybox does under dockerd."""
    return str(_applet_links() / PurePosixPath(name).name)


@functools.cache
def _applet_links() -> Path:
    """This node's directory of links to busybox, one per applet (gone when it exits)."""
    directory = Path(tempfile.mkdtemp(prefix="swarmlab-applets-"))
    directory.chmod(0o755)  # a container's processes run it, whatever their user
    target = busybox()
    for name in applets():
        (directory / name).symlink_to(target)
    atexit.register(shutil.rmtree, directory, True)
    return directory


def _named(argv: Sequence[str], program: Sequence[str]) -> list[str]:
    """`exec -a`'s name, path and arguments running `argv` as its container shows it: a
    busybox applet keeps its `argv[0]` (`ps` shows `sh -c ...`, as under dockerd), through
    its link; `program` (a built-in server) runs as it is, `argv` its arguments."""
    if program:
        return [program[0], *program, *argv]
    return [argv[0], applet_link(argv[0]), *argv[1:]]


@dataclass(frozen=True)
class ContainerMount:
    """A mount of a container: host directory `source` (a volume's folder) bound at
    `target`, or a fresh tmpfs there when `source` is None; read-only with `read_only`."""

    target: str
    source: Path | None = None
    read_only: bool = False


@dataclass(frozen=True)
class Mounts:
    """A container's mounts and `stage`, a host directory of the node's own (empty, removed
    by the node after the container) where `MOUNT_FUNCTIONS` makes its scratch tmpfs."""

    stage: Path
    mounts: tuple[ContainerMount, ...]


# The first stage's shell functions making a mount target exist in the container's mount
# namespace only (the container's file system is the host's): `point TARGET` keeps an
# existing directory; below a directory that is the container's own (`ours`) it makes the
# missing ones; else it shadows the deepest existing ancestor once (`shadow`: a tmpfs
# mirroring its entries, directories and files bound from the host, links copied, moved over
# it; for / the container's root becomes that tmpfs, `pivot_root`, so execs joining the
# namespace see it too) and makes them on that tmpfs. `shadowed` lists the shadows (their
# entries stay the host's), `owned` the trees that are the container's own (a directory made
# on a shadow, a volume or tmpfs mounted, its /run tmpfs), one per line.
MOUNT_FUNCTIONS = r"""
nl='
'
mirror() {
  for e in "${1%/}"/* "${1%/}"/.[!.]* "${1%/}"/..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    t="$2/${e##*/}"
    if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$t"
    elif [ -d "$e" ]; then mkdir "$t" && mount -o rbind "$e" "$t"
    else : > "$t" && mount -o bind "$e" "$t"
    fi || return 1
  done
}
shadow() {
  s="$STAGE/$shadows"; shadows=$((shadows + 1))
  mkdir "$s" && mount -t tmpfs -o "mode=$(stat -c %a "$1")" tmpfs "$s" && mirror "$1" "$s" ||
    return 1
  if [ "$1" = / ]; then
    mkdir "$s/.swarmlab-old-root" && cd "$s" && pivot_root . .swarmlab-old-root && cd / &&
      umount -l /.swarmlab-old-root && rmdir /.swarmlab-old-root
  else
    mount -o move "$s" "$1"
  fi && shadowed="$shadowed$nl$1"
}
own() { owned="$owned$nl$1"; }
ours() {
  case "$shadowed$nl" in *"$nl$1$nl"*) return 0 ;; esac
  set -f; old_ifs=$IFS; IFS=$nl; found=1
  for o in $owned; do case "$1" in "$o" | "$o"/*) found=0 ;; esac; done
  IFS=$old_ifs; set +f
  return $found
}
point() {
  [ -d "$1" ] && return 0
  [ -e "$1" ] && { echo "mount target $1 exists and is not a directory" >&2; return 1; }
  a=$(dirname "$1")
  while [ ! -e "$a" ]; do a=$(dirname "$a"); done
  ours "$a" || shadow "$a" || return 1
  mkdir -p "$1" || return 1
  d=$1
  while [ "$(dirname "$d")" != "$a" ]; do d=$(dirname "$d"); done
  own "$d"
}
"""


def mount_script(mounts: Mounts, run_is_own: bool) -> tuple[str, str]:
    """What a first stage needs to mount `mounts` (parents before what is below them), each
    target made to exist first (`MOUNT_FUNCTIONS`): the definitions to put first, and the
    steps, each followed by `&&`; `run_is_own`: /run is the container's tmpfs already."""
    steps = []
    for mount in sorted(mounts.mounts, key=lambda m: PurePosixPath(m.target).parts):
        target = shlex.quote(mount.target)
        steps.append(f"point {target}")
        if mount.source is None:
            steps.append(f"mount -t tmpfs -o nosuid,nodev tmpfs {target}")
        else:
            steps.append(f"mount -o bind {shlex.quote(str(mount.source))} {target}")
        if mount.read_only:
            steps.append(f"mount -o remount,bind,ro {target}")
        steps.append(f"own {target}")
    if not steps:
        return "", ""
    owned = "/run" if run_is_own else ""
    definitions = (
        f"STAGE={shlex.quote(str(mounts.stage))}; shadows=0; shadowed=; owned={owned}\n"
        f"{MOUNT_FUNCTIONS}"
    )
    return definitions, "".join(f"{step} && " for step in steps)


def init_command(
    netns: str,
    hostname: str,
    argv: Sequence[str],
    handshake: Handshake,
    program: Sequence[str] = (),
    run_files: Path | None = None,
    mounts: Mounts | None = None,
) -> list[str]:
    """The host command line of a container's PID 1 (see the module docstring): `command`'s,
    with UTS and mount namespaces and a /proc of its own, and a first stage that sets
    `hostname`, puts the content of host directory `run_files` (if any) on a tmpfs over the
    container's /run, mounts its `mounts` (`mount_script`), and shakes hands (`Handshake`)
    before it execs the command."""
    if not argv and not program:
        raise KernelError("a container command needs at least the program's name")
    # from `run_files` as the working directory: still there if the tmpfs hides its path
    run_mount = (
        f"cd {shlex.quote(str(run_files))} && "
        "mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run && cp -a . /run/ && cd / && "
        if run_files is not None
        else ""
    )
    definitions, mounting = (
        mount_script(mounts, run_files is not None) if mounts is not None else ("", "")
    )
    name, *command_line = _named(argv, program)
    stage = f'{definitions}hostname "$1" && {run_mount}{mounting}{handshake.then_exec(shift=True)}'
    return [
        *("setpriv", "--pdeathsig", "KILL"),
        *("unshare", "--pid", "--fork", "--kill-child=KILL", "--mount-proc", "--uts"),
        *(shutil.which("ip") or "ip", "netns", "exec", netns),
        *(busybox(), "sh", "-c", stage, name, hostname, *command_line),
    ]


@dataclass(frozen=True)
class Handshake:
    """The pipe ends a first stage holds: it writes a line on `ready` when it is about to
    exec, then waits for a line on `go`, so the node reads its host PID while it surely
    runs (a quick exec could otherwise be gone by then)."""

    ready: int
    go: int

    def then_exec(self, shift: bool = False) -> str:
        """The end of a first stage: the handshake, then `exec -a "$0" "$@"` (after
        dropping `$1` with `shift`) with both ends closed."""
        return (
            f"echo >&{self.ready} && read -r _ <&{self.go} && "
            f'{"shift && " if shift else ""}exec -a "$0" "$@" {self.ready}>&- {self.go}<&-'
        )


def exec_command(init_pid: int, argv: Sequence[str], handshake: Handshake) -> list[str]:
    """The host command line of an exec: busybox `argv` in the namespaces of the container
    whose PID 1 is host process `init_pid` (`nsenter` forks it into the PID namespace),
    through a first stage that shakes hands (`Handshake`) before it execs it."""
    if not argv:
        raise KernelError("an exec needs at least the program's name")
    namespaces_of = ("--pid", "--mount", "--uts", "--net")
    stage = handshake.then_exec()
    return [
        *("nsenter", f"--target={init_pid}", *namespaces_of),
        *(busybox(), "sh", "-c", stage, *_named(argv, ())),
    ]


@dataclass(frozen=True)
class Identity:
    """Who a container is inside its namespaces: its hostname and its addresses."""

    hostname: str
    addresses: tuple[str, ...] = ()


def hosts_file(identity: Identity) -> str:
    """The container's /etc/hosts as Docker writes it: localhost, then each address of the
    container with its hostname."""
    own = "".join(f"{address}\t{identity.hostname}\n" for address in identity.addresses)
    return HOSTS_HEAD + own


def write_identity(netns: str, identity: Identity) -> None:
    """The /etc/hosts and /etc/hostname container `netns` sees (its resolv.conf is the
    backend's), written before its PID 1 starts."""
    namespaces.write_etc(netns, "hostname", identity.hostname + "\n")
    namespaces.write_etc(netns, "hosts", hosts_file(identity))


def keep_etc_links(
    own_etc: Path, run_files: Path, etc: Path = Path("/etc"), run: Path = Path("/run")
) -> None:
    """Copies, in `run_files`, of the container's /etc files (from `own_etc`, else the host's)
    that are links into `run` on the host, as systemd-resolved's resolv.conf: `ip netns exec`
    bound them onto the link's target, which the tmpfs over the container's /run hides."""
    for name in ("resolv.conf", "hosts", "hostname"):
        target = (etc / name).resolve()
        if target.is_relative_to(run) and target.is_file():
            copy = run_files / target.relative_to(run)
            copy.parent.mkdir(parents=True, exist_ok=True)
            own = own_etc / name
            shutil.copyfile(own if own.is_file() else target, copy)


@dataclass(frozen=True)
class Finished:
    status: int
    stdout: str
    stderr: str


async def run(netns: str, argv: Sequence[str], timeout: float = 30.0) -> Finished:
    """Run a one-off `argv` in namespace `netns` to its end (killed after `timeout` seconds:
    status 137, as a killed container)."""
    process = await start(netns, argv)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        return Finished(137, out.decode(errors="replace"), err.decode(errors="replace"))
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def start(
    netns: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    program: Sequence[str] = (),
) -> asyncio.subprocess.Process:
    """Start a one-off `argv` in namespace `netns` (a server: `httpd -f`, `nc -l`) with the
    environment `env` (default: a bare PATH); the caller ends it. `program` as `command`."""
    return await _spawn(command(netns, argv, program), env, None)


Stdin = Console | StdinPipe | None


@dataclass(frozen=True)
class Streams:
    """A process's standard streams: its output bytes to `out` and `err`, as it writes them,
    its input from `stdin` (None: /dev/null). With a `Console` its output is the console's,
    raw."""

    out: Callable[[bytes], None]
    err: Callable[[bytes], None]
    stdin: Stdin = None


async def _spawn(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    stdin: Stdin,
    pass_fds: Sequence[int] = (),
) -> asyncio.subprocess.Process:
    """`argv` as a session leader (a stop's SIGTERM goes to its process group), its standard
    streams wired as `stdin` says, in /, Docker's default working directory, every signal
    at its default action (`DEFAULT_SIGNALS`)."""
    streams: dict[str, int]
    if isinstance(stdin, Console):
        streams = {"stdin": stdin.slave, "stdout": stdin.slave, "stderr": stdin.slave}
    else:
        reader = stdin.reader if stdin is not None else asyncio.subprocess.DEVNULL
        pipe = asyncio.subprocess.PIPE
        streams = {"stdin": reader, "stdout": pipe, "stderr": pipe}
    process = await asyncio.create_subprocess_exec(
        *DEFAULT_SIGNALS,
        *("setsid", *(("--ctty",) if isinstance(stdin, Console) else ())),
        *argv,
        env=dict(env) if env is not None else {"PATH": DEFAULT_PATH},
        cwd="/",
        pass_fds=tuple(pass_fds),
        **streams,  # type: ignore[arg-type]
    )
    if stdin is not None:
        stdin.spawned()
    return process


async def run_streaming(
    netns: str,
    argv: Sequence[str],
    out: Callable[[bytes], None],
    err: Callable[[bytes], None],
    terminated: asyncio.Event,
    env: Mapping[str, str] | None = None,
    program: Sequence[str] = (),
) -> int:
    """Run a one-off `argv` in namespace `netns` as `run_container` runs a container's PID 1,
    without its UTS and mount namespaces."""
    process = await _spawn(command(netns, argv, program), env, None)
    return await _supervise(process, Streams(out, err), terminated)


async def run_container(
    netns: str,
    identity: Identity,
    argv: Sequence[str],
    streams: Streams,
    terminated: asyncio.Event,
    started: Callable[[int], None],
    env: Mapping[str, str] | None = None,
    program: Sequence[str] = (),
    run_files: Path | None = None,
    mounts: Mounts | None = None,
) -> int:
    """Run a container's command as its PID 1 (see the module docstring) to its end:
    `started` gets PID 1's host PID once its namespaces are ready (what execs join), its
    output goes to `streams.out`/`err` as it comes (or raw through its console), SIGTERM when
    `terminated` is set (a stop), SIGKILL when cancelled; its exit status (128 + signal
    when a signal ended it, as a shell reports it). `program` as `command`; the content of
    host directory `run_files` is the container's /run; `mounts` are mounted in its mount
    namespace (`mount_script`)."""
    write_identity(netns, identity)
    if run_files is not None:
        keep_etc_links(namespaces.NETNS_ETC / netns, run_files)
    process, init_pid = await _start_ready(
        lambda shake: init_command(
            netns, identity.hostname, argv, shake, program, run_files, mounts
        ),
        env,
        streams.stdin,
    )
    if init_pid is not None:
        started(init_pid)
    return await _supervise(process, streams, terminated)


async def run_exec(
    init_pid: int,
    argv: Sequence[str],
    streams: Streams,
    env: Mapping[str, str],
    started: Callable[[int], None],
) -> int:
    """Run busybox `argv` in the namespaces of the container whose PID 1 is `init_pid`, to
    its end; `started` gets its host PID once it runs there (dockerd's exec `Pid`); its exit
    status (killed when cancelled)."""
    process, pid = await _start_ready(
        lambda shake: exec_command(init_pid, argv, shake), env, streams.stdin
    )
    if pid is not None:
        started(pid)
    return await _supervise(process, streams, asyncio.Event())


async def _start_ready(
    command_line: Callable[[Handshake], list[str]], env: Mapping[str, str] | None, stdin: Stdin
) -> tuple[asyncio.subprocess.Process, int | None]:
    """Spawn `command_line(handshake)`, whose first stage says when it is about to exec and
    waits for the go; the process and the host PID of the stage (the spawned process's only
    child, forked into its PID namespace), None if it ended before."""
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    try:
        handshake = Handshake(ready_write, go_read)
        process = await _spawn(command_line(handshake), env, stdin, pass_fds=(ready_write, go_read))
    except BaseException:
        os.close(ready_read)
        os.close(go_write)
        raise
    finally:
        os.close(ready_write)
        os.close(go_read)
    try:
        pid = await _ready_then_go(ready_read, go_write, process.pid)
    except asyncio.CancelledError:
        await _killed(process)
        raise
    finally:
        os.close(go_write)
    return process, pid


async def _ready_then_go(ready: int, go: int, leader: int) -> int | None:
    """The host PID of the first stage (the only child of `leader`, unshare or nsenter)
    once it says it is about to exec, None if it ended before; then the go, and a wait
    (bounded) until the stage has exec'd: a `docker top` right after the start must see the
    command, not the stage."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(ready, "rb", buffering=0)
    )
    try:
        said = await reader.read(1)
    finally:
        transport.close()
    children = Path(f"/proc/{leader}/task/{leader}/children").read_text().split() if said else []
    pid = int(children[0]) if children else None
    stage = _cmdline(pid) if pid is not None else None
    with contextlib.suppress(BrokenPipeError):  # it ended before
        os.write(go, b"\n")  # the stage execs; EOF (no go) would end it instead
    deadline = loop.time() + EXEC_WAIT
    while stage is not None and _cmdline(pid) == stage and loop.time() < deadline:
        await asyncio.sleep(0.001)
    return pid


def _cmdline(pid: int | None) -> bytes | None:
    """Process `pid`'s command line; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


async def _killed(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await process.wait()


async def _supervise(
    process: asyncio.subprocess.Process, streams: Streams, terminated: asyncio.Event
) -> int:
    """Carry `process`'s output to `streams` until it exits: SIGTERM to its process group
    when `terminated` is set, SIGKILL when cancelled; its exit status."""
    console = streams.stdin if isinstance(streams.stdin, Console) else None
    pumps = []
    if process.stdout is not None and process.stderr is not None:
        pumps = [
            asyncio.create_task(_pump(process.stdout, streams.out)),
            asyncio.create_task(_pump(process.stderr, streams.err)),
        ]
    stop = asyncio.create_task(terminated.wait())
    exited = asyncio.create_task(process.wait())
    try:
        await asyncio.wait([stop, exited], return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            # unshare blocks SIGTERM while it waits: the signal goes to the command too, its
            # namespace's PID 1, which (as in Docker) only sees it if it handles it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        status = await exited
        await asyncio.gather(*pumps)
        if console is not None:
            await console.drained(OUTPUT_GRACE)
    except asyncio.CancelledError:
        await _killed(process)
        raise
    finally:
        stop.cancel()
        for pump in pumps:
            pump.cancel()
        if streams.stdin is not None:
            streams.stdin.close()
    return status if status >= 0 else 128 - status


async def _pump(stream: asyncio.StreamReader, write: Callable[[bytes], None]) -> None:
    while data := await stream.read(PUMP_READ):
        write(data)


class ContainerDns:
    """The node's resolver at 127.0.0.11:53 inside one container's namespace, answering as
    the container on `network_ids` asks."""

    def __init__(self, resolver: Resolver, netns: str, network_ids: Sequence[str]) -> None:
        self.netns = netns
        network_view = tuple(network_ids)
        self._server = DnsServer(resolver, EMBEDDED_RESOLVER, DNS_PORT, lambda _: network_view)

    async def start(self) -> None:
        udp = socket_in(self.netns, socket.SOCK_DGRAM)
        tcp = socket_in(self.netns, socket.SOCK_STREAM)
        try:
            udp.bind((EMBEDDED_RESOLVER, DNS_PORT))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((EMBEDDED_RESOLVER, DNS_PORT))
            tcp.listen(64)
            udp.setblocking(False)
            tcp.setblocking(False)
            await self._server.start(sockets=(udp, tcp))
        except OSError as err:
            udp.close()
            tcp.close()
            raise KernelError(
                f"cannot serve DNS at {EMBEDDED_RESOLVER}:{DNS_PORT} in container namespace "
                f"{self.netns!r}: {err.strerror}"
            ) from None

    async def close(self) -> None:
        await self._server.close()
