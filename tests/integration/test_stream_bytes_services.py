"""`docker service logs` of a task that writes partial lines, carriage returns, a 20 KiB line,
bad UTF-8 and both streams, through the real docker CLI against a one-manager lab
(127.77.217.11), byte for byte as a real dockerd 20.10 swarm gave it (recorded by
`bench/stream_bytes.py --record`; the cases are `tests/stream_cases.service_cases`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from docker_cli import needs_docker_cli
from stream_cases import play, service_cases

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

RECORDED = Path(__file__).parent.parent / "compat" / "stream_bytes_dockerd.json"


def test_service_logs_are_dockerds_byte_for_byte(tmp_path: Path) -> None:
    document = json.loads(RECORDED.read_text())["cases"]

    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=0, lab=217)
        try:
            await lab.up()
            await until(lab.all_ready, 60, "the manager Ready")
            host = f"tcp://{lab.node('manager-1').api}"
            for case in service_cases():
                dockerd = {k: bytes.fromhex(v) for k, v in document[case.name].items()}
                assert await asyncio.to_thread(play, case, host) == dockerd, case.name
        finally:
            lab.stop()

    asyncio.run(scenario())
