"""`docker service create --network host` over a local store: swarmkit's predefined swarm-scope
`host` and `bridge` networks as dockerd 20.10 shows them (hidden from `network ls`, their ids
inspected, `rm` of them not found), a service's VIP entry and its tasks' attachments there
without an address, and the node's worker running such a task in host mode, or rejecting it
with dockerd's words when its networks cannot go together."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from polling import eventually

from controlplane.agent.host_stack import HostNetwork
from controlplane.agent.local_network_ids import LocalNetworkIds
from controlplane.agent.network_modes import (
    HOST_MODE_REFUSAL,
    SHARED_NAMESPACE_REFUSAL,
    TaskNetworkMode,
    task_network_mode,
)
from controlplane.agent.runtime import ContainerState, Runtime
from controlplane.agent.worker import Worker
from controlplane.api import create_app
from controlplane.api.local import LocalBackend
from controlplane.api.networks import NODE_NETWORKS
from controlplane.api.predefined_networks import local_networks
from controlplane.datapath.host_ports import DEFAULT_BRIDGE, HostPorts
from controlplane.manager.predefined_networks import ensure_predefined, missing_predefined
from controlplane.node_local_networks import (
    PREDEFINED_LABEL,
    is_node_local,
    is_predefined,
    predefined_networks,
)
from controlplane.pb.objects_pb2 import Cluster, IPAMConfig, Network, NetworkAttachment, Task
from controlplane.raft.errors import NoLeaderError
from controlplane.store import Store, StoreError, Transaction
from tests.unit.swarm_fixture import INGRESS_ID, ingress_network, running_swarm, seed
from tests.unit.test_api import Api
from tests.unit.test_worker import Reports, task

CREATED = 1_700_000_000_000_000_000


def predefined_ids(backend: LocalBackend) -> dict[str, str]:
    return {n.spec.annotations.name: n.id for n in backend.store.list(Network) if is_predefined(n)}


def serve(test: Callable[[Api], Awaitable[None]], *, swarm: bool = False) -> None:
    """`test(api)` against a store seeded as `swarm init` seeds it, predefined networks
    included, the node's local networks served beside them (with the leader's loops and a
    stand-in agent when `swarm`)."""

    async def main() -> None:
        backend = LocalBackend()
        await seed(backend, nodes=1, predefined=True)
        app = create_app(backend)
        ids = LocalNetworkIds()
        app[NODE_NETWORKS] = lambda: local_networks(swarm=True, kernel=False, ids=ids)
        async with TestClient(TestServer(app)) as client:
            if not swarm:
                await test(Api(client, backend))
                return
            async with running_swarm(backend):
                await test(Api(client, backend))

    asyncio.run(main())


def test_predefined_networks_are_node_local_and_labelled() -> None:
    bridge, host = predefined_networks(CREATED)
    assert [(n.spec.annotations.name, n.spec.driver) for n in (bridge, host)] == [
        ("bridge", "bridge"),
        ("host", "host"),
    ]
    assert dict(host.spec.annotations.labels) == {PREDEFINED_LABEL: "true"}
    assert host.meta.created_at_ns == CREATED and not host.vni and not host.ipam
    assert len(host.id) == 25 and host.id != bridge.id
    assert is_node_local(host) and is_predefined(host)
    assert not is_node_local(ingress_network()) and not is_node_local(None)


def test_dockerd_lists_the_local_ones_and_inspects_the_swarm_ones_by_id() -> None:
    async def t(api: Api) -> None:
        ids = predefined_ids(api.backend)
        status, listed = await api.call("GET", "/v1.41/networks", "/networks")
        assert status == 200
        assert sorted((n["Name"], n["Scope"]) for n in listed) == [
            ("bridge", "local"),
            ("docker_gwbridge", "local"),
            ("host", "local"),
            ("ingress", "swarm"),
            ("none", "local"),
        ]
        query = {"filters": json.dumps({"scope": {"swarm": True}})}
        _, swarm_scope = await api.call("GET", "/v1.41/networks", "/networks", params=query)
        assert [n["Name"] for n in swarm_scope] == ["ingress"]
        for name, network_id in ids.items():
            status, body = await api.call("GET", f"/v1.41/networks/{network_id}", "/networks/{id}")
            assert status == 200
            # dockerd 20.10's, but for the id and the time
            assert body == {
                "Name": name,
                "Id": network_id,
                "Created": body["Created"],
                "Scope": "swarm",
                "Driver": name,
                "EnableIPv6": False,
                "IPAM": {"Driver": "", "Options": None, "Config": []},
                "Internal": False,
                "Attachable": False,
                "Ingress": False,
                "ConfigFrom": {"Network": ""},
                "ConfigOnly": False,
                "Containers": None,
                "Options": None,
                "Labels": {PREDEFINED_LABEL: "true"},
            }
            _, by_name = await api.call(
                "GET", f"/v1.41/networks/{name}", "/networks/{id}", params={"scope": "swarm"}
            )
            assert by_name == body
            _, local = await api.call("GET", f"/v1.41/networks/{name}", "/networks/{id}")
            assert local["Scope"] == "local"  # the node's own, as dockerd's
            status, refused = await api.call(
                "DELETE", f"/v1.41/networks/{network_id}", "/networks/{id}"
            )
            assert (status, refused["message"]) == (404, f"network {network_id} not found")
        status, pruned = await api.call("POST", "/v1.41/networks/prune", "/networks/prune")
        assert (status, pruned) == (200, {"NetworksDeleted": None})
        assert predefined_ids(api.backend) == ids

    serve(t)


def create_body(name: str, *targets: str, ports: list[dict[str, Any]] | None = None) -> Any:
    body: dict[str, Any] = {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox", "Args": ["httpd", "-f", "-p", "8080"]},
            "Networks": [{"Target": t} for t in targets],
        },
    }
    if ports:
        body["EndpointSpec"] = {"Ports": ports}
    return body


async def create(api: Api, body: Any) -> tuple[int, Any]:
    return await api.call("POST", "/v1.41/services/create", "/services/create", body=body)


async def running_task(api: Api, service_id: str) -> Any:
    """The service's task once the stand-in agent runs it, as `docker inspect` shows it."""
    query = {"filters": json.dumps({"service": {service_id: True}})}

    async def found() -> Any:
        _, tasks = await api.call("GET", "/v1.41/tasks", "/tasks", params=query)
        return next((t for t in tasks if t["Status"]["State"] == "running"), None)

    deadline = asyncio.get_running_loop().time() + 20
    while (running := await found()) is None:
        assert asyncio.get_running_loop().time() < deadline, "the task never ran"
        await asyncio.sleep(0.02)
    return running


def test_a_service_on_host_has_no_address_there() -> None:
    async def t(api: Api) -> None:
        host_id = predefined_ids(api.backend)["host"]
        status, created = await create(api, create_body("hweb", "host"))
        assert status == 201, created
        _, service = await api.call("GET", f"/v1.41/services/{created['ID']}", "/services/{id}")
        assert service["Spec"]["TaskTemplate"]["Networks"] == [{"Target": host_id}]

        async def allocated() -> bool:
            _, svc = await api.call("GET", f"/v1.41/services/{created['ID']}", "/services/{id}")
            return "VirtualIPs" in svc["Endpoint"]

        deadline = asyncio.get_running_loop().time() + 20
        while not await allocated():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        _, service = await api.call("GET", f"/v1.41/services/{created['ID']}", "/services/{id}")
        assert service["Endpoint"] == {
            "Spec": {"Mode": "vip"},
            "VirtualIPs": [{"NetworkID": host_id}],
        }
        running = await running_task(api, created["ID"])
        [attachment] = running["NetworksAttachments"]
        network = attachment["Network"]
        assert attachment == {"Network": network}  # no Addresses, as dockerd's
        assert network["Spec"] == {
            "Name": "host",
            "Labels": {PREDEFINED_LABEL: "true"},
            "DriverConfiguration": {"Name": "host"},
            "Scope": "swarm",
        }
        assert network["DriverState"] == {"Name": "host"}
        assert network["IPAMOptions"] == {"Driver": {}}

        # with an ingress port: ingress first (its VIP), then host with none
        ports = [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8081}]
        status, published = await create(api, create_body("hp", "host", ports=ports))
        assert status == 201, published
        running = await running_task(api, published["ID"])
        names = [a["Network"]["Spec"]["Name"] for a in running["NetworksAttachments"]]
        assert names == ["ingress", "host"]
        _, service = await api.call("GET", f"/v1.41/services/{published['ID']}", "/services/{id}")
        vips = service["Endpoint"]["VirtualIPs"]
        assert [v["NetworkID"] for v in vips] == [INGRESS_ID, host_id]
        assert vips[0]["Addr"].startswith("10.0.0.") and "Addr" not in vips[1]

        # dockerd's words for a name no swarm network has (`none` is the node's alone)
        status, refused = await create(api, create_body("nn", "none"))
        assert (status, refused["message"]) == (404, "network none not found")

    serve(t, swarm=True)


def test_the_mode_is_the_first_network_and_host_refuses_company() -> None:
    assert task_network_mode([]) == TaskNetworkMode("default")
    assert task_network_mode(["host"]) == TaskNetworkMode("host")
    assert task_network_mode(["ingress", "my-net"]) == TaskNetworkMode("ingress")
    # `-p 8080:80` with `--network host`: on ingress first, then connected to host
    assert task_network_mode(["ingress", "host"]) == TaskNetworkMode("ingress", HOST_MODE_REFUSAL)
    assert task_network_mode(["host", "my-net"]) == TaskNetworkMode(
        "host", SHARED_NAMESPACE_REFUSAL
    )
    assert task_network_mode(["host", "bridge"]) == TaskNetworkMode(
        "host", SHARED_NAMESPACE_REFUSAL
    )


def overlay(network_id: str, name: str) -> Network:
    net = Network(id=network_id, vni=4097)
    net.spec.annotations.name = name
    net.spec.driver = "overlay"
    net.ipam.append(IPAMConfig(subnet="10.0.1.0/24", gateway="10.0.1.1"))
    return net


def on_networks(task_id: str, *networks: Network) -> Task:
    t = task(task_id, "busybox", "sleep", "60")
    for net in networks:
        addresses = [] if is_node_local(net) else ["10.0.1.5/24"]
        t.networks.append(NetworkAttachment(network_id=net.id, addresses=addresses))
    return t


def test_the_worker_runs_a_host_task_on_the_nodes_network() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        runtime.host = HostNetwork("127.77.177.11", "node-1")
        reports = Reports()
        worker = Worker(runtime, reports, stop_grace=0.1)
        _, host = predefined_networks(CREATED)
        worker.reconcile({"t1": on_networks("t1", host)}, {host.id: host})
        await eventually("t1 running", lambda: "running" in reports.states("t1"))
        container = runtime.get(reports.last("t1").container_id)
        assert container.config.host_network is runtime.host
        assert container.networks == {}  # no overlay to attach
        assert container.hostname == "node-1"  # the node's, as dockerd names it
        await worker.close()

    asyncio.run(scenario())


def test_the_worker_rejects_a_host_task_with_other_networks_in_dockerds_words() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        runtime.host = HostNetwork("127.77.177.11", "node-1")
        reports = Reports()
        worker = Worker(runtime, reports, stop_grace=0.1)
        _, host = predefined_networks(CREATED)
        ingress, mine = ingress_network(), overlay("mynet0000000000000000000000", "my-net")
        networks = {n.id: n for n in (host, ingress, mine)}
        worker.reconcile(
            {
                "t1": on_networks("t1", ingress, host),  # `--network host -p 8081:80`
                "t2": on_networks("t2", host, mine),  # `--network host --network my-net`
            },
            networks,
        )
        await eventually(
            "both rejected",
            lambda: all(reports.states(t)[-1:] == ["rejected"] for t in ("t1", "t2")),
        )
        for task_id, refusal in (("t1", HOST_MODE_REFUSAL), ("t2", SHARED_NAMESPACE_REFUSAL)):
            last = reports.last(task_id)
            assert (last.message, last.err) == ("preparing", refusal)
            assert reports.states(task_id) == ["accepted", "preparing", "rejected"]
        # their containers stay created, as dockerd's (until the task history drops them)
        made = worker.task_containers()
        assert len(made) == 2
        for each in made:
            assert runtime.get(each.container_id).state is ContainerState.CREATED
        await worker.close()

    asyncio.run(scenario())


def test_the_worker_puts_a_bridge_task_on_the_nodes_docker0_until_it_stops() -> None:
    async def scenario() -> None:
        runtime = Runtime()
        bridge = HostPorts("127.77.177.11", DEFAULT_BRIDGE)
        reports = Reports()
        worker = Worker(runtime, reports, stop_grace=0.1, bridge=bridge)
        bridge_net, _ = predefined_networks(CREATED)
        mine = overlay("mynet0000000000000000000000", "my-net")
        networks = {n.id: n for n in (bridge_net, mine)}
        alone, beside = on_networks("t1", bridge_net), on_networks("t2", mine, bridge_net)
        worker.reconcile({"t1": alone, "t2": beside}, networks)
        await eventually("t1 running", lambda: "running" in reports.states("t1"))
        container = runtime.get(reports.last("t1").container_id)
        [eth0] = container.local_stacks
        assert str(eth0.network) == "172.17.0.0/16"
        assert bridge.stack_of(container.id) is eth0
        assert container.config.network_mode == "bridge"  # swarmkit names the mode after it
        assert container.networks == {}
        # beside an overlay named first: on the bridge too, in mode `default` (no data path
        # here: its overlay's stack is not there, its bridge's is)
        await eventually("t2 running", lambda: "running" in reports.states("t2"))
        other = runtime.get(reports.last("t2").container_id)
        assert other.config.network_mode == ""
        [other_eth0] = other.local_stacks
        assert {eth0.ip, other_eth0.ip} == {"172.17.0.2", "172.17.0.3"}  # the first two
        stopped = {t.id: t for t in (on_networks("t1", bridge_net), beside)}
        for t in stopped.values():
            t.desired_state = "shutdown"
        worker.reconcile(stopped, networks)
        for task_id in stopped:
            await eventually(
                f"{task_id} shut down", lambda i=task_id: "shutdown" in reports.states(i)
            )
        assert bridge.stack_of(container.id) is None and container.local_stacks == ()
        assert bridge.owners() == set()
        await worker.close()

    asyncio.run(scenario())


def test_a_new_leader_adds_the_predefined_networks_a_store_lacks() -> None:
    """A swarm's store made without them (an older Swarmlab) gets them from its next leader,
    as swarmkit's allocator adds them; retried while the write cannot commit."""

    async def scenario() -> None:
        assert missing_predefined(Store()) is None  # no swarm (no Cluster): nothing to add
        backend = LocalBackend()  # a swarm's store: its Cluster, no predefined network
        await seed(backend, nodes=1)
        assert backend.store.list(Cluster) and not predefined_ids(backend)
        _, host = predefined_networks(CREATED)
        assert (
            StoreError.from_result(await backend.propose(Transaction().create(host).encode()))
            is None
        )
        calls: list[bytes] = []

        async def flaky(data: bytes) -> bytes:
            calls.append(data)
            if len(calls) == 1:
                raise NoLeaderError("no leader yet")
            return await backend.propose(data)

        async def settled(_timeout: float) -> None:
            return None

        await asyncio.wait_for(
            ensure_predefined(backend.store, flaky, settled, retry_delay=0.01), 20
        )
        assert len(calls) == 2
        assert sorted(predefined_ids(backend)) == ["bridge", "host"]
        assert predefined_ids(backend)["host"] == host.id  # the one there is kept
        assert missing_predefined(backend.store) is None
        await asyncio.wait_for(ensure_predefined(backend.store, flaky, settled), 20)
        assert len(calls) == 2  # nothing left to write

    asyncio.run(scenario())
