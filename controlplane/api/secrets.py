"""`/secrets`: named data for services, never shown once created (`file_objects.py` holds
what secrets and configs share)."""

from __future__ import annotations

from aiohttp import web

from controlplane.api import file_objects
from controlplane.api.file_objects import FileObjectKind
from controlplane.pb.objects_pb2 import Secret

MAX_SECRET_SIZE = 500 * 1024
"""swarmkit's MaxSecretSize: the data must be shorter."""

SECRETS: FileObjectKind[Secret] = FileObjectKind(
    kind=Secret,
    max_size=MAX_SECRET_SIZE,
    shows_data=False,
    references=lambda c: [(r.secret_id, r.secret_name) for r in c.secrets],
)


def register(app: web.Application) -> None:
    file_objects.register(app, SECRETS)
