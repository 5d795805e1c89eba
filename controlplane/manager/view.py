"""One consistent read of the store for the leader's pure passes (allocation, orchestration,
scheduling): they take a ClusterView and return the transaction to propose, never touching
the store themselves."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from controlplane.manager.task_index import TaskIndex
from controlplane.pb.objects_pb2 import Cluster, Network, Node, Service, Task
from controlplane.store import Store


@dataclass(frozen=True)
class ClusterView:
    nodes: dict[str, Node]
    networks: dict[str, Network]
    services: dict[str, Service]
    index: TaskIndex  # the tasks, by service, state and node load
    cluster: Cluster | None = None

    @property
    def tasks(self) -> list[Task]:
        """Every task in id order."""
        return self.index.all()

    @classmethod
    def read(cls, store: Store) -> ClusterView:
        clusters = store.list(Cluster)
        return cls(
            nodes={n.id: n for n in store.list(Node)},
            networks={n.id: n for n in store.list(Network)},
            services={s.id: s for s in store.list(Service)},
            index=TaskIndex(store.list(Task)),
            cluster=clusters[0] if clusters else None,
        )

    @classmethod
    def of(
        cls,
        nodes: list[Node] | tuple[Node, ...] = (),
        networks: list[Network] | tuple[Network, ...] = (),
        services: list[Service] | tuple[Service, ...] = (),
        tasks: list[Task] | tuple[Task, ...] = (),
        cluster: Cluster | None = None,
    ) -> ClusterView:
        """A view of given objects (tests and simulations)."""
        return cls(
            nodes={n.id: n for n in nodes},
            networks={n.id: n for n in networks},
            services={s.id: s for s in services},
            index=TaskIndex(tasks),
            cluster=cluster,
        )

    def services_in(self, focus: Collection[str] | None) -> list[Service]:
        """The services of `focus` (all if None) in id order: a pass after one service changed
        looks at that one, and neither visits nor sorts every service."""
        if focus is None:
            return [self.services[i] for i in sorted(self.services)]
        return [self.services[i] for i in sorted(focus) if i in self.services]

    def ingress_network(self) -> Network | None:
        return next((n for n in self.networks.values() if n.spec.ingress), None)
