"""What containers write, side by side: the cases of `tests/stream_cases.py` played with the
real docker CLI against a real dockerd 20.10 (started here in a network namespace of its own,
its busybox image imported from this machine's /bin/busybox) and against a Swarmlab node
(started here on --address), byte for byte; then both init a swarm (dockerd in its own network
namespace only) for the service cases. Not a benchmark of speed: a fidelity check, run
as the benches are (`flock /work/bench.lock .venv/bin/python bench/stream_bytes.py`).

`--record` writes dockerd's outputs to tests/compat/stream_bytes_dockerd.json, which
`tests/unit/test_stream_bytes_cli.py` compares ours with.

    .venv/bin/python bench/stream_bytes.py [--address 127.77.213.10] [--record]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from scale import Dockerd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from stream_cases import Case, cases, docker, play, service_cases  # noqa: E402

RECORDED = ROOT / "tests" / "compat" / "stream_bytes_dockerd.json"
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
    deadline = time.monotonic() + READY_TIMEOUT
    while docker(host, "version").returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer on {host} within {READY_TIMEOUT:.0f} s")
        time.sleep(0.5)


def compare(played: list[tuple[Case, dict[str, bytes], dict[str, bytes]]]) -> int:
    """Print one row per case; the number that differ."""
    differ = 0
    for case, reference, ours in played:
        diffs = [k for k in reference if reference[k] != ours.get(k)]
        differ += bool(diffs)
        print(f"{case.name:<60} {'same' if not diffs else 'DIFFERS'}")
        for key in diffs:
            print(f"    {key}: dockerd {reference[key][:120]!r}")
            print(f"    {key}: ours    {ours.get(key, b'')[:120]!r}")
    print(f"{len(played) - differ} of {len(played)} cases byte for byte as dockerd's")
    return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="127.77.213.10", help="the Swarmlab node's")
    parser.add_argument("--record", action="store_true", help=f"write dockerd's to {RECORDED}")
    args = parser.parse_args()
    dockerd_binary = shutil.which("dockerd")
    if dockerd_binary is None:
        raise SystemExit("dockerd is not installed (apt-get install docker.io)")
    with tempfile.TemporaryDirectory(prefix="stream-bytes-") as scratch:
        root = Path(scratch)
        daemon = Dockerd(dockerd_binary, root / "dockerd")
        node_log = (root / "node.log").open("wb")
        node = subprocess.Popen(
            [str(Path(sys.executable).parent / "swarmlab"), "node", "run", "--data-dir",
             str(root / "node"), "--address", args.address],
            stdout=node_log, stderr=node_log,
        )  # fmt: skip
        reference_host, our_host = f"unix://{daemon.socket}", f"tcp://{args.address}:2375"
        try:
            wait_for(reference_host, "dockerd")
            wait_for(our_host, "the Swarmlab node")
            imported = subprocess.run(
                ["docker", "-H", reference_host, "import", "-c", "ENV PATH=/bin", "-",
                 "busybox:latest"],
                input=busybox_rootfs(), capture_output=True, check=False,
            )  # fmt: skip
            if imported.returncode != 0:
                raise SystemExit(f"docker import failed: {imported.stderr.decode()}")
            played = [(c, play(c, reference_host), play(c, our_host)) for c in cases()]
            for host, options in (
                (reference_host, ["--advertise-addr", "127.0.0.1"]),
                (our_host, []),
            ):
                joined = docker(host, "swarm", "init", *options)  # dockerd's: in its own netns
                if joined.returncode != 0:
                    raise SystemExit(f"swarm init failed on {host}: {joined.stderr.decode()}")
            played += [(c, play(c, reference_host), play(c, our_host)) for c in service_cases()]
        finally:
            node.terminate()
            node.wait(30)
            node_log.close()
            daemon.shut_down()
    if args.record:
        RECORDED.write_text(
            json.dumps(
                {
                    "dockerd": "20.10.24+dfsg1 (Debian docker.io), busybox from /bin/busybox",
                    "cases": {c.name: {k: v.hex() for k, v in ref.items()} for c, ref, _ in played},
                },
                indent=1,
            )
            + "\n"
        )
        print(f"dockerd's outputs written to {RECORDED}")
    return 1 if compare(played) else 0


if __name__ == "__main__":
    sys.exit(main())
