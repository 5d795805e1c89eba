"""`/system/df`, `/containers/prune` and `/info`'s container counts over one node's
containers (an in-process runtime): the shapes dockerd 20.10 answered `docker system df`,
`docker container prune` and `docker info` with."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from controlplane.agent.runtime import Runtime
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api import containers, create_app, system
from controlplane.api.local import LocalBackend

HOST = "127.77.123.1"
DEADLINE = 30.0


async def run_container(client: TestClient[Any, Any], name: str, *cmd: str, **labels: str) -> str:
    body = {"Image": "busybox", "Cmd": list(cmd), "Labels": labels}
    created = await client.post(f"/v1.41/containers/create?name={name}", json=body)
    assert created.status == 201, await created.text()
    container_id: str = (await created.json())["Id"]
    started = await client.post(f"/v1.41/containers/{container_id}/start")
    assert started.status == 204, await started.text()
    return container_id


async def wait_exited(client: TestClient[Any, Any], container_id: str) -> None:
    waited = await client.post(f"/v1.41/containers/{container_id}/wait")
    assert waited.status == 200


def test_df_prune_and_info_count_the_nodes_containers() -> None:
    async def main() -> None:
        registry = StandaloneContainers(Runtime())
        app = system.register(containers.register(create_app(LocalBackend()), registry), registry)
        async with TestClient(TestServer(app, host=HOST)) as client:
            try:
                await scenario(client)
            finally:
                await registry.close()

    async def scenario(client: TestClient[Any, Any]) -> None:
        runs = await run_container(client, "runs", "sleep", "1000")
        done = await run_container(client, "done", "true")
        kept = await run_container(client, "kept", "true", keep="yes")
        for container_id in (done, kept):
            await wait_exited(client, container_id)

        info = await (await client.get("/v1.41/info")).json()
        assert (info["Containers"], info["ContainersRunning"], info["ContainersStopped"]) == (
            3,
            1,
            2,
        )
        assert info["Images"] == len(await (await client.get("/v1.41/images/json")).json())

        made = await client.post("/v1.41/volumes/create", json={"Name": "data"})
        Path((await made.json())["Mountpoint"], "f").write_text("hello\n")
        df = await (await client.get("/v1.41/system/df")).json()
        assert list(df) == [
            "LayersSize", "Images", "Containers", "Volumes", "BuildCache", "BuilderSize"
        ]  # fmt: skip
        [busybox] = [i for i in df["Images"] if i["RepoTags"] == ["busybox:latest"]]
        assert (busybox["Containers"], busybox["SharedSize"]) == (3, 0)
        assert df["LayersSize"] == sum(i["Size"] for i in df["Images"])
        assert {c["Id"] for c in df["Containers"]} == {runs, done, kept}
        assert all(c["SizeRw"] == 0 for c in df["Containers"])
        # Real 20.10 for a volume holding a 6-byte file, mounted by no container:
        # `data  0  6B` in `docker system df -v`, UsageData {"RefCount": 0, "Size": 6}.
        [volume] = df["Volumes"]
        assert (volume["Name"], volume["UsageData"]) == ("data", {"RefCount": 0, "Size": 6})
        assert df["BuildCache"] == []

        query = {"filters": json.dumps({"label!": {"keep": True}})}
        pruned = await client.post("/v1.41/containers/prune", params=query)
        assert await pruned.json() == {"ContainersDeleted": [done], "SpaceReclaimed": 0}
        pruned = await client.post("/v1.41/containers/prune")
        assert await pruned.json() == {"ContainersDeleted": [kept], "SpaceReclaimed": 0}
        pruned = await client.post("/v1.41/containers/prune")
        assert await pruned.json() == {"ContainersDeleted": None, "SpaceReclaimed": 0}
        listed = await (await client.get("/v1.41/containers/json?all=1")).json()
        assert [c["Id"] for c in listed] == [runs]
        until = {"filters": json.dumps({"until": {"24h": True}})}
        refused = await client.post("/v1.41/containers/prune", params=until)
        assert refused.status == 400
        assert (
            "until filter of container prune is not emulated" in (await refused.json())["message"]
        )

    asyncio.run(asyncio.wait_for(main(), DEADLINE))
