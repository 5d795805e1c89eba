"""What `/secrets` and `/configs` share: both are named data in the replicated store that a
service's tasks get as files, with the same endpoints, filters, name rules and life cycle.
`secrets.py` and `configs.py` say where they differ (size limit, whether inspect shows the
data) as a `FileObjectKind`.

As in Swarm (swarmkit's controlapi, passed on by dockerd):
- names follow swarmkit's rule for secrets and configs (not the DNS rule of services), are
  unique without regard to case, and a second create of a name is refused at apply time;
- only the labels change on update: another name or other data is refused;
- an object a service refers to cannot be removed (the services are named). The removal
  carries the Cluster object at the version it read, as service writes that refer to secrets
  or configs do (`services.py`): of a removal and a racing service write through another
  manager, one is refused at apply time and tried again on the new state;
- `GET /secrets/{id}` and the update and delete take a full id, an exact name or a unique id
  prefix, in that order (dockerd's getSecret / getConfig).
Not modelled: secret drivers and config templating (refused with a message saying so).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from controlplane.api.backend import EngineBackend
from controlplane.api.common import (
    add_route,
    by_id_prefix,
    go_time,
    json_body,
    json_response,
    parse_filters,
    require_manager,
    require_manager_read,
)
from controlplane.api.errors import ApiError, bad_request, from_store_error, rpc_error
from controlplane.ids import new_object_id
from controlplane.numbers import is_number
from controlplane.pb.objects_pb2 import Cluster, Config, ContainerSpec, Secret, Service
from controlplane.store import ErrorKind, Store, StoreError, Transaction
from controlplane.store.kinds import kind_label

FileObj = TypeVar("FileObj", Secret, Config)

LIST_FILTERS = frozenset({"id", "label", "name", "names"})
_NAME = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$")
MAX_NAME_LENGTH = 64
_DELETE_ATTEMPTS = 5


@dataclass(frozen=True)
class FileObjectKind(Generic[FileObj]):
    """One of the two kinds. `references` gives the (id, name) pairs a container spec refers
    to; `max_size` is swarmkit's limit (the data must be shorter); `shows_data`: inspect and
    list show the data (configs) or never do (secrets)."""

    kind: type[FileObj]
    max_size: int
    shows_data: bool
    references: Callable[[ContainerSpec], Sequence[tuple[str, str]]]

    @property
    def label(self) -> str:
        return kind_label(self.kind)


def register(app: web.Application, fk: FileObjectKind[Any]) -> None:
    """The five endpoints of `fk` under `/secrets` or `/configs`."""
    base = f"/{fk.label}s"

    async def list_(request: web.Request) -> web.Response:
        b = await require_manager_read(request)
        filters = parse_filters(request, LIST_FILTERS)
        return json_response([to_json(fk, o) for o in _filtered(fk, b.store, filters)])

    async def inspect(request: web.Request) -> web.Response:
        b = await require_manager_read(request)
        return json_response(to_json(fk, find(fk, b.store, request.match_info["id"])))

    async def create(request: web.Request) -> web.Response:
        b = require_manager(request)
        obj = fk.kind(id=new_object_id())
        _parse_spec(fk, await json_body(request), obj)
        obj.meta.created_at_ns = obj.meta.updated_at_ns = time.time_ns()
        await b.prepare_write()
        await _propose(b, Transaction().create(obj))
        return json_response({"ID": obj.id}, status=201)

    async def update(request: web.Request) -> web.Response:
        b = require_manager(request)
        version = _version(fk, request)
        wanted = fk.kind()
        _parse_spec(fk, await json_body(request), wanted, for_update=True)
        await b.prepare_write()
        obj = find(fk, b.store, request.match_info["id"])
        changed_data = bool(wanted.spec.data) and wanted.spec.data != obj.spec.data
        if wanted.spec.annotations.name != obj.spec.annotations.name or changed_data:
            raise rpc_error("InvalidArgument", "only updates to Labels are allowed")
        obj.spec.annotations.labels.clear()
        obj.spec.annotations.labels.update(wanted.spec.annotations.labels)
        obj.meta.version.index = version  # the store refuses it if the object moved on since
        obj.meta.updated_at_ns = time.time_ns()
        await _propose(b, Transaction().update(obj))
        return web.Response(status=200)

    async def delete(request: web.Request) -> web.Response:
        b = require_manager(request)
        attempts = 0
        while True:
            attempts += 1
            await b.prepare_write()
            obj = find(fk, b.store, request.match_info["id"])
            users = users_of(fk, b.store, obj.id)
            if users:
                services = "service" if len(users) == 1 else "services"
                raise rpc_error(
                    "InvalidArgument",
                    f"{fk.label} '{obj.spec.annotations.name}' is in use by the following "
                    f"{services}: {', '.join(users)}",
                )
            txn = Transaction().delete(fk.kind, obj.id)
            cluster = next(iter(b.store.list(Cluster)), None)
            if cluster is not None:  # refused if a service write got in since the check
                txn.update(cluster)
            err = StoreError.from_result(await b.propose(txn.encode()))
            if err is None:
                return web.Response(status=204)
            if err.kind != ErrorKind.CONFLICT or attempts == _DELETE_ATTEMPTS:
                raise _refusal(err)

    add_route(app, "GET", base, list_)
    add_route(app, "POST", f"{base}/create", create)
    add_route(app, "GET", f"{base}/{{id}}", inspect)
    add_route(app, "POST", f"{base}/{{id}}/update", update)
    add_route(app, "DELETE", f"{base}/{{id}}", delete)


# ---- representation --------------------------------------------------------------------


def to_json(fk: FileObjectKind[FileObj], obj: FileObj) -> dict[str, Any]:
    """The Secret / Config shape of the API; a secret's data never leaves the managers."""
    spec: dict[str, Any] = {
        "Name": obj.spec.annotations.name,
        "Labels": dict(sorted(obj.spec.annotations.labels.items())),
    }
    if fk.shows_data:
        spec["Data"] = base64.b64encode(obj.spec.data).decode()
    return {
        "ID": obj.id,
        "Version": {"Index": obj.meta.version.index},
        "CreatedAt": go_time(obj.meta.created_at_ns),
        "UpdatedAt": go_time(obj.meta.updated_at_ns),
        "Spec": spec,
    }


# ---- lookup ----------------------------------------------------------------------------


def find(fk: FileObjectKind[FileObj], store: Store, ref: str) -> FileObj:
    """Full id, then exact name, then unique id prefix (dockerd's order); its errors otherwise."""
    found = store.get(fk.kind, ref) if ref else None
    if found is None and ref:
        found = store.get_by_name(fk.kind, ref)
    if found is not None:
        return found
    return by_id_prefix(store.list(fk.kind), ref, fk.label)


def users_of(fk: FileObjectKind[Any], store: Store, object_id: str) -> list[str]:
    """Names of the services whose spec refers to the object."""
    return [
        s.spec.annotations.name
        for s in store.list(Service)
        if any(ref_id == object_id for ref_id, _name in fk.references(s.spec.container))
    ]


def check_references(fk: FileObjectKind[Any], store: Store, container: ContainerSpec) -> None:
    """Every object the container spec refers to exists under the name the reference gives
    (swarmkit's checkSecretExistence / checkConfigExistence, with their words)."""
    missing = []
    for ref_id, ref_name in fk.references(container):
        obj = store.get(fk.kind, ref_id) if ref_id else None
        if obj is None or obj.spec.annotations.name != ref_name:
            missing.append(ref_name)
    if missing:
        what = fk.label if len(missing) == 1 else f"{fk.label}s"
        raise rpc_error("InvalidArgument", f"{what} not found: {', '.join(missing)}")


def _filtered(
    fk: FileObjectKind[FileObj], store: Store, filters: dict[str, list[str]]
) -> list[FileObj]:
    """swarmkit's ListSecrets: any of the names, name prefixes or id prefixes (all objects
    when none is given), then every label filter."""
    names = [n.lower() for n in filters.get("names", [])]
    prefixes = [p.lower() for p in filters.get("name", [])]
    ids = filters.get("id", [])
    labels = [item.partition("=") for item in filters.get("label", [])]
    out: list[FileObj] = []
    for obj in store.list(fk.kind):
        name = obj.spec.annotations.name.lower()
        if (names or prefixes or ids) and not (
            name in names
            or any(name.startswith(p) for p in prefixes)
            or any(obj.id.startswith(i) for i in ids)
        ):
            continue
        own = obj.spec.annotations.labels
        if all(k in own and (not sep or own[k] == v) for k, sep, v in labels):
            out.append(obj)
    return out


# ---- writes ----------------------------------------------------------------------------


def _parse_spec(
    fk: FileObjectKind[FileObj], body: dict[str, Any], obj: FileObj, *, for_update: bool = False
) -> None:
    """A SecretSpec / ConfigSpec body into `obj.spec`, checked as swarmkit's validate*Spec
    (an update keeps the checks of what it may carry: the data is compared, not judged)."""
    name = body.get("Name") or ""
    if not isinstance(name, str):
        raise bad_request(f"invalid Name: expected a string, got {name!r}")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise bad_request("invalid Labels: expected a map of strings to strings")
    for unmodelled in ("Driver", "Templating"):
        if body.get(unmodelled):
            raise bad_request(
                f"{fk.label} {unmodelled.lower()}s are not supported by Swarmlab: give the "
                f"data itself and drop {unmodelled}"
            )
    data = _decode_data(body.get("Data"))
    obj.spec.annotations.name = name
    obj.spec.annotations.labels.update(labels)
    obj.spec.data = data
    if for_update:
        return
    if not name:
        raise rpc_error("InvalidArgument", "name must be provided")
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise rpc_error(
            "InvalidArgument",
            f"invalid name, only {MAX_NAME_LENGTH} [a-zA-Z0-9-_.] characters allowed, and the "
            "start and end character must be [a-zA-Z0-9]",
        )
    if not 0 < len(data) < fk.max_size:
        raise rpc_error(
            "InvalidArgument",
            f"{fk.label} data must be larger than 0 and less than {fk.max_size} bytes",
        )


def _decode_data(value: Any) -> bytes:
    """Go decodes a JSON string into []byte as standard base64."""
    if value is None:
        return b""
    if not isinstance(value, str):
        raise bad_request(f"invalid Data: expected a base64 string, got {value!r}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as err:
        raise bad_request(f"invalid Data: not standard base64 ({err})") from None


def _version(fk: FileObjectKind[Any], request: web.Request) -> int:
    text = request.query.get("version", "")
    if not is_number(text):
        raise bad_request(
            f"invalid {fk.label} version {text!r}: pass the Version.Index of the {fk.label} "
            "as inspected"
        )
    return int(text)


async def _propose(b: EngineBackend, txn: Transaction) -> None:
    """Commit `txn`, or raise the store's refusal in swarmkit's words."""
    err = StoreError.from_result(await b.propose(txn.encode()))
    if err is not None:
        raise _refusal(err)


def _refusal(err: StoreError) -> ApiError:
    """A name taken meanwhile is AlreadyExists, a version that moved on is swarmkit's
    "update out of sequence"."""
    if err.kind == ErrorKind.EXISTS:
        return rpc_error("AlreadyExists", err.message)
    if err.kind == ErrorKind.CONFLICT:
        return rpc_error("Unknown", err.message)
    return from_store_error(err)
