"""The network tools of the emulated busybox: `ping`, `wget`, `nc` and `nslookup`, over the
container's stacks (`network.py`), with busybox's output, messages and exit statuses for what
labs do with them. Options they do not emulate are refused with a message naming them."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from controlplane.agent import http11
from controlplane.agent.network import (
    DatagramSocket,
    Listener,
    NameNotFoundError,
    StreamConnection,
)
from controlplane.agent.process import Exec
from controlplane.numbers import is_number

PING_INTERVAL = 1.0
PING_DATA = 56


class _Usage(Exception):
    """A command line the tool does not accept; the message says why."""


def _options(
    argv: Sequence[str], flags: str, valued: str, long: dict[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """getopt-style parsing of combined short options (`-qO-`, `-c 2`), and `--name[=value]`
    long ones mapped to short letters by `long`."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            rest += args
            break
        if arg.startswith("--") and long is not None:
            name, eq, value = arg[2:].partition("=")
            letter = long.get(name)
            if letter is None:
                raise _Usage(f"unrecognized option '{arg}'")
            if letter in valued and not eq:
                if not args:
                    raise _Usage(f"option '{arg}' requires an argument")
                value = args.pop(0)
            opts[letter] = value
        elif arg.startswith("-") and len(arg) > 1:
            i = 1
            while i < len(arg):
                letter = arg[i]
                if letter in valued:
                    value = arg[i + 1 :] or (args.pop(0) if args else "")
                    if not value and not arg[i + 1 :]:
                        raise _Usage(f"option requires an argument -- '{letter}'")
                    opts[letter] = value
                    break
                if letter not in flags:
                    raise _Usage(f"invalid option -- '{letter}'")
                opts[letter] = ""
                i += 1
        else:
            rest.append(arg)
    return opts, rest


def _number(tool: str, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Usage(f"invalid number '{text}'") from None
    if value < 0:
        raise _Usage(f"{what} must not be negative: '{text}'")
    return value


def _usage_error(process: Exec, tool: str, usage: str, err: _Usage) -> int:
    process.err(f"{tool}: {err}")
    process.err(f"BusyBox v1.36.1 (emulated) multi-call binary.\n\nUsage: {tool} {usage}")
    return 1


def _strerror(err: OSError) -> str:
    if isinstance(err, TimeoutError):
        return "Connection timed out"
    return os.strerror(err.errno) if err.errno else str(err)


# ---- ping -----------------------------------------------------------------------------------

PING_USAGE = "[OPTIONS] HOST"


async def ping(process: Exec, argv: list[str]) -> int:
    """`ping [-c COUNT] [-W SEC] [-q] HOST`: one echo a second; exit 0 when any came back."""
    try:
        opts, rest = _options(argv[1:], "q4", "cWwsi")
        if len(rest) != 1:
            raise _Usage("a HOST is required" if not rest else f"unexpected '{rest[1]}'")
        count = int(_number("ping", opts["c"], "count")) if "c" in opts else None
        wait = _number("ping", opts.get("W", "10"), "timeout")
        size = int(_number("ping", opts.get("s", str(PING_DATA)), "size"))
        interval = _number("ping", opts.get("i", str(PING_INTERVAL)), "interval")
    except _Usage as err:
        return _usage_error(process, "ping", PING_USAGE, err)
    host, quiet = rest[0], "q" in opts
    try:
        ip = await process.net.lookup(host)
    except NameNotFoundError:
        process.err(f"ping: bad address '{host}'")
        return 1
    process.out(f"PING {host} ({ip}): {size} data bytes")
    try:
        stack = process.net.stack_for(ip)
    except OSError as err:
        process.err(f"ping: sendto: {_strerror(err)}")
        return 1
    rtts: list[float] = []
    sent = 0

    async def one(seq: int, timeout: float) -> None:
        try:
            rtt = await stack.ping(ip, timeout=timeout, size=size)
        except TimeoutError:
            return
        rtts.append(rtt)
        if not quiet:
            process.out(f"{size + 8} bytes from {ip}: seq={seq} ttl=64 time={rtt * 1000:.3f} ms")

    echoes: list[asyncio.Task[None]] = []
    try:
        while count is None or sent < count:
            last = count is not None and sent == count - 1
            echoes.append(asyncio.create_task(one(sent, wait if last else wait + interval)))
            sent += 1
            if not last and await _terminated_within(process, interval):
                break
        await asyncio.gather(*echoes)
    except OSError as err:
        process.err(f"ping: sendto: {_strerror(err)}")
        return 1
    finally:
        for echo in echoes:
            echo.cancel()
    loss = 100 * (sent - len(rtts)) // sent if sent else 0
    process.out("")
    process.out(f"--- {host} ping statistics ---")
    process.out(f"{sent} packets transmitted, {len(rtts)} packets received, {loss}% packet loss")
    if rtts:
        low, avg, high = min(rtts), sum(rtts) / len(rtts), max(rtts)
        process.out(f"round-trip min/avg/max = {low * 1e3:.3f}/{avg * 1e3:.3f}/{high * 1e3:.3f} ms")
    return 0 if rtts else 1


async def _terminated_within(process: Exec, seconds: float) -> bool:
    """Wait `seconds`, or less if the process gets its SIGTERM (then True)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await process.until_terminated()
            return True
    return False


# ---- nslookup -------------------------------------------------------------------------------


async def nslookup(process: Exec, argv: list[str]) -> int:
    """`nslookup NAME [127.0.0.11]`: the A and AAAA answers of the embedded resolver."""
    args = argv[1:]
    server = process.net.nameserver
    if not args or len(args) > 2 or args[0].startswith("-"):
        process.err(
            "BusyBox v1.36.1 (emulated) multi-call binary.\n\nUsage: nslookup NAME [DNS_SERVER]"
        )
        return 1
    if len(args) == 2 and args[1] != server:
        process.err(
            f"nslookup: only the embedded resolver {server} is reachable from an emulated "
            f"container, not {args[1]}"
        )
        return 1
    name = args[0]
    process.out(f"Server:\t\t{server}")
    process.out(f"Address:\t{server}:53")
    process.out("")
    found = False
    for qtype in ("A", "AAAA"):
        answer = await process.net.query(name, qtype)
        if answer.rcode != "NOERROR":
            process.out(f"** server can't find {name}: {answer.rcode}")
            process.out("")
            return 1
        if not answer.records:
            process.out(f"*** Can't find {name}: No answer")
            process.out("")
            continue
        if not found:
            process.out("Non-authoritative answer:")
        found = True
        process.out(f"Name:\t{name}")
        for record in answer.records:
            process.out(f"Address: {record}")
        process.out("")
    return 0


# ---- wget -----------------------------------------------------------------------------------

WGET_USAGE = "[-q] [-O FILE] [-T SEC] URL"
WGET_LONG = {"quiet": "q", "output-document": "O", "timeout": "T", "spider": "s"}


async def wget(process: Exec, argv: list[str]) -> int:
    """`wget [-q] [-O -] [-T SEC] URL`: HTTP GET; the body to stdout with `-O -`."""
    try:
        opts, rest = _options(argv[1:], "qs", "OTU", WGET_LONG)
        if len(rest) != 1:
            raise _Usage("a URL is required" if not rest else f"one URL at a time, not '{rest[1]}'")
        timeout = _number("wget", opts.get("T", "900"), "timeout")
    except _Usage as err:
        return _usage_error(process, "wget", WGET_USAGE, err)
    quiet, spider = "q" in opts, "s" in opts
    url = rest[0] if "://" in rest[0] else f"http://{rest[0]}"
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        process.err(f"wget: not an http or ftp url: {rest[0]}")
        return 1
    output = opts.get("O", "index.html")
    if output != "-" and not spider:
        process.err(
            f"wget: can't open '{output}': the emulated container has no writable filesystem "
            "(use -O - to write to stdout)"
        )
        return 1
    host, port = parts.hostname, parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        ip = await process.net.lookup(host)
    except NameNotFoundError:
        process.err(f"wget: bad address '{host}'")
        return 1
    if not quiet:
        process.err(f"Connecting to {host} ({ip}:{port})")
    try:
        async with asyncio.timeout(timeout):
            conn = await _connect(process, ip, port, timeout)
            try:
                reply = await http11.get(conn, parts.netloc, path, "Wget")
            finally:
                conn.close()
    except TimeoutError:
        process.err("wget: download timed out")
        return 1
    except OSError as err:
        process.err(f"wget: can't connect to remote host ({ip}): {_strerror(err)}")
        return 1
    except http11.HttpError as err:
        process.err(f"wget: bad reply from {host}: {err}")
        return 1
    if not 200 <= reply.status < 300:
        process.err(f"wget: server returned error: {reply.version} {reply.status} {reply.reason}")
        return 8
    if spider:
        if not quiet:
            process.err("remote file exists")
        return 0
    if not quiet:
        process.err("writing to stdout")
    process.stdout(reply.body)
    if not quiet:
        process.err(f"-{' ' * 20}100% |{'*' * 32}| {len(reply.body):>5}  0:00:00 ETA")
        process.err("written to stdout")
    return 0


async def _connect(process: Exec, ip: str, port: int, timeout: float) -> StreamConnection:
    return await process.net.stack_for(ip).connect(ip, port, timeout=timeout)


# ---- nc -------------------------------------------------------------------------------------

NC_USAGE = "[-w SEC] [-z] HOST PORT | nc -l [-k] -p PORT | nc -u -l -p PORT [-e PROG ARGS]"


async def nc(process: Exec, argv: list[str]) -> int:
    """`nc [-w SEC] [-z] HOST PORT` connects and prints what the peer sends until it closes
    (the container has no stdin to send); `nc -l [-k] -p PORT` listens on every network and
    prints what each peer sends (one peer, or every one with -k). `nc -u -l -p PORT` listens
    for UDP on every network and prints each datagram; with `-e PROG ARGS` (last, as in
    busybox) it runs PROG for each datagram, the datagram on its stdin, and sends its output
    back to the sender: `-e cat` echoes, `-e hostname` says which container answered."""
    args = argv[1:]
    command = args[args.index("-e") + 1 :] if "-e" in args else []
    if "-e" in args:
        args = args[: args.index("-e")]
    try:
        opts, rest = _options(args, "lkzvnu", "pw")
        wait = _number("nc", opts["w"], "timeout") if "w" in opts else None
        if "-e" in argv[1:] and not command:
            raise _Usage("option requires an argument -- 'e'")
        if "u" in opts and "l" not in opts:
            raise _Usage("UDP needs -l: the emulated container has no stdin to send from")
        if command and "u" not in opts:
            raise _Usage("-e is emulated for UDP listening only (nc -u -l -p PORT -e PROG)")
        if "l" in opts:
            port_text = opts.get("p") or (rest[0] if len(rest) == 1 else "")
            if not is_number(port_text) or not 0 < int(port_text) < 65536:
                raise _Usage("listening needs a port: -l -p PORT")
            if "u" in opts:
                return await _nc_udp_listen(process, int(port_text), command)
            return await _nc_listen(process, int(port_text), "k" in opts)
        if len(rest) != 2 or not is_number(rest[1]):
            raise _Usage("HOST and PORT are required")
    except _Usage as err:
        return _usage_error(process, "nc", NC_USAGE, err)
    host, port = rest[0], int(rest[1])
    try:
        ip = await process.net.lookup(host)
    except NameNotFoundError:
        process.err(f"nc: bad address '{host}'")
        return 1
    try:
        conn = await _connect(process, ip, port, wait if wait is not None else 30.0)
    except (OSError, TimeoutError) as err:
        process.err(f"nc: can't connect to remote host ({ip}): {_strerror(err)}")
        return 1
    if "z" in opts:
        conn.close()
        return 0
    try:
        await _print_until_closed(process, conn, wait)
    except OSError as err:
        process.err(f"nc: {_strerror(err)}")
        return 1
    finally:
        conn.close()
    return 0


async def _nc_listen(process: Exec, port: int, keep: bool) -> int:
    try:
        listeners = [stack.listen(port) for stack in process.net.stacks]
    except OSError as err:
        process.err(f"nc: bind: {_strerror(err)}")
        return 1
    if not listeners:
        process.err("nc: the container has no network to listen on")
        return 1
    try:
        while True:
            conn = await _accept_any(listeners)
            with contextlib.suppress(OSError):
                await _print_until_closed(process, conn, None)
            conn.close()
            if not keep:
                return 0
    finally:
        for listener in listeners:
            listener.close()


async def _nc_udp_listen(process: Exec, port: int, command: list[str]) -> int:
    try:
        sockets = [stack.udp_socket(port) for stack in process.net.stacks]
    except OSError as err:
        process.err(f"nc: bind: {_strerror(err)}")
        return 1
    if not sockets:
        process.err("nc: the container has no network to listen on")
        return 1

    async def serve(sock: DatagramSocket) -> None:
        while True:
            data, peer = await sock.recvfrom()
            if not command:
                process.stdout(data)
                continue
            answer: list[bytes] = []
            child = process.child()
            child.stdout, child.stdin = answer.append, data
            await process.spawn(child, command)
            with contextlib.suppress(OSError):  # the sender is gone: nothing to answer
                sock.sendto(b"".join(answer), peer)

    servers = [asyncio.create_task(serve(sock)) for sock in sockets]
    try:
        await process.until_terminated()  # PID 1's SIGTERM; a child serves until killed
    finally:
        for server in servers:
            server.cancel()
        for sock in sockets:
            sock.close()
    return 0


async def _accept_any(listeners: list[Listener]) -> StreamConnection:
    accepts = [asyncio.create_task(listener.accept()) for listener in listeners]
    try:
        done, _ = await asyncio.wait(accepts, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in accepts:
            if not task.done():
                task.cancel()
    return next(iter(done)).result()


async def _print_until_closed(process: Exec, conn: StreamConnection, idle: float | None) -> None:
    while True:
        try:
            async with asyncio.timeout(idle):
                data = await conn.recv()
        except TimeoutError:
            raise OSError(errno.ETIMEDOUT, "timed out") from None
        if not data:
            break
        process.stdout(data)
