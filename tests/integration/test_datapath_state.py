"""The data path program in real node processes: tasks publish their endpoints in NetworkDB
over gossip, every node on a network programs the others' endpoints, and the managers' keys
reach every node through its dispatcher session (issue 5's program, before any frame is
sent)."""

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
                    "POST",
                    "/networks/create",
                    {"Name": "blue", "Driver": "overlay", "Options": {"encrypted": ""}},
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
                # Two peers, and their SAs: one outbound and at least one inbound per peer.
                if blue and blue[0]["fdb"] == 2 and len(blue[0]["peers"]) == 2 and shown["sas"]:
                    return shown
                return None

            for node in lab.nodes:
                shown = await until(lambda n=node.name: programmed(n), 60, f"{node.name}'s program")
                [blue] = [s for s in shown["segments"] if s["network"] == "blue"]
                assert blue["mtu"] == 1424 and blue["encrypted"]
                # The managers' keys reached the node: an outbound SA per peer (primary key)
                # and an inbound SA per peer and key.
                assert shown["sas"] >= 4, shown["text"]
                assert "aead rfc4106(gcm(aes))" in shown["text"]
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
