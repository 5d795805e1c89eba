"""The hijacked streams of `/containers/{id}/attach` and `/exec/{id}/start` over a real socket
(127.77.182.1): the 101 upgrade, standard input carried in, raw TTY output or 8-byte-header
frames without a TTY, the half-close that is a pipe's EOF; and `/exec`, `resize` with bad
input, in dockerd's words and statuses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from controlplane.api.logs import unframe
from tests.unit.container_api import DEADLINE, Client, Hijacked, serve_containers

HOST = "127.77.182.1"
Test = Callable[[Client], Awaitable[None]]


def run(test: Test) -> None:
    serve_containers(HOST, test)


async def created(client: Client, body: dict[str, Any], name: str = "") -> str:
    response = await client.post("/v1.41/containers/create", json=body, params={"name": name})
    assert response.status == 201, await response.text()
    return str((await response.json())["Id"])


async def answer(response: Any) -> tuple[int, Any]:
    return response.status, (await response.json())["message"]


ATTACH = "/v1.41/containers/{}/attach?stdin=1&stdout=1&stderr=1&stream=1"


def test_run_it_raw_tty_stream_with_input_and_exit_status() -> None:
    async def test(client: Client) -> None:
        tty = {"Image": "busybox", "Cmd": ["sh"], "Tty": True, "OpenStdin": True}
        cid = await created(client, tty | {"HostConfig": {"ConsoleSize": [24, 80]}}, "box")
        stream = await Hijacked.open(client, ATTACH.format(cid))
        waited = await client.post(f"/v1.41/containers/{cid}/wait?condition=next-exit")
        assert (await client.post(f"/v1.41/containers/{cid}/start")).status == 204
        await stream.until(b"/ # ")
        resized = await client.post(f"/v1.41/containers/{cid}/resize", params={"h": 30, "w": 90})
        assert resized.status == 200  # a new size: the shell redraws its prompt
        await stream.until(b"\r/ # \x1b[J")
        stream.send(b"hostnamx\x7fe\r")
        screen = await stream.until(b"\r\n/ # ")
        assert screen == f"/ # \r/ # \x1b[Jhostnamx\x08\x1b[Je\r\n{cid[:12]}\r\n/ # ".encode()
        stream.send(b"exit 4\r")
        assert (await stream.rest()).endswith(b"/ # exit 4\r\n")
        assert await waited.json() == {"Error": None, "StatusCode": 4}
        inspected = await (await client.get("/v1.41/containers/box/json")).json()
        assert (inspected["Config"]["Tty"], inspected["Config"]["OpenStdin"]) == (True, True)

    run(test)


def test_run_i_pipe_is_framed_and_ends_at_the_half_close() -> None:
    async def test(client: Client) -> None:
        config = {"Image": "busybox", "Cmd": ["sh"], "OpenStdin": True, "StdinOnce": True}
        cid = await created(client, config)
        stream = await Hijacked.open(client, ATTACH.format(cid))
        assert (await client.post(f"/v1.41/containers/{cid}/start")).status == 204
        stream.send(b"echo out; nosuch\n")
        stream.close_stdin()
        assert unframe(await stream.rest()) == [(1, b"out\n"), (2, b"sh: nosuch: not found\n")]
        waited = await client.post(f"/v1.41/containers/{cid}/wait")
        assert (await waited.json())["StatusCode"] == 127

    run(test)


def test_a_half_close_without_stdin_once_ends_the_attach_not_the_input() -> None:
    """`docker attach` to a `run -d -i` container: as dockerd, the client's end of input
    ends its attach; the container's standard input stays open for the next client."""

    async def test(client: Client) -> None:
        cid = await created(client, {"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True})
        assert (await client.post(f"/v1.41/containers/{cid}/start")).status == 204
        first = await Hijacked.open(client, ATTACH.format(cid))
        first.send(b"one\n")
        await first.until(b"one\n")
        first.close_stdin()
        assert unframe(await first.rest()) == [(1, b"one\n")]
        second = await Hijacked.open(client, ATTACH.format(cid))
        second.send(b"two")
        assert unframe(await second.until(b"two")) == [(1, b"two")]  # cat still reads
        assert (await client.post(f"/v1.41/containers/{cid}/kill")).status == 204

    run(test)


def test_attach_without_stdin_drops_input() -> None:
    async def test(client: Client) -> None:
        cid = await created(client, {"Image": "busybox", "Cmd": ["sh"]})
        path = f"/v1.41/containers/{cid}/attach?stdout=1&stderr=1&stream=1"
        stream = await Hijacked.open(client, path)
        assert (await client.post(f"/v1.41/containers/{cid}/start")).status == 204
        stream.send(b"echo nobody reads this\n")
        assert await stream.rest() == b""  # sh without stdin exits at once
        waited = await client.post(f"/v1.41/containers/{cid}/wait")
        assert (await waited.json())["StatusCode"] == 0

    run(test)


def test_run_t_without_stdin_keeps_its_output_after_the_cli_half_closes() -> None:
    async def test(client: Client) -> None:
        late = {"Image": "busybox", "Cmd": ["sh", "-c", "sleep 1; echo late"], "Tty": True}
        cid = await created(client, late)
        path = f"/v1.41/containers/{cid}/attach?stdout=1&stderr=1&stream=1"
        stream = await Hijacked.open(client, path)
        stream.close_stdin()  # the CLI half-closes at once when it sends no input
        assert (await client.post(f"/v1.41/containers/{cid}/start")).status == 204
        assert await stream.rest() == b"late\r\n"

    run(test)


async def exec_created(client: Client, container: str, body: dict[str, Any]) -> str:
    response = await client.post(f"/v1.41/containers/{container}/exec", json=body)
    assert response.status == 201, await response.text()
    return str((await response.json())["Id"])


async def running_sleeper(client: Client) -> str:
    cid = await created(client, {"Image": "busybox", "Cmd": ["sleep", "1000"]}, "bg")
    assert (await client.post(f"/v1.41/containers/{cid}/start")).status == 204
    return cid


def test_exec_framed_output_and_exit_code() -> None:
    async def test(client: Client) -> None:
        cid = await running_sleeper(client)
        script = {"Cmd": ["sh", "-c", "echo out; cat /nope; exit 5"], "Env": ["X=1"]}
        eid = await exec_created(
            client, "bg", script | {"AttachStdout": True, "AttachStderr": True}
        )
        before = await (await client.get(f"/v1.41/exec/{eid}/json")).json()
        assert (before["Running"], before["ExitCode"], before["Pid"]) == (False, None, 0)
        stream = await Hijacked.open(client, f"/v1.41/exec/{eid}/start", b'{"Detach":false}')
        assert unframe(await stream.rest()) == [
            (1, b"out\n"),
            (2, b"cat: can't open '/nope': No such file or directory\n"),
        ]
        after = await (await client.get(f"/v1.41/exec/{eid}/json")).json()
        assert (after["Running"], after["ExitCode"], after["ContainerID"]) == (False, 5, cid)
        assert after["ProcessConfig"] == {
            "tty": False,
            "entrypoint": "sh",
            "arguments": ["-c", "echo out; cat /nope; exit 5"],
            "privileged": False,
        }
        assert after["Pid"] > 0
        again = await client.post(f"/v1.41/exec/{eid}/start", json={"Detach": True})
        assert await answer(again) == (409, f"Error: Exec command {eid} is already running")
        logs = await client.get("/v1.41/containers/bg/logs", params={"stdout": 1, "stderr": 1})
        assert await logs.read() == b""  # an exec's output is not the container's

    run(test)


def test_exec_it_with_env_and_a_missing_command() -> None:
    async def test(client: Client) -> None:
        await running_sleeper(client)
        tty = {"Cmd": ["sh"], "Tty": True, "AttachStdin": True, "AttachStdout": True}
        eid = await exec_created(client, "bg", tty | {"Env": ["GREETING=hello"]})
        stream = await Hijacked.open(client, f"/v1.41/exec/{eid}/start", b'{"Tty":true}')
        await stream.until(b"/ # ")
        stream.send(b"echo $GREETING\r\x04")
        assert await stream.rest() == b"/ # echo $GREETING\r\nhello\r\n/ # \r\n"
        assert (await client.post(f"/v1.41/exec/{eid}/resize?h=24&w=80")).status == 200
        status = await (await client.get(f"/v1.41/exec/{eid}/json")).json()
        assert status["ExitCode"] == 0

        missing = await exec_created(client, "bg", {"Cmd": ["nosuch"], "AttachStdout": True})
        stream = await Hijacked.open(client, f"/v1.41/exec/{missing}/start", b"{}")
        assert unframe(await stream.rest()) == [
            (
                1,
                b"OCI runtime exec failed: exec failed: unable to start container process: "
                b'exec: "nosuch": executable file not found in $PATH: unknown\n',
            )
        ]
        status = await (await client.get(f"/v1.41/exec/{missing}/json")).json()
        assert (status["ExitCode"], status["Pid"]) == (126, 0)

    run(test)


def test_detached_exec_dies_with_its_container() -> None:
    async def test(client: Client) -> None:
        await running_sleeper(client)
        eid = await exec_created(client, "bg", {"Cmd": ["sleep", "1000"]})
        started = await client.post(f"/v1.41/exec/{eid}/start", json={"Detach": True})
        assert (started.status, await started.read()) == (200, b"")
        assert (await (await client.get(f"/v1.41/exec/{eid}/json")).json())["Running"] is True
        assert (await client.post("/v1.41/containers/bg/kill")).status == 204

        async def exit_code() -> Any:
            while True:
                status = await (await client.get(f"/v1.41/exec/{eid}/json")).json()
                if not status["Running"]:
                    return status["ExitCode"]
                await asyncio.sleep(0.02)

        assert await asyncio.wait_for(exit_code(), DEADLINE) == 137
        assert (await client.delete("/v1.41/containers/bg")).status == 204
        gone = await client.get(f"/v1.41/exec/{eid}/json")
        assert await answer(gone) == (404, f"No such exec instance: {eid}")

    run(test)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Cmd": []}, "No exec command specified"),
        ({}, "No exec command specified"),
        ({"Cmd": "true"},
         "json: cannot unmarshal string into Go struct field ExecConfig.Cmd of type []string"),
        ({"Cmd": [1]}, "Cmd must be a list of strings, got [1]"),
        ({"Cmd": ["true"], "Tty": "yes"}, "Tty must be true or false, got 'yes'"),
        ({"Cmd": ["true"], "Env": "X=1"}, "Env must be a list of VAR=value strings, got 'X=1'"),
    ],
)  # fmt: skip
def test_bad_exec_bodies(body: dict[str, Any], message: str) -> None:
    async def test(client: Client) -> None:
        await running_sleeper(client)
        assert await answer(await client.post("/v1.41/containers/bg/exec", json=body)) == (
            400,
            message,
        )

    run(test)


def test_exec_and_resize_errors() -> None:
    async def test(client: Client) -> None:
        stopped = await created(client, {"Image": "busybox", "Cmd": ["true"]}, "stopped")
        exec_true = {"Cmd": ["true"]}
        refused = await client.post("/v1.41/containers/stopped/exec", json=exec_true)
        assert await answer(refused) == (409, f"Container {stopped} is not running")
        nobody = await client.post("/v1.41/containers/nope/exec", json=exec_true)
        assert await answer(nobody) == (404, "No such container: nope")
        malformed = await client.post(
            "/v1.41/containers/stopped/exec",
            data=b"{bad",
            headers={"Content-Type": "application/json"},
        )
        assert malformed.status == 400
        assert (await malformed.json())["message"].startswith("invalid JSON in the request body")
        for path in ("/v1.41/exec/abc/resize?h=1&w=1", "/v1.41/exec/abc/start"):
            assert await answer(await client.post(path)) == (404, "No such exec instance: abc")
        assert await answer(await client.get("/v1.41/exec/abc/json")) == (
            404,
            "No such exec instance: abc",
        )
        bad_height = await client.post("/v1.41/containers/stopped/resize?h=x&w=10")
        assert await answer(bad_height) == (400, 'strconv.Atoi: parsing "x": invalid syntax')
        no_width = await client.post("/v1.41/containers/stopped/resize?h=10")
        assert await answer(no_width) == (400, 'strconv.Atoi: parsing "": invalid syntax')
        not_running = await client.post("/v1.41/containers/stopped/resize?h=10&w=10")
        assert await answer(not_running) == (409, f"Container {stopped} is not running")

        await running_sleeper(client)
        eid = await exec_created(client, "bg", exec_true)
        await client.post("/v1.41/containers/bg/kill")
        late = await client.post(f"/v1.41/exec/{eid}/start", json={"Detach": True})
        assert (await answer(late))[0] == 409

    run(test)


def test_stdin_once_ends_a_pipe_but_not_a_tty_when_the_client_goes_away() -> None:
    async def test(client: Client) -> None:
        piped = {"Image": "busybox", "Cmd": ["sh"], "OpenStdin": True, "StdinOnce": True}
        cid = await created(client, piped)
        stream = await Hijacked.open(client, ATTACH.format(cid))
        assert (await client.post(f"/v1.41/containers/{cid}/start")).status == 204
        stream.send(b"echo hi\n")
        await stream.until(b"hi\n")
        stream.writer.close()  # `docker run -i` killed: the shell reads end of input
        waited = await client.post(f"/v1.41/containers/{cid}/wait")
        assert (await waited.json())["StatusCode"] == 0

        # A TTY's client leaving (the CLI detaching with Ctrl-P Ctrl-Q, or killed) leaves the
        # shell running, as with dockerd.
        once = {"Image": "busybox", "Cmd": ["sh"], "Tty": True, "OpenStdin": True}
        left = await created(client, once | {"StdinOnce": True})
        stream = await Hijacked.open(client, ATTACH.format(left))
        assert (await client.post(f"/v1.41/containers/{left}/start")).status == 204
        await stream.until(b"/ # ")
        stream.writer.close()
        again = await Hijacked.open(client, ATTACH.format(left))
        again.send(b"echo back\r")
        await again.until(b"back\r\n/ # ")
        again.send(b"exit 2\r")
        await again.rest()
        waited = await client.post(f"/v1.41/containers/{left}/wait")
        assert (await waited.json())["StatusCode"] == 2

        kept = await created(client, once)  # `docker run -dit`: clients come and go
        assert (await client.post(f"/v1.41/containers/{kept}/start")).status == 204
        first = await Hijacked.open(client, ATTACH.format(kept))
        first.send(b"\r")
        await first.until(b"/ # ")
        first.writer.close()
        second = await Hijacked.open(client, ATTACH.format(kept))
        second.send(b"echo still here\r")
        await second.until(b"still here\r\n/ # ")
        second.send(b"exit\r")
        assert (await second.rest()).endswith(b"exit\r\n")

    run(test)
