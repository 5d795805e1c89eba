"""Raw `docker inspect` of containers, side by side: the cases of `tests/inspect_fields.py`
(a plain `docker run -d`, one with the create options tools read, a service's task) played
with the real docker CLI against a real dockerd 20.10 (started here in a network namespace of
its own, with its docker0 there, its busybox imported from this machine's /bin/busybox; its
swarm initialised in that namespace only) and against a Swarmlab node (started here on
--address); every difference that is not on purpose is printed. Not a benchmark of speed: a
fidelity check, run as the benches are
(`flock /work/bench.lock .venv/bin/python bench/container_inspect.py`).

`--record` writes dockerd's documents to tests/compat/container_inspect_dockerd.json, which
`tests/unit/test_container_inspect_cli.py` compares ours with.

    .venv/bin/python bench/container_inspect.py [--address 127.77.188.20] [--record]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from side_by_side import READY_TIMEOUT, dockerd_and_node, dockerd_binary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.inspect_fields import CASES, RECORDED, differences  # noqa: E402


def docker(host: str, *args: str) -> str:
    done = subprocess.run(["docker", "-H", host, *args], capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed on {host}: {done.stderr.decode()}")
    return done.stdout.decode()


def container_of(host: str, case: str) -> str:
    """The case's container: the one it names, or its service's task (once it runs)."""
    argv = CASES[case]
    name = argv[argv.index("--name") + 1]
    if argv[0] != "service":
        return name
    deadline = time.monotonic() + READY_TIMEOUT
    while not (found := docker(host, "ps", "-q", "--filter", f"name={name}.").split()):
        if time.monotonic() > deadline:
            raise SystemExit(f"no task container of {name} on {host}")
        time.sleep(0.5)
    return found[0]


def play(host: str, swarm_options: list[str]) -> dict[str, Any]:
    """Each case's inspect document on `host` (the swarm initialised before the task's)."""
    documents: dict[str, Any] = {}
    for case, argv in CASES.items():
        if argv[0] == "service":
            docker(host, "swarm", "init", *swarm_options)
        docker(host, *argv)
        [documents[case]] = json.loads(docker(host, "inspect", container_of(host, case)))
    return documents


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="127.77.188.20", help="the Swarmlab node's")
    parser.add_argument("--record", action="store_true", help=f"write dockerd's to {RECORDED}")
    args = parser.parse_args()
    with dockerd_and_node(args.address, bridge=True) as (reference, ours):
        # dockerd's swarm: in its own network namespace only
        theirs = play(reference, ["--advertise-addr", "127.0.0.1"])
        mine = play(ours, [])
    if args.record:
        version = subprocess.run(
            [dockerd_binary(), "--version"], capture_output=True, text=True
        ).stdout
        cases = {c: {"argv": CASES[c], "inspect": theirs[c]} for c in CASES}
        document = {
            "dockerd": f"{version.strip()}, in a network namespace of its own, busybox imported "
            "from /bin/busybox",
            "cases": cases,
        }
        RECORDED.write_text(json.dumps(document, indent=1) + "\n")
        print(f"dockerd's documents written to {RECORDED}")
    differ = 0
    for case in CASES:
        found = differences(case, theirs[case], mine[case])
        differ += bool(found)
        print(f"{case:<10} {'as dockerd' if not found else 'DIFFERS'}")
        for line in found:
            print(f"    {line}")
    print(f"{len(CASES) - differ} of {len(CASES)} inspect documents as dockerd's")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
