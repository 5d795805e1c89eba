"""Service VIPs in kernel mode, as Docker routes them, with nftables instead of IPVS.

Docker puts every VIP of a sandbox's networks on the sandbox's loopback as a /32 (so a ping
to a VIP is answered by the asking container itself) and lets IPVS in the sandbox NAT each
new connection or flow to the VIP to one of the service's running tasks, SNATed to the
sandbox's own address on the way out (libnetwork's `service_linux.go`). Here, per container
namespace (the sender's own, as Docker: traffic leaves it already addressed to a task, so
nothing else on the path needs to know the VIPs):
- the VIPs of its networks on `lo` (`ip addr add VIP/32 dev lo`);
- table `swarmlab_vips`: in the nat output hook, TCP and UDP to a VIP go round robin
  (`nft.balanced`: `numgen inc`, per connection / per UDP flow) to its tasks, destination
  port kept; in postrouting, what was sent to a VIP is masqueraded to the container's
  address on the interface it leaves by (the VIP on lo would otherwise be its source, and
  every task holds that VIP too).
A VIP with no running task keeps its address and has no rule: TCP to it is refused by the
container's own kernel (RST), as nothing listens there.

`KernelVips.update` keeps every container in step with the node's VIP table: addresses
added and removed, the table loaded whole with `nft -f` only when its text changed.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.datapath.kernel import namespaces, nft
from controlplane.datapath.kernel.namespaces import KernelError
from controlplane.datapath.vips import VipService

log = logging.getLogger("controlplane.datapath.kernel.vips")

TABLE = "swarmlab_vips"
ContainerVips = Mapping[str, VipService]  # VIP -> its service, for one container


def _ordered(vips: ContainerVips) -> list[VipService]:
    return sorted(vips.values(), key=lambda s: int(ipaddress.IPv4Address(s.vip)))


def container_ruleset(vips: ContainerVips) -> str:
    """The table of one container namespace holding `vips`."""
    dispatch: list[str] = []
    chains: list[str] = []
    for svc in _ordered(vips):
        rule, targets = nft.balanced(
            f"ip daddr {svc.vip} meta l4proto {{ tcp, udp }}",
            f"vip_{svc.vip.replace('.', '_')}",
            [(f"dnat to {ip}", f"task {ip} of {svc.name}") for ip in svc.backends],
        )
        dispatch += rule
        chains += targets
    balanced = [s.vip for s in _ordered(vips) if s.backends]
    masquerade = (
        [f"    ct original ip daddr {{ {', '.join(balanced)} }} masquerade"] if balanced else []
    )
    return nft.replace_table(
        TABLE,
        [
            "  chain output {",
            "    type nat hook output priority -100; policy accept;",
            *dispatch,
            "  }",
            *chains,
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            *masquerade,
            "  }",
        ],
    )


@dataclass
class _Loaded:
    addresses: frozenset[str]
    script: str


class KernelVips:
    """The VIPs of a node's container namespaces; `update({netns: vips})` brings each to its
    set, `close()` removes what is left."""

    def __init__(self) -> None:
        self._loaded: dict[str, _Loaded] = {}

    def update(self, wanted: Mapping[str, ContainerVips]) -> list[str]:
        """Bring every namespace of `wanted` to its VIPs and forget the others (their
        namespace went with their container); the namespaces changed. A namespace the kernel
        refuses is logged and tried again on the next update."""
        for netns in [n for n in self._loaded if n not in wanted]:
            self._clear(netns)
        changed = []
        for netns, vips in sorted(wanted.items()):
            try:
                if self._bring(netns, vips):
                    changed.append(netns)
            except KernelError as err:
                log.error("event=kernel_vips_not_loaded netns=%s error=%s", netns, err)
        return changed

    def _bring(self, netns: str, vips: ContainerVips) -> bool:
        loaded = self._loaded.get(netns) or _Loaded(frozenset(), "")
        wanted = _Loaded(frozenset(vips), container_ruleset(vips))
        if wanted == loaded:
            return False
        for vip in sorted(wanted.addresses - loaded.addresses):
            namespaces.run_in(netns, ["ip", "addr", "replace", f"{vip}/32", "dev", "lo"])
        if wanted.script != loaded.script:
            nft.load(netns, wanted.script, "VIP table")
        for vip in sorted(loaded.addresses - wanted.addresses):
            namespaces.run_in(netns, ["ip", "addr", "del", f"{vip}/32", "dev", "lo"], check=False)
        self._loaded[netns] = wanted
        log.info("event=kernel_vips_loaded netns=%s vips=%s", netns, ",".join(sorted(vips)))
        return True

    def _clear(self, netns: str) -> None:
        loaded = self._loaded.pop(netns)
        if not namespaces.exists(netns):
            return
        nft.delete_table(netns, TABLE)
        for vip in loaded.addresses:
            namespaces.run_in(netns, ["ip", "addr", "del", f"{vip}/32", "dev", "lo"], check=False)

    def close(self) -> None:
        for netns in list(self._loaded):
            self._clear(netns)

    def show(self) -> str:
        """Each namespace's VIP table as `nft list table` prints it."""
        out = []
        for netns in sorted(self._loaded):
            listed = namespaces.run_in(netns, ["nft", "list", "table", "ip", TABLE], check=False)
            out += [f"# kernel: VIPs in {netns}", listed.rstrip("\n")]
        return "\n".join(out) + ("\n" if out else "")
