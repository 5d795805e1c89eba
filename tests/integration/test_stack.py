"""`docker stack` with the real docker CLI (its API version negotiated, as users run it) on real
node processes (1 manager + 2 workers on 127.77.167.x; the second test on 127.77.169.x): a
compose file with an encrypted attachable overlay, a replicated service with a published port
and a placement constraint, and a secret and a config from files, which the service's
containers read where Docker puts them. Then secrets and configs through `docker secret` /
`docker config` and `docker service create --secret/--config`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from docker_cli import docker, needs_docker_cli, ok

from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [pytest.mark.integration, needs_docker_cli]

COMPOSE = """\
services:
  web:
    image: nginx:alpine
    ports:
      - "8080:80"
    networks:
      - backend
    deploy:
      replicas: 2
      placement:
        constraints:
          - node.role == worker
    secrets:
      - source: db_password
        target: db_pass
    configs:
      - source: site
        target: /etc/nginx/conf.d/site.conf
networks:
  backend:
    driver: overlay
    attachable: true
    driver_opts:
      encrypted: ""
secrets:
  db_password:
    file: {dir}/db_password.txt
configs:
  site:
    file: {dir}/site.conf
"""


def lines(text: str) -> list[list[str]]:
    """A table's rows (the header left out), split into words."""
    return [line.split() for line in text.strip().splitlines()][1:]


def read_in_task(lab: SwarmLab, service: str, path: str) -> list[str]:
    """`cat path` in each running task container of `service`, on the node that runs it."""
    out = []
    for node in lab.nodes:
        for container in ok(node, "ps", "-q", "--filter", f"name={service}.").split():
            out.append(ok(node, "exec", container, "cat", path))
    return out


def test_stack_deploy_ls_services_ps_rm(tmp_path: Path) -> None:
    (tmp_path / "db_password.txt").write_text("hunter2\n")
    (tmp_path / "site.conf").write_text("server { listen 80; }\n")
    compose = tmp_path / "compose.yml"
    compose.write_text(COMPOSE.format(dir=tmp_path))

    async def scenario() -> None:
        lab = SwarmLab(tmp_path / "lab", managers=1, workers=2, lab=167)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            out = ok(manager, "stack", "deploy", "--detach=false", "-c", str(compose), "demo")
            assert "Creating secret demo_db_password" in out and "converged" in out, out
            assert lines(ok(manager, "stack", "ls")) == [["demo", "1"]]
            [service] = lines(ok(manager, "stack", "services", "demo"))
            web = ["demo_web", "replicated", "2/2", "nginx:alpine", "*:8080->80/tcp"]
            assert service[1:] == web
            tasks = lines(ok(manager, "stack", "ps", "demo"))
            assert sorted(t[3] for t in tasks) == ["worker-1", "worker-2"]  # node.role == worker
            assert {t[5] for t in tasks} == {"Running"}
            [net] = json.loads(ok(manager, "network", "inspect", "demo_backend"))
            assert net["Attachable"] and net["Options"]["encrypted"] == ""
            assert net["Labels"] == {"com.docker.stack.namespace": "demo"}

            assert read_in_task(lab, "demo_web", "/run/secrets/db_pass") == ["hunter2\n"] * 2
            assert (
                read_in_task(lab, "demo_web", "/etc/nginx/conf.d/site.conf")
                == ["server { listen 80; }\n"] * 2
            )
            [secret] = json.loads(ok(manager, "secret", "inspect", "demo_db_password"))
            assert "Data" not in secret["Spec"]

            refused = docker(manager, "secret", "rm", "demo_db_password")
            assert (
                refused.returncode == 1
                and (
                    "rpc error: code = InvalidArgument desc = secret 'demo_db_password' is in use "
                    "by the following service: demo_web"
                )
                in refused.stderr
            ), refused.stderr

            # Deploying again leaves things as they are; new data for a secret is refused,
            # as Docker refuses it (secrets are immutable).
            ok(manager, "stack", "deploy", "-c", str(compose), "demo")
            (tmp_path / "db_password.txt").write_text("changed\n")
            again = docker(manager, "stack", "deploy", "-c", str(compose), "demo")
            assert (
                again.returncode == 1
                and ("rpc error: code = InvalidArgument desc = only updates to Labels are allowed")
                in again.stderr
            ), again.stderr

            out = ok(manager, "stack", "rm", "demo")
            assert "Removing network demo_backend" in out
            assert lines(ok(manager, "stack", "ls")) == []
            assert ok(manager, "secret", "ls", "-q") == ok(manager, "config", "ls", "-q") == ""

            async def no_tasks() -> bool | None:
                out = ok(manager, "node", "ps", "-q", *[n.name for n in lab.nodes])
                return True if not out.split() else None

            await until(no_tasks, 60, "every task of the removed stack gone")
        finally:
            lab.stop()

    asyncio.run(scenario())


def test_service_create_with_secret_and_config_flags(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=1, lab=169)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            secret_id = ok(manager, "secret", "create", "api_key", "-", stdin="k3y\n").strip()
            ok(manager, "config", "create", "--label", "app=web", "motd", "-", stdin="hello\n")
            [config] = json.loads(ok(manager, "config", "inspect", "motd"))
            assert config["Spec"]["Labels"] == {"app": "web"}
            assert config["Spec"]["Data"] == "aGVsbG8K"  # config data is shown, base64
            assert ok(manager, "secret", "ls", "--format", "{{.ID}} {{.Name}}").split() == [
                secret_id,
                "api_key",
            ]
            missing = docker(
                manager, "service", "create", "--secret", "nope", "--name", "x", "busybox"
            )
            assert missing.returncode == 1 and "secret not found: nope" in missing.stderr

            ok(
                manager, "service", "create", "-d", "--name", "app", "--replicas", "2",
                "--secret", "src=api_key,target=key,mode=0400",
                "--config", "src=motd,target=/etc/motd",
                "busybox", "sleep", "1d",
            )  # fmt: skip

            async def two_running() -> bool | None:
                out = ok(manager, "service", "ps", "--format", "{{.CurrentState}}", "app")
                states = out.split("\n")
                return True if sum(s.startswith("Running") for s in states) == 2 else None

            await until(two_running, 60, "2 running tasks")
            assert read_in_task(lab, "app", "/run/secrets/key") == ["k3y\n"] * 2
            assert read_in_task(lab, "app", "/etc/motd") == ["hello\n"] * 2
            [spec] = json.loads(ok(manager, "service", "inspect", "app"))
            [ref] = spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
            assert ref["File"] == {"Name": "key", "UID": "0", "GID": "0", "Mode": 0o400}
            assert ref["SecretID"] == secret_id
        finally:
            lab.stop()

    asyncio.run(scenario())
