"""A node's small state files damaged (torn, not UTF-8, the wrong JSON shape or types):
`swarm.json` and the attachment ledger are refused naming the file and what to do, never
half-read, and left on disk for the user to look at."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from controlplane.agent.attachment_ledger import AttachmentLedger, AttachmentLedgerError
from controlplane.membership import Membership
from controlplane.process import NodeError

GOOD = Membership(
    node_id="abc",
    cluster_id="def",
    role="manager",
    listen_addr="127.77.228.11:2377",
    advertise_addr="127.77.228.11:2377",
    data_path_addr="127.77.228.11",
    managers=["127.77.228.11:2377"],
)


def with_field(**changes: object) -> bytes:
    return json.dumps({**asdict(GOOD), **changes}).encode()


def test_membership_round_trips_and_a_missing_file_is_no_membership(tmp_path: Path) -> None:
    path = tmp_path / "swarm.json"
    assert Membership.load(path) is None
    GOOD.save(path)
    assert Membership.load(path) == GOOD


@pytest.mark.parametrize(
    "content",
    [
        b"",
        with_field()[:40],  # torn
        b"\xff\xfe\x00garbage",
        b"[]",
        b'"swarm"',
        json.dumps({"node_id": "abc"}).encode(),  # fields missing
        with_field(color="blue"),  # a field this version does not know
        with_field(role="leader"),
        with_field(role=None),
        with_field(node_id=5),
        with_field(managers="127.77.228.11:2377"),
        with_field(managers=[2377]),
        with_field(data_path_port="4789"),
        with_field(data_path_port=True),
    ],
)
def test_a_damaged_swarm_json_is_named_with_what_to_do(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "swarm.json"
    path.write_bytes(content)
    with pytest.raises(NodeError) as refused:
        Membership.load(path)
    assert str(refused.value).startswith(f"{path} is damaged (")
    assert str(refused.value).endswith(f"remove {tmp_path} to start this node afresh")
    assert path.read_bytes() == content


@pytest.mark.parametrize("content", [b"\xff\xfe\x00", b"", b"[", b'["att1", 2]', b"{}"])
def test_a_damaged_attachment_ledger_is_named_with_what_to_do(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "attachments.json"
    path.write_bytes(content)
    with pytest.raises(AttachmentLedgerError) as refused:
        AttachmentLedger(path)
    assert str(path) in str(refused.value) and "remove" in str(refused.value)
    assert path.read_bytes() == content
