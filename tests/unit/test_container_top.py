"""`GET /containers/{id}/top` of userspace containers over a real socket (127.77.108.1): the
emulated processes (the command and its running execs) in the columns procps prints for the
common option sets, dockerd's errors (an unknown or stopped container, options ps refuses, no
PID column), what is not emulated refused naming what is; and the host's `ps` as dockerd runs
it, with the parsing of its output the kernel mode uses (`agent/top.py`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from controlplane.agent.top import TopError, parse_ps, ps_words, run_ps
from tests.unit.container_api import DEADLINE, Client, serve_containers

HOST = "127.77.108.1"


def run(test: Callable[[Client], Awaitable[None]]) -> None:
    serve_containers(HOST, test)


async def started(client: Client, *cmd: str, name: str) -> str:
    made = await client.post(
        "/v1.41/containers/create",
        json={"Image": "busybox", "Cmd": list(cmd)},
        params={"name": name},
    )
    assert made.status == 201, await made.text()
    container_id: str = (await made.json())["Id"]
    assert (await client.post(f"/v1.41/containers/{container_id}/start")).status == 204
    return container_id


async def top(client: Client, ref: str, **query: str) -> tuple[int, Any]:
    response = await client.get(f"/v1.41/containers/{ref}/top", params=query)
    return response.status, await response.json()


def test_top_lists_the_command_and_its_running_execs_as_ps_ef() -> None:
    async def test(client: Client) -> None:
        await started(client, "sleep", "1000", name="sleeper")
        status, table = await top(client, "sleeper")
        assert status == 200, table
        assert table["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        [main] = table["Processes"]
        assert main[0] == "root" and main[2] == str(os.getpid()) and main[5] == "?"
        assert main[7] == "sleep 1000"
        made = await client.post("/v1.41/containers/sleeper/exec", json={"Cmd": ["sleep", "500"]})
        exec_id = (await made.json())["Id"]
        started_exec = await client.post(f"/v1.41/exec/{exec_id}/start", json={"Detach": True})
        assert started_exec.status == 200
        status, table = await top(client, "sleeper", ps_args="-ef")
        assert [row[7] for row in table["Processes"]] == ["sleep 1000", "sleep 500"]
        assert int(table["Processes"][1][1]) > int(main[1])  # the exec's own PID
        inspected = await (await client.get("/v1.41/containers/sleeper/json")).json()
        assert inspected["ExecIDs"] == [exec_id]  # its running execs, as dockerd lists them

    run(test)


def test_top_errors_are_dockerds() -> None:
    async def test(client: Client) -> None:
        assert await top(client, "nope") == (404, {"message": "No such container: nope"})
        done = await started(client, "true", name="done")
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while True:
            status, body = await top(client, "done")
            if status == 409:
                break
            assert asyncio.get_running_loop().time() < deadline, "`true` never exited"
            await asyncio.sleep(0.1)
        assert body == {"message": f"Container {done} is not running"}
        await started(client, "sleep", "1000", name="sleeper")
        for ps_args, message in [  # as dockerd 20.10 answers them (procps' words)
            ("--bogus", "ps: error: unknown gnu long option"),
            ("-o pid,nosuch", 'ps: error: unknown user-defined format specifier "nosuch"'),
            ("-o comm", "Couldn't find PID field in ps output"),
            ("-o pid=ID,ppid", "Couldn't find PID field in ps output"),  # one column: ID,ppid
            ("-o pid,comm=PID", 'specifying "pid,comm=PID" is not allowed'),
        ]:
            assert await top(client, "sleeper", ps_args=ps_args) == (500, {"message": message})
        for ps_args in ("-o pid,wchan", "l", "-ef --forest"):  # procps' but not emulated
            status, body = await top(client, "sleeper", ps_args=ps_args)
            assert status == 400 and "is not emulated" in body["message"], (ps_args, body)
            assert "--datapath kernel" in body["message"]

    run(test)


def test_top_lays_out_the_columns_procps_prints_for_common_options() -> None:
    """The option sets of dockerd 20.10's `docker top busybox-container ...`, seen there."""

    async def test(client: Client) -> None:
        await started(client, "sh", "-c", "sleep 1000", name="shell")
        made = await client.post("/v1.41/containers/shell/exec", json={"Cmd": ["sleep", "500"]})
        exec_id = (await made.json())["Id"]
        await client.post(f"/v1.41/exec/{exec_id}/start", json={"Detach": True})
        expected = {
            "aux": (
                ["USER", "PID", "%CPU", "%MEM", "VSZ", "RSS", "TTY", "STAT", "START", "TIME",
                 "COMMAND"],
                ["root", "0.0", "0.0", "0", "0", "?", "Ss", "0:00", "sh -c sleep 1000"],
            ),
            "-o pid,comm": (["PID", "COMMAND"], ["sh"]),
            "-eo pid,user,args": (["PID", "USER", "COMMAND"], ["root", "sh -c sleep 1000"]),
            "x": (["PID", "TTY", "STAT", "TIME", "COMMAND"],
                  ["?", "Ss", "0:00", "sh -c sleep 1000"]),
            "-o ppid -o pid=PID": (["PPID", "PID"], [str(os.getpid())]),
        }  # fmt: skip
        for ps_args, (titles, first_row_but_pid_and_times) in expected.items():
            status, table = await top(client, "shell", ps_args=ps_args)
            assert status == 200, (ps_args, table)
            assert table["Titles"] == titles, ps_args
            main, exec_row = table["Processes"]
            pid_at = titles.index("PID") if "PID" in titles else 0
            assert int(exec_row[pid_at]) > int(main[pid_at])
            kept = [v for i, v in enumerate(main) if i != pid_at and titles[i] != "START"]
            assert kept == first_row_but_pid_and_times, ps_args
        _, table = await top(client, "shell", ps_args="-o pid,comm")
        assert [row[1] for row in table["Processes"]] == ["sh", "sleep"]

    run(test)


PS_EF = """UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init
root        4242    4241  0 10:01 pts/1    00:00:00 /usr/bin/busybox sh -c sleep 1000
root        4250    4242  0 10:01 pts/1    00:00:00 /usr/bin/busybox sleep 1000
"""


def test_real_ps_output_keeps_the_containers_rows_and_the_blanks_of_their_command() -> None:
    table = parse_ps(PS_EF, {4242, 4250})
    assert table.titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    head = ["root", "4242", "4241", "0", "10:01", "pts/1", "00:00:00"]
    assert table.processes[0] == [*head, "/usr/bin/busybox sh -c sleep 1000"]
    assert table.processes[1][:2] == ["root", "4250"] and len(table.processes) == 2
    assert parse_ps("  PID COMMAND\n 4250 busybox\n   77 bash\n", {4250}).processes == [
        ["4250", "busybox"]
    ]


def test_ps_output_without_a_pid_column_is_an_error() -> None:
    with pytest.raises(TopError, match="Couldn't find PID field in ps output"):
        parse_ps("USER COMMAND\nroot sh\n", {1})


def test_the_hosts_ps_runs_as_dockerd_runs_it() -> None:
    """`ps OPTIONS -q PIDS`, again without `-q` when ps refuses the pair (forest listings),
    and the first line of ps' refusal."""

    async def main() -> None:
        me = {os.getpid()}
        table = parse_ps(await run_ps(ps_words("-ef --forest"), me), me)
        assert [row[1] for row in table.processes] == [str(os.getpid())]
        with pytest.raises(TopError, match=r"^ps: error: unknown gnu long option$"):
            await run_ps(ps_words("--bogus"), me)
        assert ps_words("") == ["-ef"] and ps_words("-o  pid") == ["-o", "", "pid"]
        with pytest.raises(TopError, match="NUL byte"):
            ps_words("-o\x00pid")

    asyncio.run(main())
