"""What the emulated web images serve, on their port of every network the container is on:
nginx's default page, Apache's "It works!", busybox httpd (an empty document root: 404s), and
traefik/whoami's description of the container and the request. Each logs as the real one does
(nginx: an access log line on stdout)."""

from __future__ import annotations

import time
from http import HTTPStatus

from controlplane.agent import http11 as http
from controlplane.agent.process import Exec

NGINX_PAGE = b"""<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""
NGINX_VERSION = "1.25.3"
HTTPD_VERSION = "2.4.58"
WHOAMI_EXIT_ON_SIGTERM = 2  # a Go program without a SIGTERM handler, as PID 1: killed by it
APACHE_PAGE = b"<html><body><h1>It works!</h1></body></html>\n"
BUSYBOX_404 = (
    b"<HTML><HEAD><TITLE>404 Not Found</TITLE></HEAD>\n"
    b"<BODY><H1>404 Not Found</H1>\nThe requested URL was not found\n</BODY></HTML>\n"
)


def _nginx_error(status: int, version: str) -> bytes:
    title = f"{status} {HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1>"
        f"</center>\r\n<hr><center>nginx/{version}</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


async def _serve(process: Exec, name: str, port: int, handler: http.Handler, server: str) -> int:
    try:
        await http.serve(process, port, handler, server)
    except OSError as err:
        process.err(f"{name}: bind to port {port} failed: {err.strerror}")
        return 1
    return 0


def nginx_handler(version: str) -> http.Handler:
    """nginx's default site: its welcome page at / and its own error pages."""

    def handle(request: http.Request) -> http.Response:
        if request.method not in ("GET", "HEAD"):
            return http.Response(405, _nginx_error(405, version))
        if request.target.partition("?")[0] in ("/", "/index.html"):
            return http.Response(200, NGINX_PAGE)
        return http.Response(404, _nginx_error(404, version))

    return handle


def nginx_access_line(request: http.Request, response: http.Response) -> str:
    """nginx's access log line (its `combined` format) for one request."""
    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    agent = request.header("User-Agent") or "-"
    return (
        f'{request.peer[0]} - - [{when}] "{request.method} {request.target} '
        f'{request.version}" {response.status} {len(response.body)} "-" "{agent}" "-"'
    )


async def nginx(process: Exec) -> int:
    """nginx in the foreground on port 80, until its SIGTERM (exit 0)."""
    version = process.env.get("NGINX_VERSION", NGINX_VERSION)
    try:
        await http.serve(
            process,
            80,
            nginx_handler(version),
            f"nginx/{version}",
            lambda request, response: process.out(nginx_access_line(request, response)),
        )
    except OSError as err:
        process.err(f"nginx: [emerg] bind() to 0.0.0.0:80 failed ({err.errno}: {err.strerror})")
        return 1
    return 0


def apache_handler() -> http.Handler:
    """Apache httpd's default document root: "It works!"."""

    def handle(request: http.Request) -> http.Response:
        if request.target.partition("?")[0] in ("/", "/index.html"):
            return http.Response(200, APACHE_PAGE)
        return http.Response(404, b"<html><body><h1>Not Found</h1></body></html>\n")

    return handle


async def apache(process: Exec) -> int:
    version = process.env.get("HTTPD_VERSION", HTTPD_VERSION)
    return await _serve(process, "httpd", 80, apache_handler(), f"Apache/{version} (Unix)")


async def busybox_httpd(process: Exec, port: int) -> int:
    """busybox `httpd -f`: the emulated filesystem has no document root to serve, so every
    path is busybox's 404."""

    def handle(_request: http.Request) -> http.Response:
        return http.Response(404, BUSYBOX_404)

    return await _serve(process, "httpd", port, handle, "busybox httpd/1.36.1")


def whoami_handler(hostname: str, addresses: list[str]) -> http.Handler:
    """traefik/whoami's answer: the container's hostname and addresses, then the request."""

    def handle(request: http.Request) -> http.Response:
        lines = [f"Hostname: {hostname}", "IP: 127.0.0.1"]
        lines += [f"IP: {address}" for address in addresses]
        lines.append(f"RemoteAddr: {request.peer[0]}:{request.peer[1]}")
        lines.append(f"{request.method} {request.target} {request.version}")
        lines += [f"{name}: {value}" for name, value in request.headers]
        return http.Response(200, ("\n".join(lines) + "\n\n").encode(), "text/plain")

    return handle


async def whoami(process: Exec, port: int) -> int:
    """traefik/whoami: the container's hostname and addresses, then the request it got."""
    handler = whoami_handler(process.hostname, [str(stack.ip) for stack in process.net.stacks])
    process.out(f"Starting up on port {port}")
    await _serve(process, "whoami", port, handler, "whoami")
    return WHOAMI_EXIT_ON_SIGTERM
