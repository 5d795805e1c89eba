"""The docker CLI against the API on 127.77.254.1, where a side-by-side run with a real
dockerd 20.10 swarm (docker CLI 28) showed ours answering otherwise: each test holds what
the real swarm printed for the same command. The leader's loops and a stand-in agent run
in-process over the LocalBackend store. Skipped without the docker CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from served_api import DockerAt, served, worker_port

from controlplane.api.local import LocalBackend
from tests.unit.swarm_fixture import seeded_swarm

HOST, PORT = "127.77.254.1", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok


@pytest.fixture
def swarm() -> Iterator[LocalBackend]:
    with served(HOST, PORT, seeded_swarm(3)) as backend:
        yield backend


def test_service_ps_filters_that_name_nothing_fail_as_in_dockerd(swarm: LocalBackend) -> None:
    """dockerd resolves a task list's `node` and `service` filters first: one naming no node
    is its 404, not an empty table; a desired state it does not know is refused in its words."""
    ok("service", "create", "-d", "--name", "web", "nginx")
    assert docker.refused("service", "ps", "--filter", "node=nonode", "web") == (
        "Error response from daemon: node nonode not found\n"
    )
    assert docker.refused("node", "ps", "--filter", "desired-state=bogus", "host-1") == (
        "Error response from daemon: Invalid desired-state filter: 'bogus'\n"
    )
    node = ok("service", "ps", "--format", "{{.Node}}", "web").strip()
    shown = ok(
        "service",
        "ps",
        "-q",
        "--filter",
        f"node={node}",
        "--filter",
        "desired-state=running",
        "web",
    )
    assert len(shown.split()) == 1


def test_node_ls_role_and_membership_filters_as_in_dockerd(swarm: LocalBackend) -> None:
    """dockerd takes a role in either case and refuses one it does not know, in its words."""
    assert len(ok("node", "ls", "-q", "--filter", "role=Worker").split()) == 3  # the fixture's
    assert ok("node", "ls", "-q", "--filter", "role=manager") == ""
    assert docker.refused("node", "ls", "--filter", "role=bogus") == (
        "Error response from daemon: Invalid role filter: 'bogus'\n"
    )
    assert docker.refused("node", "ls", "--filter", "membership=bogus") == (
        "Error response from daemon: Invalid membership filter: 'bogus'\n"
    )


def test_network_ls_filter_values_refused_in_dockerds_words(swarm: LocalBackend) -> None:
    refused = docker.refused
    assert refused("network", "ls", "--filter", "type=bogus") == (
        "Error response from daemon: invalid filter: 'type'='bogus'\n"
    )
    assert refused("network", "ls", "--filter", "dangling=bogus") == (
        "Error response from daemon: invalid value for filter 'dangling', must be \"true\" "
        '(or "1"), or "false" (or "0")\n'
    )
    assert refused("network", "ls", "--filter", "dangling=true", "--filter", "dangling=0") == (
        'Error response from daemon: got more than one value for filter key "dangling"\n'
    )
    assert ok("network", "ls", "-q", "--filter", "dangling=TRUE") != ""  # the ingress network


def test_service_create_mount_type_and_empty_spread_as_in_dockerd(swarm: LocalBackend) -> None:
    refused = docker.refused("service", "create", "-d", "--mount", "type=bogus,target=/x", "nginx")
    assert refused == 'Error response from daemon: invalid MountType: "bogus"\n'
    ok("service", "create", "-d", "--name", "sp", "--placement-pref", "spread=", "nginx")
    placement = ok("service", "inspect", "--format", "{{json .Spec.TaskTemplate.Placement}}", "sp")
    assert placement.strip() == '{"Preferences":[{"Spread":{"SpreadDescriptor":""}}]}'
    assert "Placement:\n Preferences:   [spread=]\n" in ok("service", "inspect", "--pretty", "sp")


def test_swarm_update_to_zero_is_the_default_as_in_dockerd(swarm: LocalBackend) -> None:
    """The CLI leaves a zero out of the spec it sends back: dockerd stores 0 (the default)
    and `docker info` shows it so (it kept the last value here)."""
    ok("swarm", "update", "--dispatcher-heartbeat", "7s", "--snapshot-interval", "500")
    spec = json.loads(ok("info", "--format", "{{json .Swarm.Cluster.Spec}}"))
    assert (spec["Dispatcher"], spec["Raft"]["SnapshotInterval"]) == (
        {"HeartbeatPeriod": 7 * 10**9},
        500,
    )
    ok("swarm", "update", "--dispatcher-heartbeat", "0s", "--snapshot-interval", "0")
    spec = json.loads(ok("info", "--format", "{{json .Swarm.Cluster.Spec}}"))
    assert spec["Dispatcher"] == {} and "SnapshotInterval" not in spec["Raft"]
    assert "  Heartbeat Period: Less than a second\n" in ok("info")
