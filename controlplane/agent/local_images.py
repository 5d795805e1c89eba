"""The images one node holds (`docker images`, `docker rmi`), out of the built-in ones.

Every node starts with all the built-ins, each tagged `:latest`; a pull of another tag of a
built-in (`docker pull busybox:1.36`, `docker run` of it, a task's image) adds that tag to the
same image, as `docker images` then lists it. `docker rmi` removes one the way dockerd 20.10
does (`daemon/images/image_delete.go`): by one of several tags, that tag only; by its last
reference, refused while a container was made from it unless forced; by its id, refused
while it has several tags or a container uses it (unless forced, and even forced when that
container runs); a forced untag of an image a running container uses leaves it dangling
(`<none>:<none>`) until it is removed by id. An image comes back when it is pulled: `docker
pull`, `docker run` (the CLI pulls after `No such image`), or a swarm task (the agent pulls
its image, as swarmkit's does).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from controlplane.agent.images import (
    BUILTIN_IMAGES,
    ImageError,
    NoSuchImageError,
    Reference,
    parse_reference,
)

log = logging.getLogger("controlplane.agent.local_images")


class ImageConflictError(ImageError):
    """The image is in use (dockerd's 409 and words)."""


class Held(Enum):
    TAGGED = "tagged"  # listed as repository:latest
    DANGLING = "dangling"  # untagged while a running container uses it: <none>:<none>


@dataclass(frozen=True)
class ImageUser:
    """A container made from an image: what a removal checks."""

    container_id: str
    repository: str
    running: bool


def builtin_image_id(repository: str) -> str:
    """A stable id per built-in image, as `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(repository.encode()).hexdigest()


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _familiar(repository: str) -> str:
    return repository.removeprefix("docker.io/").removeprefix("library/")


class LocalImages:
    """See the module docstring. Belongs to the node's event loop."""

    def __init__(self) -> None:
        self._held: dict[str, Held] = {repository: Held.TAGGED for repository in BUILTIN_IMAGES}
        self._tags: dict[str, set[str]] = {repository: {"latest"} for repository in self._held}

    def held(self) -> list[tuple[str, Held]]:
        """The images the node holds, by repository, in name order."""
        return sorted(self._held.items())

    def tags(self, repository: str) -> list[str]:
        """The tags the node holds of a repository's image, in order (none if dangling)."""
        return sorted(self._tags.get(repository, ()))

    def require(self, text: str) -> Reference:
        """The reference `text` makes, if the node holds that image with that tag (any,
        for a digest); NoSuchImageError (dockerd's `No such image: busybox:1.36`) otherwise."""
        reference = parse_reference(text)
        if not self._holds(reference):
            raise NoSuchImageError(f"No such image: {reference.familiar}")
        return reference

    def _holds(self, reference: Reference) -> bool:
        tags = self._tags.get(reference.repository, set())
        return bool(tags) and (bool(reference.digest) or (reference.tag or "latest") in tags)

    def pulled(self, reference: Reference) -> None:
        """The image is on the node, with that tag (a pull, or a task's container)."""
        repository = reference.repository
        if repository not in BUILTIN_IMAGES or self._holds(reference):
            return
        self._held[repository] = Held.TAGGED
        if not reference.digest:
            self._tags.setdefault(repository, set()).add(reference.tag or "latest")
        elif not self._tags.get(repository):
            self._tags[repository] = {"latest"}  # a digest pull of a removed image
        log.info("event=image_pulled image=%s", reference.familiar)

    def remove(self, text: str, force: bool, users: Iterable[ImageUser]) -> list[dict[str, str]]:
        """`DELETE /images/{name}`: dockerd's answer (`Untagged`, `Deleted` entries), or
        NoSuchImageError / ImageConflictError with dockerd's words."""
        by_id = self._by_id(text)
        reference: Reference | None = None
        if by_id is not None:
            repository = by_id
        else:
            reference = self._by_reference(text)
            repository = reference.repository
        tags = self._tags.get(repository, set())
        if reference is not None and len(tags) > 1:  # one of its tags: untagged only
            tags.discard(reference.tag)
            log.info("event=image_untagged image=%s", reference.familiar)
            return [{"Untagged": reference.familiar}]
        using = [u for u in users if u.repository == repository]
        running = next((u for u in using if u.running), None)
        image_id = builtin_image_id(repository)
        if by_id is not None and len(tags) > 1 and not force:
            raise ImageConflictError(
                f"conflict: unable to delete {_short(image_id)} (must be forced) - image is "
                "referenced in multiple repositories"
            )
        if by_id is None and not force and using:
            raise ImageConflictError(
                f'conflict: unable to remove repository reference "{text}" (must force) - '
                f"container {using[0].container_id[:12]} is using its referenced image "
                f"{_short(image_id)}"
            )
        if by_id is not None and (running is not None or (using and not force)):
            user = running or using[0]
            how = "cannot be forced" if running is not None else "must be forced"
            state = "running" if running is not None else "stopped"
            raise ImageConflictError(
                f"conflict: unable to delete {_short(image_id)} ({how}) - image is being used "
                f"by {state} container {user.container_id[:12]}"
            )
        answer = [{"Untagged": f"{_familiar(repository)}:{tag}"} for tag in sorted(tags)]
        self._tags.pop(repository, None)
        if running is not None:  # forced untag: the running container keeps it
            self._held[repository] = Held.DANGLING
        else:
            del self._held[repository]
            answer.append({"Deleted": image_id})
        log.info("event=image_removed image=%s force=%s", _familiar(repository), force)
        return answer

    def prune(self, dangling_only: bool, users: Iterable[ImageUser]) -> list[list[dict[str, str]]]:
        """`docker image prune [-a]`: each dangling image (every image with `-a`, when not
        `dangling_only`) no container was made from goes; the removal answer of each, in
        name order. dockerd skips an image in use alike (removing its last reference is a
        conflict)."""
        used = {user.repository for user in users}
        wanted = [
            repository
            for repository, held in self.held()
            if repository not in used and (held is Held.DANGLING or not dangling_only)
        ]
        return [self.remove(builtin_image_id(repository), False, ()) for repository in wanted]

    def _by_id(self, text: str) -> str | None:
        """The repository of the held image whose id `text` is or starts (at least 1 hex
        digit past `sha256:`, as dockerd's prefix lookup)."""
        digits = text.removeprefix("sha256:")
        if not digits or any(c not in "0123456789abcdef" for c in digits):
            return None
        for repository in self._held:
            if builtin_image_id(repository).removeprefix("sha256:").startswith(digits):
                return repository
        return None

    def _by_reference(self, text: str) -> Reference:
        try:
            reference = parse_reference(text)
        except ImageError:
            raise NoSuchImageError(f"No such image: {text}") from None
        if reference.digest or reference.tag not in self._tags.get(reference.repository, ()):
            raise NoSuchImageError(f"No such image: {reference.familiar}")
        return reference
