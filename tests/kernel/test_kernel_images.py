"""The built-in web images in kernel mode (`agent/kernel_image.py`): nginx as a real process in
one node's container namespace, answered over kernel VXLAN to busybox `wget` by name from a
container on another node (underlay 10.203.<lab>.0/24, namespaces `swi...`)."""

from __future__ import annotations

import asyncio

import pytest
from kernel_testing import backends, scenario, skip_unless_kernel, underlay, unique_tag, until
from test_kernel_datapath import CLIENT, PLAIN, WEB, programs

from controlplane.agent import kernel_image
from controlplane.agent.images import resolve
from controlplane.datapath.dns import Resolver
from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel import namespaces
from controlplane.datapath.names import NameRecord, NameTable

pytestmark = pytest.mark.timeout(120)


def _image_server(image: str, *argv: str, env: dict[str, str] | None = None) -> list[str] | None:
    _, found = resolve(image)
    default_env = {key: value for key, _, value in (e.partition("=") for e in found.env)}
    command = list(argv) or [*found.entrypoint, *found.cmd]
    return kernel_image.image_server(found.files, env or default_env, command)


def test_built_in_images_map_to_the_entry_point_and_busybox_commands_do_not() -> None:
    assert _image_server("nginx") == ["nginx"]  # /docker-entrypoint.sh nginx -g 'daemon off;'
    assert _image_server("nginx", "nginx", "-g", "daemon off;") == ["nginx"]
    assert _image_server("httpd") == ["httpd"]
    assert _image_server("traefik/whoami") == ["whoami", "--port", "80"]
    assert _image_server("traefik/whoami", "/whoami", "--port", "8080") == [
        "whoami",
        "--port",
        "8080",
    ]
    assert _image_server("busybox", "httpd", "-f") is None  # busybox's own applet
    assert _image_server("nginx", "sh", "-c", "sleep 1") is None
    assert _image_server("busybox", "nosuch") is None


def test_entry_point_rejects_an_unknown_image_and_a_bad_port() -> None:
    with pytest.raises(SystemExit):
        kernel_image.main(["postgres"])
    with pytest.raises(SystemExit):
        kernel_image.main(["whoami", "--port", "70000"])


def test_nginx_on_one_node_answers_busybox_wget_by_name_from_another() -> None:
    skip_unless_kernel()
    kcontainers.busybox()

    async def body() -> None:
        with underlay(2, 61, net="10.203", prefix="swi") as ul:
            one, two = programs(ul, [PLAIN], [WEB, CLIENT])
            async with backends(ul) as (a, b):
                assert a.apply(one) and b.apply(two)
                web = a.container_netns(PLAIN.network_id, "web")
                client = b.container_netns(PLAIN.network_id, "client")
                resolver = Resolver(upstreams=[])
                resolver.replace(NameTable.build([NameRecord(WEB), NameRecord(CLIENT)]))
                dns = kcontainers.ContainerDns(resolver, client, [PLAIN.network_id])
                await dns.start()
                output = bytearray()
                errors = bytearray()
                terminated = asyncio.Event()
                nginx = asyncio.create_task(
                    kcontainers.run_streaming(
                        web,
                        ["nginx"],
                        output.extend,
                        errors.extend,
                        terminated,
                        {"PATH": kcontainers.DEFAULT_PATH, "NGINX_VERSION": "1.25.3"},
                        kernel_image.entry_point(),
                    )
                )
                try:
                    got = kcontainers.Finished(1, "", "")

                    async def served() -> bool:
                        nonlocal got
                        got = await kcontainers.run(
                            client, ["timeout", "5", "wget", "-qO-", "http://web/"]
                        )
                        return got.status == 0

                    await until(served, "wget http://web/ from node-2 answered by nginx", 60)
                    assert "<title>Welcome to nginx!</title>" in got.stdout
                    headers = await kcontainers.run(
                        client, ["timeout", "5", "wget", "-S", "-O", "/dev/null", "http://web/"]
                    )
                    assert "Server: nginx/1.25.3" in headers.stderr, headers
                    missing = await kcontainers.run(
                        client, ["timeout", "5", "wget", "-S", "-O-", "http://web/nope"]
                    )
                    assert missing.status == 1, missing
                    assert "HTTP/1.1 404 Not Found" in missing.stderr
                    await until(lambda: _now(output.count(b"\n") >= 3), "nginx's access log lines")
                    out = output.decode().splitlines()
                    assert "10.0.3.3 - - [" in out[0] and '"GET / HTTP/1.1" 200 615' in out[0]
                    assert '"GET /nope HTTP/1.1" 404' in out[-1] and errors == b""
                finally:
                    terminated.set()
                    status = await nginx
                    await dns.close()
                assert status == 0, (status, output, errors)  # nginx exits 0 on its SIGTERM

    scenario(body)


async def _now(value: bool) -> bool:
    return value


@pytest.mark.parametrize(
    ("args", "expected", "sigterm_status"),
    [
        (["httpd"], "<h1>It works!</h1>", 0),
        (["whoami", "--port", "8080"], "IP: 10.203.99.2\n", 2),
    ],
)
def test_httpd_and_whoami_serve_in_a_namespace_and_exit_on_sigterm(
    args: list[str], expected: str, sigterm_status: int
) -> None:
    skip_unless_kernel()
    kcontainers.busybox()
    netns = unique_tag("swi")
    port = args[2] if len(args) > 1 else "80"

    async def body() -> None:
        output = bytearray()
        terminated = asyncio.Event()
        server = asyncio.create_task(
            kcontainers.run_streaming(
                netns,
                args,
                output.extend,
                output.extend,
                terminated,
                {"PATH": kcontainers.DEFAULT_PATH, "HOSTNAME": "c0ffee"},
                kernel_image.entry_point(),
            )
        )
        try:
            got = kcontainers.Finished(1, "", "")

            async def served() -> bool:
                nonlocal got
                url = f"http://10.203.99.2:{port}/"
                got = await kcontainers.run(netns, ["timeout", "5", "wget", "-qO-", url])
                return got.status == 0

            await until(served, f"{args[0]} answering in {netns}", 60)
            assert expected in got.stdout, got
        finally:
            terminated.set()
            status = await server
        assert status == sigterm_status, (status, output)

    namespaces.create(netns)
    try:
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
            ["ip", "addr", "add", "10.203.99.2/24", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
        ):
            namespaces.run_in(netns, argv)
        scenario(body)
    finally:
        namespaces.remove(netns)
