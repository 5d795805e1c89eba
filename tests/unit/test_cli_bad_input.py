"""`swarmlab` given what it cannot use: wrong flags and values, a lab that is not there or whose
`lab.json` is damaged, node names the lab lacks. Each ends with one line naming what was wrong
(argparse's usage error, exit 2, or `Error: ...`, exit 1), never a traceback, and a lab that
cannot start fails at once rather than after a timeout. Runs `cli.main` in this process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from controlplane.cli import main
from controlplane.lab.control import LAB_FILE
from controlplane.lab.swarm_lab import NodeExited, SwarmLab, node_host
from controlplane.node import STATE_FILE

LAB = 227  # 127.77.227.x: this file's addresses


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one `Error: ...` line `swarmlab ARGV` ends with (exit status 1)."""
    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """argparse's refusal (exit status 2) of a flag or value."""
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage: swarmlab" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["up", "--managers", "three"], "invalid int value: 'three'"),
        (["up", "--profile", "fast"], "invalid choice: 'fast'"),
        (["up", "--datapath", "ebpf"], "invalid choice: 'ebpf'"),
        (["up", "--key-rotation-interval", "0"], "give a positive number of seconds"),
        (["up", "--key-rotation-interval", "inf"], "give a positive number of seconds"),
        (["up", "--key-rotation-interval", "soon"], "is not a number of seconds"),
        (["raft", "status", "--manager", "127.0.0.1"], "is not HOST:PORT"),
        (["raft", "status", "--manager", "127.0.0.1:²"], "is not HOST:PORT"),
        (["raft", "status", "--manager", "127.0.0.1:70000"], "is not HOST:PORT"),
        (["store", "create-network", "n", "--label", "=x"], "is not KEY=VALUE"),
        (["gossip", "view", "--node", "127.0.0.1:7946", "--key", "zz"], "is not a hex key"),
        (["gossip", "view", "--node", "127.0.0.1:7946", "--key", "00" * 8], "16, 24 or 32"),
        (["node", "run", "--address", "127.0.0.1"], "--data-dir"),
        (["node", "run", "--data-dir", "d", "--address", "127.0.0.1:2375"], "without a port"),
        (["node", "run", "--data-dir", "d", "--address", "127.77.0.300"], "not an IP address"),
        (["node", "run", "--data-dir", "d", "--address", ""], "not an IP address"),
        (["status", "--jsn"], "unrecognized arguments: --jsn"),
        (["nosuch"], "invalid choice: 'nosuch'"),
        ([], "COMMAND"),
    ],
)
def test_wrong_flags_are_refused_by_name(
    capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    assert named in usage_error(capsys, *argv)


def test_a_dns_upstream_without_a_port_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for value in ("127.0.0.53", "127.0.0.53:²", ":53"):
        err = fails(
            capsys,
            "node",
            "run",
            "--data-dir",
            str(tmp_path),
            "--address",
            node_host("manager", 1, LAB),
            "--dns-upstream",
            value,
        )
        assert f"--dns-upstream {value!r}: give HOST:PORT" in err
    assert list(tmp_path.iterdir()) == []  # refused before the node made anything


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["up", "--managers", "0"], "at least one manager"),
        (["up", "--workers", "-1"], "no negative worker count"),
        (["up", "--lab", "256"], "lab 256: a lab number is the third byte of 127.77.LAB.x"),
        (["up", "--lab", "-1"], "lab -1"),
        (["up", "--managers", "90", "--lab", str(LAB)], "90 manager nodes do not fit"),
        (["up", "--workers", "100", "--lab", str(LAB)], "100 worker nodes do not fit"),
        (["up", "--windows-workers", "55", "--lab", str(LAB)], "55 windows nodes do not fit"),
    ],
)
def test_up_refuses_a_lab_it_cannot_address_before_starting_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], named: str
) -> None:
    lab_dir = tmp_path / "lab"
    assert named in fails(capsys, *argv, "--lab-dir", str(lab_dir))
    assert not (lab_dir / LAB_FILE).exists()
    assert not any(lab_dir.glob("*/stderr.log"))  # no node process was started


@pytest.mark.parametrize(
    "command",
    [["status"], ["env", "manager-1"], ["kill", "manager-1"], ["logs", "manager-1"], ["heal"]],
)
def test_lab_commands_without_a_lab_say_how_to_start_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    err = fails(capsys, *command, "--lab-dir", str(tmp_path))
    assert f"no lab in {tmp_path}; start one with `swarmlab up`" in err


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"lab": 3, "profile": "lab", "nod',  # torn
        b"\xff\xfe not text",
        b"[]",
        b'"a string"',
        b'{"profile": "lab", "nodes": []}',  # no lab number
        b'{"lab": 3, "profile": "lab", "nodes": [{"name": "manager-1"}]}',
        b'{"lab": 3, "profile": "lab", "nodes": ["manager-1"]}',
    ],
)
def test_a_damaged_lab_file_is_named_with_what_to_do(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes
) -> None:
    (tmp_path / LAB_FILE).write_bytes(content)
    for command in (["status"], ["down"], ["env", "manager-1"]):
        err = fails(capsys, *command, "--lab-dir", str(tmp_path))
        assert f"{tmp_path / LAB_FILE} is damaged" in err
        assert f"remove {tmp_path} and start again" in err
    assert (tmp_path / LAB_FILE).read_bytes() == content  # left for the user to look at


def test_a_node_the_lab_lacks_is_named_with_those_it_has(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    state = {
        "lab": LAB,
        "profile": "lab",
        "datapath": "userspace",
        "nodes": [
            {
                "name": "manager-1",
                "address": node_host("manager", 1, LAB),
                "data_dir": str(tmp_path / "manager-1"),
                "pid": 1,  # not a node of this lab: never signalled
                "arguments": [],
            }
        ],
    }
    (tmp_path / LAB_FILE).write_text(json.dumps(state))
    for command in (["env", "worker-9"], ["restart", "worker-9"], ["logs", "worker-9"]):
        err = fails(capsys, *command, "--lab-dir", str(tmp_path))
        assert "no node named 'worker-9' in this lab; its nodes are manager-1" in err
    assert "name one node, or use --leader" in fails(capsys, "kill", "--lab-dir", str(tmp_path))
    err = fails(capsys, "kill", "manager-1", "--leader", "--lab-dir", str(tmp_path))
    assert "name one node, or use --leader" in err


def test_waiting_for_a_node_that_exited_fails_at_once_with_its_error(tmp_path: Path) -> None:
    """A node that cannot start (here its torn `swarm.json`) ends the wait with the node's
    own error line, not a timeout that hides it."""
    lab = SwarmLab(tmp_path, managers=1, workers=0, lab=LAB)
    node = lab.nodes[0]
    node.data_dir.mkdir(parents=True)
    (node.data_dir / STATE_FILE).write_text('{"node_id": "abc", "clus')
    node.start()
    try:
        with pytest.raises(NodeExited) as exited:
            asyncio.run(lab.wait_api(node, timeout=600))
    finally:
        lab.kill_all()
    assert f"manager-1 exited: Error: {node.data_dir / STATE_FILE} is damaged" in str(exited.value)
    assert f"remove {node.data_dir} to start this node afresh" in str(exited.value)
