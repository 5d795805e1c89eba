"""The kernel data path on real devices: two nodes (namespaces on a bridged underlay,
10.201.<lab>.0/24), each with a `KernelBackend`, containers running Debian's busybox in the
namespaces the backend makes. Skipped where there is no root or no network namespaces."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from kernel_testing import Underlay, backends, run, scenario, skip_unless_kernel, underlay, until

from controlplane.datapath.dns import Resolver
from controlplane.datapath.kernel import KernelBackend, KernelError, namespaces
from controlplane.datapath.kernel import containers as kcontainers
from controlplane.datapath.kernel.xfrm import esp_support
from controlplane.datapath.names import NameRecord, NameTable
from controlplane.datapath.program import (
    DataPathKey,
    Endpoint,
    NetworkView,
    NodeView,
    Program,
    compute,
)
from controlplane.datapath.userspace import DataPathError

pytestmark = pytest.mark.timeout(120)
PLAIN = NetworkView("plainnetwork0000", "plainnet", 4099, "10.0.3.0/24", "10.0.3.1")
SECRET = NetworkView("labnetwork000000", "labnet", 4097, "10.0.1.0/24", "10.0.1.1", True)
WEB = Endpoint(PLAIN.network_id, "ep-web", "web", "10.0.3.2", "node-1")
CLIENT = Endpoint(PLAIN.network_id, "ep-client", "client", "10.0.3.3", "node-2")


@pytest.fixture(autouse=True)
def _kernel() -> None:
    skip_unless_kernel()
    kcontainers.busybox()  # fails with how to install it


def views(ul: Underlay) -> tuple[NodeView, NodeView]:
    return NodeView("node-1", ul.hosts[0].address), NodeView("node-2", ul.hosts[1].address)


def programs(
    ul: Underlay, networks: list[NetworkView], endpoints: list[Endpoint]
) -> tuple[Program, Program]:
    one, two = views(ul)
    keys = [DataPathKey(1, bytes(range(16)))]
    return (
        compute(one, [two], networks, endpoints, keys),
        compute(two, [one], networks, endpoints, keys),
    )


class UnderlayCapture:
    """tshark on the underlay bridge while the block runs (skipped when tshark is missing)."""

    def __init__(self, ul: Underlay, pcap: Path) -> None:
        self.ul, self.pcap = ul, pcap
        self.process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> UnderlayCapture:
        if shutil.which("tshark") is None:
            return self
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ul.netns,
                "tshark",
                "-i",
                "ul0",
                "-f",
                "udp port 4789",
                "-w",
                str(self.pcap),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.process.stderr is not None
        ready = await asyncio.to_thread(self._wait_ready, self.process.stderr)
        assert ready, "tshark did not start capturing on the underlay"
        return self

    @staticmethod
    def _wait_ready(stream: object) -> bool:
        while line := stream.readline():  # type: ignore[attr-defined]
            if b"Capturing on" in line:
                return True
        return False

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            await asyncio.to_thread(self.process.wait, 30)

    def vnis(self) -> list[tuple[str, str]]:
        """(protocols, VNI) of every frame captured."""
        if self.process is None:
            pytest.skip("the kernel data path works; tshark is not installed for the wire check")
        done = subprocess.run(
            [
                "tshark",
                "-r",
                str(self.pcap),
                "-T",
                "fields",
                "-e",
                "frame.protocols",
                "-e",
                "vxlan.vni",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [tuple(line.split("\t")) for line in done.stdout.splitlines()]  # type: ignore[misc]


def test_two_nodes_ping_wget_and_names_over_kernel_vxlan(tmp_path: Path) -> None:
    async def body() -> None:
        with underlay(2, 31) as ul:
            one, two = programs(ul, [PLAIN], [WEB, CLIENT])
            async with backends(ul) as (a, b), UnderlayCapture(ul, tmp_path / "u.pcap") as cap:
                assert a.apply(one) and b.apply(two)
                assert a.apply(one) == [] and b.apply(two) == []  # idempotent
                web = a.container_netns(PLAIN.network_id, "web")
                client = b.container_netns(PLAIN.network_id, "client")

                shown = run(a.network_netns(PLAIN.network_id), "ip", "-d", "link", "show").stdout
                assert "vxlan id 4099 local 10.201.31.1" in shown
                assert "dstport 4789 nolearning proxy" in shown
                assert "mtu 1450 qdisc noqueue master br0" in shown
                fdb = run(
                    a.network_netns(PLAIN.network_id), "bridge", "fdb", "show", "dev", "vxlan0"
                ).stdout
                assert "02:42:0a:00:03:03 dst 10.201.31.2 link-netnsid 0 self permanent" in fdb
                neigh = run(a.network_netns(PLAIN.network_id), "ip", "neigh").stdout
                assert "10.0.3.3 dev vxlan0 lladdr 02:42:0a:00:03:03 PERMANENT" in neigh
                eth0 = run(client, "ip", "addr", "show", "eth0").stdout
                assert "link/ether 02:42:0a:00:03:03" in eth0 and "inet 10.0.3.3/24" in eth0

                resolver = Resolver(upstreams=[])
                resolver.replace(NameTable.build([NameRecord(WEB), NameRecord(CLIENT)]))
                dns = kcontainers.ContainerDns(resolver, client, [PLAIN.network_id])
                await dns.start()
                www = tmp_path / "www"
                www.mkdir()
                (www / "index.html").write_text("hello from web on node-1\n")
                httpd = await kcontainers.start(web, ["httpd", "-f", "-p", "80", "-h", str(www)])
                try:
                    pinged = await kcontainers.run(client, ["ping", "-c", "2", "-W", "3", "web"])
                    assert pinged.status == 0, pinged
                    assert "2 packets received" in pinged.stdout
                    back = await kcontainers.run(web, ["ping", "-c", "1", "-W", "3", "10.0.3.3"])
                    assert back.status == 0, back
                    looked = await kcontainers.run(client, ["nslookup", "web"])
                    assert "Address: 10.0.3.2" in looked.stdout, looked

                    async def served() -> bool:
                        got = await kcontainers.run(
                            client, ["timeout", "5", "wget", "-qO-", "http://web/"]
                        )
                        return got.stdout == "hello from web on node-1\n"

                    await until(served, "wget http://web/ from node-2")
                finally:
                    httpd.kill()
                    await httpd.wait()
                    await dns.close()
                counters = a.counters()[PLAIN.network_id]
                assert counters.frames_in > 0 and counters.frames_out > 0
            rows = cap.vnis()
            assert rows, "no VXLAN frame seen on the underlay"
            assert {vni for _, vni in rows} == {"4099"}
            assert all(":udp:vxlan:eth:ethertype:ip" in protocols for protocols, _ in rows)
            leftovers = [n for n in namespaces.listed() if n.startswith(f"{ul.tag}-0-")]
            assert leftovers == []  # close() removed everything it made

    scenario(body)


def test_encrypted_network_refused_naming_missing_kernel_support() -> None:
    reason = esp_support("swkprobe-esp")
    if not reason:
        pytest.skip("this kernel has ESP and GCM: encrypted overlays are carried, not refused")

    async def body() -> None:
        with underlay(2, 32) as ul:
            secret_web = Endpoint(SECRET.network_id, "ep-sweb", "sweb", "10.0.1.2", "node-1")
            secret_client = Endpoint(SECRET.network_id, "ep-scl", "scl", "10.0.1.3", "node-2")
            one, _ = programs(ul, [PLAIN, SECRET], [WEB, CLIENT, secret_web, secret_client])
            assert one.sas and one.policies  # the program asks for ESP with node-2
            async with backends(ul) as (a, _b):
                assert a.apply(one)
                refused = a.refusal(SECRET.network_id)
                assert "encrypted network 'labnet'" in refused
                assert "CONFIG_INET_ESP" in refused and "--datapath userspace" in refused
                with pytest.raises(DataPathError, match="--datapath userspace"):
                    a.container_netns(SECRET.network_id, "sweb")
                assert a.container_netns(PLAIN.network_id, "web")  # the plain one is carried
                xfrm = run(ul.hosts[0].netns, "ip", "xfrm", "state").stdout
                assert xfrm == ""  # nothing half-made

    scenario(body)


def test_esp_probe_reports_the_kernels_words() -> None:
    reason = esp_support("swkprobe-words")
    crypto = Path("/proc/crypto").read_text()
    if "gcm" in crypto and not reason:
        return  # ESP with GCM is there, and the probe accepted the state
    assert "rfc4106(gcm(aes))" in reason
    assert "Requested AEAD algorithm not found" in reason or "not implemented" in reason
    assert "swkprobe-words" not in namespaces.listed()


def test_endpoint_and_segment_changes_are_incremental() -> None:
    async def body() -> None:
        with underlay(2, 33) as ul:
            one, _ = programs(ul, [PLAIN], [WEB, CLIENT])
            async with backends(ul) as (a, _b):
                a.apply(one)
                second = Endpoint(PLAIN.network_id, "ep-web2", "web2", "10.0.3.4", "node-1")
                more, _ = programs(ul, [PLAIN], [WEB, second, CLIENT])
                changes = a.apply(more)
                assert [(c.op, c.what) for c in changes] == [("add", "endpoint")]
                web2 = a.container_netns(PLAIN.network_id, "web2")
                pinged = await kcontainers.run(web2, ["ping", "-c", "1", "-W", "3", "10.0.3.2"])
                assert pinged.status == 0, pinged  # bridged locally on br0
                a.apply(one)
                assert web2 not in namespaces.listed()
                gone, _ = programs(ul, [PLAIN], [WEB])
                assert [(c.op, c.what) for c in a.apply(gone)] == [("del", "neigh"), ("del", "fdb")]
                fdb = run(
                    a.network_netns(PLAIN.network_id), "bridge", "fdb", "show", "dev", "vxlan0"
                ).stdout
                assert "dst" not in fdb
                # The network leaves this node and comes straight back (a `docker run --rm`
                # after another): its VNI is free again at once.
                for _ in range(3):
                    a.apply(programs(ul, [PLAIN], [CLIENT])[0])
                    assert a.apply(one)
                    assert a.container_netns(PLAIN.network_id, "web")

    scenario(body)


def test_start_refuses_an_address_the_node_does_not_own() -> None:
    async def body() -> None:
        with underlay(1, 34) as ul:
            backend = KernelBackend("10.201.34.77", node_netns=ul.hosts[0].netns, prefix="swkbad-")
            with pytest.raises(DataPathError, match=r"10\.201\.34\.77 is not on any interface"):
                await backend.start()
            missing = KernelBackend("10.201.34.1", node_netns=f"{ul.tag}-nope", prefix="swkbad-")
            with pytest.raises(DataPathError, match="does not exist"):
                await missing.start()

    scenario(body)


def test_only_busybox_applets_run_in_kernel_containers() -> None:
    kcontainers.check_command(["/bin/sh", "-c", "ping -c 1 web"])
    kcontainers.check_command(["wget", "-qO-", "http://web"])
    with pytest.raises(KernelError, match=r'exec: "nginx": .*--datapath userspace'):
        kcontainers.check_command(["nginx", "-g", "daemon off;"])
