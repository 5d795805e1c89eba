"""Replicated cluster store: typed tables of Swarm objects, transactions applied from Raft.

Kinds are named by their protobuf classes (`Node`, `Network`, `Service`, `Task`, `Cluster`,
`Secret`, `Config`).
"""

from controlplane.store.errors import ErrorKind, StoreError
from controlplane.store.kinds import KINDS, StoreObject
from controlplane.store.memory import Store
from controlplane.store.transaction import Transaction
from controlplane.store.watch import Action, Event, Predicate, Watch, WatchError, WatchOverflow

__all__ = [
    "KINDS",
    "Action",
    "ErrorKind",
    "Event",
    "Predicate",
    "Store",
    "StoreError",
    "StoreObject",
    "Transaction",
    "Watch",
    "WatchError",
    "WatchOverflow",
]
