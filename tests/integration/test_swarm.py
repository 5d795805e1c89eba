"""A swarm formed as a user forms one: real node processes, `docker swarm init/join/leave`
through their Engine APIs, join tokens checked, all of 2377 mutual TLS."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import grpc
import pytest
from docker_cli import docker

from controlplane.lab.engine import EngineClient, EngineError
from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until
from controlplane.manager import ca
from controlplane.pb import control_pb2, control_pb2_grpc

pytestmark = pytest.mark.integration

HAS_DOCKER = shutil.which("docker") is not None


async def node_rows(lab: SwarmLab, count: int) -> dict[str, dict[str, object]]:
    async def listed() -> dict[str, dict[str, object]] | None:
        nodes = await lab.node_list()
        by_name = {n["Description"]["Hostname"]: n for n in nodes}
        complete = len(by_name) == count and all(
            n.get("ManagerStatus", {}).get("Reachability") == "reachable"
            for n in nodes
            if n["Spec"]["Role"] == "manager"
        )
        return by_name if complete else None

    return await until(listed, 30, f"{count} nodes with every manager reachable")


def test_init_join_tokens_mtls_restart_and_leave(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=1, lab=140)
        stranger = NodeProcess("stranger", "127.77.140.200", tmp_path / "stranger")
        try:
            await lab.up()
            rows = await node_rows(lab, 4)
            assert {name: row["Spec"]["Role"] for name, row in rows.items()} == {
                "manager-1": "manager",
                "manager-2": "manager",
                "manager-3": "manager",
                "worker-1": "worker",
            }
            assert sum(bool(r.get("ManagerStatus", {}).get("Leader")) for r in rows.values()) == 1

            # Join tokens: a malformed one, a wrong secret, and a token rotated away.
            stranger.start()
            await lab.wait_api(stranger)
            manager_1 = lab.node("manager-1")
            async with EngineClient(manager_1.api) as m1, EngineClient(stranger.api) as s:
                old = (await m1.join_tokens())["Worker"]
                with pytest.raises(EngineError, match=r"^invalid join token$"):
                    await s.swarm_join(f"{manager_1.address}:2377", "SWMTKN-1-garbage", "x")
                wrong = old[:-1] + ("a" if old[-1] != "a" else "b")
                with pytest.raises(EngineError) as refused:
                    await s.swarm_join(f"{manager_1.address}:2377", wrong, stranger.address)
                assert refused.value.status == 400
                assert str(refused.value) == (
                    "rpc error: code = InvalidArgument desc = A valid join token is necessary "
                    "to join this cluster"
                )
                swarm = await m1.request("GET", "/swarm")
                await m1.request(
                    "POST",
                    "/swarm/update",
                    swarm["Spec"],
                    {"version": str(swarm["Version"]["Index"]), "rotateWorkerToken": "true"},
                )
                new = (await m1.join_tokens())["Worker"]
                assert new != old
                with pytest.raises(EngineError, match="A valid join token"):
                    await s.swarm_join(f"{manager_1.address}:2377", old, stranger.address)
                # A token whose CA digest is not this swarm's: the joiner refuses the manager.
                digest_part = new.split("-")[2]
                foreign = new.replace(digest_part, "0" * len(digest_part))
                with pytest.raises(EngineError, match="root CA does not match"):
                    await s.swarm_join(f"{manager_1.address}:2377", foreign, stranger.address)
                info = await s.info()
                assert info["Swarm"]["LocalNodeState"] == "inactive"
                # A worker's engine refuses swarm-scope reads and writes, as Docker's.
                async with lab.engine("worker-1") as w1:
                    with pytest.raises(EngineError, match="not a swarm manager") as worker_err:
                        await w1.nodes()
                    assert worker_err.value.status == 503
                    with pytest.raises(EngineError, match="already part of a swarm"):
                        await w1.swarm_init("127.77.140.101")

            # 2377 is mutual TLS: no certificate, no service; a worker cannot call Control.
            root = (tmp_path / "manager-1" / "certificates" / ca.ROOT_CERT_FILE).read_bytes()
            creds = ca.anonymous_client_credentials(root)
            async with grpc.aio.secure_channel(
                f"{manager_1.address}:2377", creds, ca.channel_options()
            ) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await control_pb2_grpc.ControlStub(channel).List(
                        control_pb2.ListRequest(), timeout=10
                    )
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            worker_identity, worker_root = ca.load_identity(tmp_path / "worker-1" / "certificates")
            async with grpc.aio.secure_channel(
                f"{manager_1.address}:2377",
                ca.channel_credentials(worker_identity, worker_root),
                ca.channel_options(),
            ) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await control_pb2_grpc.ControlStub(channel).List(
                        control_pb2.ListRequest(), timeout=10
                    )
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

            # SIGKILL a manager and restart it: it resumes its role from its state directory.
            manager_2 = lab.node("manager-2")
            manager_2.kill()
            manager_2.start()
            await lab.wait_api(manager_2)
            async with lab.engine(manager_2) as m2:
                info = await m2.info()
                assert info["Swarm"]["LocalNodeState"] == "active"
                assert info["Swarm"]["ControlAvailable"] is True
            await node_rows(lab, 4)

            # A manager leaves only with --force; a worker just leaves.
            async with lab.engine("manager-3") as m3:
                with pytest.raises(EngineError, match="participating as a manager"):
                    await m3.swarm_leave()
            async with lab.engine("worker-1") as w1:
                await w1.swarm_leave()
                assert (await w1.info())["Swarm"]["LocalNodeState"] == "inactive"
                with pytest.raises(EngineError, match="not part of a swarm"):
                    await w1.swarm_leave()
        finally:
            stranger.stop()
            lab.stop()

    asyncio.run(scenario())


@pytest.mark.skipif(not HAS_DOCKER, reason="the docker CLI is not installed")
def test_the_docker_cli_forms_a_swarm(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=2, workers=1, lab=141)
        try:
            for node in lab.nodes:
                node.start()
            await asyncio.gather(*(lab.wait_api(n) for n in lab.nodes))
            first, second, worker = lab.nodes
            # The engine's own ID, dockerd's key-id shape (real 20.10:
            # `3TSU:QFOT:XWOQ:KJMJ:7AGZ:QYOY:JJC7:YRVO:JJG7:JUKU:6KT4:6U4P`), kept by swarm init.
            engine_id = docker(first, "info", "--format", "{{.ID}}").stdout.strip()
            assert re.fullmatch("([A-Z2-7]{4}:){11}[A-Z2-7]{4}", engine_id), engine_id
            init = docker(first, "swarm", "init", "--advertise-addr", first.address)
            assert init.returncode == 0, init.stderr
            assert "Swarm initialized: current node (" in init.stdout
            assert "docker swarm join --token SWMTKN-1-" in init.stdout
            again = docker(first, "swarm", "init")
            assert again.returncode == 1
            assert "This node is already part of a swarm" in again.stderr
            manager_token = docker(first, "swarm", "join-token", "-q", "manager").stdout.strip()
            worker_token = docker(first, "swarm", "join-token", "-q", "worker").stdout.strip()
            joined = docker(second, "swarm", "join", "--token", manager_token, f"{first.address}")
            assert joined.stdout.strip() == "This node joined a swarm as a manager.", joined.stderr
            joined = docker(worker, "swarm", "join", "--token", worker_token, f"{first.address}")
            assert joined.stdout.strip() == "This node joined a swarm as a worker.", joined.stderr
            # Docker's shape for swarm ids (real 20.10: ClusterID `l3d2srouq21ro1hqpcp2ojy21`,
            # NodeID `wuwu7orfvel7n6zggby6kc1nu`), the same on every manager.
            ids = "{{.Swarm.Cluster.ID}} {{.Swarm.NodeID}}"
            cluster_id, node_id = docker(first, "info", "--format", ids).stdout.split()
            assert re.fullmatch("[0-9a-z]{25}", cluster_id), cluster_id
            assert re.fullmatch("[0-9a-z]{25}", node_id), node_id
            seen = docker(second, "info", "--format", "{{.Swarm.Cluster.ID}}").stdout.strip()
            assert seen == cluster_id
            assert docker(first, "info", "--format", "{{.ID}}").stdout.strip() == engine_id
            # Real 20.10 without --default-addr-pool: DefaultAddrPool null, no such line.
            assert "Default Address Pool" not in docker(first, "info").stdout
            created = docker(first, "network", "create", "-d", "overlay", "pool-check")
            assert created.returncode == 0, created.stderr
            subnet = docker(first, "network", "inspect", "--format",
                            "{{(index .IPAM.Config 0).Subnet}}", "pool-check")  # fmt: skip
            assert subnet.stdout.strip() == "10.0.1.0/24", subnet.stderr  # the default pool
            rows = await node_rows(lab, 3)
            expected = {
                name: "Leader"
                if row.get("ManagerStatus", {}).get("Leader")
                else ("Reachable" if row["Spec"]["Role"] == "manager" else "")
                for name, row in rows.items()
            }

            async def listed_by_the_follower() -> dict[str, str] | None:
                """`docker node ls` on the follower, once its replica holds what the leader
                showed (it applies the same entries a moment later)."""
                listing = docker(
                    second, "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"
                )
                assert listing.returncode == 0, listing.stderr
                shown = dict(
                    [*line.split(), ""][:2] for line in listing.stdout.splitlines() if line.strip()
                )
                return shown if shown == expected else None

            await until(listed_by_the_follower, 30, "the follower's node ls to match")
            left = docker(worker, "swarm", "leave")
            assert left.stdout.strip() == "Node left the swarm.", left.stderr
        finally:
            lab.stop()

    asyncio.run(scenario())


def test_services_run_on_workers_and_a_killed_worker_goes_down(tmp_path: Path) -> None:
    """3 managers + 2 workers: a replicated service runs everywhere it is placed; SIGKILL a
    worker: it is marked down within the heartbeat grace and its tasks run elsewhere."""

    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=2, lab=143)
        try:
            await lab.up()
            async with lab.engine("manager-2") as m2:
                created = await m2.request(
                    "POST",
                    "/services/create",
                    {
                        "Name": "web",
                        "TaskTemplate": {"ContainerSpec": {"Image": "nginx"}},
                        "Mode": {"Replicated": {"Replicas": 5}},
                    },
                )
                service_id = created["ID"]

                async def running() -> list[dict[str, object]] | None:
                    tasks = await m2.request("GET", "/tasks")
                    live = [
                        t
                        for t in tasks
                        if t["ServiceID"] == service_id
                        and t["Status"]["State"] == "running"
                        and t["DesiredState"] == "running"
                    ]
                    return live if len(live) == 5 else None

                tasks = await until(running, 60, "5 running tasks")
                nodes = {n["ID"]: n["Description"]["Hostname"] for n in await m2.nodes()}
                worker_id = next(i for i, name in nodes.items() if name == "worker-1")

                # Every node gossips on its 7946 (sealed with the managers' keys), under its
                # node id; its view is read through its Engine API.
                async def gossip_states(name: str) -> dict[str, str]:
                    async with lab.engine(name) as engine:
                        view = await engine.gossip()
                    assert view["encrypted"] and len(view["keys"]) == 3, view
                    return {m["name"]: m["state"] for m in view["members"]}

                async def all_alive() -> bool | None:
                    states = await gossip_states("worker-2")
                    alive = {n for n, state in states.items() if state == "alive"}
                    return True if alive == set(nodes) else None

                await until(all_alive, 30, "every node alive in worker-2's gossip view")
                lab.node("worker-1").kill()

                async def gossip_dead() -> bool | None:
                    states = await gossip_states("manager-1")
                    return True if states.get(worker_id) == "dead" else None

                await until(gossip_dead, 30, "worker-1 dead in manager-1's gossip view")

                async def worker_down() -> bool | None:
                    node = await m2.request("GET", f"/nodes/{worker_id}")
                    return True if node["Status"]["State"] == "down" else None

                await until(worker_down, 30, "worker-1 marked down")

                async def moved() -> list[dict[str, object]] | None:
                    live = await running()
                    if live and all(t["NodeID"] != worker_id for t in live):
                        return live
                    return None

                if any(t["NodeID"] == worker_id for t in tasks):
                    await until(moved, 60, "worker-1's tasks to run elsewhere")
        finally:
            lab.stop()

    asyncio.run(scenario())


def test_force_new_cluster_recovers_a_lost_quorum_and_locks_out_the_old_managers(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=0, lab=144)
        try:
            await lab.up()
            await node_rows(lab, 3)
            m1, m2, m3 = lab.managers
            async with lab.engine(m1) as e1:
                before = await e1.request(
                    "POST", "/networks/create", {"Name": "kept", "Driver": "overlay"}
                )
                m2.kill()
                m3.kill()

                # As in Docker, a write sent while the old leader still believes it leads
                # blocks until its deadline; once it has stepped down (CheckQuorum), writes
                # fail fast with Docker's no-leader message.
                async def stepped_down() -> bool | None:
                    raft = await e1.request("GET", "/swarmlab/raft", versioned=False)
                    return True if raft["role"] != "leader" else None

                await until(stepped_down, 30, "manager-1 to step down")
                with pytest.raises(EngineError, match="does not have a leader"):
                    await e1.request(
                        "POST", "/networks/create", {"Name": "lost", "Driver": "overlay"}
                    )
                await e1.swarm_init(m1.address, ForceNewCluster=True)

                async def writable() -> bool | None:
                    await e1.request(
                        "POST", "/networks/create", {"Name": "after", "Driver": "overlay"}
                    )
                    return True

                await until(writable, 30, "writes on the forced cluster")
                names = {n["Name"] for n in await e1.request("GET", "/networks")}
                assert {"ingress", "kept", "after"} <= names
                assert (await e1.request("GET", f"/networks/{before['Id']}"))["Name"] == "kept"

                # The old managers come back: they must not form a cluster of their own.
                m2.start()
                m3.start()
                for old in (m2, m3):
                    await lab.wait_api(old)
                    async with lab.engine(old) as engine:
                        info = await engine.info()
                        assert info["Swarm"]["LocalNodeState"] == "error"
                        assert "left behind" in info["Swarm"]["Error"]
                        with pytest.raises(EngineError):
                            await engine.nodes()
                # One of them leaves and joins the new cluster again, as a manager.
                tokens = await e1.join_tokens()
                async with lab.engine(m2) as e2:
                    await e2.swarm_leave(force=True)
                    await e2.swarm_join(f"{m1.address}:2377", tokens["Manager"], m2.address)
                    info = await e2.info()
                    assert info["Swarm"]["LocalNodeState"] == "active"
                    assert info["Swarm"]["ControlAvailable"] is True

                async def two_voters() -> bool | None:
                    info = await e1.info()
                    return True if info["Swarm"]["Managers"] == 2 else None

                await until(two_voters, 30, "the rejoined manager in the new cluster")
        finally:
            lab.stop()

    asyncio.run(scenario())


@pytest.mark.skipif(not HAS_DOCKER, reason="the docker CLI is not installed")
def test_swarm_init_and_join_flags_are_honoured(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=1, lab=145)
        try:
            for node in lab.nodes:
                node.start()
            await asyncio.gather(*(lab.wait_api(n) for n in lab.nodes))
            manager, worker = lab.nodes
            async with lab.engine(manager) as engine:  # the CLI checks CIDRs itself first
                with pytest.raises(EngineError, match="invalid default address pool") as err:
                    await engine.swarm_init(manager.address, DefaultAddrPool=["10.300.0.0/16"])
                assert err.value.status == 400
            for bad, message in [
                (
                    ["--default-addr-pool", "10.20.0.0/16", "--default-addr-pool-mask-length", "8"],
                    "larger than the default address pool",
                ),
                (["--data-path-port", "80"], "must be within 1024-49151"),
            ]:
                refused = docker(manager, "swarm", "init", *bad)
                assert refused.returncode == 1 and message in refused.stderr, refused.stderr
            init = docker(
                manager,
                "swarm",
                "init",
                "--advertise-addr",
                manager.address,
                "--default-addr-pool",
                "10.20.0.0/16",
                "--default-addr-pool-mask-length",
                "26",
                "--data-path-port",
                "7789",
                "--availability",
                "drain",
            )
            assert init.returncode == 0, init.stderr
            info = docker(
                manager,
                "info",
                "--format",
                "{{.Swarm.Cluster.DefaultAddrPool}} {{.Swarm.Cluster.SubnetSize}} "
                "{{.Swarm.Cluster.DataPathPort}}",
            )
            assert info.stdout.strip() == "[10.20.0.0/16] 26 7789", info.stderr
            created = docker(manager, "network", "create", "-d", "overlay", "blue")
            assert created.returncode == 0, created.stderr
            subnet = docker(
                manager, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", "blue"
            )
            assert subnet.stdout.strip() == "10.20.0.64/26"  # ingress took 10.20.0.0/26
            token = docker(manager, "swarm", "join-token", "-q", "worker").stdout.strip()
            joined = docker(
                worker,
                "swarm",
                "join",
                "--token",
                token,
                "--availability",
                "pause",
                f"{manager.address}:2377",
            )
            assert joined.returncode == 0, joined.stderr
            rows = await node_rows(lab, 2)
            assert rows["manager-1"]["Spec"]["Availability"] == "drain"
            assert rows["worker-1"]["Spec"]["Availability"] == "pause"
        finally:
            lab.stop()

    asyncio.run(scenario())


def test_swarm_profile_init_answers_without_an_election_timeout(tmp_path: Path) -> None:
    """With Swarm's timings (1 s tick, election after 10-20 ticks) a new swarm's only manager
    still leads at once, so `swarm init` answers within its registration wait."""

    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=0, lab=146, profile="swarm")
        try:
            await lab.up()
            rows = await node_rows(lab, 1)
            assert rows["manager-1"]["ManagerStatus"]["Leader"] is True
        finally:
            lab.stop()

    asyncio.run(scenario())
