"""Detach keys: Docker's `--detach-keys` format, the watch over a client's input (a sequence
split across reads, a broken one delivered late), and over a real socket (127.77.163.2) the
attach and exec streams that end on them, or on a TTY client's half-close, leaving the process
running; bad sequences refused with dockerd's words and statuses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from controlplane.api.detach_keys import DEFAULT_DETACH_KEYS, DetachWatch, parse_detach_keys
from tests.unit.container_api import Client, Hijacked, serve_containers

HOST = "127.77.163.2"
CTRL_P, CTRL_Q = b"\x10", b"\x11"


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("", DEFAULT_DETACH_KEYS),
        ("ctrl-p,ctrl-q", b"\x10\x11"),
        (
            "ctrl-@,ctrl-a,ctrl-z,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_",
            b"\x00\x01\x1a\x1b\x1c\x1d\x1e\x1f",
        ),
        ("e,x,i,t", b"exit"),
    ],
)
def test_docker_detach_key_format(text: str, keys: bytes) -> None:
    assert parse_detach_keys(text) == keys


@pytest.mark.parametrize("text", ["CTRL-P", "ctrl-", "ctrl-1", "ab", "a,", ",", "ctrl-p,,ctrl-q"])
def test_keys_docker_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="Unknown character: '"):
        parse_detach_keys(text)


def test_the_watch_finds_the_sequence_across_reads_and_delivers_broken_ones() -> None:
    watch = DetachWatch()
    assert watch.feed(b"ls" + CTRL_P) == b"ls"  # held: it may begin the sequence
    assert watch.feed(b"x") == CTRL_P + b"x"  # it did not
    assert watch.feed(CTRL_P + CTRL_P) == CTRL_P  # the second may begin it again
    assert not watch.detached
    assert watch.feed(CTRL_Q + b"never delivered") == b""
    assert watch.detached

    custom = DetachWatch(parse_detach_keys("e,x,i,t"))
    assert custom.feed(b"echo exi") == b"echo "
    assert custom.feed(b"s") == b"exis"
    assert custom.feed(b"exit") == b"" and custom.detached


# ---- over the API ----------------------------------------------------------------------------


def run(test: Callable[[Client], Awaitable[None]]) -> None:
    serve_containers(HOST, test)


ATTACH = "/v1.41/containers/{}/attach?stdin=1&stdout=1&stderr=1&stream=1"


async def running_shell(client: Client, name: str) -> str:
    """`docker run -dit --name NAME busybox sh`."""
    body = {"Image": "busybox", "Cmd": ["sh"], "Tty": True, "OpenStdin": True}
    made = await client.post("/v1.41/containers/create", json=body, params={"name": name})
    assert made.status == 201, await made.text()
    assert (await client.post(f"/v1.41/containers/{name}/start")).status == 204
    return str((await made.json())["Id"])


async def is_running(client: Client, name: str) -> bool:
    inspected = await (await client.get(f"/v1.41/containers/{name}/json")).json()
    return bool(inspected["State"]["Running"])


async def message(response: Any) -> tuple[int, str]:
    return response.status, (await response.json())["message"]


def test_attach_detaches_on_the_keys_and_the_shell_keeps_running() -> None:
    async def test(client: Client) -> None:
        await running_shell(client, "box")
        first = await Hijacked.open(client, ATTACH.format("box"))
        first.send(b"echo one\r")
        await first.until(b"one\r\n/ # ")
        first.send(CTRL_P)  # the default keys, in two reads
        await asyncio.sleep(0)
        first.send(CTRL_Q + b"echo lost\r")
        assert b"lost" not in await first.rest()
        assert await is_running(client, "box")

        custom = await Hijacked.open(client, ATTACH.format("box") + "&detachKeys=ctrl-a,x")
        custom.send(CTRL_P + CTRL_Q + b"echo two\r")  # not the keys of this client
        await custom.until(b"two\r\n/ # ")
        custom.send(b"\x01x")
        await custom.rest()
        assert await is_running(client, "box")

        refused = await client.post(ATTACH.format("box") + "&detachKeys=bogus")
        assert await message(refused) == (400, "Invalid detach keys (bogus) provided")

    run(test)


def test_a_tty_clients_half_close_ends_its_attach_not_its_process() -> None:
    async def test(client: Client) -> None:
        await running_shell(client, "box")
        stream = await Hijacked.open(client, ATTACH.format("box"))
        stream.send(b"\r")
        await stream.until(b"/ # ")
        stream.writer.write_eof()  # what the docker CLI does over tcp:// on Ctrl-P Ctrl-Q
        await stream.rest()
        assert await is_running(client, "box")

    run(test)


def test_exec_detach_keys_are_checked_at_create_and_honoured_at_start() -> None:
    async def test(client: Client) -> None:
        await running_shell(client, "box")
        exec_body = {"Cmd": ["sh"], "Tty": True, "AttachStdin": True, "AttachStdout": True}
        bad = await client.post(
            "/v1.41/containers/box/exec", json=exec_body | {"DetachKeys": "nope"}
        )
        assert await message(bad) == (500, "Invalid escape keys (nope) provided")
        odd = await client.post("/v1.41/containers/box/exec", json=exec_body | {"DetachKeys": 5})
        assert (await message(odd))[0] == 400

        made = await client.post(
            "/v1.41/containers/box/exec", json=exec_body | {"DetachKeys": "ctrl-x"}
        )
        exec_id = (await made.json())["Id"]
        stream = await Hijacked.open(client, f"/v1.41/exec/{exec_id}/start", b'{"Tty": true}')
        stream.send(b"echo inner\r")
        await stream.until(b"inner\r\n/ # ")
        stream.send(b"\x18")
        await stream.rest()
        inspected = await (await client.get(f"/v1.41/exec/{exec_id}/json")).json()
        assert (inspected["Running"], inspected["DetachKeys"]) == (True, "ctrl-x")

    run(test)
