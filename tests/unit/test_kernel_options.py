"""`--datapath kernel` refused with a clear reason where the host cannot run it."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.datapath.kernel import namespaces
from controlplane.node import NodeError, NodeOptions, SwarmNode


def test_kernel_datapath_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(namespaces.os, "geteuid", lambda: 1000)
    assert "needs root" in namespaces.kernel_datapath_unavailable()


def test_node_refuses_kernel_datapath_without_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(namespaces.os, "geteuid", lambda: 1000)
    options = NodeOptions(tmp_path, "127.77.170.5", datapath="kernel")
    with pytest.raises(NodeError, match=r"--datapath kernel: .*needs root.*--datapath userspace"):
        SwarmNode(options)


def test_node_refuses_an_unknown_datapath(tmp_path: Path) -> None:
    with pytest.raises(NodeError, match="unknown data path 'ebpf'; use one of userspace, kernel"):
        SwarmNode(NodeOptions(tmp_path, "127.77.170.5", datapath="ebpf"))
