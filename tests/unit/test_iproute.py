"""busybox's `ip addr`, `ifconfig` and `hostname -i` in an emulated container: loopback plus
one ethN per network stack, with the endpoint's MAC, address and MTU; bad uses refused with a
message."""

from __future__ import annotations

import asyncio

from controlplane.agent.ifconfig import ifconfig
from controlplane.agent.iproute import ip
from controlplane.agent.network import ContainerNetwork
from controlplane.agent.process import Exec, Program
from controlplane.agent.programs import PROGRAMS
from controlplane.datapath.userspace import IPv4Stack


def run_ip(*args: str) -> tuple[int, list[str], list[str]]:
    async def main() -> tuple[int, list[str], list[str]]:
        out = bytearray()
        err = bytearray()
        stacks = (
            IPv4Stack("c.net1", "10.0.1.3", "02:42:0a:00:01:03", 24, 1450, lambda frame: None),
            IPv4Stack("c.net2", "10.0.2.7", "02:42:0a:00:02:07", 24, 1424, lambda frame: None),
        )
        process = Exec(
            env={},
            hostname="box",
            files={},
            stdout=out.extend,
            stderr=err.extend,
            spawn=lambda p, a: asyncio.sleep(0, result=0),
            net=ContainerNetwork(("net1", "net2"), stacks),
        )
        status = await ip(process, ["ip", *args])
        return status, out.decode().splitlines(), err.decode().splitlines()

    return asyncio.run(main())


def test_ip_addr_lists_loopback_and_one_interface_per_network() -> None:
    status, out, err = run_ip("addr")
    assert (status, err) == (0, [])
    assert out[0] == "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue qlen 1000"
    assert out[4:8] == [
        "2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP,M-DOWN> mtu 1450 qdisc noqueue ",
        "    link/ether 02:42:0a:00:01:03 brd ff:ff:ff:ff:ff:ff",
        "    inet 10.0.1.3/24 brd 10.0.1.255 scope global eth0",
        "       valid_lft forever preferred_lft forever",
    ]
    assert "mtu 1424" in out[8] and out[8].startswith("4: eth1@if5:")


def test_ip_addr_show_one_device_and_bad_uses() -> None:
    status, out, _ = run_ip("-4", "a", "show", "dev", "eth1")
    # busybox's `-4`: no link line, the IPv4 address alone
    assert status == 0 and len(out) == 3 and "inet 10.0.2.7/24" in out[1]
    assert run_ip("addr", "show", "eth9")[0::2] == (1, ["ip: can't find device 'eth9'"])
    assert run_ip("route")[0::2] == (
        1,
        ["ip: the emulated ip shows addresses only (`ip addr`), not 'route'"],
    )
    assert run_ip("addr", "add", "10.0.0.1/24")[0::2] == (
        1,
        ["ip: the emulated ip cannot 'add' addresses; only show them"],
    )
    assert run_ip()[0] == 1


def run_program(program: Program, *argv: str, stacks: bool = True) -> tuple[int, list[str]]:
    async def main() -> tuple[int, list[str]]:
        out = bytearray()
        net = ContainerNetwork()
        if stacks:
            stack = IPv4Stack("c.net1", "10.0.1.3", "02:42:0a:00:01:03", 24, 1450, lambda f: None)
            stack.counters.rx_bytes, stack.counters.rx_packets = 1166, 13
            net = ContainerNetwork(("net1",), (stack,))
        process = Exec(
            env={},
            hostname="box",
            files={},
            stdout=out.extend,
            stderr=out.extend,
            spawn=lambda p, a: asyncio.sleep(0, result=0),
            net=net,
        )
        status = await program(process, list(argv))
        return status, out.decode().split("\n")[:-1]

    return asyncio.run(main())


def test_ifconfig_in_busyboxs_layout_sorted_by_name() -> None:
    status, out = run_program(ifconfig, "ifconfig")
    assert status == 0
    assert out == [  # busybox 1.36's, as in a container on a dockerd bridge
        "eth0      Link encap:Ethernet  HWaddr 02:42:0A:00:01:03  ",
        "          inet addr:10.0.1.3  Bcast:10.0.1.255  Mask:255.255.255.0",
        "          UP BROADCAST RUNNING MULTICAST  MTU:1450  Metric:1",
        "          RX packets:13 errors:0 dropped:0 overruns:0 frame:0",
        "          TX packets:0 errors:0 dropped:0 overruns:0 carrier:0",
        "          collisions:0 txqueuelen:0 ",
        "          RX bytes:1166 (1.1 KiB)  TX bytes:0 (0.0 B)",
        "",
        "lo        Link encap:Local Loopback  ",
        "          inet addr:127.0.0.1  Mask:255.0.0.0",
        "          UP LOOPBACK RUNNING  MTU:65536  Metric:1",
        "          RX packets:0 errors:0 dropped:0 overruns:0 frame:0",
        "          TX packets:0 errors:0 dropped:0 overruns:0 carrier:0",
        "          collisions:0 txqueuelen:1000 ",
        "          RX bytes:0 (0.0 B)  TX bytes:0 (0.0 B)",
        "",
    ]
    assert run_program(ifconfig, "ifconfig", "lo")[1][0].startswith("lo ")
    assert run_program(ifconfig, "ifconfig", "eth5") == (
        1,
        ["ifconfig: eth5: error fetching interface information: Device not found"],
    )
    assert run_program(ifconfig, "ifconfig", "eth0", "up") == (
        1,
        ["ifconfig: the emulated ifconfig shows interfaces only; it cannot set up"],
    )


def test_hostname_i_prints_the_containers_address_or_fails_as_busybox() -> None:
    assert run_program(PROGRAMS["hostname"], "hostname", "-i") == (0, ["10.0.1.3"])
    assert run_program(PROGRAMS["hostname"], "hostname") == (0, ["box"])
    assert run_program(PROGRAMS["hostname"], "hostname", "-i", stacks=False) == (
        1,
        ["hostname: box: Host name lookup failure"],  # `--network none`, as dockerd's
    )
