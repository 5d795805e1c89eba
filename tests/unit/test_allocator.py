"""The allocator's pure core: Swarm's allocation order, Docker's refusals, and restore from the
store's objects without ever allocating anything twice."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from controlplane.manager.allocator import (
    Allocator,
    AllocatorError,
    IPAMRequest,
    Pool,
    PortSpec,
    mac_address,
)
from controlplane.manager.ipam import IdSpace, UsedSpans, carve
from controlplane.pb.objects_pb2 import Cluster, Endpoint, Network, PortConfig, Service, Task

# ---- networks -------------------------------------------------------------------------------


def test_ingress_first_then_networks_in_order_as_measured_on_real_swarm() -> None:
    # FINDINGS.md section 2: ingress 4096 10.0.0.0/24 .1, labnet 4097 10.0.1.0/24 .1,
    # labnet28 4098 10.0.2.0/24, plainnet 4099 10.0.3.0/24 .1.
    a = Allocator()
    assert a.allocate_network("ing", "ingress").vni == 4096
    assert a.network("ing") is not None
    assert a.network("ing").pools == (Pool("10.0.0.0/24", "10.0.0.1"),)  # type: ignore[union-attr]
    expected = [("labnet", 4097, "10.0.1.0/24"), ("labnet28", 4098, "10.0.2.0/24")]
    expected.append(("plainnet", 4099, "10.0.3.0/24"))
    for name, vni, subnet in expected:
        alloc = a.allocate_network(name, name)
        assert alloc.vni == vni
        assert alloc.pools[0].subnet == subnet
        assert alloc.pools[0].gateway == str(IPv4Network(subnet).network_address + 1)


def test_freed_subnet_and_vni_are_reused_lowest_first() -> None:
    # FINDINGS.md: an rm/create cycle reused 10.0.2.0/24 for a later network.
    a = Allocator()
    for n in ("ingress", "n1", "n2", "n3"):
        a.allocate_network(n, n)
    a.release_network("n2")
    again = a.allocate_network("n4", "n4")
    assert again == a.network("n4")
    assert (again.vni, again.pools[0].subnet) == (4098, "10.0.2.0/24")
    assert a.allocate_network("n5", "n5").pools[0].subnet == "10.0.4.0/24"


def test_allocate_network_is_idempotent() -> None:
    a = Allocator()
    first = a.allocate_network("n", "n")
    assert a.allocate_network("n", "n") == first
    assert a.allocate_network("m", "m").vni == 4097


def test_custom_default_pools_and_mask_length() -> None:
    a = Allocator(["192.168.0.0/23", "172.20.0.0/16"], 25)
    subnets = [a.allocate_network(str(i), str(i)).pools[0].subnet for i in range(5)]
    assert subnets == [
        "192.168.0.0/25",
        "192.168.0.128/25",
        "192.168.1.0/25",
        "192.168.1.128/25",
        "172.20.0.0/25",
    ]
    c = Cluster(default_address_pool=["10.20.0.0/16"], subnet_size=26)
    b = Allocator.for_cluster(c)
    assert b.allocate_network("x", "x").pools[0] == Pool("10.20.0.0/26", "10.20.0.1")
    assert Allocator.for_cluster(Cluster()).default_pools == ["10.0.0.0/8"]


@pytest.mark.parametrize(
    ("pools", "size", "fragment"),
    [
        (["10.0.0.0/16"], 8, "mask-length 8"),
        (["10.0.0.0/16"], 31, "mask-length 31"),
        (["nope"], 24, "invalid CIDR address: nope"),
        (["10.0.0.0/8", "10.1.0.0/16"], 24, "overlaps"),
        ([], 24, "at least one pool"),
    ],
)
def test_bad_default_pools_refused(pools: list[str], size: int, fragment: str) -> None:
    with pytest.raises(AllocatorError, match=fragment):
        Allocator(pools, size)


def test_default_pool_skips_user_subnets_and_exhausts_clearly() -> None:
    a = Allocator(["10.1.0.0/22"], 24)
    a.allocate_network("u", "user", [IPAMRequest("10.1.0.128/25")])
    a.allocate_network("w", "wide", [IPAMRequest("10.1.1.0/24")])
    assert a.allocate_network("d1", "d1").pools[0].subnet == "10.1.2.0/24"
    assert a.allocate_network("d2", "d2").pools[0].subnet == "10.1.3.0/24"
    with pytest.raises(AllocatorError, match="could not find an available, non-overlapping") as e:
        a.allocate_network("d3", "d3")
    assert e.value.kind == "exhausted"
    # A user subnet outside the pools is still fine.
    assert a.allocate_network("o", "o", [IPAMRequest("192.168.9.0/24")]).vni == 4100


def test_carve_jumps_over_wide_blockers() -> None:
    used = UsedSpans.of([IPv4Network("10.16.0.0/24"), IPv4Network("10.0.0.0/12")])
    assert carve([IPv4Network("10.0.0.0/8")], 24, used) == IPv4Network("10.16.1.0/24")
    used.remove(IPv4Network("10.0.0.0/12"))
    assert carve([IPv4Network("10.0.0.0/8")], 24, used) == IPv4Network("10.0.0.0/24")


def test_user_subnet_gateway_and_range() -> None:
    a = Allocator()
    a.allocate_network("ing", "ingress")
    alloc = a.allocate_network(
        "n", "n", [IPAMRequest("10.9.0.0/16", gateway="10.9.0.254", ip_range="10.9.5.0/30")]
    )
    assert alloc == a.network("n")
    assert alloc.pools == (Pool("10.9.0.0/16", "10.9.0.254", "10.9.5.0/30"),)
    assert alloc.vni == 4097
    got = [a.allocate_task_address(f"t{i}", "n") for i in range(4)]
    assert got == ["10.9.5.0/16", "10.9.5.1/16", "10.9.5.2/16", "10.9.5.3/16"]
    with pytest.raises(AllocatorError, match=r"no available IPv4 addresses.*: n \(n\)"):
        a.allocate_vip("s", "n")
    # The next default subnet is unaffected by a user subnet outside 10.0.0.0/8's order.
    assert a.allocate_network("m", "m").pools[0].subnet == "10.0.1.0/24"


def test_host_bits_of_a_subnet_are_dropped_as_go_does() -> None:
    a = Allocator()
    assert a.allocate_network("n", "n", [IPAMRequest("10.5.5.7/24")]).pools[0] == Pool(
        "10.5.5.0/24", "10.5.5.1"
    )


def test_bad_cidr_refused_with_dockers_exact_message() -> None:
    # api-transcripts/bad-subnet-notcidr-cli28.json
    a = Allocator()
    with pytest.raises(AllocatorError) as e:
        a.allocate_network("b", "badnet2", [IPAMRequest("notacidr")])
    assert str(e.value) == "Invalid subnet notacidr : invalid CIDR address: notacidr"
    with pytest.raises(AllocatorError, match=r"^Invalid subnet 10.0.0.0 : invalid CIDR"):
        a.allocate_network("b", "b", [IPAMRequest("10.0.0.0")])
    with pytest.raises(AllocatorError, match=r"^Invalid subnet  : invalid CIDR address: $"):
        a.allocate_network("b", "b", [IPAMRequest("", gateway="10.0.0.1")])
    assert a.network("b") is None
    assert a.allocate_network("ok", "ok").vni == 4096  # nothing leaked


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (
            IPAMRequest("10.7.0.0/24", gateway="10.8.0.1"),
            "ipam configuration: subnet 10.7.0.0/24 does not contain gateway 10.8.0.1",
        ),
        (IPAMRequest("10.7.0.0/24", gateway="nope"), "ipam configuration: invalid gateway nope"),
        (
            IPAMRequest("10.7.0.0/24", ip_range="10.7.0.0/16"),
            "ipam configuration: subnet 10.7.0.0/24 does not contain range 10.7.0.0/16",
        ),
        (IPAMRequest("10.7.0.0/24", ip_range="x"), "ipam configuration: invalid range x"),
    ],
)
def test_gateway_and_range_outside_subnet_refused(req: IPAMRequest, message: str) -> None:
    with pytest.raises(AllocatorError) as e:
        Allocator().allocate_network("n", "n", [req])
    assert str(e.value) == message


def test_gateway_network_address_ipv6_and_tiny_subnets_refused() -> None:
    a = Allocator()
    with pytest.raises(AllocatorError, match="network or broadcast address"):
        a.allocate_network("n", "n", [IPAMRequest("10.7.0.0/24", gateway="10.7.0.255")])
    with pytest.raises(AllocatorError, match="IPv6"):
        a.allocate_network("n", "n", [IPAMRequest("2001:db8::/64")])
    with pytest.raises(AllocatorError, match="too small"):
        a.allocate_network("n", "n", [IPAMRequest("10.7.0.0/31")])


def test_overlapping_subnet_refused_naming_the_other_network() -> None:
    a = Allocator()
    a.allocate_network("ing", "ingress")
    a.allocate_network("lab", "labnet")
    with pytest.raises(AllocatorError) as e:
        a.allocate_network("x", "other", [IPAMRequest("10.0.1.128/25")])
    assert e.value.kind == "conflict"
    assert str(e.value) == (
        "invalid subnet 10.0.1.128/25 for network other: it overlaps subnet 10.0.1.0/24 of "
        "network labnet (lab); choose a subnet that no other network uses"
    )
    with pytest.raises(AllocatorError, match=r"overlaps subnet 10\.0\.0\.0/24 of network ingress"):
        a.allocate_network("x", "other", [IPAMRequest("10.0.0.0/8")])
    with pytest.raises(AllocatorError, match="another subnet given for network two"):
        a.allocate_network("x", "two", [IPAMRequest("10.50.0.0/24"), IPAMRequest("10.50.0.0/16")])
    # Two disjoint subnets in one network: addresses come from the first with room.
    alloc = a.allocate_network(
        "multi", "multi", [IPAMRequest("10.60.0.0/30"), IPAMRequest("10.61.0.0/30")]
    )
    assert [p.subnet for p in alloc.pools] == ["10.60.0.0/30", "10.61.0.0/30"]
    assert a.allocate_task_address("a", "multi") == "10.60.0.2/30"
    assert a.allocate_task_address("b", "multi") == "10.61.0.2/30"


# ---- addresses ------------------------------------------------------------------------------


def test_addresses_in_order_skip_gateway_and_are_freed() -> None:
    a = Allocator()
    a.allocate_network("lab", "labnet")
    # FINDINGS.md: the first container on a fresh overlay got .2.
    assert a.allocate_task_address("web", "lab") == "10.0.0.2/24"
    assert a.allocate_vip("svc", "lab") == "10.0.0.3/24"
    assert a.allocate_vip("svc", "lab") == "10.0.0.3/24"  # one VIP per service per network
    assert a.allocate_task_address("web", "lab") == "10.0.0.2/24"
    assert a.allocate_attachment("node-1", "lab") == "10.0.0.4/24"
    assert a.vips("svc") == {"lab": "10.0.0.3/24"}
    assert a.task_addresses("web") == {"lab": "10.0.0.2/24"}
    a.release_task("web")
    assert a.task_addresses("web") == {}
    # Serial, as swarmkit's: a freed address comes back only after the rest of the subnet.
    assert a.allocate_task_address("t2", "lab") == "10.0.0.5/24"
    a.release_service("svc")
    a.release_attachment("node-1")
    assert a.allocate_task_address("t3", "lab") == "10.0.0.6/24"
    a.release_task("nobody")  # idempotent


def test_serial_addresses_wrap_to_the_freed_ones_at_the_end_of_the_subnet() -> None:
    a = Allocator()
    a.allocate_network("small", "small", [IPAMRequest("10.70.0.0/29")])  # .2 to .6 for tasks
    assert [a.allocate_task_address(f"t{i}", "small") for i in range(5)] == [
        f"10.70.0.{i}/29" for i in range(2, 7)
    ]
    a.release_task("t3")
    a.release_task("t1")
    assert a.allocate_task_address("again-1", "small") == "10.70.0.3/29"  # wrapped, lowest freed
    assert a.allocate_task_address("again-2", "small") == "10.70.0.5/29"
    with pytest.raises(AllocatorError, match="no available IPv4 addresses"):
        a.allocate_task_address("one-too-many", "small")


def test_gateway_is_never_handed_out_even_when_given_mid_subnet() -> None:
    a = Allocator()
    a.allocate_network("n", "n", [IPAMRequest("10.3.0.0/29", gateway="10.3.0.3")])
    got = [a.allocate_task_address(str(i), "n") for i in range(5)]
    assert got == ["10.3.0.1/29", "10.3.0.2/29", "10.3.0.4/29", "10.3.0.5/29", "10.3.0.6/29"]


def test_address_exhaustion_is_clear_and_leaves_state_intact() -> None:
    a = Allocator(["10.0.0.0/8"], 29)
    a.allocate_network("n", "tiny")
    got = [a.allocate_task_address(str(i), "n") for i in range(5)]
    assert got[0] == "10.0.0.2/29"
    assert got[-1] == "10.0.0.6/29"
    with pytest.raises(AllocatorError) as e:
        a.allocate_task_address("late", "n")
    assert str(e.value) == "no available IPv4 addresses on this network's address pools: tiny (n)"
    assert e.value.kind == "exhausted"
    assert a.task_addresses("late") == {}
    a.release_task("2")
    assert a.allocate_task_address("late", "n") == "10.0.0.4/29"


def test_unknown_network_and_network_release_drops_its_addresses() -> None:
    a = Allocator()
    with pytest.raises(AllocatorError, match="no allocation yet") as e:
        a.allocate_vip("s", "missing")
    assert e.value.kind == "not_found"
    a.allocate_network("n", "n")
    a.allocate_network("m", "m")
    a.allocate_task_address("t", "n")
    a.allocate_task_address("t", "m")
    a.release_network("n")
    a.release_network("n")
    assert a.task_addresses("t") == {"m": "10.0.1.2/24"}


def test_mac_is_02_42_plus_ipv4_in_hex() -> None:
    # FINDINGS.md: 10.0.1.8 -> 02:42:0a:00:01:08
    assert mac_address("10.0.1.8") == "02:42:0a:00:01:08"
    assert mac_address("10.0.1.9/24") == "02:42:0a:00:01:09"
    assert mac_address("172.30.255.254") == "02:42:ac:1e:ff:fe"


def test_id_space_lowest_free() -> None:
    s = IdSpace(1, 3)
    assert [s.take(), s.take(), s.take(), s.take()] == [1, 2, 3, None]
    s.release(2)
    assert 2 not in s
    assert len(s) == 2
    assert s.take() == 2
    assert not s.reserve(4)
    assert not s.reserve(1)


# ---- published ports ------------------------------------------------------------------------


def test_published_ports_reserved_conflict_names_holder() -> None:
    a = Allocator()
    got = a.allocate_ports("id1", "whoami", [PortSpec(80, 8080)])
    assert got == (PortSpec(80, 8080, "tcp", "ingress"),)
    with pytest.raises(AllocatorError) as e:
        a.allocate_ports("id2", "badp", [PortSpec(80, 8080)])
    # api-transcripts/bad-publish-dup-cli20.json (the API wraps it in "rpc error: ...")
    assert (
        str(e.value) == "port '8080' is already in use by service 'whoami' (id1) as an ingress port"
    )
    assert e.value.kind == "conflict"
    with pytest.raises(AllocatorError, match=r"port '8080/udp' is already in use"):
        a.allocate_ports("id1", "whoami", [PortSpec(80, 8080)])
        a.allocate_ports("id2", "b", [PortSpec(80, 8080, "udp")])
        a.allocate_ports("id3", "c", [PortSpec(80, 8080, "udp")])
    assert a.port_holder("tcp", 8080) == "id1"
    assert a.port_holder("udp", 8080) == "id2"


def test_same_port_two_protocols_and_sctp() -> None:
    # FINDINGS.md section 3: 8084/tcp and 8084/udp coexist; 8083/sctp accepted.
    a = Allocator()
    got = a.allocate_ports(
        "s",
        "both",
        [PortSpec(80, 8084, "udp"), PortSpec(80, 8084, "tcp"), PortSpec(80, 8083, "sctp")],
    )
    assert [(p.published_port, p.protocol) for p in got] == [
        (8084, "udp"),
        (8084, "tcp"),
        (8083, "sctp"),
    ]
    with pytest.raises(AllocatorError, match=r"^EndpointSpec: duplicate published ports provided$"):
        a.allocate_ports("t", "dup", [PortSpec(80, 9000), PortSpec(81, 9000)])


def test_dynamic_ports_in_order_per_protocol_and_stable_across_updates() -> None:
    a = Allocator()
    one = a.allocate_ports("a", "a", [PortSpec(80), PortSpec(53, protocol="udp")])
    assert [p.published_port for p in one] == [30000, 30000]
    two = a.allocate_ports("b", "b", [PortSpec(80), PortSpec(81, 30001)])
    assert [p.published_port for p in two] == [30002, 30001]
    # Update "a": keep port 80's dynamic number, add one more.
    upd = a.allocate_ports("a", "a", [PortSpec(443), PortSpec(80)])
    assert [p.published_port for p in upd] == [30003, 30000]
    assert a.port_holder("udp", 30000) is None  # dropped from the spec, freed
    a.release_service("b")
    assert a.allocate_ports("c", "c", [PortSpec(1)])[0].published_port == 30001


def test_host_mode_ports_are_not_reserved_and_bad_values_refused() -> None:
    a = Allocator()
    host = a.allocate_ports("h", "h", [PortSpec(80, 8081, publish_mode="host")])
    assert host == (PortSpec(80, 8081, "tcp", "host"),)
    assert a.port_holder("tcp", 8081) is None
    assert a.allocate_ports("i", "i", [PortSpec(80, 8081)])[0].published_port == 8081
    # FINDINGS.md: real Docker silently stores protocol "foo" as tcp; we refuse it.
    with pytest.raises(AllocatorError, match="invalid protocol value foo"):
        a.allocate_ports("x", "x", [PortSpec(80, 9000, "foo")])
    with pytest.raises(AllocatorError, match="invalid publish mode"):
        a.allocate_ports("x", "x", [PortSpec(80, 9000, publish_mode="mesh")])
    with pytest.raises(AllocatorError, match="invalid target port 0"):
        a.allocate_ports("x", "x", [PortSpec(0, 9000)])
    with pytest.raises(AllocatorError, match="invalid published port 70000"):
        a.allocate_ports("x", "x", [PortSpec(80, 70000)])
    assert PortSpec(80, 0, "", "").target_port == 80
    assert a.allocate_ports("y", "y", [PortSpec(80, 9000, "UDP", "")])[0].protocol == "udp"


def test_dynamic_port_exhaustion_rolls_back() -> None:
    a = Allocator()
    a.allocate_ports(
        "big", "big", [PortSpec(80 + i % 1000, 0, "sctp", name=str(i)) for i in range(2767)]
    )
    before = a.state()
    with pytest.raises(AllocatorError, match="no free published port left") as e:
        a.allocate_ports(
            "big", "big", [PortSpec(1, 9999, "sctp")] + [PortSpec(2, 0, "sctp")] * 2769
        )
    assert e.value.kind == "exhausted"
    assert a.state() == before
    assert a.allocate_ports("last", "l", [PortSpec(1, 0, "sctp")])[0].published_port == 32767


# ---- restore --------------------------------------------------------------------------------


def _network(nid: str, name: str, alloc_vni: int, pools: tuple[Pool, ...]) -> Network:
    n = Network(id=nid, vni=alloc_vni)
    n.spec.annotations.name = name
    for p in pools:
        n.ipam.add(subnet=p.subnet, gateway=p.gateway, range=p.ip_range)
    return n


def test_restore_rebuilds_and_continues_without_duplicates() -> None:
    a = Allocator()
    ing = a.allocate_network("ing", "ingress")
    lab = a.allocate_network("lab", "labnet")
    nets = [
        _network("ing", "ingress", ing.vni, ing.pools),
        _network("lab", "labnet", lab.vni, lab.pools),
    ]
    nets.append(Network(id="pending"))  # created, not allocated yet: skipped
    svc = Service(id="s1")
    svc.spec.annotations.name = "whoami"
    svc.endpoint.virtual_ips["ing"] = a.allocate_vip("s1", "ing")
    svc.endpoint.virtual_ips["lab"] = a.allocate_vip("s1", "lab")
    for p in a.allocate_ports("s1", "whoami", [PortSpec(80, 8080), PortSpec(81)]):
        svc.endpoint.ports.add(
            target_port=p.target_port,
            published_port=p.published_port,
            protocol=p.protocol,
            publish_mode=p.publish_mode,
        )
    tasks = []
    for i in range(3):
        t = Task(id=f"t{i}", service_id="s1")
        t.status.state = "running"
        t.networks.add(network_id="lab", addresses=[a.allocate_task_address(t.id, "lab")])
        tasks.append(t)
    tasks[1].status.state = "shutdown"
    a.release_task("t1")
    node_lb = a.allocate_attachment("node-1", "lab")

    b = Allocator()
    assert b.restore(nets, [svc], tasks, [("node-1", "lab", node_lb)]) == []
    assert b.state() == a.state()
    assert b.allocate_network("n3", "n3") == a.allocate_network("n3", "n3")
    # The serial cursor lives in memory, as swarmkit's: a new leader's allocator starts from
    # the subnet's start, and so hands out t1's freed address first (held by no one).
    assert a.allocate_task_address("t9", "lab") == "10.0.1.7/24"
    assert b.allocate_task_address("t9", "lab") == "10.0.1.4/24"
    assert tasks[1].networks[0].addresses[0] == "10.0.1.4/24"
    with pytest.raises(AllocatorError, match="in use by service 'whoami' \\(s1\\)"):
        b.allocate_ports("s2", "x", [PortSpec(80, 8080)])
    assert b.allocate_ports("s2", "x", [PortSpec(80)])[0].published_port == 30001
    # Restore replaces whatever the allocator held before.
    assert b.restore([], [], []) == []
    assert b.state() == Allocator().state()


def test_restore_reports_double_claims_and_keeps_the_first() -> None:
    pools = (Pool("10.0.1.0/24", "10.0.1.1"),)
    nets = [_network("a", "a", 4097, pools), _network("b", "b", 4097, pools)]
    nets.append(_network("c", "c", 4200, (Pool("bogus", ""),)))
    s1 = Service(
        id="s1", endpoint=Endpoint(ports=[PortConfig(target_port=80, published_port=8080)])
    )
    s2 = Service(
        id="s2", endpoint=Endpoint(ports=[PortConfig(target_port=80, published_port=8080)])
    )
    s2.endpoint.ports.add(target_port=1, published_port=1, protocol="foo")
    s2.endpoint.virtual_ips["a"] = "10.0.1.5/24"
    t1 = Task(id="t1")
    t1.networks.add(network_id="a", addresses=["10.0.1.5/24", "10.0.1.6/24"])
    t1.networks.add(network_id="gone", addresses=["10.0.9.5/24"])
    t1.networks.add(
        network_id="b", addresses=["nonsense", "10.0.1.1/24", "10.0.1.8/24", "10.0.1.9/24"]
    )
    a = Allocator()
    problems = a.restore(nets, [s1, s2], [t1])
    text = "\n".join(problems)
    for fragment in [
        "subnet 10.0.1.0/24 overlaps 10.0.1.0/24 of network a",
        "VNI 4097 is also used by network a",
        "unreadable pool 'bogus'",
        "port '8080/tcp' is already in use by service '' (s1)",
        "unknown protocol 'foo'",
        "task t1: address 10.0.1.5/24 on network a is held by vip s2",
        "address 10.0.9.5/24 on network gone, which has no allocation",
        "unreadable address 'nonsense'",
        "address 10.0.1.1/24 is not allocatable on network b",
        "a second address 10.0.1.9/24 on network b (kept 10.0.1.8)",
    ]:
        assert fragment in text
    a.release_network("a")
    assert a.allocate_network("d", "d").vni == 4096
    assert a.network("b").vni == 4097  # type: ignore[union-attr]
    assert a.allocate_network("e", "e").vni == 4098  # 4097 still used by b


# ---- property: random operations, restores at random points, never a duplicate ----------------


class _Store:
    """What the leader loop would write into the store: objects carrying the allocations."""

    def __init__(self) -> None:
        self.networks: dict[str, Network] = {}
        self.services: dict[str, Service] = {}
        self.tasks: dict[str, Task] = {}

    def check(self) -> None:
        vnis = [n.vni for n in self.networks.values()]
        assert len(vnis) == len(set(vnis))
        subnets = [IPv4Network(p.subnet) for n in self.networks.values() for p in n.ipam]
        for i, s in enumerate(subnets):
            assert not any(s.overlaps(o) for o in subnets[:i])
        addresses: list[tuple[str, str]] = []
        ports: list[tuple[str, int]] = []
        for svc in self.services.values():
            addresses += [(nid, c.split("/")[0]) for nid, c in svc.endpoint.virtual_ips.items()]
            ports += [(p.protocol, p.published_port) for p in svc.endpoint.ports]
        for t in self.tasks.values():
            if t.status.state == "running":
                addresses += [
                    (att.network_id, c.split("/")[0]) for att in t.networks for c in att.addresses
                ]
        assert len(addresses) == len(set(addresses))
        assert len(ports) == len(set(ports))
        spaces = {
            nid: [(IPv4Network(p.subnet), p.gateway) for p in n.ipam]
            for nid, n in self.networks.items()
        }
        for nid, ip in addresses:
            addr = IPv4Address(ip)
            assert any(addr in subnet and ip != gw for subnet, gw in spaces[nid])


def _step(rng: random.Random, a: Allocator, st: _Store, counter: list[int]) -> None:
    counter[0] += 1
    uid = str(counter[0])
    op = rng.choice(["net", "net", "rmnet", "svc", "svc", "upd", "rmsvc", "task", "task", "stop"])
    try:
        if op == "net":
            reqs = []
            if rng.random() < 0.3:
                reqs = [
                    IPAMRequest(
                        f"10.{rng.randrange(4)}.{rng.randrange(4)}.0/{rng.choice([24, 26])}"
                    )
                ]
            alloc = a.allocate_network(uid, f"net{uid}", reqs)
            st.networks[uid] = _network(uid, f"net{uid}", alloc.vni, alloc.pools)
        elif op == "rmnet" and st.networks:
            nid = rng.choice(sorted(st.networks))
            used = any(nid in s.endpoint.virtual_ips for s in st.services.values()) or any(
                att.network_id == nid
                for t in st.tasks.values()
                if t.status.state == "running"
                for att in t.networks
            )
            if not used:
                a.release_network(nid)
                del st.networks[nid]
        elif op in ("svc", "upd"):
            sid = rng.choice(sorted(st.services)) if op == "upd" and st.services else uid
            specs = [
                PortSpec(
                    rng.randrange(1, 3),
                    rng.choice([0, 0, 8080, 8081, 30001]),
                    rng.choice(["tcp", "udp"]),
                )
                for _ in range(rng.randrange(4))
            ]
            nets = rng.sample(sorted(st.networks), min(len(st.networks), rng.randrange(3)))
            got = a.allocate_ports(sid, f"svc{sid}", specs)
            svc = st.services.get(sid) or Service(id=sid)
            svc.spec.annotations.name = f"svc{sid}"
            del svc.endpoint.ports[:]
            for p in got:
                svc.endpoint.ports.add(
                    target_port=p.target_port,
                    published_port=p.published_port,
                    protocol=p.protocol,
                    publish_mode=p.publish_mode,
                )
            st.services[sid] = svc
            for nid in nets:
                svc.endpoint.virtual_ips[nid] = a.allocate_vip(sid, nid)
        elif op == "rmsvc" and st.services:
            sid = rng.choice(sorted(st.services))
            a.release_service(sid)
            del st.services[sid]
        elif op == "task" and st.networks:
            t = Task(id=uid)
            t.status.state = "running"
            st.tasks[uid] = t
            for nid in rng.sample(sorted(st.networks), min(len(st.networks), 2)):
                t.networks.add(network_id=nid, addresses=[a.allocate_task_address(uid, nid)])
        elif op == "stop" and st.tasks:
            tid = rng.choice(sorted(st.tasks))
            if rng.random() < 0.5:
                st.tasks[tid].status.state = "shutdown"  # stays in the store, addresses freed
            else:
                del st.tasks[tid]
            a.release_task(tid)
    except AllocatorError as e:
        assert e.kind in ("conflict", "exhausted", "invalid"), str(e)


@pytest.mark.parametrize("seed", range(40))
def test_property_random_operations_and_restores_never_duplicate(seed: int) -> None:
    rng = random.Random(seed)
    # A small pool so subnets, addresses and reuse are exercised hard.
    pools, size = ["10.0.0.0/22"], 27
    a = Allocator(pools, size)
    st = _Store()
    counter = [0]
    for _ in range(300):
        _step(rng, a, st, counter)
        st.check()
        if rng.random() < 0.08:
            b = Allocator(pools, size)
            assert b.restore(st.networks.values(), st.services.values(), st.tasks.values()) == []
            assert b.state() == a.state()
            a = b
