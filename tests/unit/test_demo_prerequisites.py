"""What the demo and its wire capture do when a tool they shell out to is missing: a clear
message naming the tool and how to get it, never a traceback."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from controlplane.lab import capture, demo
from controlplane.lab.capture import CaptureUnavailable, WireCapture


def test_capture_without_tshark_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture.shutil, "which", lambda name: None)

    async def scenario() -> WireCapture:
        async with WireCapture(tmp_path / "none.pcap", "127.0.0.1") as cap:
            return cap

    cap = asyncio.run(scenario())
    with pytest.raises(CaptureUnavailable, match=r"tshark is not installed \(apt-get install"):
        cap.decode("vxlan", ["frame.protocols"])
    assert not (tmp_path / "none.pcap").exists()


def test_demo_without_the_docker_cli_says_so_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        demo.shutil, "which", lambda name: None if name == "docker" else real_which(name)
    )
    assert asyncio.run(demo.run_demo(tmp_path)) == 2
    out = capsys.readouterr().out
    assert "real docker CLI, which is not on PATH" in out and "apt-get install docker.io" in out
    assert list(tmp_path.iterdir()) == []  # no lab was started
