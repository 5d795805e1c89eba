"""The data path program in real node processes: tasks publish their endpoints in NetworkDB
over gossip, and every node on a network programs the others' endpoints (issue 5's program,
before any frame is sent)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from controlplane.datapath.program import mac_for
from controlplane.lab.swarm_lab import SwarmLab, until


def test_every_node_programs_the_endpoints_the_others_publish(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=147)
        try:
            await lab.up()
            async with lab.engine("manager-1") as engine:
                await engine.request(
                    "POST", "/networks/create", {"Name": "blue", "Driver": "overlay"}
                )
                service = await engine.request(
                    "POST",
                    "/services/create",
                    {
                        "Name": "web",
                        "TaskTemplate": {
                            "ContainerSpec": {"Image": "nginx"},
                            "Networks": [{"Target": "blue"}],
                        },
                        "Mode": {"Global": {}},
                    },
                )

                async def running() -> list[dict[str, Any]] | None:
                    tasks = await engine.request("GET", "/tasks")
                    mine = [
                        t
                        for t in tasks
                        if t["ServiceID"] == service["ID"] and t["Status"]["State"] == "running"
                    ]
                    return mine if len(mine) == 3 else None

                tasks = await until(running, 60, "a task running on each node")
            addresses = {
                t["NodeID"]: a["Addresses"][0].partition("/")[0]
                for t in tasks
                for a in t["NetworksAttachments"]
                if a["Network"]["Spec"]["Name"] == "blue"
            }
            assert len(addresses) == 3

            async def programmed(node: str) -> dict[str, Any] | None:
                async with lab.engine(node) as e:
                    shown = await e.datapath()
                blue = [s for s in shown["segments"] if s["network"] == "blue"]
                if blue and blue[0]["fdb"] == 2 and len(blue[0]["peers"]) == 2:
                    return shown
                return None

            for node in lab.nodes:
                shown = await until(lambda n=node.name: programmed(n), 60, f"{node.name}'s program")
                [blue] = [s for s in shown["segments"] if s["network"] == "blue"]
                assert blue["mtu"] == 1450 and not blue["encrypted"]
                others = [ip for nid, ip in addresses.items() if nid != shown["node"]]
                for ip in others:
                    assert f"{ip} lladdr {mac_for(ip)} PERMANENT" in shown["text"]

            # The service goes: every node withdraws its endpoint and leaves the network.
            async with lab.engine("manager-1") as engine:
                await engine.request("DELETE", f"/services/{service['ID']}")

            async def withdrawn(node: str) -> bool | None:
                async with lab.engine(node) as e:
                    shown = await e.datapath()
                return None if any(s["network"] == "blue" for s in shown["segments"]) else True

            for node in lab.nodes:
                await until(lambda n=node.name: withdrawn(n), 60, f"{node.name} off blue")
        finally:
            lab.stop()

    asyncio.run(scenario())
