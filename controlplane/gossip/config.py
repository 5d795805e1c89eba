"""Timing and sizing of the SWIM layer: memberlist's LAN defaults and a faster lab profile.

The `lan` values are hashicorp/memberlist's `DefaultLANConfig()` (config.go), the settings
Docker Swarm's NetworkDB runs with. The `lab` profile divides every protocol period by ten, which
keeps the same ratios (so the same convergence and detection behaviour, in protocol periods) on
a laptop lab or in tests where waiting tens of seconds for a failure is a nuisance.

The Lifeguard switches exist to measure what Lifeguard buys (`without_lifeguard()`); a real node
keeps them all on, as memberlist does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class GossipConfig:
    # Failure detection (memberlist config.go, DefaultLANConfig).
    probe_interval: float = 1.0  # ProbeInterval: "Failure check every second"
    probe_timeout: float = 0.5  # ProbeTimeout: "Reasonable RTT time for LAN"
    indirect_checks: int = 3  # IndirectChecks: "Use 3 nodes for the indirect ping"
    suspicion_mult: int = 4  # SuspicionMult: "Suspect a node for 4 * log(N+1) * Interval"
    suspicion_max_timeout_mult: int = 6  # SuspicionMaxTimeoutMult
    awareness_max_multiplier: int = 8  # AwarenessMaxMultiplier: "backs off to 8 seconds"

    # Dissemination.
    retransmit_mult: int = 4  # RetransmitMult: "Retransmit a message 4 * log(N+1) nodes"
    gossip_interval: float = 0.2  # GossipInterval: "Gossip more rapidly"
    gossip_nodes: int = 3  # GossipNodes: "Gossip to 3 nodes"
    gossip_to_the_dead_time: float = 30.0  # GossipToTheDeadTime: "Same as push/pull"
    push_pull_interval: float = 30.0  # PushPullInterval: "Low frequency"
    packet_budget: int = 1400  # UDPBufferSize: bytes of one datagram, before encryption
    tcp_timeout: float = 10.0  # TCPTimeout: a push-pull that takes longer has failed
    # DisableTcpPings=false: with the indirect probes, also ping the target over TCP, so a
    # member alive behind lossy or blocked UDP is not suspected.
    tcp_pings: bool = True
    # DeadNodeReclaimTime: how long a dead member's name stays bound to its address. memberlist
    # defaults to 0, meaning "never by a different address"; a left member can always be.
    dead_node_reclaim_time: float = 0.0
    # Docker's NetworkDB (not memberlist) tries a push-pull with one random failed node every
    # 60 s (reconnectInterval), for 24 h (reapDeadNode): so a partition that heals ends with
    # one membership again, even after both sides declared each other dead and forgot.
    reconnect_interval: float = 60.0
    reconnect_for: float = 24 * 3600.0

    # Lifeguard (Dadgar et al., "Lifeguard: Local Health Awareness for More Accurate Failure
    # Detection", 2018), each part switchable for the with/without comparison.
    awareness: bool = True  # LHA-Probe: scale probe interval and timeout by the health score
    nacks: bool = True  # indirect probes answer Nack, telling a slow prober it is the problem
    dynamic_suspicion: bool = True  # LHA-Suspicion: timeout shrinks with confirmations
    buddy: bool = True  # a probe of a suspect member carries the Suspect, so it refutes at once

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout < self.probe_interval:
            raise ValueError("need 0 < probe_timeout < probe_interval (room for indirect probes)")
        if self.reconnect_interval <= 0 or self.reconnect_for < 0:
            raise ValueError("reconnect_interval must be positive and reconnect_for >= 0")
        if self.gossip_interval <= 0 or self.push_pull_interval <= 0:
            raise ValueError("gossip_interval and push_pull_interval must be positive")
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1:
            raise ValueError("suspicion multipliers must be >= 1")
        if self.awareness_max_multiplier < 1:
            raise ValueError("awareness_max_multiplier must be >= 1")
        if self.packet_budget < 256:
            raise ValueError("packet_budget below 256 bytes cannot carry a ping and an alive")

    def without_lifeguard(self) -> GossipConfig:
        """Plain SWIM (with memberlist's fixed suspicion timeout), for comparisons."""
        return replace(self, awareness=False, nacks=False, dynamic_suspicion=False, buddy=False)

    # ---- derived values, as memberlist computes them (util.go) ------------------------------

    def relay_timeout(self) -> float:
        """How long a relay of an indirect probe waits for the target before it nacks: 80% of
        the requester's (unscaled) indirect phase, so the nack arrives while it still counts
        them (the Lifeguard paper, footnote 5)."""
        return 0.8 * (self.probe_interval - self.probe_timeout)

    def retransmit_limit(self, members: int) -> int:
        """How many times one broadcast is sent: RetransmitMult * ceil(log10(n + 1))."""
        return self.retransmit_mult * math.ceil(math.log10(members + 1))

    def suspicion_min_timeout(self, members: int) -> float:
        """SuspicionMult * log10(n) * ProbeInterval, with log10(n) floored at 1 as memberlist
        does (without the floor a 3-member cluster would declare death in 2 probe periods)."""
        return self.suspicion_mult * max(1.0, math.log10(max(1, members))) * self.probe_interval

    def suspicion_max_timeout(self, members: int) -> float:
        return self.suspicion_max_timeout_mult * self.suspicion_min_timeout(members)

    def suspicion_confirmations(self, members: int) -> int:
        """Independent confirmations expected to reach the minimum timeout: SuspicionMult - 2
        (the nominal timeout is reached two probe periods early), or 0 when the cluster is too
        small to provide them (n - 2 excludes ourselves and the suspect)."""
        k = self.suspicion_mult - 2
        return 0 if members - 2 < k else k

    def push_pull_period(self, members: int) -> float:
        """PushPullInterval scaled past 32 members, one more interval per doubling
        (memberlist's pushPullScale), so anti-entropy traffic stays bounded as n grows."""
        if members <= 32:
            return self.push_pull_interval
        return (math.ceil(math.log2(members) - math.log2(32)) + 1) * self.push_pull_interval


LAN = GossipConfig()

LAB = GossipConfig(
    probe_interval=0.1,
    probe_timeout=0.05,
    gossip_interval=0.02,
    gossip_to_the_dead_time=3.0,
    push_pull_interval=3.0,
    tcp_timeout=1.0,
    reconnect_interval=1.0,
)

PROFILES: dict[str, GossipConfig] = {"lan": LAN, "lab": LAB}
