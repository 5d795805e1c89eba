"""Issue 5's first end-to-end step with the real docker CLI: a lab of 1 manager and 2 workers
(127.77.252.x plain, 127.77.253.x encrypted), an overlay network, nginx on worker-1 and a
busybox client on worker-2 that pings, resolves and fetches `web` by name (its VIP, which
the client's own sandbox answers pings for, as Docker's) through the node processes'
userspace data paths; with `--opt encrypted` the same over ESP, which the
workers' counters show."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from docker_cli import needs_docker_cli, ok

from controlplane.lab.processes import NodeProcess
from controlplane.lab.swarm_lab import SwarmLab, until

pytestmark = [
    pytest.mark.integration,
    needs_docker_cli,
]

CLIENT_SCRIPT = "ping -c 2 web; nslookup web; wget -qO- http://web; sleep 1000"


@pytest.mark.parametrize(("lab_number", "options"), [(252, []), (253, ["--opt", "encrypted"])])
def test_containers_on_two_nodes_talk_by_name(
    tmp_path: Path, lab_number: int, options: list[str]
) -> None:
    async def scenario() -> None:
        lab = SwarmLab(tmp_path, managers=1, workers=2, lab=lab_number)
        try:
            await lab.up()
            manager = lab.node("manager-1")
            ok(manager, "network", "create", "-d", "overlay", *options, "my-net")
            ok(manager, "service", "create", "-d", "--name", "web", "--network", "my-net",
                   "--constraint", "node.hostname==worker-1", "nginx")  # fmt: skip

            async def web_ip() -> str | None:
                out = ok(manager, "service", "ps", "--format", "{{.CurrentState}}", "web")
                if not out.startswith("Running"):
                    return None
                [task] = await _tasks(lab, "web")
                [address] = [a["Addresses"][0] for a in task["NetworksAttachments"]
                             if a["Network"]["Spec"]["Name"] == "my-net"]  # fmt: skip
                return str(address).split("/")[0]

            await until(web_ip, 90, "web running on worker-1")
            [vip] = [v["Addr"].split("/")[0] for v in _inspect(manager, "web")["VirtualIPs"]]
            ok(manager, "service", "create", "-d", "--name", "client", "--network", "my-net",
                   "--constraint", "node.hostname==worker-2", "busybox", "sh", "-c",
                   CLIENT_SCRIPT)  # fmt: skip

            client_logs = [""]

            async def client_done() -> str | None:
                client_logs[0] = ok(manager, "service", "logs", "--raw", "client")
                return client_logs[0] if "</html>" in client_logs[0] else None

            try:
                logs = await until(client_done, 120, "the client's ping, nslookup and wget")
            except TimeoutError as err:
                raise AssertionError(f"{err}; the client's output:\n{client_logs[0]}") from err
            replies = re.findall(rf"64 bytes from {re.escape(vip)}: seq=\d ttl=64", logs)
            assert len(replies) == 2, logs
            assert "2 packets transmitted, 2 packets received, 0% packet loss" in logs
            assert f"Name:\tweb\nAddress: {vip}\n" in logs
            assert "<h1>Welcome to nginx!</h1>" in logs
            web_logs = ok(manager, "service", "logs", "--raw", "web")
            assert '"GET / HTTP/1.1" 200 615 "-" "Wget" "-"' in web_logs

            # `docker network inspect -v` on worker-1 shows the network's local instance as
            # dockerd does: web's container, the two peers, the services and their tasks.
            worker_1 = lab.node("worker-1")
            [net] = json.loads(ok(worker_1, "network", "inspect", "-v", "my-net"))
            [(container_id, web_endpoint)] = net["Containers"].items()
            container = ok(worker_1, "inspect", "--format", "{{.Name}}", container_id)
            assert container.strip() == "/" + web_endpoint["Name"]
            assert web_endpoint["IPv4Address"].endswith("/24")
            assert len(web_endpoint["EndpointID"]) == 64
            workers = [f"127.77.{lab_number}.101", f"127.77.{lab_number}.102"]
            assert sorted(p["IP"] for p in net["Peers"]) == workers
            assert net["Services"]["web"]["VIP"] == vip
            [web_task] = net["Services"]["web"]["Tasks"]
            assert web_task["Name"] == web_endpoint["Name"]
            assert web_task["Info"] == {"Host IP": workers[0]}
            assert "client" in net["Services"]

            counters = {}
            for worker in ("worker-1", "worker-2"):
                async with lab.engine(worker) as engine:
                    shown = await engine.datapath()
                [seg] = [s for s in shown["counters"]["segments"].values()
                         if s["network"] == "my-net"]  # fmt: skip
                counters[worker] = seg
                assert seg["frames_in"] > 0 and seg["frames_out"] > 0, shown["text"]
                assert "counters:" in shown["text"]
            transport = "esp" if options else "vxlan"
            assert {seg["transport"] for seg in counters.values()} == {transport}
        finally:
            lab.stop()

    asyncio.run(scenario())


def _inspect(manager: NodeProcess, service: str) -> dict[str, Any]:
    """The service's Endpoint as `docker service inspect` shows it."""
    shown: dict[str, Any] = json.loads(
        ok(manager, "service", "inspect", "--format", "{{json .Endpoint}}", service)
    )
    return shown


async def _tasks(lab: SwarmLab, service: str) -> list[dict[str, Any]]:
    async with lab.engine("manager-1") as engine:
        tasks: list[dict[str, Any]] = await engine.request(
            "GET", "/tasks", params={"filters": f'{{"service":["{service}"]}}'}
        )
    return [t for t in tasks if t["Status"]["State"] == "running"]
