"""The ids and creation times of a node's local networks (`agent/local_network_ids.py`), as
dockerd 20.10 keeps them (measured by restarting one in its own network namespace): random
per node, kept across restarts in the data dir, but `bridge`'s made again at each start;
and the same through `docker network ls` and `inspect` of an in-process node at
127.77.188.4/.5, restarted on its data dir."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from served_api import docker_at, worker_port

from controlplane.agent.local_network_ids import LOCAL_NETWORKS_FILE, LocalNetworkIds
from controlplane.node import NodeOptions, SwarmNode
from tests.unit.in_process_node import run_node


def test_ids_are_random_per_node_and_kept_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / LOCAL_NETWORKS_FILE
    first = LocalNetworkIds(path)
    made = {name: first.get(name) for name in ("bridge", "host", "none", "docker_gwbridge")}
    assert all(re.fullmatch(r"[0-9a-f]{64}", identity.id) for identity in made.values())
    assert len({identity.id for identity in made.values()}) == 4
    assert first.get("host") == made["host"]  # asked again: the same
    other_node = LocalNetworkIds(tmp_path / "other" / LOCAL_NETWORKS_FILE)
    assert other_node.id("host") != made["host"].id

    restarted = LocalNetworkIds(path)
    for name in ("host", "none", "docker_gwbridge"):
        assert restarted.get(name) == made[name]  # id and Created kept
    assert restarted.id("bridge") != made["bridge"].id  # dockerd makes bridge again
    assert restarted.get("bridge").created_ns > made["bridge"].created_ns


def test_a_damaged_file_gives_new_ids(tmp_path: Path) -> None:
    path = tmp_path / LOCAL_NETWORKS_FILE
    path.write_text("{not json")
    ids = LocalNetworkIds(path)
    assert re.fullmatch(r"[0-9a-f]{64}", ids.id("host"))
    assert LocalNetworkIds(path).id("host") == ids.id("host")  # written back whole


def test_a_node_shows_its_own_ids_and_keeps_them_over_a_restart(tmp_path: Path) -> None:
    address = f"127.77.188.{4 + worker_port(0)}"
    template = "{{.Name}} {{.ID}} {{.CreatedAt}}"

    def listed() -> dict[str, tuple[str, str]]:
        done = docker_at(address, 2375, "network", "ls", "--no-trunc", "--format", template)
        assert done.returncode == 0, done.stderr
        rows = [line.split(" ", 2) for line in done.stdout.splitlines()]
        return {name: (nid, created) for name, nid, created in rows}

    seen: list[dict[str, tuple[str, str]]] = []

    async def look(_node: SwarmNode) -> None:
        seen.append(await asyncio.to_thread(listed))

    options = NodeOptions(tmp_path / "node", address, dns_upstreams=[])
    run_node(options, look)
    run_node(options, look)
    before, after = seen
    assert sorted(before) == ["bridge", "host", "none"]
    assert before["host"] == after["host"] and before["none"] == after["none"]
    assert before["bridge"][0] != after["bridge"][0]
    assert before["bridge"][1] < after["bridge"][1]
    assert all(re.fullmatch(r"[0-9a-f]{64}", nid) for nid, _ in before.values())
