"""A container's folder on the node, as dockerd keeps `<data-root>/containers/<id>/`: the
`hostname`, `hosts` and `resolv.conf` it gives the container (written at each start, what
inspect's `HostnamePath`, `HostsPath` and `ResolvConfPath` name) and, with the json-file
logging driver, `<id>-json.log`, one JSON object per logged message (`LogPath`: what tools
that tail a container's log file read). The folder goes with the container (`docker rm`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from controlplane.agent.log_copier import LogLine, as_json_string
from controlplane.go_time import go_time

log = logging.getLogger("controlplane.agent.container_dir")

EMBEDDED_DNS_RESOLV_CONF = b"nameserver 127.0.0.11\noptions ndots:0\n"
# Go's encoding/json escapes these in strings (HTML safety, JavaScript line separators).
_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def json_log_entry(line: LogLine) -> bytes:
    """One line of dockerd's json-file log: `{"log":...,"stream":...,"time":...}`."""
    text = json.dumps(as_json_string(line.data).decode(), ensure_ascii=False)
    entry = f'{{"log":{text.translate(_GO_ESCAPES)},"stream":"{line.stream}",'
    return f'{entry}"time":"{go_time(line.timestamp_ns)}"}}\n'.encode()


def host_resolv_conf() -> bytes:
    """What dockerd gives a container on a network without the embedded DNS server: the
    host's resolv.conf (nothing if the host has none)."""
    try:
        return Path("/etc/resolv.conf").read_bytes()
    except OSError:
        return b""


@dataclass(frozen=True)
class ContainerDir:
    """The folder of container `container_id` under `root` (the node's `containers/`)."""

    root: Path
    container_id: str

    @property
    def path(self) -> Path:
        return self.root / self.container_id

    @property
    def hostname(self) -> Path:
        return self.path / "hostname"

    @property
    def hosts(self) -> Path:
        return self.path / "hosts"

    @property
    def resolv_conf(self) -> Path:
        return self.path / "resolv.conf"

    @property
    def log(self) -> Path:
        return self.path / f"{self.container_id}-json.log"

    def write_files(self, hostname: bytes, hosts: bytes, resolv_conf: bytes) -> None:
        """The container's generated /etc files, as its start writes them."""
        self.path.mkdir(parents=True, exist_ok=True)
        for target, data in (
            (self.hostname, hostname),
            (self.hosts, hosts),
            (self.resolv_conf, resolv_conf),
        ):
            target.write_bytes(data)

    def open_log(self) -> JsonFileLog:
        self.path.mkdir(parents=True, exist_ok=True)
        return JsonFileLog(self.log)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class JsonFileLog:
    """The json-file log of a container, appended to (never rotated). Messages logged in one
    turn of the event loop are written together, by one open, write and close: no file
    stays open per container (a node runs hundreds)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: list[bytes] = []
        self._flush: asyncio.Handle | None = None

    def write(self, line: LogLine) -> None:
        self._pending.append(json_log_entry(line))
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._pending:
            entries, self._pending = b"".join(self._pending), []
            try:
                with self.path.open("ab") as file:
                    file.write(entries)
            except OSError as err:  # removed with its container meanwhile, or a full disk
                log.warning("event=container_log_not_written path=%s error=%s", self.path, err)
