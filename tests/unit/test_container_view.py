"""One view of the node's containers: a swarm task's container, run by the worker in the node's
runtime, next to a `docker run` one in `/containers/json` (with `docker ps`'s filters),
`inspect`, `logs`, `exec`, `kill` and `rm -f` (the task then fails with Docker's
`task: non-zero exit (137)`); what only `docker run`'s may do refused; the worker's close
removing its task containers, sparing the standalone ones. And the attachment ledger a
restarted node releases."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from polling import eventually

from controlplane.agent.attachment_ledger import AttachmentLedger, AttachmentLedgerError
from controlplane.agent.runtime import ContainerConfig, ContainerState, Runtime
from controlplane.agent.standalone import StandaloneContainers, Swarm
from controlplane.agent.worker import Worker
from controlplane.api import containers, create_app
from controlplane.api.local import LocalBackend
from controlplane.api.networks import endpoint_id
from controlplane.pb.datapath_pb2 import EndpointRecord
from controlplane.pb.dispatcher_pb2 import AttachNetworkResponse
from controlplane.pb.objects_pb2 import Network, Task, TaskStatus

DEADLINE = 30.0
TASK_ID = "x0m4bd7kq0e1yzt8s7hd3l9fa"  # 25 characters, as swarmkit's ids
Client = TestClient[Any, Any]


def web_task() -> Task:
    t = Task(id=TASK_ID, node_id="node1", service_id="svc1", slot=1, desired_state="running")
    t.spec.annotations.name = "web"
    t.spec.container.image = "nginx"
    t.spec.container.labels["team"] = "blue"
    # `--limit-cpu 0.5 --limit-memory 64M --mount type=volume,source=svcdata,target=/data
    # --mount type=tmpfs,target=/cache --no-healthcheck`, as the API keeps them
    t.spec.resources.limits.nano_cpus = 500_000_000
    t.spec.resources.limits.memory_bytes = 64 * 1024 * 1024
    t.spec.container.unmodelled_json = json.dumps(
        {
            "Mounts": [
                {"Type": "volume", "Source": "svcdata", "Target": "/data"},
                {"Type": "tmpfs", "Target": "/cache"},
            ],
            "Healthcheck": {"Test": ["NONE"]},
        }
    )
    t.status.state = "assigned"
    return t


class Node:
    """A node's engine API over one runtime shared by its worker and `docker run`."""

    def __init__(self, client: Client, registry: StandaloneContainers) -> None:
        self.client, self.registry = client, registry
        self.worker = Worker(registry.runtime, self.report, stop_grace=0.1)
        self.reports: dict[str, list[TaskStatus]] = {}

    def report(self, task_id: str, status: TaskStatus) -> None:
        self.reports.setdefault(task_id, []).append(status)

    def states(self) -> list[str]:
        return [s.state for s in self.reports.get(TASK_ID, [])]

    async def ps(self, **query: str) -> list[dict[str, Any]]:
        response = await self.client.get("/containers/json", params=query)
        assert response.status == 200, await response.text()
        listed: list[dict[str, Any]] = await response.json()
        return listed

    async def names(self, filters: dict[str, list[str]], all_: bool = False) -> list[str]:
        query = {"filters": json.dumps(filters), **({"all": "1"} if all_ else {})}
        return [c["Names"][0] for c in await self.ps(**query)]


def run(test: Callable[[Node], Awaitable[None]]) -> None:
    async def main() -> None:
        registry = StandaloneContainers(Runtime())
        app = containers.register(create_app(LocalBackend()), registry)
        async with TestClient(TestServer(app)) as client:
            node = Node(client, registry)
            standalone = registry.create(ContainerConfig(image="busybox", name="webby",
                                                         args=["sleep", "600"]))  # fmt: skip
            await registry.start(standalone.id)
            node.worker.reconcile({TASK_ID: web_task()}, {})
            await eventually("the task running", lambda: "running" in node.states())
            try:
                await test(node)
            finally:
                await node.worker.close()
                await registry.close()

    asyncio.run(main())


def test_ps_lists_task_containers_with_dockers_names_labels_and_filters() -> None:
    async def test(node: Node) -> None:
        task_name = f"/web.1.{TASK_ID}"
        assert sorted(c["Names"][0] for c in await node.ps()) == [task_name, "/webby"]
        [summary] = [c for c in await node.ps() if c["Names"] == [task_name]]
        assert summary["Labels"] == {
            "team": "blue",
            "com.docker.swarm.node.id": "node1",
            "com.docker.swarm.service.id": "svc1",
            "com.docker.swarm.service.name": "web",
            "com.docker.swarm.task": "",
            "com.docker.swarm.task.id": TASK_ID,
            "com.docker.swarm.task.name": f"web.1.{TASK_ID}",
        }
        # `name` is a regular expression searched in "/NAME", as dockerd's.
        assert sorted(await node.names({"name": ["web"]})) == [task_name, "/webby"]
        assert await node.names({"name": ["^/web\\."]}) == [task_name]
        assert await node.names({"name": ["^/webby$", "nomatch"]}) == ["/webby"]
        assert await node.names({"label": ["com.docker.swarm.service.name=web"]}) == [task_name]
        assert await node.names({"label": ["team"]}) == [task_name]
        assert await node.names({"label": ["team=red"]}) == []
        assert await node.names({"id": [summary["Id"][:12]]}) == [task_name]
        assert await node.names({"status": ["exited"]}) == []  # no `-a` needed with status
        assert sorted(await node.names({"health": ["none"]})) == [task_name, "/webby"]
        assert await node.names({"health": ["healthy", "starting"]}) == []

    run(test)


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ('{"status": {"sleeping": true}}', "Invalid filter 'status=sleeping'"),
        ('{"name": {"(": true}}', "invalid filter 'name'"),
        ('{"ancestor": {"nginx": true}}', "Invalid filter 'ancestor'"),
        ('{"health": {"fine": true}}', "Unrecognised filter value for health: fine"),
        ('["name"]', "expected a JSON object"),
    ],
)
def test_bad_ps_filters_are_refused_in_dockerd_words(filters: str, message: str) -> None:
    async def test(node: Node) -> None:
        response = await node.client.get("/containers/json", params={"filters": filters})
        assert response.status == 400
        assert message in (await response.json())["message"]

    run(test)


def test_inspect_logs_and_exec_reach_a_task_container() -> None:
    async def test(node: Node) -> None:
        name = f"web.1.{TASK_ID}"
        inspected = await (await node.client.get(f"/containers/{name}/json")).json()
        assert inspected["State"]["Status"] == "running"
        assert inspected["Config"]["Labels"]["com.docker.swarm.task.id"] == TASK_ID
        cid = inspected["Id"]

        async def logged() -> bytes:
            response = await node.client.get(f"/containers/{cid}/logs", params={"stdout": "1"})
            return await response.read()

        deadline = time.monotonic() + DEADLINE
        while b"Configuration complete" not in await logged():
            assert time.monotonic() < deadline, "nginx's start-up lines in the task's logs"
            await asyncio.sleep(0.05)
        created = await node.client.post(
            f"/containers/{cid[:12]}/exec",
            json={"Cmd": ["sh", "-c", "echo in $HOSTNAME"], "AttachStdout": True},
        )
        assert created.status == 201, await created.text()
        exec_id = (await created.json())["Id"]
        started = await node.client.post(f"/exec/{exec_id}/start", json={"Detach": True})
        assert started.status == 200
        session = node.registry.execs.get(exec_id)
        await asyncio.wait_for(session.done.wait(), DEADLINE)
        assert session.exit_code == 0
        output = b"".join([data async for _, data in session.stdio.output.follow(0)])
        assert output == f"in {cid[:12]}\n".encode()

    run(test)


def test_a_task_containers_inspect_has_its_services_limits_mounts_and_healthcheck() -> None:
    """What real dockerd 20.10 showed for the task container of `docker service create
    --limit-cpu 0.5 --limit-memory 64M --mount type=volume,source=svcdata,target=/data
    --mount type=tmpfs,target=/cache --no-healthcheck busybox sleep 1000`."""

    async def test(node: Node) -> None:
        inspected = await (await node.client.get(f"/containers/web.1.{TASK_ID}/json")).json()
        host = inspected["HostConfig"]
        assert (host["NanoCpus"], host["Memory"], host["MemorySwap"]) == (
            500_000_000, 67_108_864, 134_217_728
        )  # fmt: skip
        assert host["Mounts"] == [
            {"Type": "volume", "Source": "svcdata", "Target": "/data"},
            {"Type": "tmpfs", "Target": "/cache"},
        ]
        data = str(node.registry.runtime.volumes.root / "svcdata" / "_data")
        assert inspected["Mounts"] == [
            {"Type": "tmpfs", "Source": "", "Destination": "/cache", "Mode": "", "RW": True,
             "Propagation": ""},
            {"Type": "volume", "Name": "svcdata", "Source": data, "Destination": "/data",
             "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""},
        ]  # fmt: skip
        assert inspected["Config"]["Healthcheck"] == {"Test": ["NONE"]}
        assert "Health" not in inspected["State"]  # no check runs
        # The node made the volume: `docker volume ls` lists it, in use by the task.
        listed = await (await node.client.get("/volumes")).json()
        assert [v["Name"] for v in listed["Volumes"]] == ["svcdata"]
        refused = await node.client.delete("/volumes/svcdata")
        assert refused.status == 409
        assert "remove svcdata: volume is in use" in (await refused.json())["message"]

    run(test)


def test_killing_a_task_container_fails_the_task_with_137() -> None:
    async def test(node: Node) -> None:
        killed = await node.client.post(f"/containers/web.1.{TASK_ID}/kill")
        assert killed.status == 204
        await eventually("the task failed", lambda: "failed" in node.states())
        assert node.reports[TASK_ID][-1].err == "task: non-zero exit (137)"
        [exited] = await node.ps(filters=json.dumps({"status": ["exited"]}))
        assert exited["Status"].startswith("Exited (137)")

    run(test)


def test_rm_force_of_a_task_container_fails_the_task_and_the_cleanup_copes() -> None:
    async def test(node: Node) -> None:
        removed = await node.client.delete(f"/containers/web.1.{TASK_ID}", params={"force": "1"})
        assert removed.status == 204
        await eventually("the task failed", lambda: "failed" in node.states())
        assert node.reports[TASK_ID][-1].err == "task: non-zero exit (137)"
        node.worker.reconcile({}, {})  # the task leaves the set: its container is gone already
        await eventually("no task controller left", lambda: not node.worker.statuses())
        assert [c["Names"] for c in await node.ps(all="1")] == [["/webby"]]

    run(test)


def test_a_restarted_task_container_runs_again_outside_its_ended_task() -> None:
    """As dockerd 20.10 (measured): `docker restart` of a task's container answers 204, the
    task ends with the stop (there `task: non-zero exit (137)`, busybox's sleep ignoring
    SIGTERM; nginx here exits 0: complete) and the container runs on, on no network, until
    the task's removal takes it."""

    async def test(node: Node) -> None:
        name = f"web.1.{TASK_ID}"
        restarted = await node.client.post(f"/containers/{name}/restart", params={"t": "0"})
        assert restarted.status == 204, await restarted.text()
        await eventually("the task ended", lambda: node.states()[-1] != "running")
        assert node.states()[-1] == "complete"  # nginx ends on SIGTERM with status 0
        [summary] = await node.ps(filters=json.dumps({"name": [name]}))
        assert summary["State"] == "running"
        assert node.registry.get(name).networks == {}
        node.worker.reconcile({}, {})  # the ended task leaves the set: its container goes
        await eventually("the container removed", lambda: len(node.registry.containers()) == 1)

    run(test)


def test_a_killed_task_container_starts_again_but_is_never_connected_here() -> None:
    async def test(node: Node) -> None:
        name = f"web.1.{TASK_ID}"
        await node.client.post(f"/containers/{name}/kill")
        await eventually("the task failed", lambda: "failed" in node.states())
        started = await node.client.post(f"/containers/{name}/start")
        assert started.status == 204, await started.text()
        assert node.registry.get(name).state is ContainerState.RUNNING
        assert node.states()[-1] == "failed"  # the ended task stays ended
        connected = await node.client.post(
            "/networks/my-net/connect", json={"Container": name}
        )  # no swarm here, but the container is refused first
        assert connected.status in (404, 409)

    run(test)


def test_closing_the_worker_removes_its_tasks_not_the_standalone_containers() -> None:
    async def test(node: Node) -> None:
        await node.worker.close()
        states = {c.name: c.state for c in node.registry.containers()}
        assert states == {"webby": ContainerState.RUNNING}

    run(test)


class KnownNetworks:
    """The node's data path as the view asks it: the networks its tasks are on."""

    def __init__(self, *networks: Network) -> None:
        self._networks = list(networks)

    def container_attached(self, key: str, network: Network, record: EndpointRecord) -> None:
        raise AssertionError("no standalone container is attached here")

    def container_detached(self, key: str) -> None:
        raise AssertionError("no standalone container is attached here")

    def networks(self) -> list[Network]:
        return self._networks


def test_a_task_containers_networks_in_inspect() -> None:
    async def main() -> None:
        registry = StandaloneContainers(Runtime())
        network = Network(id="net1")
        network.spec.annotations.name = "my-net"
        registry.swarm = Swarm("node1", FlakyManagers(0), KnownNetworks(network))
        task = web_task()
        task.networks.add(network_id="net1", addresses=["10.0.1.5/24"], aliases=["web"])
        worker = Worker(registry.runtime, lambda *_: None, stop_grace=0.1)
        app = containers.register(create_app(LocalBackend()), registry)
        async with TestClient(TestServer(app)) as client:
            worker.reconcile({TASK_ID: task}, {"net1": network})
            name = f"web.1.{TASK_ID}"
            await eventually("the task container", lambda: bool(registry.containers()))
            inspected = await (await client.get(f"/containers/{name}/json")).json()
            on = inspected["NetworkSettings"]["Networks"]["my-net"]
            assert (on["NetworkID"], on["IPAddress"], on["IPPrefixLen"]) == ("net1", "10.0.1.5", 24)
            # As dockerd shows a task's overlay endpoint (seen side by side with a real swarm):
            # its short container id among the aliases, Docker's MAC, no gateway, and the
            # endpoint id `docker network inspect` gives it.
            assert on["Aliases"] == ["web", inspected["Id"][:12]]
            assert (on["MacAddress"], on["Gateway"]) == ("02:42:0a:00:01:05", "")
            assert on["EndpointID"] == endpoint_id("net1", name)
        await worker.close()
        await registry.close()

    asyncio.run(main())


# ---- the attachment ledger -------------------------------------------------------------------


class FlakyManagers:
    """Managers that cannot be reached at first, then remove what they are asked to."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.detached: list[str] = []

    async def attach(
        self, container_id: str, name: str, target: str, aliases: list[str], ipv4: str = ""
    ) -> AttachNetworkResponse:
        raise AssertionError("nothing is attached here")

    async def detach(self, attachment_id: str) -> bool:
        if self.failures:
            self.failures -= 1
            return False
        self.detached.append(attachment_id)
        return True


class NoEndpoints:
    def container_attached(self, key: str, network: Network, record: EndpointRecord) -> None:
        raise AssertionError("nothing is attached here")

    def container_detached(self, key: str) -> None:
        raise AssertionError("nothing is attached here")


def test_a_restarted_node_releases_the_attachments_its_previous_run_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("controlplane.agent.standalone.STALE_RETRY", 0.01)
    path = tmp_path / "attachments.json"
    before = AttachmentLedger(path)
    before.add("att1")
    before.add("att2")
    before.discard("unknown")  # nothing to forget: no error

    async def main() -> None:
        registry = StandaloneContainers(Runtime(), AttachmentLedger(path))  # the new process
        managers = FlakyManagers(failures=2)
        registry.swarm = Swarm("node1", managers, NoEndpoints())
        await eventually("both released", lambda: len(managers.detached) == 2)
        assert sorted(managers.detached) == ["att1", "att2"]
        await eventually("the ledger emptied", lambda: AttachmentLedger(path).ids() == set())
        await registry.close()

    asyncio.run(main())


@pytest.mark.parametrize("content", ["{not json", '{"att1": true}', "[1, 2]"])
def test_an_unreadable_ledger_says_what_to_do(tmp_path: Path, content: str) -> None:
    path = tmp_path / "attachments.json"
    path.write_text(content)
    with pytest.raises(AttachmentLedgerError, match="remove"):
        AttachmentLedger(path)
