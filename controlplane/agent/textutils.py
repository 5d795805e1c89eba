"""busybox's text applets for the emulated containers' pipelines: `grep`, `head`, `tail`,
`wc`, `seq`, `tr`, `cut`, `sort`, `uniq`, `tee`, and `sed` for its `s` command.

Each reads the files named (the container's: `cat`'s) or its standard input
(`byte_streams.input_of`), a line at a time as it comes where it can (`ping web | grep
bytes` shows each reply as it arrives; `head -n 1` ends after one line, and so ends the
writer before it, as SIGPIPE does). Options are the ones scripts use; an unknown one is
busybox's `invalid option` with status 1 (2 for grep). Input and output are bytes, as
busybox's: `wc -c` counts them, `head`, `tail`, `sed`, `tr` and `tee` keep a last line
without its newline as it is, `grep`, `cut`, `sort` and `uniq` end every line they print.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import AsyncIterator

from controlplane.agent.byte_streams import BytesInput, Input, as_text, input_of, read_all
from controlplane.agent.mounts import MountedFiles
from controlplane.agent.process import Exec

_NO_FILE = "No such file or directory"


def path_of(process: Exec, name: str) -> str:
    """The absolute path of a file a program names, from its working directory ($PWD)."""
    if name.startswith("/"):
        return name
    return f"{process.env.get('PWD', '/').rstrip('/')}/{name}"


class _Usage(Exception):
    """A bad option or operand; the message is busybox's."""


def _options(
    tool: str, argv: list[str], flags: str, valued: str = ""
) -> tuple[dict[str, str], list[str]]:
    """getopt as busybox's applets parse: clustered flags, `-nVALUE` or `-n VALUE` for the
    `valued` ones, `--` ends them; the options (flag -> value, "" for a plain flag) and the
    operands."""
    options: dict[str, str] = {}
    args = argv[1:]
    operands: list[str] = []
    while args:
        arg = args.pop(0)
        if arg == "--":
            operands.extend(args)
            break
        if re.fullmatch(r"-\d+(\.\d*)?", arg):
            if "n" in valued:
                options["n"] = arg[1:]  # `head -5`
            else:
                operands.append(arg)  # a negative number (`seq 5 -1 1`)
            continue
        if not arg.startswith("-") or arg == "-":
            operands.append(arg)
            continue
        i = 1
        while i < len(arg):
            flag = arg[i]
            if flag in valued:
                value = arg[i + 1 :] or (args.pop(0) if args else None)
                if value is None:
                    raise _Usage(f"{tool}: option requires an argument -- '{flag}'")
                options[flag] = value
                break
            if flag not in flags:
                raise _Usage(f"{tool}: invalid option -- '{flag}'")
            options[flag] = ""
            i += 1
    return options, operands


def _source(process: Exec, tool: str, name: str) -> Input | None:
    """What operand `name` reads (`-`: standard input); None for a file that could not be
    opened (its error is printed)."""
    if name == "-":
        return input_of(process)
    file = process.container_files.get(path_of(process, name))
    if file is None:
        process.err(f"{tool}: {name}: {_NO_FILE}")
        return None
    return BytesInput(file.data)


async def _lines(process: Exec, tool: str, operands: list[str]) -> AsyncIterator[str | None]:
    """The lines of the operands in order (`-` or none: standard input), each with its
    newline (the last may have none); None stands for a file that could not be opened."""
    for name in operands or ["-"]:
        source = _source(process, tool, name)
        if source is None:
            yield None
            continue
        while (line := await source.read_line()) is not None:
            yield line


async def grep(process: Exec, argv: list[str]) -> int:
    """`grep [-ivwxcqlnhHEFo] [-e PATTERN] PATTERN [FILE...]`: 0 if a line matched, 1 if
    none, 2 on an error."""
    try:
        options, operands = _options("grep", argv, "ivwxcqlnhHEFosr", "em")
        if "e" in options:
            pattern = options["e"]
        elif operands:
            pattern = operands.pop(0)
        else:
            raise _Usage("grep: no pattern")
    except _Usage as err:
        process.err(str(err))
        return 2
    regex = _grep_regex(pattern, options)
    if regex is None:
        process.err(f"grep: bad regex '{pattern}'")
        return 2
    many = (len(operands) > 1 and "h" not in options) or "H" in options
    found, failed = 0, False
    for name in operands or ["-"]:
        count = 0
        number = 0
        async for line in _lines(process, "grep", [name]):
            if line is None:
                failed = True
                break
            number += 1
            line = line.removesuffix("\n")
            match = regex.search(line)
            if (match is not None) == ("v" in options):
                continue
            count += 1
            if "q" in options:
                return 0
            if "l" in options or "c" in options:
                continue
            prefix = (f"{name}:" if many else "") + (f"{number}:" if "n" in options else "")
            if "o" in options and match is not None:
                for each in regex.finditer(line):
                    process.out(prefix + each[0])
            else:
                process.out(prefix + line)
        if "c" in options:
            process.out((f"{name}:" if many else "") + str(count))
        if "l" in options and count:
            process.out(name if name != "-" else "(standard input)")
        found += count
    if failed and "q" not in options:
        return 2
    return 0 if found else 1


def _grep_regex(pattern: str, options: dict[str, str]) -> re.Pattern[str] | None:
    if "F" in options:
        text = re.escape(pattern)
    elif "E" in options:
        text = pattern
    else:  # basic regular expressions: \( \) \{ \} \| are the operators, ( ) { } | are not
        text = re.sub(
            r"\\([(){}|+?])|([(){}|+?])",
            lambda m: m[1] if m[1] else "\\" + m[2],
            pattern,
        )
    if "w" in options:
        text = rf"\b(?:{text})\b"
    if "x" in options:
        text = rf"^(?:{text})$"
    try:
        return re.compile(text, re.IGNORECASE if "i" in options else 0)
    except re.error:
        return None


def _count(tool: str, options: dict[str, str], flag: str = "n", default: int = 10) -> int:
    text = options.get(flag, str(default)).lstrip("+-")
    if not text.isdigit():
        raise _Usage(f"{tool}: invalid number '{options[flag]}'")
    return int(text)


async def head(process: Exec, argv: list[str]) -> int:
    """`head [-n LINES | -c BYTES] [FILE...]`."""
    try:
        options, operands = _options("head", argv, "qv", "nc")
        wanted = _count("head", options, "c" if "c" in options else "n")
    except _Usage as err:
        process.err(str(err))
        return 1
    status = 0
    for name in operands or ["-"]:
        if len(operands) > 1:
            process.out(f"==> {name} <==")
        if not wanted:
            continue
        source = _source(process, "head", name)
        if source is None:
            status = 1
        elif "c" in options:
            await _head_bytes(process, source, wanted)
        else:
            await _head_lines(process, source, wanted)
    return status


async def _head_lines(process: Exec, source: Input, wanted: int) -> None:
    for _ in range(wanted):
        line = await source.read_line()
        if line is None:
            return
        process.write(line)


async def _head_bytes(process: Exec, source: Input, wanted: int) -> None:
    while wanted > 0 and (data := await source.read()):
        process.stdout(data[:wanted])
        wanted -= len(data)


async def tail(process: Exec, argv: list[str]) -> int:
    try:
        options, operands = _options("tail", argv, "qvf", "nc")
        wanted = _count("tail", options)
    except _Usage as err:
        process.err(str(err))
        return 1
    from_start = options.get("n", "").startswith("+")
    kept: list[str] = []
    status = 0
    async for line in _lines(process, "tail", operands):
        if line is None:
            status = 1
            continue
        kept.append(line)
        if not from_start and len(kept) > wanted:
            kept.pop(0)
    for line in kept[max(0, wanted - 1) :] if from_start else kept:
        process.write(line)
    return status


async def wc(process: Exec, argv: list[str]) -> int:
    try:
        options, operands = _options("wc", argv, "lwcmL")
    except _Usage as err:
        process.err(str(err))
        return 1
    shown = [flag for flag in "lwc" if flag in options] or ["l", "w", "c"]
    status = 0
    totals = {"l": 0, "w": 0, "c": 0}
    for name in operands or ["-"]:
        source = _source(process, "wc", name)
        data = await read_all(source) if source is not None else b""
        status = status if source is not None else 1
        counts = {"l": data.count(b"\n"), "w": len(data.split()), "c": len(data)}
        for key in totals:
            totals[key] += counts[key]
        _wc_line(process, shown, counts, name if operands else "", single=len(shown) == 1)
    if len(operands) > 1:
        _wc_line(process, shown, totals, "total", single=len(shown) == 1)
    return status


def _wc_line(
    process: Exec, shown: list[str], counts: dict[str, int], name: str, *, single: bool
) -> None:
    """busybox's columns: a lone count as is, several each in 7 characters and a space."""
    if single and not name:
        process.out(str(counts[shown[0]]))
        return
    columns = (
        " ".join(f"{counts[key]:>7}" for key in shown) if not single else str(counts[shown[0]])
    )
    process.out(f"{columns} {name}".rstrip())


async def seq(process: Exec, argv: list[str]) -> int:
    """`seq [-s SEP] [-w] [FIRST [INCREMENT]] LAST`."""
    try:
        options, operands = _options("seq", argv, "w", "s")
    except _Usage as err:
        process.err(str(err))
        return 1
    numbers = []
    for operand in operands:
        try:
            numbers.append(float(operand))
        except ValueError:
            process.err(f"seq: invalid number '{operand}'")
            return 1
    if not 1 <= len(numbers) <= 3:
        process.err("seq: usage: seq [-w] [-s SEP] [FIRST [INC]] LAST")
        return 1
    first, step, last = (
        (1.0, 1.0, numbers[0])
        if len(numbers) == 1
        else (numbers[0], 1.0, numbers[1])
        if len(numbers) == 2
        else (numbers[0], numbers[1], numbers[2])
    )
    if step == 0:
        process.err("seq: invalid increment '0'")
        return 1
    integral = all(n == int(n) for n in (first, step, last))
    values = []
    value = first
    while (step > 0 and value <= last) or (step < 0 and value >= last):
        values.append(str(int(value)) if integral else f"{value:g}")
        value += step
    if "w" in options and values:
        width = max(len(v) for v in values)
        values = [v.zfill(width) for v in values]
    separator = options.get("s")
    if separator is None:
        for text in values:
            process.out(text)
    elif values:
        process.out(separator.join(values))
    return 0


def _tr_set(text: str) -> str:
    """A `tr` set with its ranges (`a-z`), classes (`[:upper:]`) and escapes spelled out."""
    classes = {
        "[:upper:]": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "[:lower:]": "abcdefghijklmnopqrstuvwxyz",
        "[:digit:]": "0123456789",
        "[:space:]": " \t\n\r\f\v",
        "[:alpha:]": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        "[:alnum:]": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    }
    for name, members in classes.items():
        text = text.replace(name, members)
    text = re.sub(r"\\([ntr\\])", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m[1], "\\"), text)
    return re.sub(r"(.)-(.)", lambda m: "".join(map(chr, range(ord(m[1]), ord(m[2]) + 1))), text)


async def tr(process: Exec, argv: list[str]) -> int:
    """`tr [-d] [-s] SET1 [SET2]`, on its input as it comes."""
    try:
        options, operands = _options("tr", argv, "dsc")
    except _Usage as err:
        process.err(str(err))
        return 1
    if not operands or (len(operands) < 2 and "d" not in options and "s" not in options):
        process.err("tr: missing operand")
        return 1
    first = _tr_set(operands[0])
    second = _tr_set(operands[1]) if len(operands) > 1 else ""
    table: dict[int, int | None]
    if "d" in options:
        table = dict.fromkeys(map(ord, first))
    else:
        padded = second + second[-1:] * max(0, len(first) - len(second))
        table = {ord(a): ord(b) for a, b in zip(first, padded, strict=False)}
    squeeze = second if "d" in options else (second or first)
    source = input_of(process)
    while data := await source.read():
        text = as_text(data).translate(table)
        if "s" in options and squeeze:
            text = re.sub(f"([{re.escape(squeeze)}])\\1+", r"\1", text)
        process.write(text)
    return 0


def _ranges(spec: str) -> list[tuple[int, int]] | None:
    """`cut`'s LIST: `N`, `N-M`, `N-`, `-M`, separated by commas (1-based, inclusive)."""
    ranges = []
    for piece in spec.split(","):
        match = re.fullmatch(r"(\d*)(-?)(\d*)", piece)
        if match is None or not (match[1] or match[3]):
            return None
        start = int(match[1] or 1)
        end = int(match[3]) if match[3] else (start if not match[2] else 1 << 30)
        ranges.append((start, end))
    return ranges


async def cut(process: Exec, argv: list[str]) -> int:
    """`cut -f LIST [-d DELIM] [-s]` or `cut -c LIST`."""
    try:
        options, operands = _options("cut", argv, "s", "fdcb")
    except _Usage as err:
        process.err(str(err))
        return 1
    spec = options.get("f", options.get("c", options.get("b")))
    ranges = _ranges(spec) if spec is not None else None
    if ranges is None:
        process.err("cut: expected a list of bytes, characters, or fields")
        return 1
    delimiter = options.get("d", "\t")
    if len(delimiter) != 1:
        process.err("cut: the delimiter must be a single character")
        return 1
    status = 0
    async for line in _lines(process, "cut", operands):
        if line is None:
            status = 1
            continue
        line = line.removesuffix("\n")
        if "f" not in options:
            process.out("".join(line[a - 1 : b] for a, b in ranges))
            continue
        if delimiter not in line:
            if "s" not in options:
                process.out(line)
            continue
        fields = line.split(delimiter)
        chosen = [f for i, f in enumerate(fields, 1) if any(a <= i <= b for a, b in ranges)]
        process.out(delimiter.join(chosen))
    return status


async def sort(process: Exec, argv: list[str]) -> int:
    """`sort [-r] [-n] [-u]`."""
    try:
        options, operands = _options("sort", argv, "rnuf")
    except _Usage as err:
        process.err(str(err))
        return 1
    lines = [
        line.removesuffix("\n")
        async for line in _lines(process, "sort", operands)
        if line is not None
    ]
    if "n" in options:
        lines.sort(key=_numeric_key)
    else:
        lines.sort(key=str.lower if "f" in options else None)
    if "r" in options:
        lines.reverse()
    if "u" in options:
        lines = list(dict.fromkeys(lines))
    for line in lines:
        process.out(line)
    return 0


def _numeric_key(line: str) -> tuple[float, str]:
    match = re.match(r"\s*(-?\d+(?:\.\d*)?)", line)
    return (float(match[1]) if match else 0.0, line)


async def uniq(process: Exec, argv: list[str]) -> int:
    """`uniq [-c] [-d] [-u]` of adjacent lines."""
    try:
        options, operands = _options("uniq", argv, "cdu")
    except _Usage as err:
        process.err(str(err))
        return 1
    groups: list[tuple[str, int]] = []
    async for line in _lines(process, "uniq", operands[:1]):
        if line is None:
            return 1
        line = line.removesuffix("\n")
        if groups and groups[-1][0] == line:
            groups[-1] = (line, groups[-1][1] + 1)
        else:
            groups.append((line, 1))
    for line, count in groups:
        if ("d" in options and count < 2) or ("u" in options and count > 1):
            continue
        process.out(f"{count:>7} {line}" if "c" in options else line)
    return 0


async def tee(process: Exec, argv: list[str]) -> int:
    """`tee [-a] [FILE...]`: its input to its output and to the container's files."""
    try:
        options, operands = _options("tee", argv, "ai")
    except _Usage as err:
        process.err(str(err))
        return 1
    files = process.container_files
    paths = []
    status = 0
    for name in operands:
        path = path_of(process, name)
        try:
            if not isinstance(files, MountedFiles):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            files.write(path, b"", append="a" in options)
        except OSError as err:
            process.err(f"tee: {name}: {err.strerror}")
            status = 1
            continue
        paths.append(path)
    source = input_of(process)
    while data := await source.read():
        process.stdout(data)
        for path in paths:
            assert isinstance(files, MountedFiles)
            with contextlib.suppress(OSError):
                files.write(path, data, append=True)
    return status


_SED_SUBSTITUTE = re.compile(
    r"s(.)(?P<pattern>(?:\\.|(?!\1).)*)\1(?P<replacement>(?:\\.|(?!\1).)*)\1(?P<flags>[gip0-9]*)"
)


def _sed_replacement(text: str) -> str:
    """sed's replacement as a Python template: `&` the match, `\\N` a group, `\\&` an
    ampersand, `\\n` a newline."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            following = text[i + 1]
            if following.isdigit():
                out.append(f"\\g<{following}>")
            else:
                out.append({"n": "\n", "t": "\t"}.get(following, following.replace("\\", "\\\\")))
            i += 2
            continue
        out.append("\\g<0>" if ch == "&" else ch.replace("\\", "\\\\"))
        i += 1
    return "".join(out)


async def sed(process: Exec, argv: list[str]) -> int:
    """`sed [-n] [-E|-r] [-e] 's/RE/REPLACEMENT/[g][i][p][N]'[;...] [FILE...]`: the `s`
    command only; other sed commands are refused by name."""
    try:
        options, operands = _options("sed", argv, "nEr", "e")
    except _Usage as err:
        process.err(str(err))
        return 1
    script = options.get("e")
    if script is None:
        if not operands:
            process.err("sed: no script specified")
            return 1
        script = operands.pop(0)
    commands = []
    for command in filter(None, (c.strip() for c in script.split(";"))):
        match = _SED_SUBSTITUTE.fullmatch(command)
        if match is None:
            process.err(f"sed: only the s command is emulated: '{command}'")
            return 1
        pattern = match["pattern"]
        if "E" not in options and "r" not in options:
            pattern = re.sub(r"\\([(){}|+?])|([(){}|+?])", lambda m: m[1] or "\\" + m[2], pattern)
        try:
            regex = re.compile(pattern, re.IGNORECASE if "i" in match["flags"] else 0)
        except re.error:
            process.err(f"sed: bad regex '{match['pattern']}'")
            return 1
        replacement = _sed_replacement(match["replacement"])
        digits = "".join(c for c in match["flags"] if c.isdigit())
        count = 0 if "g" in match["flags"] else int(digits or 1)
        commands.append((regex, replacement, count, "p" in match["flags"]))
    status = 0
    async for line in _lines(process, "sed", operands):
        if line is None:
            status = 2
            continue
        line, newline = line.removesuffix("\n"), "\n" if line.endswith("\n") else ""
        for regex, replacement, count, show in commands:
            if count > 1:  # the Nth match only
                hits = list(regex.finditer(line))
                if len(hits) >= count:
                    hit = hits[count - 1]
                    line = line[: hit.start()] + hit.expand(replacement) + line[hit.end() :]
                    if show:
                        process.write(line + newline)
                continue
            line, made = regex.subn(replacement, line, count=count)
            if show and made:
                process.write(line + newline)
        if "n" not in options:
            process.write(line + newline)
    return status
