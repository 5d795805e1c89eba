"""A small validator of responses against the Engine API's Swagger 2.0 document.

It covers what the v1.41 document uses for response bodies: `type` (object, array, string,
integer, number, boolean), `properties`, `items`, `additionalProperties`, `$ref` into
`definitions`, `allOf`, `enum` and `x-nullable`. Rules, chosen to fit how dockerd (Go) encodes:
- an object with `properties` and no `additionalProperties` refuses unknown keys (catches typos);
- `null` is accepted for objects, arrays and maps (Go's nil), and for anything marked
  `x-nullable: true`; never where `x-nullable: false`; not for scalars otherwise;
- no property is required (Swagger's `required` is not used by the document for responses);
- an error status the document omits for an operation must still carry an ErrorResponse.

PyYAML is needed to load the document (the `test` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_SCALARS = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


class SpecError(AssertionError):
    pass


def shared_path(relative: str) -> Path:
    """A file of the project's shared folder, which sits beside the checkout (`../shared`, as
    in development and CI); `SWARMLAB_SHARED` points elsewhere."""
    root = os.environ.get("SWARMLAB_SHARED")
    base = Path(root) if root else Path(__file__).resolve().parents[3] / "shared"
    return base / relative


SPEC_PATH = shared_path("docker-api/engine-api-v1.41.yaml")


_SWARM_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": {}}

DOCKERD_CORRECTIONS = (
    "Service.PreviousSpec: a ServiceSpec, after any update (service-scale-cli28.json)",
    "Task.Status.PortStatus: an object, {} without host-mode ports (service-ps-cli28.json)",
    "NetworkAttachment.Network: the swarm Network object (ID, Version, Spec, DriverState, "
    "IPAMOptions), not the NetworkResource the document names (service-ps-cli28.json)",
    "UpdateStatus.State: also rollback_started, rollback_paused, rollback_completed "
    "(swarmkit's states, passed through by dockerd)",
    'POST /secrets/create and /configs/create: 201 {"ID": ...} (dockerd writes Go\'s '
    "SecretCreateResponse / ConfigCreateResponse, whose field has no JSON tag), not IdResponse",
    'POST /services/create: 201 {"ID": ..., "Warnings": [...]} (types.ServiceCreateResponse, '
    'whose warnings the docker CLI prints), not the document\'s one "Warning" string',
    "Resources.MemorySwappiness: null when not set (dockerd's *int64: a container inspect "
    "of `docker run -d busybox` shows null)",
)
"""Where dockerd 20.10 answers differently from the v1.41 document, as the real-swarm transcripts
show. `Spec` applies these corrections so that Docker's true shapes validate."""


def _correct(definitions: dict[str, Any]) -> None:
    service = definitions.get("Service", {}).get("properties")
    if service is not None:
        service["PreviousSpec"] = {"$ref": "#/definitions/ServiceSpec"}
        state = service.get("UpdateStatus", {}).get("properties", {}).get("State", {})
        if "enum" in state:
            state["enum"] = [
                *state["enum"],
                "rollback_started",
                "rollback_paused",
                "rollback_completed",
            ]
    status = definitions.get("Task", {}).get("properties", {}).get("Status", {})
    if "properties" in status:
        status["properties"]["PortStatus"] = _SWARM_OBJECT
    attachment = definitions.get("NetworkAttachment", {}).get("properties")
    if attachment is not None:
        attachment["Network"] = _SWARM_OBJECT
    swappiness = definitions.get("Resources", {}).get("properties", {}).get("MemorySwappiness")
    if swappiness is not None:
        swappiness["x-nullable"] = True


def _correct_paths(paths: dict[str, Any]) -> None:
    for path in ("/secrets/create", "/configs/create"):
        created = paths.get(path, {}).get("post", {}).get("responses", {}).get(201)
        if created is not None:
            created["schema"] = {"type": "object", "properties": {"ID": {"type": "string"}}}
    created = paths.get("/services/create", {}).get("post", {}).get("responses", {}).get(201)
    if created is not None:
        created["schema"] = {
            "type": "object",
            "properties": {
                "ID": {"type": "string"},
                "Warnings": {"type": "array", "items": {"type": "string"}},
            },
        }


class Spec:
    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self.definitions: dict[str, Any] = document.get("definitions", {})
        _correct(self.definitions)
        _correct_paths(document.get("paths", {}))

    @classmethod
    def load(cls, path: str | Path) -> Spec:
        import yaml  # type: ignore[import-untyped]

        with open(path, encoding="utf-8") as f:
            return cls(yaml.safe_load(f))

    def response_schema(self, path: str, method: str, status: int) -> Any | None:
        """The schema of a response (None: no body expected); SpecError if not documented."""
        op = self.doc["paths"].get(path, {}).get(method.lower())
        if op is None:
            raise SpecError(f"{method} {path} is not in the spec")
        responses = op.get("responses", {})
        resp = responses.get(status, responses.get(str(status)))
        if resp is None and status >= 400:
            # dockerd answers statuses the document omits (409 for a duplicate network name,
            # 503 from a worker, 400 for bad filters): every error body is an ErrorResponse.
            return {"$ref": "#/definitions/ErrorResponse"}
        if resp is None:
            raise SpecError(f"{method} {path} has no documented {status} response")
        return resp.get("schema")

    def validate_response(self, path: str, method: str, status: int, body: Any) -> None:
        schema = self.response_schema(path, method, status)
        if schema is None:
            if body not in (None, b"", ""):
                raise SpecError(f"{method} {path} {status} documents no body, got {body!r}")
            return
        self.validate(body, schema)

    def validate(self, value: Any, schema: Any, where: str = "$") -> None:
        errors: list[str] = []
        self._check(value, schema, where, errors)
        if errors:
            raise SpecError("; ".join(errors[:10]))

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/definitions/"):
                raise SpecError(f"unsupported $ref {ref}")
            merged = dict(self.definitions[ref.removeprefix("#/definitions/")])
            for k, v in schema.items():  # siblings of $ref (x-nullable) still apply
                if k != "$ref":
                    merged[k] = v
            schema = merged
        return schema

    def _flatten(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Merge allOf parts into one schema (their properties united)."""
        schema = self._resolve(schema)
        if "allOf" not in schema:
            return schema
        out: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        props: dict[str, Any] = dict(out.get("properties", {}))
        for part in schema["allOf"]:
            flat = self._flatten(part)
            props.update(flat.get("properties", {}))
            for k, v in flat.items():
                if k != "properties":
                    out.setdefault(k, v)
        if props:
            out["properties"] = props
        return out

    def _check(self, value: Any, schema: Any, where: str, errors: list[str]) -> None:
        if not isinstance(schema, dict):
            return
        schema = self._flatten(schema)
        kind = schema.get("type")
        if kind is None and "properties" in schema:
            kind = "object"
        if value is None:
            nullable = schema.get("x-nullable")
            if nullable is True or (nullable is None and kind in ("object", "array", None)):
                return
            errors.append(f"{where}: null where {kind} is expected")
            return
        if "enum" in schema and value not in schema["enum"]:
            errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
        if kind in _SCALARS:
            ok = isinstance(value, _SCALARS[kind]) and not (
                kind != "boolean" and isinstance(value, bool)
            )
            if not ok:
                errors.append(f"{where}: {value!r} is not a {kind}")
        elif kind == "array":
            if not isinstance(value, list):
                errors.append(f"{where}: {type(value).__name__} is not an array")
                return
            for i, item in enumerate(value):
                self._check(item, schema.get("items", {}), f"{where}[{i}]", errors)
        elif kind == "object":
            if not isinstance(value, dict):
                errors.append(f"{where}: {type(value).__name__} is not an object")
                return
            props: dict[str, Any] = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    self._check(item, props[key], f"{where}.{key}", errors)
                elif isinstance(extra, dict):
                    self._check(item, extra, f"{where}.{key}", errors)
                elif props and extra is None:
                    errors.append(f"{where}: unknown property {key!r}")
