"""`/configs`: named data for services, shown by inspect (`file_objects.py` holds what
secrets and configs share)."""

from __future__ import annotations

from aiohttp import web

from controlplane.api import file_objects
from controlplane.api.file_objects import FileObjectKind
from controlplane.pb.objects_pb2 import Config

MAX_CONFIG_SIZE = 1000 * 1024
"""swarmkit's MaxConfigSize: the data must be shorter."""

CONFIGS: FileObjectKind[Config] = FileObjectKind(
    kind=Config,
    max_size=MAX_CONFIG_SIZE,
    shows_data=True,
    references=lambda c: [(r.config_id, r.config_name) for r in c.configs],
)


def register(app: web.Application) -> None:
    file_objects.register(app, CONFIGS)
