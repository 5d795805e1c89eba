"""`docker network disconnect` of containers from networks they are (or are not) on, with
the real docker CLI against a node's containers API on 127.77.188.6 (with its userspace
docker0); each answer is what dockerd 20.10 gave for the same commands, measured side by
side. Skipped without the docker CLI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from served_api import DockerAt, served_containers, worker_port

from controlplane.agent.standalone import StandaloneContainers
from controlplane.datapath.host_ports import DEFAULT_BRIDGE, HostPorts

HOST, PORT = "127.77.188.6", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok


@pytest.fixture
def node() -> Iterator[StandaloneContainers]:
    with served_containers(HOST, PORT, HostPorts(HOST, DEFAULT_BRIDGE)) as registry:
        yield registry


def not_connected(container_id: str, network: str, the: str = "the ") -> str:
    return (
        f"Error response from daemon: container {container_id} is not connected to {the}"
        f"network {network}\n"
    )


def networks(ref: str) -> str:
    return ok("inspect", "--format", "{{json .NetworkSettings.Networks}}", ref).strip()


def test_a_stopped_container_and_networks_it_is_not_on(node: StandaloneContainers) -> None:
    stopped = ok("create", "--name", "stopped", "busybox", "true").strip()
    for network in ("nosuchnet", "none", "host"):
        assert docker.refused("network", "disconnect", network, "stopped") == not_connected(
            stopped, network
        )
        assert docker.refused("network", "disconnect", "-f", network, "stopped") == not_connected(
            stopped, network
        )


def test_a_none_mode_container_leaves_none_once(node: StandaloneContainers) -> None:
    """dockerd takes a container off `none`, stopped or running, and refuses the next time;
    its inspect shows no network from then on, also after a start."""
    quiet = ok("create", "--name", "quiet", "--network", "none", "busybox", "sleep", "1d").strip()
    assert networks("quiet").startswith('{"none":')
    ok("network", "disconnect", "none", "quiet")
    assert networks("quiet") == "{}"
    assert docker.refused("network", "disconnect", "none", "quiet") == not_connected(quiet, "none")
    ok("start", "quiet")
    assert networks("quiet") == "{}"
    assert ok("inspect", "--format", "{{.HostConfig.NetworkMode}}", "quiet") == "none\n"
    running = ok("run", "-d", "--name", "running", "--network", "none", "busybox", "sleep", "1d")
    ok("network", "disconnect", "none", "running")
    assert networks("running") == "{}"
    assert docker.refused("network", "disconnect", "none", "running") == not_connected(
        running.strip(), "none", the=""
    )


def test_force_does_not_look_the_network_up(node: StandaloneContainers) -> None:
    running = ok("run", "-d", "--name", "runner", "busybox", "sleep", "1d").strip()
    assert docker.refused("network", "disconnect", "nosuchnet", "runner") == (
        "Error response from daemon: network nosuchnet not found\n"
    )
    assert docker.refused("network", "disconnect", "-f", "nosuchnet", "runner") == (
        not_connected(running, "nosuchnet")
    )
