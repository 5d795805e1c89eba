"""The object kinds the store holds, and the per-kind facts the rest of the store relies on.

A kind is named by its protobuf class (`Node`, `Network`, `Service`, `Task`, `Cluster`,
`Secret`, `Config`) everywhere in the store API, so `store.get(Service, id)` is typed
`Service | None`.

Names follow Swarm: networks, services, clusters, secrets and configs are unique by name,
compared without regard to case (swarmkit indexes the lower-cased name); nodes are unique only
by id (two hosts may share a hostname); tasks have no name of their own, Swarm derives one for
display.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias, TypeVar

from controlplane.pb.objects_pb2 import Cluster, Config, Network, Node, Secret, Service, Task

StoreObject: TypeAlias = Node | Network | Service | Task | Cluster | Secret | Config
ObjT = TypeVar("ObjT", Node, Network, Service, Task, Cluster, Secret, Config)

# Order of the StoreSnapshot fields, so snapshots list kinds the same way on every replica.
KINDS: tuple[type[StoreObject], ...] = (Node, Network, Service, Task, Cluster, Secret, Config)
UNIQUE_NAME_KINDS: frozenset[type[StoreObject]] = frozenset(
    {Network, Service, Cluster, Secret, Config}
)


def kind_label(kind: type[StoreObject]) -> str:
    """'service' for Service: the StoreAction oneof field and the word used in error messages."""
    return kind.DESCRIPTOR.name.lower()


def snapshot_field(kind: type[StoreObject]) -> str:
    """'services' for Service: the repeated field of StoreSnapshot holding that kind."""
    return kind_label(kind) + "s"


def check_kind(kind: type[StoreObject]) -> None:
    """Refuse a class the store has no table for (a caller bug, so a TypeError)."""
    if kind not in KINDS:
        raise TypeError(
            f"{kind!r} is not a store object kind; expected one of "
            + ", ".join(k.__name__ for k in KINDS)
        )


def name_of(obj: StoreObject) -> str:
    """The name Swarm shows and filters on (see the module docstring for uniqueness)."""
    match obj:
        case Task():
            # Swarm's naming.Task: <service>.<slot>.<id>, or <service>.<node>.<id> when global.
            middle = str(obj.slot) if obj.slot else obj.node_id
            return f"{obj.spec.annotations.name}.{middle}.{obj.id}"
        case Node():
            return obj.spec.annotations.name or obj.description.hostname
        case _:
            return obj.spec.annotations.name


def labels_of(obj: StoreObject) -> Mapping[str, str]:
    """User labels; a task's spec carries its service's labels, not its own, so it has none."""
    if isinstance(obj, Task):
        return {}
    return obj.spec.annotations.labels


def name_conflict_message(kind: type[StoreObject], name: str) -> str:
    """Docker's wording: the daemon's for networks, swarmkit's controlapi's for the others."""
    if kind is Network:
        return f"network with name {name} already exists"
    if kind in (Secret, Config):
        return f"{kind_label(kind)} {name} already exists"
    return f"name conflicts with an existing object: {kind_label(kind)} {name} already exists"
