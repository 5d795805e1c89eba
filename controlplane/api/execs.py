"""`POST /containers/{id}/exec`, `POST /exec/{id}/start|resize`, `GET /exec/{id}/json`: what
`docker exec [-it] CONTAINER CMD` calls, on the node's exec sessions (`agent/exec_sessions.py`).

The CLI creates the exec, starts it on a hijacked connection (`hijack.py`), resizes it when
it has a TTY, and once the stream ends reads the exit code from `/exec/{id}/json`. Errors
have dockerd's words and statuses: an unknown exec 404 (`No such exec instance: ID`), a
container that is not running 409, no command 400, an exec started twice 409.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controlplane.agent.standalone import StandaloneContainers
from controlplane.agent.stdio import STDERR, STDOUT
from controlplane.api.common import add_route, json_body, json_response
from controlplane.api.container_errors import container_error
from controlplane.api.detach_keys import parse_detach_keys
from controlplane.api.errors import ApiError, bad_request
from controlplane.api.hijack import serve_stream, terminal_size

EXEC_REGISTRY: web.AppKey[StandaloneContainers] = web.AppKey("exec_containers")


def register(app: web.Application, registry: StandaloneContainers) -> web.Application:
    app[EXEC_REGISTRY] = registry
    add_route(app, "POST", "/containers/{id}/exec", create)
    add_route(app, "POST", "/exec/{id}/start", start)
    add_route(app, "POST", "/exec/{id}/resize", resize)
    add_route(app, "GET", "/exec/{id}/json", inspect)
    return app


def _command(body: dict[str, Any]) -> list[str]:
    cmd = body.get("Cmd")
    if cmd is None:
        return []
    if isinstance(cmd, str):
        raise bad_request(
            "json: cannot unmarshal string into Go struct field ExecConfig.Cmd of type []string"
        )
    if not isinstance(cmd, list) or not all(isinstance(word, str) for word in cmd):
        raise bad_request(f"Cmd must be a list of strings, got {cmd!r}")
    return cmd


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be true or false, got {value!r}")
    return value


async def create(request: web.Request) -> web.Response:
    body = await json_body(request)
    env = body.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise bad_request(f"Env must be a list of VAR=value strings, got {env!r}")
    detach_keys = body.get("DetachKeys") or ""
    if not isinstance(detach_keys, str):
        raise bad_request(f"DetachKeys must be a string such as ctrl-p,ctrl-q, got {detach_keys!r}")
    try:
        parse_detach_keys(detach_keys)
    except ValueError:  # dockerd's words and status
        raise ApiError(500, f"Invalid escape keys ({detach_keys}) provided") from None
    try:
        session = request.app[EXEC_REGISTRY].execs.create(
            request.match_info["id"],
            _command(body),
            tty=_flag(body, "Tty"),
            open_stdin=_flag(body, "AttachStdin"),
            env=env,
            attach_stdout=_flag(body, "AttachStdout"),
            attach_stderr=_flag(body, "AttachStderr"),
            detach_keys=detach_keys,
        )
    except Exception as err:
        raise container_error(err) from None
    return json_response({"Id": session.id}, status=201)


async def start(request: web.Request) -> web.StreamResponse:
    body = await json_body(request) if request.can_read_body else {}
    detach = _flag(body, "Detach")
    try:
        session = request.app[EXEC_REGISTRY].execs.start(request.match_info["id"])
    except Exception as err:
        raise container_error(err) from None
    if detach:
        return web.Response(status=200)
    attached = ((STDOUT, session.attach_stdout), (STDERR, session.attach_stderr))
    streams = {stream for stream, wanted in attached if wanted}
    return await serve_stream(
        request,
        session.stdio,
        streams=streams,
        stdin=session.stdio.stdin is not None,
        cursor=0,
        stdin_once=True,  # an exec's input is its one client's
        detach_keys=parse_detach_keys(session.detach_keys),
    )


async def resize(request: web.Request) -> web.Response:
    rows, columns = terminal_size(request)
    try:
        request.app[EXEC_REGISTRY].execs.resize(request.match_info["id"], rows, columns)
    except Exception as err:
        raise container_error(err) from None
    return web.Response(status=200)


async def inspect(request: web.Request) -> web.Response:
    try:
        session = request.app[EXEC_REGISTRY].execs.get(request.match_info["id"])
    except Exception as err:
        raise container_error(err) from None
    return json_response(
        {
            "ID": session.id,
            "Running": session.running,
            "ExitCode": session.exit_code,
            "ProcessConfig": {
                "tty": session.stdio.tty,
                "entrypoint": session.argv[0],
                "arguments": session.argv[1:],
                "privileged": False,
            },
            "OpenStdin": session.stdio.stdin is not None,
            "OpenStderr": session.attach_stderr,
            "OpenStdout": session.attach_stdout,
            "CanRemove": False,
            "ContainerID": session.container_id,
            "DetachKeys": session.detach_keys,
            "Pid": session.pid,
        }
    )
