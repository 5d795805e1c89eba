"""A SWIM cluster in deterministic simulation: joins, crashes, restarts, leaves, loss, slow nodes.

Every member runs the real `SwimNode` core; this module does what the asyncio driver does with
sockets: datagrams go through `SimNetwork` (loss, delay, partitions), push-pulls are emulated TCP
exchanges (reliable, but they fail against a crashed or unreachable peer), and each node is woken
at its `next_deadline()`. It scales to a few thousand members in one process.

Measured from the member events the cores emit (each observer's first sight of a fact):

- join / leave / failure dissemination: time until 99.9% of the other live members know;
- failure detection: first suspicion anywhere, and death as seen by 99.9% and by all;
- false positives: a member that is up (not crashed, not left) declared dead by anyone, and
  suspicions of up members.

"Slow node" models Lifeguard's motivating case, a node that processes its inbound packets late
(CPU starvation, a full receive queue): its timers keep firing on time, so acks reach it "too
late" and, without Lifeguard, it accuses healthy members. Its TCP exchanges lag the same way.

Replay or measure: `python -m controlplane.sim.swim_cluster --members 1000 --seed 1`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TypeVar

from controlplane.gossip.config import PROFILES, GossipConfig
from controlplane.gossip.swim import SwimNode
from controlplane.gossip.types import (
    Address,
    EventKind,
    MemberEvent,
    MemberState,
    NodeMeta,
    Output,
    Packet,
    PushPullRequest,
    SendPacket,
    TcpPing,
)
from controlplane.sim.clock import Simulator, Timer
from controlplane.sim.network import Faults, SimNetwork

GOSSIP_PORT = 7946
# Typical LAN one-way delays (seconds) for datagrams and each leg of a TCP exchange.
LAN_DELAY = (0.0005, 0.002)
QUANTILE = 0.999
MANAGERS = 3  # the first members are managers, and the seeds everyone joins through

R = TypeVar("R")


class SimMember:
    """One emulated host; `node` is its running process (None while crashed or stopped)."""

    __slots__ = ("addr", "inbound_delay", "left", "meta", "name", "node", "wake")

    def __init__(self, name: str, addr: Address, meta: NodeMeta) -> None:
        self.name = name
        self.addr = addr
        self.meta = meta
        self.node: SwimNode | None = None
        self.wake: Timer | None = None
        self.inbound_delay: tuple[float, float] | None = None  # a slow node's processing lag
        self.left = False

    @property
    def up(self) -> bool:
        """Running and not gone: declaring it dead is a false positive."""
        return self.node is not None and not self.left


@dataclass
class Watch:
    """Collects when each observer first sees `subject` in one of `kinds`, from `start`."""

    subject: str
    kinds: frozenset[EventKind]
    start: float
    expected: int  # observers that should learn it
    seen: dict[str, float] = field(default_factory=dict)

    def quantile_time(self, q: float = QUANTILE) -> float | None:
        """Seconds from `start` until a fraction `q` of the expected observers knew."""
        needed = max(1, math.ceil(q * self.expected))
        if len(self.seen) < needed:
            return None
        return sorted(self.seen.values())[needed - 1] - self.start

    @property
    def complete(self) -> bool:
        return len(self.seen) >= self.expected


@dataclass
class FalsePositives:
    """Suspicions and death declarations about members that were up, counted per subject
    (one per observer that came to believe it)."""

    suspicions: Counter[str] = field(default_factory=Counter)
    deaths: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> FalsePositives:
        return FalsePositives(Counter(self.suspicions), Counter(self.deaths))

    def since(self, before: FalsePositives, *, excluding: str = "") -> tuple[int, int]:
        """(suspicions, deaths) added since `before`, leaving out those about `excluding`."""
        suspicions = self.suspicions - before.suspicions
        deaths = self.deaths - before.deaths
        suspicions.pop(excluding, None)
        deaths.pop(excluding, None)
        return suspicions.total(), deaths.total()


class SwimCluster:
    def __init__(
        self,
        config: GossipConfig,
        *,
        seed: int = 0,
        faults: Faults | None = None,
        record_events: bool = False,
    ) -> None:
        self.config = config
        self.sim = Simulator(seed)
        self.rng = self.sim.rng
        self.faults = faults if faults is not None else Faults(0.0, 0.0, *LAN_DELAY)
        self.net: SimNetwork[Address, Packet] = SimNetwork(self.sim, self.faults)
        self.members: dict[str, SimMember] = {}
        self.by_addr: dict[Address, SimMember] = {}
        self.false_positives = FalsePositives()
        self.known_pairs = 0  # (observer, subject) pairs where the observer has met the subject
        self.push_pulls = 0
        self._watches: dict[str, list[Watch]] = {}
        # (time, observer, event) of every member event, when asked for (tests read it).
        self.events: list[tuple[float, str, MemberEvent]] | None = [] if record_events else None

    # ---- building -------------------------------------------------------------------------

    def add_member(self) -> SimMember:
        index = len(self.members)
        name = f"node-{index:04d}"
        host = index + 1  # 10.0.0.1, 10.0.0.2, ...
        ip = f"10.{host >> 16 & 255}.{host >> 8 & 255}.{host & 255}"
        meta = NodeMeta(
            node_id=f"{self.rng.getrandbits(128):032x}"[:25],
            role="manager" if index < MANAGERS else "worker",
            advertise_addr=ip,
            data_path_addr=ip,
        )
        member = SimMember(name, (ip, GOSSIP_PORT), meta)
        self.members[name] = member
        self.by_addr[member.addr] = member
        return member

    def start(self, member: SimMember, *, join: bool = True, incarnation: int = 0) -> None:
        """Start (or restart) the member's process and join through the seeds that are up."""
        sim = self.sim
        node = SwimNode(
            member.name,
            member.addr,
            member.meta,
            self.config,
            now=sim.now,
            rng=self.rng,
            incarnation=incarnation,
        )
        member.node = node
        member.left = False
        self.net.attach(member.addr, lambda src, packet: self._deliver(member, src, packet))
        if join:
            seeds = [m.addr for m in self.seeds() if m is not member]
            node.join(sim.now, seeds)
        self._flush(member)

    def seeds(self) -> list[SimMember]:
        return [m for m in list(self.members.values())[:MANAGERS] if m.up]

    def build(self, n: int, *, spread: float) -> None:
        """Add `n` members; each starts and joins at a random time within `spread` seconds."""
        first = self.add_member()
        self.start(first, join=False)
        for _ in range(n - 1):
            member = self.add_member()
            self.sim.call_later(self.rng.uniform(0, spread), self.start, member)

    # ---- faults ---------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        """The process dies: it stops answering; packets on their way to it are lost."""
        member = self.members[name]
        self.net.detach(member.addr)
        if member.wake is not None:
            member.wake.cancel()
            member.wake = None
        member.node = None

    def restart(self, name: str) -> None:
        """A new process for the same member (same name and address, incarnation from 0)."""
        self.start(self.members[name])

    def leave(self, name: str, *, timeout: float = 10.0) -> None:
        """Graceful leave: the node gossips its departure, then stops once it is out."""
        member = self.members[name]
        node = member.node
        assert node is not None, f"{name} is not running"
        node.leave(self.sim.now)
        member.left = True
        self._flush(member)
        give_up = self.sim.now + timeout

        def check() -> None:
            if member.node is not node:
                return
            if node.leave_finished or self.sim.now >= give_up:
                self.crash(name)
            else:
                self.sim.call_later(self.config.gossip_interval, check)

        self.sim.call_later(self.config.gossip_interval, check)

    def set_slow(self, name: str, delay: tuple[float, float] | None) -> None:
        """Delay the processing of every packet `name` receives by a uniform random lag."""
        self.members[name].inbound_delay = delay

    # ---- observation ----------------------------------------------------------------------

    def watch(self, subject: str, *kinds: EventKind) -> Watch:
        expected = sum(1 for m in self.members.values() if m.up and m.name != subject)
        w = Watch(subject, frozenset(kinds), self.sim.now, expected)
        self._watches.setdefault(subject, []).append(w)
        return w

    def up_members(self) -> list[SimMember]:
        return [m for m in self.members.values() if m.up]

    def run_until(self, done: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
        """Advance virtual time until `done()` (checked every `step`), or `timeout` elapses."""
        until = self.sim.now + timeout
        while not done():
            if self.sim.now >= until:
                return False
            self.sim.run_until(min(until, self.sim.now + step))
        return True

    def all_known(self) -> bool:
        """Every up member has heard of every other (whatever it thinks of its health)."""
        up = len(self.up_members())
        return self.known_pairs >= up * (up - 1)

    def view_converged(self) -> bool:
        """Every up member sees every other up member alive."""
        up = self.up_members()
        if self.known_pairs < len(up) * (len(up) - 1):
            return False  # cheap early answer while members are still meeting each other
        names = [m.name for m in up]
        for m in up:
            assert m.node is not None
            for name in names:
                record = m.node.member(name)
                if record is None or record.state is not MemberState.ALIVE:
                    return False
        return True

    # ---- driving the cores ----------------------------------------------------------------

    def _deliver(self, member: SimMember, src: Address, packet: Packet) -> None:
        if member.inbound_delay is None:
            self._receive(member, member.node, src, packet)
        else:
            self.sim.call_later(self._lag(member), self._receive, member, member.node, src, packet)

    def _receive(
        self, member: SimMember, node: SwimNode | None, src: Address, packet: Packet
    ) -> None:
        if node is None or member.node is not node:
            return  # crashed or restarted meanwhile
        node.receive_packet(self.sim.now, src, packet)
        self._flush(member)

    def _wake(self, member: SimMember) -> None:
        member.wake = None
        node = member.node
        if node is not None:
            node.tick(self.sim.now)
            self._flush(member)

    def _flush(self, member: SimMember) -> None:
        """Act on the core's outputs, then make sure it is woken by its next deadline."""
        node = member.node
        if node is None:
            return
        for output in node.take_outputs():
            self._act(member, output)
        deadline = node.next_deadline()
        wake = member.wake
        if wake is None or deadline < wake.when:
            if wake is not None:
                wake.cancel()
            member.wake = self.sim.call_at(max(deadline, self.sim.now), self._wake, member)

    def _act(self, member: SimMember, output: Output) -> None:
        match output:
            case SendPacket(dst, packet):
                self.net.send(member.addr, dst, packet)
            case PushPullRequest(dst, request):
                self.push_pulls += 1
                src = member.addr
                self._tcp_exchange(
                    member,
                    dst,
                    lambda server: server.handle_push_pull(self.sim.now, src, request),
                    lambda client, answer: client.push_pull_result(self.sim.now, dst, answer),
                    self.config.tcp_timeout,
                )
            case TcpPing(dst, ping, timeout):
                src = member.addr
                self._tcp_exchange(
                    member,
                    dst,
                    lambda server: server.handle_tcp_ping(self.sim.now, src, ping),
                    lambda client, ack: client.tcp_ping_result(
                        self.sim.now, ping.seq, ack is not None
                    ),
                    timeout,
                )
            case MemberEvent(kind, subject):
                if self.events is not None:
                    self.events.append((self.sim.now, member.name, output))
                self._observe(member.name, kind, subject.name)
            case _:
                pass  # user payloads: NetworkDB's business, not measured here

    def _observe(self, observer: str, kind: EventKind, subject: str) -> None:
        if kind is EventKind.JOIN:
            self.known_pairs += 1
        elif kind is EventKind.REAPED:
            self.known_pairs -= 1
        elif kind in (EventKind.SUSPECT, EventKind.DEAD):
            target = self.members.get(subject)
            if target is not None and target.up:
                if kind is EventKind.DEAD:
                    self.false_positives.deaths[subject] += 1
                else:
                    self.false_positives.suspicions[subject] += 1
        for w in self._watches.get(subject, ()):
            if kind in w.kinds and observer not in w.seen and observer in self.members:
                w.seen[observer] = self.sim.now

    def _tcp_exchange(
        self,
        client: SimMember,
        dst: Address,
        serve: Callable[[SwimNode], R | None],
        finish: Callable[[SwimNode, R | None], None],
        timeout: float,
    ) -> None:
        """An emulated TCP request and answer: reliable, one delay each way (plus a slow
        node's lag); refused at once by a crashed peer, timed out across a partition or when
        the answer takes longer than `timeout`. `finish` runs once, with None on failure."""
        sim = self.sim
        node = client.node
        server = self.by_addr.get(dst)
        pending = [True]

        def report(result: R | None) -> None:
            if pending[0] and client.node is node and node is not None:
                pending[0] = False
                finish(node, result)
                self._flush(client)

        sim.call_later(timeout, report, None)
        if server is None or server.node is None:
            sim.call_later(2 * self._tcp_delay(), report, None)  # connection refused
            return
        if not (self.net.can_reach(client.addr, dst) and self.net.can_reach(dst, client.addr)):
            return  # nothing gets through: the timeout reports
        server_node = server.node

        def answer() -> None:
            if server.node is server_node:
                result = serve(server_node)
                self._flush(server)
                sim.call_later(self._tcp_delay() + self._lag(client), report, result)

        sim.call_later(self._tcp_delay() + self._lag(server), answer)

    def _lag(self, member: SimMember) -> float:
        delay = member.inbound_delay
        return self.rng.uniform(*delay) if delay is not None else 0.0

    def _tcp_delay(self) -> float:
        faults = self.net.faults
        return self.rng.uniform(faults.delay_min, faults.delay_max)


# ---- scenarios ---------------------------------------------------------------------------------


@dataclass
class Report:
    """Figures of one run, in virtual seconds (None: did not happen within the time allowed)."""

    members: int
    seed: int
    profile: str
    lifeguard: bool
    tcp_pings: bool
    loss: float
    probe_interval: float
    build_known: float | None = None  # mass join: until every member has heard of every other
    join: float | None = None  # one more member joins: 99.9% of the others know it
    failure_first_suspect: float | None = None  # crash: first suspicion anywhere
    failure_dead: float | None = None  # 99.9% of the others see it dead
    failure_dead_all: float | None = None
    leave: float | None = None  # graceful leave: 99.9% of the others see it left
    slow_lag: float = 0.0  # the slow node's mean inbound lag, seconds
    # While one node is slow: suspicions and death declarations about the healthy members
    # (what Lifeguard is meant to prevent), and how many declared the slow node itself dead.
    slow_false_suspicions: int = 0
    slow_false_deaths: int = 0
    slow_node_declared_dead: int = 0
    false_suspicions: int = 0  # over the whole run, about any member that was up
    false_deaths: int = 0
    members_declared_dead_falsely: int = 0
    packets_sent: int = 0
    push_pulls: int = 0
    wall_seconds: float = 0.0

    def lines(self) -> list[str]:
        def fmt(value: float | None) -> str:
            if value is None:
                return "not reached"
            return f"{value:.3f} s ({value / self.probe_interval:.1f} probe intervals)"

        lg = "on" if self.lifeguard else "off"
        tcp = "on" if self.tcp_pings else "off"
        return [
            f"members={self.members} seed={self.seed} profile={self.profile} lifeguard={lg} "
            f"tcp-pings={tcp} loss={self.loss:.0%}",
            f"  mass join, all know all      {fmt(self.build_known)}",
            f"  join known by 99.9%          {fmt(self.join)}",
            f"  failure: first suspicion     {fmt(self.failure_first_suspect)}",
            f"  failure: dead for 99.9%      {fmt(self.failure_dead)}",
            f"  failure: dead for all        {fmt(self.failure_dead_all)}",
            f"  leave known by 99.9%         {fmt(self.leave)}",
            f"  one slow node ({self.slow_lag:.2f} s lag): {self.slow_false_suspicions} false "
            f"suspicions and {self.slow_false_deaths} false deaths of healthy members; "
            f"{self.slow_node_declared_dead} members declared the slow node dead",
            f"  whole run: {self.false_suspicions} false suspicions, {self.false_deaths} false "
            f"deaths of {self.members_declared_dead_falsely} live members",
            f"  packets {self.packets_sent}, push-pulls {self.push_pulls}, "
            f"wall {self.wall_seconds:.1f} s",
        ]


def build_cluster(
    members: int, config: GossipConfig, *, seed: int, loss: float = 0.0
) -> tuple[SwimCluster, float | None]:
    """`members` nodes join within one probe interval per 100 of them (through the three
    managers); returns the cluster and the time from the first join until every member had
    heard of every other (None if that took over 600 probe intervals)."""
    cluster = SwimCluster(config, seed=seed, faults=Faults(loss, 0.0, *LAN_DELAY))
    period = config.probe_interval
    spread = max(1.0, members / 100) * period
    cluster.build(members, spread=spread)
    cluster.sim.run_for(spread)
    if cluster.run_until(cluster.all_known, timeout=600 * period, step=period):
        return cluster, cluster.sim.now
    return cluster, None


def measure_join(cluster: SwimCluster) -> Watch:
    """A new member joins: who learns of it, when."""
    newcomer = cluster.add_member()
    join = cluster.watch(newcomer.name, EventKind.JOIN, EventKind.ALIVE_AGAIN)
    cluster.start(newcomer)
    cluster.run_until(lambda: join.complete, timeout=300 * cluster.config.probe_interval)
    return join


def pick_worker(cluster: SwimCluster, *, avoid: tuple[str, ...] = ()) -> SimMember:
    """A random running worker (not a seed), for crashes and leaves."""
    workers = [m for m in cluster.up_members()[MANAGERS:] if m.name not in avoid]
    return workers[cluster.rng.randrange(len(workers))]


def measure_failure(cluster: SwimCluster, victim: SimMember) -> tuple[Watch, Watch]:
    """Crash `victim`: (suspicions, deaths) as the others see them."""
    config = cluster.config
    suspect = cluster.watch(victim.name, EventKind.SUSPECT)
    dead = cluster.watch(victim.name, EventKind.DEAD)
    cluster.crash(victim.name)
    limit = config.suspicion_max_timeout(len(cluster.members)) + 200 * config.probe_interval
    cluster.run_until(lambda: dead.complete, timeout=limit)
    return suspect, dead


def measure_leave(cluster: SwimCluster, leaver: SimMember) -> Watch:
    left = cluster.watch(leaver.name, EventKind.LEFT)
    cluster.leave(leaver.name)
    cluster.run_until(lambda: left.complete, timeout=300 * cluster.config.probe_interval)
    return left


def measure_slow_node(cluster: SwimCluster, slow: SimMember, lag: float) -> tuple[int, int, int]:
    """Make `slow` process its inbound packets `lag` seconds late (uniform 0.5x to 1.5x) for
    long enough to see its suspicions through. Returns the false suspicions and false deaths of
    the healthy members meanwhile, and how many members declared the slow node dead."""
    config = cluster.config
    before = cluster.false_positives.snapshot()
    cluster.set_slow(slow.name, (lag / 2, lag * 1.5))
    cluster.sim.run_for(
        config.suspicion_max_timeout(len(cluster.members)) + 30 * config.probe_interval
    )
    cluster.set_slow(slow.name, None)
    after = cluster.false_positives
    suspicions, deaths = after.since(before, excluding=slow.name)
    return suspicions, deaths, after.deaths[slow.name] - before.deaths[slow.name]


def run_scenarios(
    members: int,
    *,
    seed: int = 1,
    profile: str = "lab",
    lifeguard: bool = True,
    tcp_pings: bool = True,
    loss: float = 0.0,
    slow_lag: float = 10.0,
) -> Report:
    """Build a cluster of `members - 1` by mass join, then measure one more join, a crash, a
    leave, and one slow node (`slow_lag` probe intervals of inbound lag). Loss applies to every
    datagram throughout."""
    started = time.perf_counter()
    config = PROFILES[profile]
    if not lifeguard:
        config = config.without_lifeguard()
    config = replace(config, tcp_pings=tcp_pings)
    period = config.probe_interval
    report = Report(members, seed, profile, lifeguard, tcp_pings, loss, period)

    cluster, report.build_known = build_cluster(members - 1, config, seed=seed, loss=loss)
    report.join = measure_join(cluster).quantile_time()
    victim = pick_worker(cluster)
    suspect, dead = measure_failure(cluster, victim)
    if suspect.seen:
        report.failure_first_suspect = min(suspect.seen.values()) - suspect.start
    report.failure_dead = dead.quantile_time()
    report.failure_dead_all = dead.quantile_time(1.0)
    report.leave = measure_leave(cluster, pick_worker(cluster)).quantile_time()
    report.slow_lag = slow_lag * period
    (
        report.slow_false_suspicions,
        report.slow_false_deaths,
        report.slow_node_declared_dead,
    ) = measure_slow_node(cluster, pick_worker(cluster), report.slow_lag)

    fp = cluster.false_positives
    report.false_suspicions = fp.suspicions.total()
    report.false_deaths = fp.deaths.total()
    report.members_declared_dead_falsely = len(fp.deaths)
    report.packets_sent = cluster.net.stats.sent
    report.push_pulls = cluster.push_pulls
    report.wall_seconds = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Simulate a SWIM cluster and print convergence, detection and false-positive"
        " figures."
    )
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--seed", type=int, action="append")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="lab")
    parser.add_argument("--loss", type=float, default=0.0, help="datagram loss, 0..1")
    parser.add_argument("--no-lifeguard", action="store_true")
    parser.add_argument("--no-tcp-pings", action="store_true", help="no TCP fallback probes")
    parser.add_argument("--compare", action="store_true", help="run with and without Lifeguard")
    parser.add_argument(
        "--slow-lag", type=float, default=10.0, help="slow node lag, in probe intervals"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args(argv)
    variants = [True, False] if args.compare else [not args.no_lifeguard]
    for seed in args.seed or [1]:
        for lifeguard in variants:
            report = run_scenarios(
                args.members,
                seed=seed,
                profile=args.profile,
                lifeguard=lifeguard,
                tcp_pings=not args.no_tcp_pings,
                loss=args.loss,
                slow_lag=args.slow_lag,
            )
            if args.json:
                print(json.dumps(asdict(report)))
            else:
                print("\n".join(report.lines()))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
