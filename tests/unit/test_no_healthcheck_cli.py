"""`--no-healthcheck` with the real docker CLI: `docker service create --no-healthcheck` keeps
Docker's `{"Test": ["NONE"]}` (service inspect, on 127.77.218.5 with the leader's loops), and
`docker run --no-healthcheck` shows it in the container's inspect and runs no check (on
127.77.218.6); the task container's side is in test_container_view. Real dockerd 20.10
showed `{"Test":["NONE"]}` in all three places and no `State.Health`."""

from __future__ import annotations

import json

from served_api import docker_at, served, served_containers, worker_port

from tests.unit.swarm_fixture import seeded_swarm

SWARM, CONTAINERS, PORT = "127.77.218.5", "127.77.218.6", worker_port()


def test_service_create_no_healthcheck_is_kept_as_docker_keeps_it() -> None:
    with served(SWARM, PORT, seeded_swarm(1)):
        created = docker_at(SWARM, PORT, "service", "create", "-d", "--name", "quiet",
                            "--no-healthcheck", "busybox", "sleep", "1000")  # fmt: skip
        assert created.returncode == 0, created.stderr
        template = "{{json .Spec.TaskTemplate.ContainerSpec.Healthcheck}}"
        shown = docker_at(SWARM, PORT, "service", "inspect", "--format", template, "quiet")
        assert json.loads(shown.stdout) == {"Test": ["NONE"]}


def test_run_no_healthcheck_shows_none_and_runs_no_check() -> None:
    with served_containers(CONTAINERS, PORT):
        run = docker_at(CONTAINERS, PORT, "run", "-d", "--name", "quiet", "--no-healthcheck",
                        "busybox", "sleep", "1000")  # fmt: skip
        assert run.returncode == 0, run.stderr
        template = "{{json .Config.Healthcheck}} {{json .State.Health}}"
        shown = docker_at(CONTAINERS, PORT, "inspect", "--format", template, "quiet")
        assert shown.stdout == '{"Test":["NONE"]} null\n'
        listed = docker_at(CONTAINERS, PORT, "ps", "--format", "{{.Status}}")
        assert "health" not in listed.stdout
