"""Encrypted overlays in the kernel: the xfrm states and policies a node's program asks for
(pure: `ip xfrm` command lines from the program's `SecurityAssociation`s and `Policy`s), and
whether this kernel can hold them at all (`esp_support`).

As Docker programs them (see FINDINGS): ESP in transport mode between the two VTEPs, AEAD
`rfc4106(gcm(aes))` with a 128-bit ICV, the key material being the 16-byte AES key followed
by the 4-byte salt; one reqid for all of the overlay's SAs; an outbound policy per peer
matching the VXLAN traffic (UDP to the data path port) and sending it through the SA of the
primary key. Inbound states exist for every live key, so rotation never drops traffic. The
SPIs and keys are the program's, the same ones the userspace ESP uses, so a kernel node and a
userspace node compute the same SAs.

Detection: a kernel built without CONFIG_INET_ESP or CONFIG_CRYPTO_GCM (this machine's) has
xfrm but refuses the state (`Requested AEAD algorithm not found`, or `function not
implemented` from Docker's netlink calls). Real Docker then silently drops the encrypted
overlay's traffic; Swarmlab instead refuses to attach the node to the network and says why.
"""

from __future__ import annotations

import subprocess

from controlplane.datapath.kernel import namespaces
from controlplane.datapath.program import Policy, SecurityAssociation

AEAD = "rfc4106(gcm(aes))"
ICV_BITS = 128
REQID = 0xD0C4E3  # the reqid Docker gives its overlay SAs
_PROBE_SRC, _PROBE_DST = "10.201.255.1", "10.201.255.2"


def _sa_id(sa: SecurityAssociation) -> list[str]:
    """What names one SA to `ip xfrm state`: its addresses, protocol and SPI."""
    return ["src", sa.src, "dst", sa.dst, "proto", "esp", "spi", f"0x{sa.spi:08x}"]


def state_args(sa: SecurityAssociation) -> list[str]:
    """`ip xfrm state add ...` for one SA (the arguments after `ip`)."""
    return [
        "xfrm",
        "state",
        "add",
        *_sa_id(sa),
        "reqid",
        str(REQID),
        "mode",
        "transport",
        "aead",
        AEAD,
        "0x" + (sa.key + sa.salt).hex(),
        str(ICV_BITS),
    ]


def state_delete_args(sa: SecurityAssociation) -> list[str]:
    return ["xfrm", "state", "delete", *_sa_id(sa)]


def _selector(policy: Policy) -> list[str]:
    return [
        "src",
        f"{policy.src}/32",
        "dst",
        f"{policy.dst}/32",
        "proto",
        "udp",
        "dport",
        str(policy.port),
        "dir",
        "out",
    ]


def policy_args(policy: Policy) -> list[str]:
    """`ip xfrm policy add ...`: VXLAN from us to the peer goes through the outbound SA."""
    return [
        "xfrm",
        "policy",
        "add",
        *_selector(policy),
        "tmpl",
        "src",
        policy.src,
        "dst",
        policy.dst,
        "proto",
        "esp",
        "spi",
        f"0x{policy.spi:08x}",
        "reqid",
        str(REQID),
        "mode",
        "transport",
    ]


def policy_delete_args(policy: Policy) -> list[str]:
    return ["xfrm", "policy", "delete", *_selector(policy)]


def esp_support(scratch_netns: str) -> str:
    """'' when this kernel accepts an ESP `rfc4106(gcm(aes))` transport state, else why not
    (the kernel's own words and the options it lacks). Tried in a scratch namespace made and
    removed here, so nothing is left on the host."""
    probe = SecurityAssociation("out", _PROBE_SRC, _PROBE_DST, 0x100, bytes(16), bytes(4), 0)
    namespaces.create(scratch_netns)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", scratch_netns, "ip", *state_args(probe)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        namespaces.remove(scratch_netns)
    if done.returncode == 0:
        return ""
    said = done.stderr.strip() or f"exit status {done.returncode}"
    return (
        f"the kernel refuses ESP security associations with {AEAD} ({said}): it lacks "
        "CONFIG_INET_ESP and/or CONFIG_CRYPTO_GCM"
    )


def refusal(network: str, reason: str) -> str:
    """What a node running the kernel data path says when it cannot join encrypted `network`."""
    return (
        f"cannot attach this node to encrypted network {network!r} with the kernel data path: "
        f"{reason}. Encrypted traffic would be dropped silently (as real Docker does here); "
        "run the node with `--datapath userspace` (ESP in userspace) or use a kernel with ESP "
        "and GCM"
    )
