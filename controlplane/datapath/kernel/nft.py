"""nftables scripts as the kernel data path renders them (the routing mesh, service VIPs,
host-mode ports): a table replaced whole in one `nft -f` transaction (never half-written),
and round robin as kube-proxy's nftables mode does it, `numgen inc mod N` into one chain per
target, each connection (conntrack NATs only a flow's first packet) to the next target."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from controlplane.datapath.kernel.namespaces import KernelError


def replace_table(table: str, body: Sequence[str]) -> str:
    """A script replacing `ip` table `table` in one transaction (made first so the delete
    works on a namespace that has none yet)."""
    return "\n".join(
        [f"table ip {table}", f"delete table ip {table}", f"table ip {table} {{", *body, "}", ""]
    )


def local_dnat_table(table: str, rules: Sequence[str], postrouting: Sequence[str] = ()) -> str:
    """A table applying the DNAT `rules` to what reaches this namespace's own addresses from
    outside (prerouting) and to what the namespace itself sends (output), then the
    `postrouting` rules (source NAT) to what leaves."""
    after = (
        [
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            *postrouting,
            "  }",
        ]
        if postrouting
        else []
    )
    return replace_table(
        table,
        [
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            *rules,
            "  }",
            "  chain output {",
            "    type nat hook output priority -100; policy accept;",
            *rules,
            "  }",
            *after,
        ],
    )


def balanced(
    match: str, chain_prefix: str, targets: Sequence[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    """(the rule sending what `match` matches to each of `targets` in turn, the chains of the
    targets); a target is (its statement, a comment naming it). No targets: nothing."""
    if not targets:
        return [], []
    names = [f"{chain_prefix}_{i}" for i in range(len(targets))]
    verdicts = ", ".join(f"{i} : jump {name}" for i, name in enumerate(names))
    rule = f"    {match} numgen inc mod {len(targets)} vmap {{ {verdicts} }}"
    chains: list[str] = []
    for name, (statement, comment) in zip(names, targets, strict=True):
        chains += [f"  chain {name} {{  # {comment}", f"    {statement}", "  }"]
    return [rule], chains


def load(netns: str | None, script: str, what: str) -> None:
    """Load an nft script in `netns` as one transaction; KernelError with nft's words."""
    argv = ["nft", "-f", "-"]
    full = ["ip", "netns", "exec", netns, *argv] if netns else argv
    done = subprocess.run(
        full, input=script, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise KernelError(
            f"nft refused the {what} in {netns or 'this namespace'}: {done.stderr.strip()}"
        )


def delete_table(netns: str | None, table: str) -> None:
    """Drop `table` from `netns` (nothing when it has none)."""
    argv = ["nft", "delete", "table", "ip", table]
    full = ["ip", "netns", "exec", netns, *argv] if netns else argv
    subprocess.run(full, capture_output=True, text=True, timeout=30, check=False)
