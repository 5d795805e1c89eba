"""The real docker CLI drives services against the API on 127.77.160.1:2375, with the leader's
loops and a stand-in agent running in-process over the LocalBackend store, so tasks really get
allocated, scheduled and (by the stand-in) reported running. Skipped without the docker CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from served_api import DockerAt, served, worker_port

from controlplane.api.local import LocalBackend
from controlplane.pb.objects_pb2 import Service, Task
from tests.unit.swarm_fixture import seeded_swarm

HOST, PORT = "127.77.160.1", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok


@pytest.fixture
def swarm() -> Iterator[LocalBackend]:
    with served(HOST, PORT, seeded_swarm(3)) as backend:
        yield backend


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()[1:] if line.strip()]


def running_tasks(backend: LocalBackend, service: str) -> list[Task]:
    svc = backend.store.get_by_name(Service, service)
    assert svc is not None
    return [
        t
        for t in backend.store.list(Task)
        if t.service_id == svc.id and t.desired_state == "running" and t.status.state == "running"
    ]


def test_service_lifecycle_with_the_docker_cli(swarm: LocalBackend) -> None:
    ok("network", "create", "-d", "overlay", "my-net")
    created = ok(
        "service", "create", "-d", "--name", "web", "--replicas", "3",
        "--network", "my-net", "-p", "8080:80", "nginx",
    )  # fmt: skip
    service_id = created.strip().splitlines()[-1]
    assert len(service_id) == 25
    eventually(lambda: len(running_tasks(swarm, "web")) == 3)

    listed = rows(ok("service", "ls"))
    assert listed == [
        [service_id[:12], "web", "replicated", "3/3", "nginx:latest", "*:8080->80/tcp"]
    ]

    ps = rows(ok("service", "ps", "web"))
    assert sorted(r[1] for r in ps) == ["web.1", "web.2", "web.3"]
    assert {r[3] for r in ps} == {"host-1", "host-2", "host-3"}  # spread: one per node
    assert all(r[4:6] == ["Running", "Running"] for r in ps)

    [inspected] = json.loads(ok("service", "inspect", "web"))
    assert inspected["ID"] == service_id
    spec = inspected["Spec"]
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}
    assert spec["UpdateConfig"]["Order"] == "stop-first"  # insertDefaults
    assert spec["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] == 10_000_000_000
    vips = inspected["Endpoint"]["VirtualIPs"]
    # ingress (after the three nodes' ingress sandboxes, .2-.4, as Docker), then my-net
    assert [v["Addr"] for v in vips] == ["10.0.0.5/24", "10.0.1.2/24"]
    assert inspected["Endpoint"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}
    ]

    scaled = docker("service", "scale", "-d", "web=5")
    assert scaled.returncode == 0, scaled.stderr
    assert "web scaled to 5" in scaled.stdout
    eventually(lambda: len(running_tasks(swarm, "web")) == 5)
    ok("service", "scale", "-d", "web=2")
    eventually(lambda: len(running_tasks(swarm, "web")) == 2)
    assert sorted(t.slot for t in running_tasks(swarm, "web")) == [1, 2]

    ok("service", "update", "-d", "--image", "nginx:1.25", "web")
    eventually(
        lambda: (
            sorted(t.spec.container.image for t in running_tasks(swarm, "web"))
            == ["nginx:1.25", "nginx:1.25"]
        )
    )
    eventually(
        lambda: (
            json.loads(ok("service", "inspect", "web"))[0]["UpdateStatus"]["State"] == "completed"
        )
    )
    history = rows(ok("service", "ps", "web"))
    assert [r[2] for r in history if r[1].startswith("web.")].count("nginx:1.25") == 2
    assert any(r[1] == "\\_" and r[3] == "nginx:latest" for r in history)  # old tasks, shut down

    removed = docker("service", "rm", "web")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "web\n"
    eventually(lambda: not swarm.store.list(Task))
    gone = docker("service", "inspect", "web")
    assert gone.returncode == 1
    assert "no such service: web" in gone.stderr.lower() or "not found" in gone.stderr


def test_the_cli_prints_a_create_warning(swarm: LocalBackend) -> None:
    """The SCTP port a userspace mesh cannot carry: allocated, and said so on stderr."""
    created = docker("service", "create", "-d", "--name", "sig", "-p", "9999:80/sctp", "nginx")
    assert created.returncode == 0, created.stderr
    assert len(created.stdout.strip()) == 25
    assert "port 9999/sctp is allocated, but swarmlab's userspace data" in created.stderr


def test_docker_cli_errors(swarm: LocalBackend) -> None:
    ok("service", "create", "-d", "--name", "a", "-p", "8080:80", "nginx")
    dup = docker("service", "create", "-d", "--name", "a", "nginx")
    assert dup.returncode == 1
    assert dup.stderr.startswith(
        "Error response from daemon: rpc error: code = AlreadyExists desc = name conflicts "
        "with an existing object: service a already exists"
    )
    port = docker("service", "create", "-d", "--name", "b", "-p", "8080:80", "nginx")
    assert port.returncode == 1
    assert (
        "rpc error: code = InvalidArgument desc = port '8080' is already in use by service 'a'"
        in port.stderr
    )
    net = docker("service", "create", "-d", "--name", "c", "--network", "nope", "nginx")
    assert net.returncode == 1
    assert "network nope not found" in net.stderr
    bad = docker("service", "create", "-d", "--name", "d", "--constraint", "node.role", "nginx")
    assert bad.returncode == 1
    assert "constraint expected one operator from ==, !=" in bad.stderr


def test_docker_cli_global_constraints_rollback_and_node_ps(swarm: LocalBackend) -> None:
    ok("service", "create", "-d", "--name", "g", "--mode", "global", "nginx")
    eventually(lambda: len(running_tasks(swarm, "g")) == 3)
    assert rows(ok("service", "ls", "--filter", "mode=global"))[0][1:4] == ["g", "global", "3/3"]

    ok("service", "create", "-d", "--name", "m", "--constraint", "node.role==manager", "busybox")
    eventually(lambda: "no suitable node" in ok("service", "ps", "--no-trunc", "m"))
    ps = ok("service", "ps", "--no-trunc", "m")
    assert "no suitable node (scheduling constraints not satisfied on 3 nodes)" in ps
    assert rows(ok("service", "ls", "--filter", "name=m"))[0][3] == "0/1"

    ok("service", "update", "-d", "--image", "nginx:1.25", "g")
    eventually(
        lambda: {t.spec.container.image for t in running_tasks(swarm, "g")} == {"nginx:1.25"}
    )
    ok("service", "rollback", "-d", "g")
    eventually(
        lambda: (
            {t.spec.container.image for t in running_tasks(swarm, "g")} == {"nginx:latest"}
            and len(running_tasks(swarm, "g")) == 3
        )
    )
    on_node = rows(ok("node", "ps", "host-1"))
    assert [r[1] for r in on_node if r[1] != "\\_"] == ["g.node100000000000000000000"]

    removed = docker("service", "rm", "g", "m", "nope")
    assert removed.returncode == 1
    assert removed.stdout == "g\nm\n"
    assert "service nope not found" in removed.stderr
