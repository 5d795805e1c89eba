"""`docker rmi` / `docker image rm` of the built-in images with the real docker CLI against a
node's API on 127.77.218.2: the answers and conflicts real dockerd 20.10 gave for the same
commands (quoted in each test), the image gone from `docker images` until it is pulled again.
Skipped without the docker CLI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from served_api import DockerAt, served_containers, worker_port

from controlplane.agent.local_images import builtin_image_id
from controlplane.agent.standalone import StandaloneContainers

HOST, PORT = "127.77.218.2", worker_port()
docker = DockerAt(HOST, PORT)
ok = docker.ok
refused = docker.refused
NGINX_ID = builtin_image_id("docker.io/library/nginx")
BUSYBOX_ID = builtin_image_id("docker.io/library/busybox")
HTTPD_ID = builtin_image_id("docker.io/library/httpd")


@pytest.fixture
def node() -> Iterator[StandaloneContainers]:
    with served_containers(HOST, PORT) as registry:
        yield registry


def images() -> list[str]:
    return ok("images", "--format", "{{.Repository}}:{{.Tag}}").split()


def test_an_unused_image_is_removed_until_pulled_again(node: StandaloneContainers) -> None:
    # Real: "Untagged: httpd:latest" then "Deleted: sha256:<id>", exit 0.
    assert ok("image", "rm", "httpd") == f"Untagged: httpd:latest\nDeleted: {HTTPD_ID}\n"
    assert "httpd:latest" not in images()
    # Real: "Error response from daemon: No such image: httpd:latest".
    assert "Error response from daemon: No such image: httpd:latest" in refused("rmi", "httpd")
    # `docker run` pulls it back (the CLI's "Unable to find image" then a pull), as dockerd.
    run = docker("run", "-d", "--name", "web", "httpd")
    assert run.returncode == 0, run.stderr
    assert "Unable to find image 'httpd:latest' locally" in run.stderr
    assert "httpd:latest" in images()


def test_an_image_a_container_uses_is_refused_in_dockerds_words(
    node: StandaloneContainers,
) -> None:
    web = ok("run", "-d", "--name", "web", "nginx").strip()
    # Real 20.10, a running container of the image:
    #   conflict: unable to remove repository reference "nginx" (must force) - container
    #   ef0bd6e897fa is using its referenced image d4aa78af1f85
    assert (
        'Error response from daemon: conflict: unable to remove repository reference "nginx" '
        f"(must force) - container {web[:12]} is using its referenced image {NGINX_ID[7:19]}"
    ) in refused("rmi", "nginx")
    #   conflict: unable to delete d4aa78af1f85 (cannot be forced) - image is being used by
    #   running container ef0bd6e897fa
    assert (
        f"conflict: unable to delete {NGINX_ID[7:19]} (cannot be forced) - image is being used "
        f"by running container {web[:12]}"
    ) in refused("rmi", "-f", NGINX_ID[7:19])
    assert "nginx:latest" in images()
    # Forced by name while it runs: untagged only, the image stays as <none> (real: the same).
    assert ok("rmi", "-f", "nginx") == "Untagged: nginx:latest\n"
    assert "<none>:<none>" in images() and "nginx:latest" not in images()
    # Once the container is gone the dangling image is deleted by id.
    ok("rm", "-f", "web")
    assert ok("rmi", NGINX_ID[7:19]) == f"Deleted: {NGINX_ID}\n"
    assert "<none>:<none>" not in images()


def test_a_stopped_container_still_holds_its_image_unless_forced(
    node: StandaloneContainers,
) -> None:
    done = ok("run", "-d", "--name", "done", "busybox", "true").strip()
    assert ok("wait", "done") == "0\n"
    assert f"container {done[:12]} is using its referenced image" in refused("rmi", "busybox")
    assert (
        f"conflict: unable to delete {BUSYBOX_ID[7:19]} (must be forced) - image is being used "
        f"by stopped container {done[:12]}"
    ) in refused("rmi", BUSYBOX_ID[7:19])
    # Real: `rmi -f busybox` with only stopped containers: "Untagged" then "Deleted".
    assert ok("rmi", "-f", "busybox") == f"Untagged: busybox:latest\nDeleted: {BUSYBOX_ID}\n"
    assert "busybox:latest" not in images()


def test_another_tag_is_listed_once_pulled_and_untagged_alone(node: StandaloneContainers) -> None:
    """Side by side with a real dockerd 20.10 (an image tagged `a` and `b`): `docker images`
    lists one row per tag; `rmi` of one tag untags it only, even while a container of it
    runs; `rmi` by id of an image with several tags is refused unless forced."""
    assert "busybox:1.36" not in images()
    # Real: the CLI pulls a tag it does not find ("Unable to find image ... locally").
    run = docker("run", "-d", "--name", "old", "busybox:1.36", "sleep", "1000")
    assert run.returncode == 0, run.stderr
    assert "Unable to find image 'busybox:1.36' locally" in run.stderr
    assert {"busybox:1.36", "busybox:latest"} <= set(images())
    # Real: "conflict: unable to delete beca84c5b81b (must be forced) - image is referenced
    # in multiple repositories".
    assert (
        f"Error response from daemon: conflict: unable to delete {BUSYBOX_ID[7:19]} (must be "
        "forced) - image is referenced in multiple repositories"
    ) in refused("rmi", BUSYBOX_ID[7:19])
    # Real: "Untagged: timg:b", exit 0, with a container of timg:b running.
    assert ok("rmi", "busybox:1.36") == "Untagged: busybox:1.36\n"
    assert "busybox:1.36" not in images() and "busybox:latest" in images()
    assert "No such image: busybox:1.36" in refused("rmi", "busybox:1.36")
    ok("pull", "busybox:1.36")
    assert "busybox:1.36" in images()
