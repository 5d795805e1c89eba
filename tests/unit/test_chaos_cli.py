"""`swarmlab chaos run` refuses bad options with a message naming the option and the fix,
before touching the lab."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.cli import main
from controlplane.lab.chaos import ChaosError, parse_run_duration
from controlplane.lab.control import LabNode, LabState


def stopped_lab(lab_dir: Path) -> None:
    nodes = [
        LabNode(name, f"127.77.225.{i}", str(lab_dir / name), 999_999_999, ["node", "run"])
        for i, name in enumerate(("manager-1", "manager-2", "manager-3", "worker-1"), 11)
    ]
    LabState(225, "lab", nodes).save(lab_dir)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--faults", "kill,reboot"], "unknown fault 'reboot' in --faults; choose from kill,"),
        (["--duration", "soon"], "'soon' is not a duration; write it as e.g. 60s or 2m"),
        (["--duration", "5s"], "no room for a phase; give --duration 13s or more"),
        (["--duration", "0"], "a chaos run needs a positive duration"),
        ([], "manager-1, manager-2, manager-3, worker-1 not running; `swarmlab restart` them"),
    ],
)
def test_bad_options_and_a_stopped_lab_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    stopped_lab(tmp_path)
    assert main(["chaos", "run", "--lab-dir", str(tmp_path), *options]) == 1
    assert message in capsys.readouterr().err


def test_without_a_lab_it_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chaos", "run", "--lab-dir", str(tmp_path)]) == 1
    assert "start one with `swarmlab up`" in capsys.readouterr().err


def test_run_durations() -> None:
    assert parse_run_duration("90s") == 90
    assert parse_run_duration("90") == 90
    assert parse_run_duration("2m") == 120
    assert parse_run_duration("1.5m") == 90
    with pytest.raises(ChaosError):
        parse_run_duration("2h")
