"""The kernel backend: carries out a node's data path `Program` with real Linux devices, as
Docker's overlay driver does (see FINDINGS for what a real swarm shows).

Per network the node takes part in, a namespace `<prefix>1-<network id[:10]>` (Docker's
`1-<id>` sandbox) holds:
- `br0`, a bridge with the network's gateway address, MTU 1450 (1424 encrypted);
- `vxlan0`, enslaved to br0: the network's VNI, `nolearning`, `proxy` (ARP requests answered
  from the neighbour table, nothing flooded), UDP to the data path port, `local` the node's
  VTEP. It is made in the node's namespace (the one holding the VTEP address, so its UDP
  socket lives there: `link-netns` in `ip -d link`) and then moved into the network's;
- static FDB entries (`bridge fdb`: remote MAC -> peer VTEP) and permanent neighbour entries
  (`ip neigh`: remote IP -> MAC) on vxlan0;
- one veth per local endpoint, `vethN` on br0, whose peer is `ethK` in the container's
  namespace `<prefix><endpoint name>` (made on its first endpoint, removed after its last),
  with the endpoint's address, Docker's MAC and the segment's MTU. The container namespace's
  /etc/netns/<name>/resolv.conf says `nameserver 127.0.0.11` (see `containers.py`).

Encrypted networks: where the kernel holds ESP with AES-GCM, xfrm states and policies from the
program (`xfrm.py`); where it does not (this machine), the network is refused on this node
(`refusal(network_id)` says why and what to do) and none of its devices are made.

`apply(program)` diffs the program against the last one applied and carries out only the
changes, so applying the same program twice does nothing; `close()` removes every namespace,
device and xfrm entry it made. Netlink work runs on the backend's own thread (see
`namespaces.NetlinkWorker`); `apply` waits for it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from controlplane.datapath.kernel import namespaces, xfrm
from controlplane.datapath.kernel.namespaces import KernelError, NetlinkWorker
from controlplane.datapath.program import (
    DEFAULT_DATA_PATH_PORT,
    Change,
    FdbEntry,
    LocalEndpoint,
    NeighEntry,
    Policy,
    Program,
    SecurityAssociation,
    Segment,
    diff,
)
from controlplane.datapath.resolvconf import container_resolv_conf, host_resolv_conf
from controlplane.datapath.userspace import DataPathError, SegmentCounters

log = logging.getLogger(__name__)

NUD_PERMANENT = 0x80
NUD_NOARP = 0x40
NTF_SELF = 0x02  # an fdb entry of the VXLAN device itself (with a dst), not of the bridge


@dataclass
class _Segment:
    """What the backend made for one network."""

    netns: str
    name: str
    vni: int
    mtu: int
    gateway: str
    veths: dict[str, str] = field(default_factory=dict)  # endpoint name -> veth in netns
    next_veth: int = 0


def _ipv4_only(netns: str) -> None:
    """No IPv6 in a namespace made here: the overlays are IPv4-only (Docker's default), and
    the link-local chatter would only be dropped at vxlan0 (no fdb for multicast)."""
    with namespaces.entered(netns):
        for scope in ("all", "default"):
            Path(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6").write_text("1")


def _new_container_netns(netns: str) -> None:
    """A container's namespace: its resolv.conf says 127.0.0.11 (the node's resolver serves
    it there), IPv4 only."""
    namespaces.create(netns)
    namespaces.write_etc(netns, "resolv.conf", container_resolv_conf(host_resolv_conf()))
    _ipv4_only(netns)


class KernelBackend:
    """One node's kernel data path; `await start()`, `apply(program)`, `close()`.

    `node_netns` is the namespace holding the VTEP address (None: the current one);
    `prefix` starts every namespace name the backend makes (unique per node on one host)."""

    def __init__(
        self,
        vtep: str,
        port: int = DEFAULT_DATA_PATH_PORT,
        *,
        node_netns: str | None = None,
        prefix: str = "swk-",
        esp_support: Callable[[str], str] = xfrm.esp_support,
    ) -> None:
        self.vtep = vtep
        self.port = port
        self.node_netns = node_netns
        self.prefix = prefix
        self._esp_support = esp_support
        self._esp_reason: str | None = None  # None: not probed yet
        self._worker: NetlinkWorker | None = None
        self._applied: Program | None = None
        self._segments: dict[str, _Segment] = {}
        self._refused: dict[str, str] = {}  # network id -> why
        self._containers: dict[str, set[str]] = {}  # endpoint name -> network ids
        self._bridged: set[str] = set()  # containers on no overlay (`bridge_netns`)
        self._xfrm: list[list[str]] = []  # delete commands of what was added, in order

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Check that this host can run it and that the VTEP address is in the node's
        namespace; DataPathError naming what is missing."""
        missing = namespaces.kernel_datapath_unavailable()
        if missing:
            raise DataPathError(f"{missing}; run the node with `--datapath userspace`")
        if self.node_netns is not None and not namespaces.exists(self.node_netns):
            raise DataPathError(
                f"the node's network namespace {self.node_netns!r} does not exist; create it "
                "(`ip netns add`) with the data path address in it"
            )
        self._worker = NetlinkWorker(f"{self.prefix}netlink")
        addresses = self._worker.call(self._node_addresses)
        if self.vtep not in addresses:
            self._worker.close()
            self._worker = None
            where = f"namespace {self.node_netns!r}" if self.node_netns else "this namespace"
            raise DataPathError(
                f"the data path address {self.vtep} is not on any interface of {where} "
                f"(it has {', '.join(sorted(addresses)) or 'none'}); give the node a "
                "--data-path-addr it owns"
            )
        log.info(
            "event=datapath_started backend=kernel vtep=%s port=%d netns=%s",
            self.vtep,
            self.port,
            self.node_netns or "-",
        )

    def _node_addresses(self) -> set[str]:
        assert self._worker is not None
        return {str(a.get("address")) for a in self._worker.ipr(self.node_netns).addr("dump")}

    def close(self) -> None:
        """Remove every namespace, device and xfrm entry this backend made."""
        if self._worker is None:
            return
        self._worker.call(self._remove_all)
        self._worker.close()
        self._worker = None
        self._applied = None

    def _remove_all(self) -> None:
        for args in reversed(self._xfrm):
            namespaces.run_in(self.node_netns, ["ip", *args], check=False)
        self._xfrm.clear()
        for name in list(self._containers):
            self._drop_container(name)
        for name in list(self._bridged):
            self._drop_bridged(name)
        for seg in self._segments.values():
            self._drop_segment(seg)
        self._segments.clear()
        self._refused.clear()

    # ---- programs -------------------------------------------------------------------------

    def apply(self, program: Program) -> list[Change]:
        """Bring the devices to `program`; returns the changes carried out."""
        if self._worker is None:
            raise DataPathError("the kernel data path is not started: await start() first")
        if (program.node.vtep, program.node.port) != (self.vtep, self.port):
            raise DataPathError(
                f"program for {program.node.vtep}:{program.node.port} applied to the data path "
                f"on {self.vtep}:{self.port}; start a backend on the node's own VTEP"
            )
        changes = diff(self._applied, program)
        self._worker.call(lambda: self._carry_out_all(program, changes))
        self._applied = program
        if changes:
            log.info(
                "event=datapath_applied backend=kernel vtep=%s changes=%d", self.vtep, len(changes)
            )
        return changes

    def _carry_out_all(self, program: Program, changes: list[Change]) -> None:
        replaced: set[str] = set()  # segments deleted, pending a re-add with new attributes
        for change in changes:
            try:
                self._carry_out(program, change, replaced)
            except NetlinkError as err:
                raise KernelError(
                    f"netlink refused {change.op} {change.what} {change.item!r}: {err}"
                ) from err
        for network_id in replaced:
            self._remove_segment(network_id)

    def _carry_out(self, program: Program, change: Change, replaced: set[str]) -> None:
        nid, item, adding = change.network_id, change.item, change.op == "add"
        if change.what == "segment":
            if adding:
                self._add_segment(program.segments[nid], replaced)
            else:
                replaced.add(nid)
            return
        if change.what in ("sa", "policy"):
            self._change_xfrm(item, adding)
            return
        seg = self._segments.get(nid)
        if seg is None:
            return  # a refused network: nothing of it exists here
        if change.what == "endpoint":
            assert isinstance(item, LocalEndpoint)
            if adding:
                self._add_endpoint(nid, seg, item)
            else:
                self._remove_endpoint(nid, seg, item)
        elif change.what == "fdb":
            assert isinstance(item, FdbEntry)
            self._fdb(seg, item, adding)
        elif change.what == "neigh":
            assert isinstance(item, NeighEntry)
            self._entry("neigh", seg, adding, dst=item.ip, lladdr=item.mac, state=NUD_PERMANENT)

    # ---- segments -------------------------------------------------------------------------

    def _netns_of(self, network_id: str) -> str:
        return f"{self.prefix}1-{network_id[:10]}"

    def _ipr(self, name: str | None) -> IPRoute:
        assert self._worker is not None
        return self._worker.ipr(name)

    def _add_segment(self, wanted: Segment, replaced: set[str]) -> None:
        nid = wanted.network_id
        self._refused.pop(nid, None)
        if wanted.encrypted:
            reason = self._esp_reason_now()
            if reason:
                self._refused[nid] = xfrm.refusal(wanted.name, reason)
                log.warning(
                    "event=network_refused backend=kernel network=%s reason=%r", wanted.name, reason
                )
                return  # devices of an earlier, plain version go with its deletion
        seg = self._segments.get(nid)
        if seg is not None and nid in replaced:
            replaced.discard(nid)
            self._update_segment(seg, wanted)
            return
        netns = self._netns_of(nid)
        namespaces.create(netns)
        _ipv4_only(netns)
        seg = _Segment(netns, wanted.name, wanted.vni, wanted.mtu, wanted.gateway)
        self._segments[nid] = seg
        ipr = self._ipr(netns)
        ipr.link("add", ifname="br0", kind="bridge")
        bridge = ipr.link_lookup(ifname="br0")[0]
        ipr.link("set", index=bridge, mtu=wanted.mtu, state="up")
        gateway = ipaddress.IPv4Interface(wanted.gateway)
        ipr.addr("add", index=bridge, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
        self._add_vxlan(seg)

    def _add_vxlan(self, seg: _Segment) -> None:
        """vxlan0 made in the node's namespace (its UDP socket stays there), moved into the
        network's and enslaved to br0."""
        node = self._ipr(self.node_netns)
        staging = f"swvx{seg.vni}"
        for stale in node.link_lookup(ifname=staging):
            node.link("del", index=stale)
        node.link(
            "add",
            ifname=staging,
            kind="vxlan",
            vxlan_id=seg.vni,
            vxlan_local=self.vtep,
            vxlan_port=self.port,
            vxlan_learning=0,
            vxlan_proxy=1,
            vxlan_l2miss=1,
            vxlan_l3miss=1,
            vxlan_ageing=300,
            mtu=seg.mtu,
        )
        node.link("set", index=node.link_lookup(ifname=staging)[0], net_ns_fd=seg.netns)
        ipr = self._ipr(seg.netns)
        index = ipr.link_lookup(ifname=staging)[0]
        ipr.link("set", index=index, ifname="vxlan0")
        ipr.link("set", index=index, master=ipr.link_lookup(ifname="br0")[0], state="up")

    def _update_segment(self, seg: _Segment, wanted: Segment) -> None:
        """Same network, new attributes: MTU and gateway in place; a new VNI gets a new
        vxlan0 and the program's entries again."""
        ipr = self._ipr(seg.netns)
        if wanted.vni != seg.vni:
            ipr.link("del", index=ipr.link_lookup(ifname="vxlan0")[0])
            seg.vni = wanted.vni
            self._add_vxlan(seg)
            for fdb in wanted.fdb:
                self._fdb(seg, fdb, True)
            for neigh in wanted.neigh:
                self._entry("neigh", seg, True, dst=neigh.ip, lladdr=neigh.mac, state=NUD_PERMANENT)
        for ifname in ("br0", "vxlan0", *seg.veths.values()):
            ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], mtu=wanted.mtu)
        for name in seg.veths:
            cipr = self._ipr(self._container_netns(name))
            for link in cipr.get_links():
                if link.get("ifname") != "lo":
                    cipr.link("set", index=link["index"], mtu=wanted.mtu)
        if wanted.gateway != seg.gateway:
            bridge = ipr.link_lookup(ifname="br0")[0]
            old, new = ipaddress.IPv4Interface(seg.gateway), ipaddress.IPv4Interface(wanted.gateway)
            ipr.addr("del", index=bridge, address=str(old.ip), prefixlen=old.network.prefixlen)
            ipr.addr("add", index=bridge, address=str(new.ip), prefixlen=new.network.prefixlen)
        seg.name, seg.mtu, seg.gateway = wanted.name, wanted.mtu, wanted.gateway

    def _remove_segment(self, nid: str) -> None:
        self._refused.pop(nid, None)
        seg = self._segments.pop(nid, None)
        if seg is None:
            return
        for name in list(seg.veths):
            self._forget_container_network(name, nid)
        self._drop_segment(seg)

    def _drop_segment(self, seg: _Segment) -> None:
        """vxlan0 first, synchronously: a namespace is torn down in the background, and its
        vxlan0 would hold the VNI on the node's port a while longer (a network that comes
        back at once would get `File exists`)."""
        ipr = self._ipr(seg.netns)
        for index in ipr.link_lookup(ifname="vxlan0"):
            ipr.link("del", index=index)
        self._drop_netns(seg.netns)

    def _drop_netns(self, name: str) -> None:
        assert self._worker is not None
        self._worker.forget(name)
        namespaces.remove(name)

    def _esp_reason_now(self) -> str:
        if self._esp_reason is None:
            self._esp_reason = self._esp_support(f"{self.prefix}xfrm-probe")
        return self._esp_reason

    # ---- endpoints ------------------------------------------------------------------------

    def _container_netns(self, endpoint_name: str) -> str:
        return f"{self.prefix}{endpoint_name}"

    def _add_endpoint(self, nid: str, seg: _Segment, ep: LocalEndpoint) -> None:
        cns = self._container_netns(ep.name)
        networks = self._containers.get(ep.name)
        bridged = ep.name in self._bridged  # connected to an overlay: its namespace stays
        if networks is None:
            if not bridged:
                _new_container_netns(cns)
            networks = self._containers[ep.name] = set()
        veth, staging = f"veth{seg.next_veth}", f"swc{seg.next_veth}"
        seg.next_veth += 1
        ipr = self._ipr(seg.netns)
        ipr.link("add", ifname=veth, kind="veth", peer={"ifname": staging, "net_ns_fd": cns})
        index = ipr.link_lookup(ifname=veth)[0]
        ipr.link(
            "set", index=index, master=ipr.link_lookup(ifname="br0")[0], mtu=seg.mtu, state="up"
        )
        cipr = self._ipr(cns)
        inner = cipr.link_lookup(ifname=staging)[0]
        ifname = f"eth{len(networks) + int(bridged)}"  # a bridged container's eth0 is its bridge's
        cipr.link("set", index=inner, ifname=ifname, address=ep.mac, mtu=seg.mtu)
        prefix = ipaddress.IPv4Interface(seg.gateway).network.prefixlen
        cipr.addr("add", index=inner, address=ep.ip, prefixlen=prefix)
        cipr.link("set", index=inner, state="up")
        seg.veths[ep.name] = veth
        networks.add(nid)

    def _remove_endpoint(self, nid: str, seg: _Segment, ep: LocalEndpoint) -> None:
        veth = seg.veths.pop(ep.name, None)
        if veth is not None:
            ipr = self._ipr(seg.netns)
            for index in ipr.link_lookup(ifname=veth):
                ipr.link("del", index=index)  # its peer in the container goes with it
        self._forget_container_network(ep.name, nid)

    def _forget_container_network(self, name: str, nid: str) -> None:
        networks = self._containers.get(name)
        if networks is None:
            return
        networks.discard(nid)
        if not networks:
            self._drop_container(name)

    def _drop_container(self, name: str) -> None:
        self._containers.pop(name, None)
        if name not in self._bridged:
            self._drop_netns(self._container_netns(name))

    # ---- containers on no overlay -----------------------------------------------------------

    def bridge_netns(self, endpoint_name: str) -> str:
        """A namespace of its own for container `endpoint_name`, which is on no overlay:
        Docker puts such a container on the node's bridge network, and any port it publishes
        is forwarded there (`host_ports.py` plugs it into the node's default bridge, its
        default route), or in `--network none` leaves it with only its loopback. Made on the
        first call, the same one after; gone with `drop_bridge_netns`."""
        if self._worker is None:
            raise DataPathError("the kernel data path is not started: await start() first")
        if endpoint_name in self._containers:
            raise DataPathError(
                f"container {endpoint_name!r} is on an overlay: its namespace is that of its "
                "endpoints, not a bridge one"
            )
        netns = self._container_netns(endpoint_name)
        if endpoint_name not in self._bridged:
            self._worker.call(lambda: _new_container_netns(netns))
            self._bridged.add(endpoint_name)
            log.info("event=bridge_netns_made backend=kernel container=%s", endpoint_name)
        return netns

    def bridged_netns(self, endpoint_name: str) -> str | None:
        """The namespace `bridge_netns` made for `endpoint_name`, if it did."""
        return self._container_netns(endpoint_name) if endpoint_name in self._bridged else None

    def drop_bridge_netns(self, endpoint_name: str) -> None:
        """The container on no overlay is done: its namespace goes (nothing if it has none)."""
        if self._worker is not None and endpoint_name in self._bridged:
            self._worker.call(lambda: self._drop_bridged(endpoint_name))

    def _drop_bridged(self, name: str) -> None:
        """Its namespace goes, unless it still has overlay endpoints (it was connected to an
        overlay while running): then with the last of those."""
        self._bridged.discard(name)
        if name not in self._containers:
            self._drop_netns(self._container_netns(name))

    # ---- entries --------------------------------------------------------------------------

    def _fdb(self, seg: _Segment, entry: FdbEntry, adding: bool) -> None:
        self._entry(
            "fdb",
            seg,
            adding,
            lladdr=entry.mac,
            dst=entry.vtep,
            port=entry.port,
            flags=NTF_SELF,
            state=NUD_PERMANENT | NUD_NOARP,
        )

    def _entry(self, kind: str, seg: _Segment, adding: bool, **attrs: object) -> None:
        ipr = self._ipr(seg.netns)
        vxlan = ipr.link_lookup(ifname="vxlan0")[0]
        call = ipr.fdb if kind == "fdb" else ipr.neigh
        try:
            call("replace" if adding else "del", ifindex=vxlan, **attrs)
        except NetlinkError as err:
            if adding or err.code != errno.ENOENT:
                raise

    def _change_xfrm(self, item: object, adding: bool) -> None:
        if self._esp_reason_now():
            return  # encrypted networks are refused here: none of their SAs are carried
        if isinstance(item, SecurityAssociation):
            add, delete = xfrm.state_args(item), xfrm.state_delete_args(item)
        else:
            assert isinstance(item, Policy)
            add, delete = xfrm.policy_args(item), xfrm.policy_delete_args(item)
        if adding:
            namespaces.run_in(self.node_netns, ["ip", *add])
            self._xfrm.append(delete)
        else:
            namespaces.run_in(self.node_netns, ["ip", *delete], check=False)
            if delete in self._xfrm:
                self._xfrm.remove(delete)

    # ---- what others read -----------------------------------------------------------------

    def refusal(self, network_id: str) -> str:
        """Why this node does not carry network `network_id` ('' when it does)."""
        return self._refused.get(network_id, "")

    def container_netns(self, network_id: str, name: str) -> str:
        """The namespace of local endpoint `name` on `network_id`; DataPathError when there
        is none (refused network, or not in the program)."""
        refused = self._refused.get(network_id)
        if refused:
            raise DataPathError(refused)
        seg = self._segments.get(network_id)
        if seg is None or name not in seg.veths:
            raise DataPathError(
                f"no local endpoint {name!r} on network {network_id!r} at {self.vtep}; "
                "the program has none (is the container attached on this node?)"
            )
        return self._container_netns(name)

    def network_netns(self, network_id: str) -> str:
        """The namespace holding the network's br0 and vxlan0 (`ip netns exec` it to look)."""
        seg = self._segments.get(network_id)
        if seg is None:
            raise DataPathError(
                self._refused.get(network_id) or f"network {network_id!r} is not on this node"
            )
        return seg.netns

    def show(self) -> str:
        """What the kernel holds, as its own tools print it, per network (and the networks
        refused here, with why): what `swarmlab datapath` shows under the program."""
        out: list[str] = []
        for seg in sorted(self._segments.values(), key=lambda s: s.vni):
            out.append(f"# kernel: network {seg.name}, namespace {seg.netns}")
            for argv in (
                ["ip", "-d", "link", "show", "vxlan0"],
                ["bridge", "fdb", "show", "dev", "vxlan0"],
                ["ip", "neigh", "show", "dev", "vxlan0"],
            ):
                shown = namespaces.run_in(seg.netns, argv, check=False)
                out += [f"$ {' '.join(argv)}", shown.rstrip("\n")]
        out += [f"# kernel: refused: {why}" for why in sorted(self._refused.values())]
        return "\n".join(line for line in out if line) + ("\n" if out else "")

    def counters(self) -> dict[str, SegmentCounters]:
        """vxlan0's kernel counters per segment (frames to and from other VTEPs)."""
        if self._worker is None:
            return {}
        return self._worker.call(self._read_counters)

    def _read_counters(self) -> dict[str, SegmentCounters]:
        counted: dict[str, SegmentCounters] = {}
        for nid, seg in self._segments.items():
            ipr = self._ipr(seg.netns)
            (link,) = ipr.get_links(ipr.link_lookup(ifname="vxlan0")[0])
            stats = link.get("IFLA_STATS64") or {}
            counters = SegmentCounters(
                frames_in=stats.get("rx_packets", 0),
                frames_out=stats.get("tx_packets", 0),
                bytes_in=stats.get("rx_bytes", 0),
                bytes_out=stats.get("tx_bytes", 0),
            )
            for reason in ("rx_dropped", "tx_dropped", "rx_errors", "tx_errors"):
                if stats.get(reason):
                    counters.dropped[f"kernel_{reason}"] = stats[reason]
            counted[nid] = counters
        return counted
