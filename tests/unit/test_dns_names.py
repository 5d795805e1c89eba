"""datapath/names.py and datapath/resolvconf.py: which names resolve to what, for whom."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.datapath.names import (
    NameRecord,
    NamesError,
    NameTable,
    ServiceRef,
    name_record,
    reverse_name_to_ip,
)
from controlplane.datapath.program import Endpoint
from controlplane.datapath.resolvconf import (
    ResolvConf,
    container_resolv_conf,
    host_resolv_conf,
    host_upstreams,
    parse,
    upstreams,
)
from controlplane.pb.datapath_pb2 import EndpointRecord

NET_A, NET_B = "neta0000", "netb0000"
NAMES = {NET_A: "my-net", NET_B: "back-net"}
WEB = NameRecord(Endpoint(NET_A, "e-web", "web", "10.0.1.2", "w1", aliases=("www", "Front")))
DB = NameRecord(Endpoint(NET_B, "e-db", "db", "10.0.2.2", "w1"))
VIP = ServiceRef("api", vip="10.0.1.10", aliases=("backend",))
API_1 = NameRecord(Endpoint(NET_A, "e-api1", "api.1.t1", "10.0.1.11", "w1"), VIP)
API_2 = NameRecord(Endpoint(NET_A, "e-api2", "api.2.t2", "10.0.1.12", "w2"), VIP)
RR = ServiceRef("rr")
RR_1 = NameRecord(Endpoint(NET_A, "e-rr1", "rr.1.t3", "10.0.1.21", "w1"), RR)
RR_2 = NameRecord(Endpoint(NET_A, "e-rr2", "rr.2.t4", "10.0.1.22", "w2"), RR)
TABLE = NameTable.build([WEB, DB, API_1, API_2, RR_1, RR_2], NAMES)


def test_container_names_and_aliases_resolve_to_the_container() -> None:
    for name in ("web", "www", "front", "web."):
        assert TABLE.lookup(name, [NET_A]) == ("10.0.1.2",)


def test_names_are_case_insensitive() -> None:
    assert TABLE.lookup("WEB", [NET_A]) == ("10.0.1.2",)
    assert TABLE.lookup("Tasks.API", [NET_A]) == ("10.0.1.11", "10.0.1.12")


def test_only_shared_networks_answer() -> None:
    assert TABLE.lookup("db", [NET_A]) is None
    assert TABLE.lookup("web", [NET_B]) is None
    assert TABLE.lookup("db", [NET_A, NET_B]) == ("10.0.2.2",)
    assert TABLE.lookup("web", []) is None


def test_the_askers_first_network_answers_for_a_name_on_several() -> None:
    on_a = NameRecord(Endpoint(NET_A, "e-x1", "both", "10.0.1.50", "w1"))
    on_b = NameRecord(Endpoint(NET_B, "e-x2", "both", "10.0.2.50", "w1"))
    table = NameTable.build([on_a, on_b])
    assert table.lookup("both", [NET_B, NET_A]) == ("10.0.2.50",)
    assert table.lookup("both", [NET_A, NET_B]) == ("10.0.1.50",)


def test_a_vip_service_resolves_to_its_vip_and_tasks_to_every_task() -> None:
    assert TABLE.lookup("api", [NET_A]) == ("10.0.1.10",)
    assert TABLE.lookup("backend", [NET_A]) == ("10.0.1.10",)
    assert TABLE.lookup("tasks.api", [NET_A]) == ("10.0.1.11", "10.0.1.12")
    assert TABLE.lookup("tasks.backend", [NET_A]) == ("10.0.1.11", "10.0.1.12")


def test_a_dnsrr_service_resolves_to_every_task() -> None:
    assert TABLE.lookup("rr", [NET_A]) == ("10.0.1.21", "10.0.1.22")
    assert TABLE.lookup("tasks.rr", [NET_A]) == ("10.0.1.21", "10.0.1.22")


def test_a_task_resolves_by_its_name() -> None:
    assert TABLE.lookup("api.2.t2", [NET_A]) == ("10.0.1.12",)


def test_name_dot_network_resolves_on_that_network_only() -> None:
    assert TABLE.lookup("web.my-net", [NET_A]) == ("10.0.1.2",)
    assert TABLE.lookup("api.1.t1.MY-NET.", [NET_A]) == ("10.0.1.11",)
    assert TABLE.lookup("web.back-net", [NET_A, NET_B]) is None  # web is not on back-net
    assert TABLE.lookup("db.back-net", [NET_A]) is None  # the asker is not on back-net


def test_unknown_names_are_not_ours() -> None:
    assert TABLE.lookup("example.org", [NET_A, NET_B]) is None
    assert TABLE.lookup("tasks.web", [NET_A]) is None  # a container is no service


def test_reverse_gives_name_dot_network_for_containers_only() -> None:
    assert TABLE.reverse("10.0.1.2", [NET_A]) == "web.my-net"
    assert TABLE.reverse("10.0.1.12", [NET_A]) == "api.2.t2.my-net"
    assert TABLE.reverse("10.0.1.10", [NET_A]) is None  # a VIP has no PTR, as in Docker
    assert TABLE.reverse("10.0.2.2", [NET_A]) is None  # not shared
    assert NameTable.build([DB]).reverse("10.0.2.2", [NET_B]) == "db"  # network name unknown


def test_reverse_names() -> None:
    assert reverse_name_to_ip("2.1.0.10.in-addr.arpa.") == "10.0.1.2"
    assert reverse_name_to_ip("2.1.0.10.IN-ADDR.ARPA") == "10.0.1.2"
    assert reverse_name_to_ip("1.0.10.in-addr.arpa") is None
    assert reverse_name_to_ip("300.1.0.10.in-addr.arpa") is None
    assert reverse_name_to_ip("web.my-net") is None


def test_bad_records_are_refused_with_what_to_fix() -> None:
    with pytest.raises(NamesError, match=r"endpoint 'e1' has address '10.0.1.2/24'"):
        NameTable.build([NameRecord(Endpoint(NET_A, "e1", "x", "10.0.1.2/24", "w1"))])
    with pytest.raises(NamesError, match=r"service 'api' has address 'nope'"):
        bad = ServiceRef("api", vip="nope")
        NameTable.build([NameRecord(Endpoint(NET_A, "e1", "x", "10.0.1.2", "w1"), bad)])
    with pytest.raises(NamesError, match=r"endpoint 'e1' has an empty name"):
        NameTable.build([NameRecord(Endpoint(NET_A, "e1", "x", "10.0.1.2", "w1", ("",)))])


def test_resolv_conf_is_parsed_as_the_c_resolver_does() -> None:
    conf = parse(
        "# generated\nnameserver 10.9.0.1\nnameserver not-an-ip\n"
        "nameserver 127.0.0.11 ; the embedded one\ndomain old.example\n"
        "search corp.example lab.example\noptions edns0\n"
    )
    assert conf == ResolvConf(("10.9.0.1", "127.0.0.11"), ("corp.example", "lab.example"))


def test_upstreams_never_include_the_resolver_itself() -> None:
    conf = ResolvConf(("10.9.0.1", "127.0.0.11", "127.77.245.1", "127.0.0.53"))
    assert upstreams(conf, own=["127.77.245.1"]) == [("10.9.0.1", 53), ("127.0.0.53", 53)]


def test_host_upstreams_read_the_file_and_none_without_it(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 10.9.0.1\nnameserver 127.0.0.11\n")
    assert host_upstreams(path=path) == [("10.9.0.1", 53)]
    assert host_upstreams(path=tmp_path / "missing") == []


def test_a_container_gets_dockers_resolv_conf() -> None:
    assert container_resolv_conf(ResolvConf(("10.9.0.1",), ("corp.example",))) == (
        "nameserver 127.0.0.11\nsearch corp.example\noptions ndots:0\n"
    )
    assert container_resolv_conf(ResolvConf()) == "nameserver 127.0.0.11\noptions ndots:0\n"


def test_the_hosts_resolv_conf_is_read_and_an_unreadable_one_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("search corp.example\nnameserver 10.9.0.1\n")
    assert host_resolv_conf(path) == ResolvConf(("10.9.0.1",), ("corp.example",))
    path.write_bytes(b"nameserver \xff\xfe")
    assert host_resolv_conf(path) == ResolvConf()
    assert host_resolv_conf(tmp_path / "missing") == ResolvConf()


def test_networkdb_records_become_name_records() -> None:
    task = EndpointRecord(
        name="api.1.t1",
        ip="10.0.1.11",
        node_id="w1",
        aliases=["backend"],
        service_name="api",
        service_id="s1",
        vip="10.0.1.10",
        task_id="t1",
    )
    assert name_record(NET_A, "t1.neta", task) == NameRecord(
        Endpoint(NET_A, "t1.neta", "api.1.t1", "10.0.1.11", "w1"),
        ServiceRef("api", "10.0.1.10", ("backend",)),
    )
    dnsrr = EndpointRecord(name="rr.1.t3", ip="10.0.1.21", node_id="w1", service_name="rr")
    assert name_record(NET_A, "k", dnsrr).service == ServiceRef("rr", None)
    box = EndpointRecord(name="box", ip="10.0.1.2", node_id="w1", aliases=["pal"])
    assert name_record(NET_A, "k", box) == NameRecord(
        Endpoint(NET_A, "k", "box", "10.0.1.2", "w1", ("pal",))
    )
    table = NameTable.build([name_record(NET_A, "t1.neta", task)])
    assert table.lookup("backend", [NET_A]) == ("10.0.1.10",)
    assert table.lookup("tasks.backend", [NET_A]) == ("10.0.1.11",)
