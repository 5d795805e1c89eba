"""The emulated runtime's built-in images and Docker's image reference rules.

There is no registry: an image is one of a few built-ins (`busybox`, `alpine`, `nginx`,
`httpd`, `traefik/whoami`), each with its default entrypoint and command, environment and the
executables its filesystem holds (so `sleep` works in busybox but not in the scratch-based
whoami image, as with the real ones). Any tag or digest of a known repository is accepted:
the emulation has one version of each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's reference grammar, reduced to what `docker service create IMAGE` accepts.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?)"
_REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


class ImageError(Exception):
    """An image reference that cannot be used; the message is Docker's."""


class InvalidReferenceError(ImageError):
    pass


class NoSuchImageError(ImageError):
    pass


@dataclass(frozen=True)
class Reference:
    """A parsed image reference; `repository` is the canonical docker.io/library/... name."""

    repository: str
    tag: str
    digest: str

    @property
    def familiar(self) -> str:
        """How Docker prints it in messages: `busybox:latest`, `traefik/whoami:v1.10`."""
        name = self.repository.removeprefix("docker.io/").removeprefix("library/")
        suffix = f":{self.tag}" if self.tag else ""
        return name + suffix + (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str) -> Reference:
    """Parse as Docker does: a bare name is docker.io/library/NAME, the tag defaults to
    `latest` unless a digest is given."""
    if not text:
        raise InvalidReferenceError("invalid reference format: the image name is empty")
    match = _REFERENCE.match(text)
    if match is None:
        if _REFERENCE.match(text.lower()):
            raise InvalidReferenceError(
                "invalid reference format: repository name must be lowercase"
            )
        raise InvalidReferenceError(f"invalid reference format: {text!r} is not an image name")
    domain, path = match["domain"], match["path"]
    if domain is None or ("." not in domain and ":" not in domain and domain != "localhost"):
        # The first component is part of the path, not a registry (as in traefik/whoami).
        path = f"{domain}/{path}" if domain else path
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    digest = match["digest"] or ""
    tag = match["tag"] or ("" if digest else "latest")
    return Reference(f"{domain}/{path}", tag, digest)


@dataclass(frozen=True)
class Image:
    """What a container of this image starts with. `files` maps executable paths to the name
    of the emulated program they run (see programs.py)."""

    repository: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    files: dict[str, str]
    env: tuple[str, ...] = (f"PATH={DEFAULT_PATH}",)
    workdir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()  # the image's EXPOSE, as `80/tcp` (`docker run -P`)


def _install(directory: str, programs: list[str]) -> dict[str, str]:
    return {f"{directory}/{name}": name for name in programs}


_TEXT_TOOLS = ["printf", "test", "[", "grep", "head", "tail", "wc", "seq", "tr", "cut", "sort",
               "uniq", "tee", "sed", "date"]  # fmt: skip
_BUSYBOX_APPLETS = [
    "sh", "sleep", "echo", "true", "false", "hostname", "cat", "env", "printenv",
    "ping", "wget", "nslookup", "nc", "httpd", "ip", "ifconfig", "ls", *_TEXT_TOOLS,
]  # fmt: skip
_ALPINE_APPLETS = [a for a in _BUSYBOX_APPLETS if a != "httpd"]  # httpd is in busybox-extras
_DEBIAN_BASE = ["sh", "bash", "sleep", "echo", "true", "false", "hostname", "cat", "env",
                *_TEXT_TOOLS]  # fmt: skip

BUILTIN_IMAGES: dict[str, Image] = {
    image.repository: image
    for image in (
        Image(
            "docker.io/library/busybox",
            entrypoint=(),
            cmd=("sh",),
            files=_install("/bin", _BUSYBOX_APPLETS),
            env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
        ),
        Image(
            "docker.io/library/alpine",
            entrypoint=(),
            cmd=("/bin/sh",),
            files=_install("/bin", _ALPINE_APPLETS),
        ),
        Image(
            "docker.io/library/nginx",
            entrypoint=("/docker-entrypoint.sh",),
            cmd=("nginx", "-g", "daemon off;"),
            files={
                **_install("/bin", _DEBIAN_BASE),
                "/usr/sbin/nginx": "nginx",
                "/docker-entrypoint.sh": "docker-entrypoint.sh",
            },
            env=(f"PATH={DEFAULT_PATH}", "NGINX_VERSION=1.25.3"),
            exposed_ports=("80/tcp",),
        ),
        Image(
            "docker.io/library/httpd",
            entrypoint=(),
            cmd=("httpd-foreground",),
            files={
                **_install("/bin", _DEBIAN_BASE),
                "/usr/local/apache2/bin/httpd": "apache2",
                "/usr/local/bin/httpd-foreground": "httpd-foreground",
            },
            env=(
                "PATH=/usr/local/apache2/bin:" + DEFAULT_PATH,
                "HTTPD_PREFIX=/usr/local/apache2",
                "HTTPD_VERSION=2.4.58",
            ),
            workdir="/usr/local/apache2",
            exposed_ports=("80/tcp",),
        ),
        Image(
            "docker.io/traefik/whoami",
            entrypoint=("/whoami",),
            cmd=(),
            files={"/whoami": "whoami"},
            env=(),
            exposed_ports=("80/tcp",),
        ),
    )
}


def resolve(text: str) -> tuple[Reference, Image]:
    """The built-in image `text` names; `No such image: <ref>` (Docker's words) otherwise."""
    reference = parse_reference(text)
    image = BUILTIN_IMAGES.get(reference.repository)
    if image is None:
        raise NoSuchImageError(f"No such image: {reference.familiar}")
    return reference, image
