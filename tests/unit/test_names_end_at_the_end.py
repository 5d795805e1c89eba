"""Names are checked whole: Go's `$` matches only at the end of the text, Python's `$` also
before a final newline, so a name with a trailing newline (`"web\\n"`) must be refused as
dockerd refuses it (checked on dockerd 20.10), for services, networks, secrets, configs and
standalone containers alike."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from controlplane.agent.attachment_ledger import AttachmentLedger
from controlplane.agent.runtime import ContainerConfig, Runtime
from controlplane.agent.standalone import InvalidConfigError, StandaloneContainers
from controlplane.api.errors import ApiError
from controlplane.api.logs import _unix_time
from controlplane.manager.ipam import AllocatorError, parse_subnet
from tests.unit.test_api import Api, run

INVALID = "rpc error: code = InvalidArgument desc = "
DNS = INVALID + "name must be valid as a DNS name component"
FILE_NAME = (
    INVALID + "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end "
    "character must be [a-zA-Z0-9]"
)
DATA = base64.b64encode(b"x").decode()


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/services/create",
            {"Name": "web\n", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}},
            DNS,
        ),
        ("/networks/create", {"Name": "net\n", "Driver": "overlay"}, DNS),
        ("/secrets/create", {"Name": "pw\n", "Data": DATA}, FILE_NAME),
        ("/configs/create", {"Name": "conf\n", "Data": DATA}, FILE_NAME),
    ],
)
def test_a_trailing_newline_is_no_part_of_a_valid_name(
    path: str, body: dict[str, Any], message: str
) -> None:
    async def t(api: Api) -> None:
        status, answer = await api.call("POST", f"/v1.41{path}", path, body=body)
        assert (status, answer["message"]) == (400, message)

    run(t)


def test_a_container_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        registry = StandaloneContainers(Runtime(), AttachmentLedger(tmp_path / "ledger.json"))
        with pytest.raises(InvalidConfigError, match="Invalid container name"):
            registry.create(ContainerConfig(image="busybox", name="web\n"))

    asyncio.run(main())


def test_a_subnet_or_log_time_with_a_trailing_newline_is_refused() -> None:
    """The same rule for the other values checked by a pattern: `int("5\\n")` and
    `ip_network` would accept what the pattern let through."""
    with pytest.raises(AllocatorError, match="invalid CIDR address"):
        parse_subnet("10.9.0.0/24\n")
    with pytest.raises(ApiError, match="could not parse since timestamp"):
        _unix_time("5\n", "since")
