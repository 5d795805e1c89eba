"""A real dockerd and a Swarmlab node started side by side, for the benches that play the same
docker CLI commands on both and compare what comes back (`stream_bytes.py`,
`container_inspect.py`)."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from scale import Dockerd

READY_TIMEOUT = 120.0


def busybox_rootfs() -> bytes:
    """An image root: /bin/busybox and a link for each of its applets."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit("busybox is not installed (apt-get install busybox)")
    listed = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in listed.stdout.split():
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for folder in ("tmp", "etc", "proc", "sys", "dev"):
            entry = tarfile.TarInfo(folder)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(entry)
    return out.getvalue()


def wait_for(host: str, what: str) -> None:
    """Until `docker version` answers on `host`, or exit naming `what`."""
    deadline = time.monotonic() + READY_TIMEOUT
    while subprocess.run(["docker", "-H", host, "version"], capture_output=True).returncode:
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer on {host} within {READY_TIMEOUT:.0f} s")
        time.sleep(0.5)


def dockerd_binary() -> str:
    binary = shutil.which("dockerd")
    if binary is None:
        raise SystemExit("dockerd is not installed (apt-get install docker.io)")
    return binary


@contextlib.contextmanager
def dockerd_and_node(address: str, *, bridge: bool = False) -> Iterator[tuple[str, str]]:
    """A dockerd in a network namespace of its own (with docker0 if `bridge`) holding a busybox
    image, and a Swarmlab node at `address`, both answering: their docker hosts (dockerd's,
    ours). Both are stopped and their folders removed on leaving."""
    binary = dockerd_binary()
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as scratch:
        root = Path(scratch)
        daemon = Dockerd(binary, root / "dockerd", bridge=bridge)
        node_log = (root / "node.log").open("wb")
        node = subprocess.Popen(
            [str(Path(sys.executable).parent / "swarmlab"), "node", "run", "--data-dir",
             str(root / "node"), "--address", address],
            stdout=node_log, stderr=node_log,
        )  # fmt: skip
        reference, ours = f"unix://{daemon.socket}", f"tcp://{address}:2375"
        try:
            wait_for(reference, "dockerd")
            wait_for(ours, "the Swarmlab node")
            imported = subprocess.run(
                ["docker", "-H", reference, "import", "-c", "ENV PATH=/bin", "-",
                 "busybox:latest"],
                input=busybox_rootfs(), capture_output=True, check=False,
            )  # fmt: skip
            if imported.returncode != 0:
                raise SystemExit(f"docker import failed: {imported.stderr.decode()}")
            yield reference, ours
        finally:
            node.terminate()
            node.wait(30)
            node_log.close()
            daemon.shut_down()
