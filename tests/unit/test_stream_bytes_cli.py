"""What containers write, through the real docker CLI against a node's containers API on
127.77.213.1, byte for byte as a real dockerd 20.10 gave it for the same commands (recorded by
`bench/stream_bytes.py --record` in tests/compat/stream_bytes_dockerd.json; the cases are
`tests/stream_cases.py`): `docker run` with and without -t and -i, `docker logs` with and
without -t, `docker exec`, `docker start -a` and `docker attach`, for partial lines, carriage
returns, binary bytes and bad UTF-8 written by a program, a 20 KiB line, stdin given as
bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from served_api import served_containers, worker_port
from stream_cases import Case, cases, play, service_cases

HOST, PORT = "127.77.213.1", worker_port()
RECORDED = Path(__file__).parent.parent / "compat" / "stream_bytes_dockerd.json"


def recorded() -> dict[str, dict[str, bytes]]:
    document = json.loads(RECORDED.read_text())
    return {
        name: {key: bytes.fromhex(value) for key, value in outputs.items()}
        for name, outputs in document["cases"].items()
    }


DOCKERD = recorded()


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    with served_containers(HOST, PORT):
        yield f"tcp://{HOST}:{PORT}"


def test_every_case_has_dockerds_outputs() -> None:
    every = [case.name for case in cases() + service_cases()]  # services: tests/integration
    assert sorted(DOCKERD) == sorted(every)


@pytest.mark.parametrize("case", cases(), ids=lambda case: case.name)
def test_the_cli_prints_what_dockerd_printed(engine: str, case: Case) -> None:
    assert play(case, engine) == DOCKERD[case.name]
