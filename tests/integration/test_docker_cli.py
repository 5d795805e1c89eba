"""The real docker CLI against three manager processes (Engine API on 2375, Raft on 2377)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from controlplane.lab.processes import ManagerLab, ManagerProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]


def docker(manager: ManagerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    api = manager.address.replace(":2377", ":2375")
    return subprocess.run(
        ["docker", "-H", f"tcp://{api}", *args], capture_output=True, text=True, timeout=60
    )


async def wait_for_nodes(manager: ManagerProcess, count: int) -> list[str]:
    """`docker node ls` lines (hostname, status, availability, manager status) once all
    `count` managers have registered their Node objects."""
    fields = "{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}"
    for _ in range(100):
        listing = docker(manager, "node", "ls", "--format", fields)
        assert listing.returncode == 0, listing.stderr
        lines = [line.strip() for line in listing.stdout.splitlines() if line.strip()]
        if len(lines) == count:
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"docker node ls never listed {count} nodes")


def test_networks_through_any_manager_survive_a_leader_failover(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = ManagerLab(tmp_path, 3, lab=120)
        try:
            await lab.start()
            leader, status = await lab.wait_leader()
            follower = next(m for m in lab.managers if m is not leader)
            # The leader knows every manager's state (a manager is Reachable once a send to it
            # got through: one still starting when the leader first wrote to it is Unreachable
            # until the leader's next try, at most 250 ms later).
            expected = sorted(
                f"{m.name} Ready Active {'Leader' if m is leader else 'Reachable'}"
                for m in lab.managers
            )
            for _ in range(50):
                nodes = sorted(await wait_for_nodes(leader, 3))
                if nodes == expected:
                    break
                await asyncio.sleep(0.1)
            assert nodes == expected
            created = docker(follower, "network", "create", "-d", "overlay", "web")
            assert created.returncode == 0, created.stderr
            duplicate = docker(follower, "network", "create", "-d", "overlay", "web")
            assert duplicate.returncode == 1
            assert "network with name web already exists" in duplicate.stderr
            leader.kill()
            await lab.wait_leader(exclude=status.node_id)
            survivor = next(m for m in lab.managers if m.alive() and m is not follower)
            second = docker(survivor, "network", "create", "-d", "overlay", "db")
            assert second.returncode == 0, second.stderr
            listing = docker(survivor, "network", "ls", "--format", "{{.Name}} {{.Driver}}")
            assert sorted(listing.stdout.split("\n")[:-1]) == ["db overlay", "web overlay"]
            vni = '{{index .Options "com.docker.network.driver.overlay.vxlanid_list"}}'
            inspect = docker(
                survivor, "network", "inspect", "-f", "{{json .IPAM.Config}} " + vni, "web", "db"
            )
            assert inspect.stdout.split("\n")[:-1] == [
                '[{"Subnet":"10.0.0.0/24","Gateway":"10.0.0.1"}] 4096',
                '[{"Subnet":"10.0.1.0/24","Gateway":"10.0.1.1"}] 4097',
            ]
            # The new leader learns who answers within an election timeout. On a loaded machine
            # leadership may move again between the two survivors: ask whoever leads now.
            survivors = {m.name for m in lab.managers if m.alive()}
            for _ in range(50):
                new_leader, _ = await lab.wait_leader(exclude=status.node_id)
                after = await wait_for_nodes(new_leader, 3)
                leaders = [line.split()[0] for line in after if line.endswith(" Leader")]
                if f"{leader.name} Ready Active Unreachable" in after and len(leaders) == 1:
                    break
                await asyncio.sleep(0.1)
            assert f"{leader.name} Ready Active Unreachable" in after, after
            assert len(leaders) == 1 and leaders[0] in survivors, after
            removed = docker(survivor, "network", "rm", "web")
            assert removed.returncode == 0, removed.stderr
            gone = docker(survivor, "network", "inspect", "web")
            assert gone.returncode == 1 and "network web not found" in gone.stderr
        finally:
            lab.stop()

    asyncio.run(scenario())
