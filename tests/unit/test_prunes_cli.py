"""`docker volume prune`, `docker image prune [-a]` and `docker system prune` with the real
docker CLI against a node's API on 127.77.246.4 (`api/prunes.py`); what a real dockerd 20.10
printed for the same commands (CLI 28.2, API 1.41) is quoted in each test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from served_api import DockerAt, served, worker_port

from controlplane.agent.images import BUILTIN_IMAGES
from controlplane.agent.local_images import builtin_image_id
from controlplane.agent.runtime import Runtime
from controlplane.agent.standalone import StandaloneContainers
from controlplane.api import containers, system
from controlplane.api.images import IMAGE_SIZE
from controlplane.api.local import LocalBackend

HOST, PORT = "127.77.246.4", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok
refused = docker.refused


@pytest.fixture
def node() -> Iterator[StandaloneContainers]:
    """A node's containers, volumes and images, with `/system` routes (container prune)."""
    registry = StandaloneContainers(Runtime())

    @contextlib.asynccontextmanager
    async def closing(_backend: LocalBackend) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await registry.close()

    def routes(app: web.Application) -> None:
        system.register(containers.register(app, registry), registry)

    with served(HOST, PORT, closing, routes):
        yield registry


def human(size: int) -> str:
    """The CLI's `units.HumanSize` (decimal units, 4 significant digits)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.4g}{unit}"
    return f"{size}B"


def familiar(repository: str) -> str:
    return repository.removeprefix("docker.io/").removeprefix("library/")


def test_volume_prune_removes_unused_volumes_named_ones_too(node: StandaloneContainers) -> None:
    # Real (nothing to prune): "Total reclaimed space: 0B".
    assert ok("volume", "prune", "-f") == "Total reclaimed space: 0B\n"
    ok("volume", "create", "--label", "keep=yes", "v1")
    ok("volume", "create", "v2")
    (node.runtime.volumes.mountpoint("v2") / "note").write_text("hello")
    ok("run", "-d", "--name", "user", "-v", "v3:/data", "busybox", "sleep", "1000")
    # Real, `label=keep` then `label!=keep` over the API: v1, then v2 (v3 is in use).
    assert ok("volume", "prune", "-f", "--filter", "label=keep=yes") == (
        "Deleted Volumes:\nv1\n\nTotal reclaimed space: 0B\n"
    )
    # Real (API 1.41: named volumes too): "Deleted Volumes:\nnamed1\n\nTotal reclaimed space: 0B".
    assert ok("volume", "prune", "-f") == "Deleted Volumes:\nv2\n\nTotal reclaimed space: 5B\n"
    assert ok("volume", "ls", "-q") == "v3\n"
    # Real: "Error response from daemon: Invalid filter 'until'".
    assert "Error response from daemon: Invalid filter 'until'" in refused(
        "volume", "prune", "-f", "--filter", "until=1h"
    )
    # Real: '"--all" requires API version 1.42, but the Docker daemon API version is 1.41'.
    assert '"--all" requires API version 1.42' in refused("volume", "prune", "-f", "--all")
    ok("rm", "-f", "user")
    assert ok("volume", "prune", "-f") == "Deleted Volumes:\nv3\n\nTotal reclaimed space: 0B\n"


def test_image_prune_removes_dangling_then_unused_images(node: StandaloneContainers) -> None:
    # Real (no dangling image): "Total reclaimed space: 0B".
    assert ok("image", "prune", "-f") == "Total reclaimed space: 0B\n"
    ok("run", "-d", "--name", "user", "busybox", "sleep", "1000")
    # Real: "Error response from daemon: Invalid filter 'bogus'".
    assert "Error response from daemon: Invalid filter 'bogus'" in refused(
        "image", "prune", "-f", "--filter", "bogus=1"
    )
    # Real, `-a --filter until=1h` on images made a second ago: "Total reclaimed space: 0B".
    assert ok("image", "prune", "-a", "-f", "--filter", "until=1h") == (
        "Total reclaimed space: 0B\n"
    )
    assert ok("image", "prune", "-a", "-f", "--filter", "label=x") == (
        "Total reclaimed space: 0B\n"
    )
    # Real: "Deleted Images:\nuntagged: other:1\ndeleted: sha256:5e0b...\n...\n\n
    # Total reclaimed space: 1.982MB" (every image no container was made from).
    unused = sorted(r for r in BUILTIN_IMAGES if r != "docker.io/library/busybox")
    deleted = "".join(
        f"untagged: {familiar(r)}:latest\ndeleted: {builtin_image_id(r)}\n" for r in unused
    )
    assert ok("image", "prune", "-a", "-f") == (
        f"Deleted Images:\n{deleted}\nTotal reclaimed space: {human(IMAGE_SIZE * len(unused))}\n"
    )
    listed = ok("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert listed == "busybox:latest\n"
    # A forced untag of the image a running container uses leaves it dangling; once that
    # container is gone, `image prune` (dangling only) deletes it.
    ok("rmi", "-f", "busybox")
    assert ok("image", "prune", "-f") == "Total reclaimed space: 0B\n"  # still in use
    ok("rm", "-f", "user")
    busybox = builtin_image_id("docker.io/library/busybox")
    assert ok("image", "prune", "-f") == (
        f"Deleted Images:\ndeleted: {busybox}\n\nTotal reclaimed space: {human(IMAGE_SIZE)}\n"
    )
    assert ok("images", "-q") == ""


def test_system_prune_removes_stopped_containers_and_dangling_images(
    node: StandaloneContainers,
) -> None:
    ok("run", "--name", "done", "busybox", "true")
    stopped = ok("inspect", "--format", "{{.Id}}", "done").strip()
    ok("volume", "create", "kept")
    # Real (nothing to prune): "Total reclaimed space: 0B" (containers, networks, dangling
    # images and build cache; volumes only with --volumes).
    assert ok("system", "prune", "-f") == (
        f"Deleted Containers:\n{stopped}\n\nTotal reclaimed space: 0B\n"
    )
    assert ok("volume", "ls", "-q") == "kept\n"
    assert ok("system", "prune", "-f", "--volumes") == (
        "Deleted Volumes:\nkept\n\nTotal reclaimed space: 0B\n"
    )
