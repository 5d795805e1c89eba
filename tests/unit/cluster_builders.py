"""Builders for pure tests of the leader's passes: a synchronous store, services, and a
converge() that runs allocation -> orchestration -> scheduling to a fixpoint, as LeaderLoops
does, on a clock the test controls."""

from __future__ import annotations

from controlplane.manager.allocation import allocate
from controlplane.manager.leader_memory import LeaderMemory
from controlplane.manager.orchestrator import reconcile
from controlplane.manager.scheduler import schedule
from controlplane.manager.tasks import note_started
from controlplane.manager.view import ClusterView
from controlplane.pb.objects_pb2 import IPAMConfig, Network, Service, Task
from controlplane.store import Store, StoreError, Transaction
from tests.unit.swarm_fixture import agent_step, ingress_network, ready_node

SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND


class SyncCluster:
    """A store applied to directly, with helpers to write and to run the passes."""

    def __init__(self, nodes: int = 3, *, ingress: bool = True) -> None:
        self.store = Store()
        self.index = 0
        self.now = T0
        self.memory = LeaderMemory(T0)  # the leader's, kept as LeaderLoops keeps it
        txn = Transaction()
        for i in range(1, nodes + 1):
            txn.create(ready_node(f"node{i}", f"host-{i}"))
        if ingress:
            txn.create(ingress_network())
        self.apply(txn)

    def apply(self, txn: Transaction) -> None:
        self.index += 1
        err = StoreError.from_result(self.store.apply(self.index, txn.encode()))
        assert err is None, err.message

    def view(self) -> ClusterView:
        return ClusterView.read(self.store)

    def new_leader(self) -> None:
        """A leader change: the new leader's memory is what it rebuilds from the store."""
        self.memory = LeaderMemory.at_start(self.view(), self.now)

    def converge(self, *, agent: bool = False, limit: int = 100) -> int | None:
        """Run the passes (and the stand-in agent) until nothing changes; the wake-up time."""
        for _ in range(limit):
            view = self.view()
            txn = allocate(view, self.now).transaction
            wake = None
            if txn is None:
                plan = reconcile(view, self.now, self.memory)
                txn, wake = plan.transaction, plan.wake_at_ns
                self.memory.learn(plan.learned)  # applied below, when there is a transaction
            if txn is None:
                txn = schedule(view, self.now)
            if txn is None and agent:
                step = agent_step(self.store, self.now)
                txn = step if len(step) else None
            if txn is None:
                return wake
            self.apply(txn)
        raise AssertionError("the passes did not converge")

    def tasks(self, service_id: str | None = None) -> list[Task]:
        return [t for t in self.store.list(Task) if service_id in (None, t.service_id)]

    def live(self, service_id: str) -> list[Task]:
        return [t for t in self.tasks(service_id) if t.desired_state == "running"]

    def set_task(self, task_id: str, state: str, *, exit_code: int = 0) -> None:
        task = self.store.get(Task, task_id)
        assert task is not None
        task.status.state = state
        task.status.exit_code = exit_code
        task.status.timestamp_ns = self.now
        note_started(task)
        self.apply(Transaction().update(task))

    def update_service(self, service: Service) -> None:
        """Write `service`; a new spec gets a new spec version, as the API's update gives."""
        stored = self.store.get(Service, service.id)
        if stored is not None and stored.spec != service.spec:
            service.spec_version = stored.meta.version.index
        self.apply(Transaction().update(service))

    def service(self, service_id: str) -> Service:
        svc = self.store.get(Service, service_id)
        assert svc is not None
        return svc


def overlay(net_id: str, name: str, subnet: str, vni: int) -> Network:
    net = Network(id=net_id, vni=vni)
    net.spec.annotations.name = name
    net.spec.driver = "overlay"
    gateway = subnet.split("/")[0].rsplit(".", 1)[0] + ".1"
    net.ipam.append(IPAMConfig(subnet=subnet, gateway=gateway))
    return net


def replicated(
    service_id: str,
    replicas: int,
    *,
    image: str = "nginx",
    networks: tuple[str, ...] = (),
    ports: tuple[tuple[int, int], ...] = (),
) -> Service:
    svc = Service(id=service_id)
    svc.spec.annotations.name = service_id
    svc.spec.container.image = image
    svc.spec.replicas = replicas
    for nid in networks:
        svc.spec.networks.add(target=nid)
    for published, target in ports:
        svc.spec.ports.add(
            target_port=target, published_port=published, protocol="tcp", publish_mode="ingress"
        )
    return svc


def replicated_job(service_id: str, total: int, max_concurrent: int) -> Service:
    svc = Service(id=service_id)
    svc.spec.annotations.name = service_id
    svc.spec.container.image = "busybox"
    svc.spec.replicated_job.total_completions = total
    svc.spec.replicated_job.max_concurrent = max_concurrent
    svc.job_status.SetInParent()
    return svc


def global_job(service_id: str, *constraints: str) -> Service:
    svc = Service(id=service_id)
    svc.spec.annotations.name = service_id
    svc.spec.container.image = "busybox"
    svc.spec.global_job.SetInParent()
    svc.spec.placement.constraints.extend(constraints)
    svc.job_status.SetInParent()
    return svc


def global_service(service_id: str, *constraints: str) -> Service:
    svc = Service(id=service_id)
    svc.spec.annotations.name = service_id
    svc.spec.container.image = "nginx"
    setattr(svc.spec, "global", True)
    svc.spec.placement.constraints.extend(constraints)
    return svc
