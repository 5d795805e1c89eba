"""resolv.conf on both sides of the embedded resolver: the node's (where names the resolver does
not own are forwarded) and the one a container gets (Docker's: `nameserver 127.0.0.11`, the
host's search domains, `options ndots:0` so a single-label name such as `web` is asked as is
before any search domain is appended)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

EMBEDDED_RESOLVER = "127.0.0.11"
DNS_PORT = 53
HOST_RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()


def parse(text: str) -> ResolvConf:
    """The nameservers and search domains of a resolv.conf; lines it does not use, comments
    and nameservers that are not IP addresses (a typo) are skipped, as the C resolver does."""
    nameservers: list[str] = []
    search: tuple[str, ...] = ()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                nameservers.append(str(ipaddress.ip_address(words[1])))
            except ValueError:
                continue
        elif words and words[0] in ("search", "domain"):
            search = tuple(words[1:])  # the last search/domain line wins
    return ResolvConf(tuple(nameservers), search)


def upstreams(conf: ResolvConf, own: Iterable[str] = ()) -> list[tuple[str, int]]:
    """Where to forward: the node's nameservers except the embedded resolver's own addresses
    (`own`, and 127.0.0.11), which would send a query round in a loop."""
    excluded = {EMBEDDED_RESOLVER, *own}
    return [(ns, DNS_PORT) for ns in conf.nameservers if ns not in excluded]


def host_resolv_conf(path: Path = HOST_RESOLV_CONF) -> ResolvConf:
    """The node's resolv.conf; empty when it cannot be read."""
    try:
        return parse(path.read_text())
    except (OSError, UnicodeDecodeError):
        return ResolvConf()


def host_upstreams(own: Iterable[str] = (), path: Path = HOST_RESOLV_CONF) -> list[tuple[str, int]]:
    """`upstreams` of the node's resolv.conf; none when it cannot be read (the resolver then
    answers NXDOMAIN for names it does not own, as Docker without external servers)."""
    return upstreams(host_resolv_conf(path), own)


def container_resolv_conf(host: ResolvConf) -> str:
    """The resolv.conf a container gets, as Docker writes it for user-defined networks."""
    lines = [f"nameserver {EMBEDDED_RESOLVER}"]
    if host.search:
        lines.append("search " + " ".join(host.search))
    lines.append("options ndots:0")
    return "\n".join(lines) + "\n"
