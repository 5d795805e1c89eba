"""Emulated Windows nodes (`swarmlab node run --platform windows`) with the real docker CLI, in
a lab of 1 manager, 1 Linux worker and 2 Windows workers (127.77.196.x): the platform shows in
`docker node inspect`/`docker info` and drives placement constraints, and on an encrypted
overlay Windows and Linux containers cannot talk (the reason shown on the node) while Windows
containers talk in the clear, plain VXLAN on the wire."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from docker_cli import docker, needs_docker_cli, ok
from userspace_testing import Capture

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]

LAB = 196


def test_windows_nodes_on_an_encrypted_overlay(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=1, lab=LAB, windows_workers=2)
        try:
            await lab.up()
            manager, linux, win1, win2 = (
                lab.node(n) for n in ("manager-1", "worker-1", "windows-1", "windows-2")
            )

            async def all_ready() -> bool | None:
                rows = await lab.node_list()
                ready = len(rows) == 4 and all(r["Status"]["State"] == "ready" for r in rows)
                return True if ready else None

            await until(all_ready, 60, "4 ready nodes")
            platforms = ok(manager, "node", "ls", "--format", "{{.Hostname}}")
            for name in platforms.split():
                os_name = ok(manager, "node", "inspect", name, "--format",
                             "{{.Description.Platform.OS}}").strip()  # fmt: skip
                assert os_name == ("windows" if name.startswith("windows-") else "linux"), name
            assert ok(win1, "info", "--format", "{{.OSType}}").strip() == "windows"
            info = docker(win1, "info")
            assert "encryption is not applied on this Windows node" in info.stdout + info.stderr

            # Placement: node.platform.os==windows puts tasks on Windows nodes only.
            ok(manager, "service", "create", "--detach", "--name", "wsvc", "--replicas", "2",
               "--constraint", "node.platform.os==windows", "busybox", "sleep", "3600")  # fmt: skip

            async def placed() -> set[str] | None:
                rows = ok(manager, "service", "ps", "wsvc", "--filter", "desired-state=running",
                          "--format", "{{.Node}} {{.CurrentState}}").splitlines()  # fmt: skip
                running = [r.split()[0] for r in rows if " Running" in r]
                return set(running) if len(running) == 2 else None

            assert await until(placed, 90, "wsvc's 2 tasks running") <= {"windows-1", "windows-2"}

            ok(manager, "network", "create", "-d", "overlay", "--attachable", "--opt",
               "encrypted", "sec")  # fmt: skip
            ok(linux, "run", "-d", "--name", "lweb", "--network", "sec", "nginx")
            ok(win2, "run", "-d", "--name", "wweb", "--network", "sec", "nginx")
            # Keeps windows-1 on the network after the pinging containers are gone.
            ok(win1, "run", "-d", "--name", "wstay", "--network", "sec", "busybox", "sleep", "3600")

            def ping_from_win1(target: str) -> subprocess.CompletedProcess[str]:
                return docker(win1, "run", "--rm", "--network", "sec", "busybox",
                              "ping", "-c", "2", target)  # fmt: skip

            async def windows_pinged() -> str | None:
                run = ping_from_win1("wweb")
                return run.stdout if run.returncode == 0 else None

            async with Capture(tmp_path / "win.pcap", win1.address) as capture:
                out = await until(windows_pinged, 90, "wweb answering pings from windows-1")
                assert "2 packets received" in out
                failed = ping_from_win1("lweb")
            print(out, failed.stdout, sep="\n")
            assert failed.returncode != 0 and "0 packets received" in failed.stdout

            # Why, shown on the Windows node: its data path program and network inspect.
            async with lab.engine(win1) as engine:
                datapath = await engine.datapath()
            [segment] = [s for s in datapath["segments"] if s["network"] == "sec"]
            assert datapath["platform"] == "windows" and not segment["encrypted"]
            assert "encryption is not applied on Windows nodes" in segment["platform_note"]
            assert "lweb" in {u["name"] for u in segment["unreachable"]}
            print(datapath["text"])
            assert datapath["sas"] == 0
            [inspected] = json.loads(ok(win1, "network", "inspect", "sec"))
            print(json.dumps(inspected["Options"], indent=2))
            assert "encryption is not applied" in inspected["Options"]["com.swarmlab.encryption"]
            [on_linux] = json.loads(ok(linux, "network", "inspect", "sec"))
            assert "com.swarmlab.encryption" not in on_linux["Options"]
            async with lab.engine(linux) as engine:
                linux_path = await engine.datapath()
            [lseg] = [s for s in linux_path["segments"] if s["network"] == "sec"]
            assert lseg["encrypted"] and "wweb" in {u["name"] for u in lseg["unreachable"]}

            # On the wire: windows-1's overlay traffic is bare VXLAN (no ESP) to windows-2,
            # and nothing at all goes to the Linux worker.
            rows = capture.decode("vxlan", ["ip.src", "ip.dst", "frame.protocols"])
            assert rows, "no data path datagram captured"
            assert any(
                r[2].startswith("eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:icmp") for r in rows
            )
            assert not any("esp" in r[2] for r in rows), rows
            outer = {address.split(",")[0] for r in rows for address in r[:2]}  # then inner
            assert outer == {win1.address, win2.address}, rows
        finally:
            lab.stop()

    asyncio.run(scenario())
