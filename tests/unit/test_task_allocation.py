"""Task and service allocation: VIPs, published ports, task addresses, and nothing handed out
twice, also when every pass rebuilds the allocator from the store (a new leader's view)."""

from __future__ import annotations

from controlplane.manager.allocation import allocate
from controlplane.pb.objects_pb2 import Service, Task
from controlplane.store import Transaction
from tests.unit.cluster_builders import SECOND, SyncCluster, overlay, replicated
from tests.unit.swarm_fixture import INGRESS_ID


def cluster_with_net(subnet: str = "10.0.1.0/24") -> SyncCluster:
    c = SyncCluster()
    c.apply(Transaction().create(overlay("net1", "my-net", subnet, 4097)))
    return c


def all_addresses(c: SyncCluster) -> list[str]:
    out = [a for s in c.store.list(Service) for a in s.endpoint.virtual_ips.values()]
    for t in c.store.list(Task):
        if t.status.state not in ("shutdown", "failed", "complete"):
            out += [addr for att in t.networks for addr in att.addresses]
    return out


def test_service_gets_vips_ports_and_tasks_get_addresses() -> None:
    c = cluster_with_net()
    c.apply(Transaction().create(replicated("web", 3, networks=("net1",), ports=((8080, 80),))))
    c.converge()
    svc = c.service("web")
    assert dict(svc.endpoint.virtual_ips) == {INGRESS_ID: "10.0.0.2/24", "net1": "10.0.1.2/24"}
    [port] = svc.endpoint.ports
    assert (port.published_port, port.target_port, port.publish_mode) == (8080, 80, "ingress")
    for task in c.tasks("web"):
        assert [a.network_id for a in task.networks] == [INGRESS_ID, "net1"]
        assert task.status.state == "assigned"
    addresses = all_addresses(c)
    assert len(addresses) == len(set(addresses)) == 8


def test_dynamic_published_port_from_30000_and_kept_across_updates() -> None:
    c = cluster_with_net()
    c.apply(Transaction().create(replicated("a", 1, ports=((0, 80),))))
    c.apply(Transaction().create(replicated("b", 1, ports=((0, 81),))))
    c.converge()
    assert c.service("a").endpoint.ports[0].published_port == 30000
    assert c.service("b").endpoint.ports[0].published_port == 30001
    svc = c.service("a")
    svc.spec.container.image = "nginx:2"
    c.update_service(svc)
    c.converge()
    assert c.service("a").endpoint.ports[0].published_port == 30000


def test_dnsrr_has_no_vip_and_a_dropped_network_loses_its_vip() -> None:
    c = cluster_with_net()
    rr = replicated("rr", 1, networks=("net1",))
    rr.spec.endpoint_mode = "dnsrr"
    c.apply(Transaction().create(rr).create(replicated("vip", 1, networks=("net1",))))
    c.converge()
    assert dict(c.service("rr").endpoint.virtual_ips) == {}
    svc = c.service("vip")
    assert list(svc.endpoint.virtual_ips) == ["net1"]
    del svc.spec.networks[:]
    c.update_service(svc)
    c.converge()
    assert dict(c.service("vip").endpoint.virtual_ips) == {}


def test_addresses_of_finished_tasks_are_reused_never_live_ones() -> None:
    c = cluster_with_net()
    c.apply(Transaction().create(replicated("web", 2, networks=("net1",))))
    c.converge(agent=True)
    for _ in range(3):
        task = c.live("web")[0]
        c.set_task(task.id, "failed", exit_code=1)
        c.now += 5 * SECOND
        c.converge(agent=True)
        addresses = all_addresses(c)
        assert len(addresses) == len(set(addresses))


def test_exhausted_network_leaves_the_task_new_and_says_why() -> None:
    c = cluster_with_net("10.0.9.0/29")  # .2-.6: a VIP and four tasks
    c.apply(Transaction().create(replicated("web", 5, networks=("net1",))))
    c.converge()
    states = sorted(t.status.state for t in c.tasks("web"))
    assert states == ["assigned"] * 4 + ["new"]
    result = allocate(c.view(), c.now)
    assert result.transaction is None
    assert any("no available IPv4 addresses" in p for p in result.problems)


def test_port_conflict_in_the_store_is_reported_not_allocated_twice() -> None:
    c = cluster_with_net()
    c.apply(Transaction().create(replicated("a", 1, ports=((8080, 80),))))
    c.converge()
    c.apply(Transaction().create(replicated("b", 1, ports=((8080, 80),))))
    result = allocate(c.view(), c.now)
    assert any("service b" in p and "already in use" in p for p in result.problems)
    assert not c.service("b").endpoint.ports


def test_address_of_a_task_stopped_before_reaching_a_node_is_free_again() -> None:
    c = SyncCluster(nodes=0)
    c.apply(Transaction().create(overlay("net1", "my-net", "10.0.1.0/24", 4097)))
    c.apply(Transaction().create(replicated("web", 1, networks=("net1",))))
    c.converge()
    [task] = c.tasks("web")
    assert task.status.state == "pending" and task.networks[0].addresses == ["10.0.1.3/24"]
    svc = c.service("web")
    svc.spec.container.image = "nginx:2"  # the pending task is replaced by the update
    c.update_service(svc)
    c.converge()
    [fresh] = c.live("web")
    assert fresh.id != task.id and fresh.networks[0].addresses == ["10.0.1.3/24"]
