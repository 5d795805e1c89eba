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
import json
import sys
from pathlib import Path

from side_by_side import dockerd_and_node

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from stream_cases import Case, cases, docker, play, service_cases  # noqa: E402

RECORDED = ROOT / "tests" / "compat" / "stream_bytes_dockerd.json"
READY_TIMEOUT = 120.0


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
    with dockerd_and_node(args.address) as (reference_host, our_host):
        played = [(c, play(c, reference_host), play(c, our_host)) for c in cases()]
        for host, options in (
            (reference_host, ["--advertise-addr", "127.0.0.1"]),
            (our_host, []),
        ):
            joined = docker(host, "swarm", "init", *options)  # dockerd's: in its own netns
            if joined.returncode != 0:
                raise SystemExit(f"swarm init failed on {host}: {joined.stderr.decode()}")
        played += [(c, play(c, reference_host), play(c, our_host)) for c in service_cases()]
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
