"""The real docker CLI against a lab of 3 managers + 2 workers, its outputs compared with what
the same CLI (28.2.2, API 1.41) printed against a real Docker 20.10 swarm for the same commands
(the transcripts in /work/shared/reference/real-swarm/api-transcripts/, label-cli28.json).

Ids, times, hostnames, addresses, names and images are normalised; what is compared is the
shape: table headers, column values, JSON field sets and values, messages. Differences on
purpose are asserted as such, each with its reason, where it occurs.

One test, one lab: the commands build on each other (as a user types them), and one lab keeps
the suite well under a minute.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from docker_cli import docker, needs_docker_cli, ok

from controlplane.lab.swarm_lab import SwarmLab, until

TRANSCRIPTS = Path("/work/shared/reference/real-swarm/api-transcripts")

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
    pytest.mark.skipif(
        not TRANSCRIPTS.is_dir(), reason=f"the real swarm's transcripts are not in {TRANSCRIPTS}"
    ),
]

SWARM_ID = re.compile(r"\b[a-z0-9]{25}\b")
SHORT_ID = re.compile(r"^[a-z0-9]{12}$")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
ADDRESS = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b")
AGO = re.compile(r"\b(\d+|About an?) (second|minute|hour)s? ago$")
NUMBER = re.compile(r"\d+")


def reference(label: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((TRANSCRIPTS / f"{label}-cli28.json").read_text())
    return document


def table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """A CLI table as (column names, rows): columns start where the header's names start
    (the CLI aligns with a tabwriter, at least two spaces between columns)."""
    header, *lines = text.rstrip("\n").split("\n")
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    rows = [
        {n: line[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
        for line in lines
    ]
    return names, rows


def normalised(text: str, names: dict[str, str]) -> str:
    """Ids, times, addresses and the given names (real -> ours) replaced by placeholders."""
    text = TIMESTAMP.sub("<time>", text)
    text = SWARM_ID.sub("<id>", text)
    text = ADDRESS.sub("<addr>", text)
    text = AGO.sub("<n> <unit> ago", text)
    for name, placeholder in names.items():
        text = re.sub(rf"\b{re.escape(name)}\b", placeholder, text)
    return text


def json_shape(value: Any, names: dict[str, str]) -> Any:
    """The JSON with every string normalised and every number-in-a-string made <n>."""
    if isinstance(value, dict):
        return {k: json_shape(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [json_shape(v, names) for v in value]
    if isinstance(value, str):
        return NUMBER.sub("<n>", normalised(value, names))
    return value


def progress_lines(text: str, names: dict[str, str]) -> set[str]:
    """The distinct lines of `service create/scale/update` progress output, numbers aside."""
    return {NUMBER.sub("<n>", normalised(line, names)) for line in text.splitlines()}


def test_the_docker_cli_prints_what_a_real_swarm_prints(tmp_path: Path) -> None:
    # Real name -> placeholder, ours -> the same placeholder.
    real = {"labnet28": "<net>", "whoami28": "<svc>", "busybox": "<image>", "8090": "<port>"}
    ours = {"my-net": "<net>", "web": "<svc>", "nginx": "<image>", "8080": "<port>"}
    for n in ("sw-m1", "sw-m2", "sw-m3", "sw-w1", "sw-w2"):
        real[n] = "<host>"
    for n in ("manager-1", "manager-2", "manager-3", "worker-1", "worker-2"):
        ours[n] = "<host>"

    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=3, workers=2, lab=194)
        try:
            await lab.up()
            await until(lab.all_ready, 60, "every node Ready")
            await commands(lab)
        finally:
            lab.stop()

    async def commands(lab: SwarmLab) -> None:
        m1 = lab.node("manager-1")

        # docker node ls: same columns, one row per node, the same manager statuses.
        expected_columns, real_rows = table(reference("node-ls")["stdout"])
        columns, rows = table(ok(m1, "node", "ls"))
        assert columns == expected_columns
        assert len(rows) == len(real_rows) == 5

        def node_row(row: dict[str, str]) -> tuple[str, ...]:
            marker = row["ID"].endswith(" *")
            assert SWARM_ID.fullmatch(row["ID"].removesuffix(" *")), row
            return (str(marker), row["STATUS"], row["AVAILABILITY"], row["MANAGER STATUS"])

        assert sorted(map(node_row, rows)) == sorted(map(node_row, real_rows))
        # On purpose: the engine version says it is Swarmlab emulating 20.10.24.
        assert {r["ENGINE VERSION"] for r in real_rows} == {"20.10.24+dfsg1"}
        assert {r["ENGINE VERSION"] for r in rows} == {"20.10.24-swarmlab"}

        # docker network create -d overlay --attachable --opt encrypted my-net: the id alone.
        created = reference("network-create")
        assert created["argv"][2:] == [
            "create", "-d", "overlay", "--attachable", "--opt", "encrypted", "labnet28"
        ]  # fmt: skip
        out = ok(m1, "network", "create", "-d", "overlay", "--attachable", "--opt", "encrypted",
                 "my-net")  # fmt: skip
        assert normalised(out, ours) == normalised(created["stdout"], real) == "<id>\n"

        # docker network ls: same columns; swarm-scope rows alike.
        expected_columns, real_rows = table(reference("network-ls")["stdout"])
        columns, rows = table(ok(m1, "network", "ls"))
        assert columns == expected_columns

        def network_row(row: dict[str, str]) -> tuple[str, ...]:
            assert SHORT_ID.fullmatch(row["NETWORK ID"]), row
            return (row["DRIVER"], row["SCOPE"])

        real_swarm = [r for r in real_rows if r["SCOPE"] == "swarm"]
        swarm_rows = [r for r in rows if r["SCOPE"] == "swarm"]
        assert {r["NAME"] for r in swarm_rows} == {"ingress", "my-net"}
        assert set(map(network_row, rows)) <= set(map(network_row, real_rows))
        assert set(map(network_row, swarm_rows)) == set(map(network_row, real_swarm))
        # The local networks: the real swarm node's, each with its behaviour
        # (api/predefined_networks.py): the same names, drivers and scope.
        local = {(r["NAME"], r["DRIVER"]) for r in rows if r["SCOPE"] == "local"}
        assert local == {(r["NAME"], r["DRIVER"]) for r in real_rows if r["SCOPE"] == "local"}

        # docker network inspect my-net: the same document, field for field.
        inspected = json.loads(ok(m1, "network", "inspect", "my-net"))
        real_inspected = json.loads(reference("network-inspect")["stdout"])
        assert json_shape(inspected, ours) == json_shape(real_inspected, real)

        # docker service create (attached: progress, then the 5 s verification).
        service_create = reference("service-create")
        out = docker(
            m1, "service", "create", "--name", "web", "--replicas", "3", "--network", "my-net",
            "-p", "8080:80", "nginx",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        first, *_, last = out.stdout.splitlines()
        real_first, *_, real_last = service_create["stdout"].splitlines()
        assert normalised(first, ours) == normalised(real_first, real) == "<id>"
        assert normalised(last, ours) == normalised(real_last, real)
        assert progress_lines(out.stdout, ours) <= progress_lines(service_create["stdout"], real)
        # The same warning: neither swarm reaches a registry to pin the image's digest.
        assert normalised(out.stderr, ours) == normalised(service_create["stderr"], real)

        # docker service ls: same columns, the service's row alike.
        expected_columns, real_rows = table(reference("service-ls")["stdout"])
        columns, rows = table(ok(m1, "service", "ls"))
        assert columns == expected_columns

        def service_row(row: dict[str, str], names: dict[str, str]) -> dict[str, str]:
            assert SHORT_ID.fullmatch(row["ID"]), row
            return {k: normalised(v, names) for k, v in row.items() if k != "ID"}

        [web] = rows
        [real_web] = [r for r in real_rows if r["NAME"] == "whoami28"]
        assert service_row(web, ours) == service_row(real_web, real)

        # docker service ps web: same columns, one running task per replica.
        expected_columns, real_rows = table(reference("service-ps")["stdout"])

        async def ps_rows() -> list[dict[str, str]] | None:
            columns, rows = table(ok(m1, "service", "ps", "web"))
            assert columns == expected_columns
            return rows if len(rows) == 3 else None

        rows = await until(ps_rows, 30, "3 tasks in service ps")

        def task_row(row: dict[str, str], names: dict[str, str]) -> dict[str, str]:
            assert SHORT_ID.fullmatch(row["ID"]), row
            return {k: normalised(v, names) for k, v in row.items() if k not in ("ID", "NODE")}

        assert sorted(map(str, (task_row(r, ours) for r in rows))) == sorted(
            map(str, (task_row(r, real) for r in real_rows))
        )

        # docker service scale web=1: the message, the progress, the verification.
        scale = reference("service-scale")
        out = docker(m1, "service", "scale", "web=1")
        assert out.returncode == 0, out.stderr
        assert normalised(out.stdout.splitlines()[0], ours) == "<svc> scaled to 1"
        assert normalised(scale["stdout"].splitlines()[0], real) == "<svc> scaled to 1"
        assert out.stdout.splitlines()[-1] == "verify: Service web converged"
        assert progress_lines(out.stdout, ours) <= progress_lines(scale["stdout"], real)
        assert out.stderr == scale["stderr"] == ""

        # docker service update --image: no transcript of a real swarm for it; the CLI prints
        # the service name, then the same progress and verification as scale, so the scale
        # transcript is the reference for those lines.
        out = docker(m1, "service", "update", "--image", "nginx:1.25", "web")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "web"
        assert lines[-1] == "verify: Service web converged"
        progress = progress_lines("\n".join(lines[1:]), ours)
        assert progress <= progress_lines(scale["stdout"], real) | {"<svc>"}

        # docker service rm web: the name back.
        removed = reference("service-rm")
        out = ok(m1, "service", "rm", "web")
        assert normalised(out, ours) == normalised(removed["stdout"], real) == "<svc>\n"

        # docker network rm my-net: refused while the service's tasks still hold the network
        # (real Docker refuses alike, "in use by task"), then the name back.
        in_use = reference("bad-network-rm-inuse-container")

        async def network_removed() -> str | None:
            result = docker(m1, "network", "rm", "my-net")
            if result.returncode == 0:
                return result.stdout
            assert result.returncode == in_use["exit_code"]
            assert normalised(result.stderr, ours) == normalised(in_use["stderr"], real)
            return None

        out = await until(network_removed, 30, "network rm once the tasks are gone")
        assert normalised(out, ours) == normalised(reference("network-rm")["stdout"], real)
        assert normalised(out, ours) == "<net>\n"

    asyncio.run(scenario())
