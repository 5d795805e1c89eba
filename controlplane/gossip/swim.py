"""SWIM membership with Lifeguard, sans I/O.

`SwimNode` never touches a clock, a socket or a random source of its own: every input carries
`now` (seconds, any monotonic origin), randomness comes from the injected `random.Random`, and
whatever it wants done (send a datagram, open a push-pull, tell the layer above about a member)
is appended to a list the driver drains with `take_outputs()` after each input. The driver calls
`tick(now)` no later than `next_deadline()`; calling it early is harmless.

The protocol is SWIM (Das, Gupta, Motivala, 2002) as hashicorp/memberlist runs it, with the
three parts of Lifeguard (Dadgar et al., 2018):

- Failure detection: one probe per probe interval, to members taken round-robin from a list
  shuffled each round (a newcomer is inserted at a random place, which keeps the worst-case
  detection time bounded). No ack within the probe timeout: ask `indirect_checks` random members
  to probe it for us; still no ack by the end of the interval: suspect it. A suspicion becomes
  death when its timer runs out, unless the member refutes it with a higher incarnation.
- Incarnations: only a member raises its own; news about it with a higher incarnation beats
  older news, and at equal incarnation dead beats suspect beats alive (SWIM's precedence).
- Dissemination: membership changes and user payloads are piggybacked on every packet, and a
  gossip round every gossip interval sends them to a few random members, including the recently
  dead (so a member wrongly declared dead hears of it and refutes; not those that left). A
  periodic push-pull with one random member exchanges the whole state (anti-entropy), and a
  joining node does one with each seed. Merging a full state follows the gossip rules, except
  that a member the other side believes dead is only suspected here (as memberlist does: the
  evidence is second-hand).
- Lifeguard: local health awareness (`awareness.py`) stretches the probe interval and timeout of
  a node that misses acks; relays of indirect probes answer with a nack when the target stays
  silent, so a prober whose own links are bad notices it is the problem; suspicion timeouts
  start long and shrink with independent confirmations (`suspicion.py`); and a probe of a
  suspect member carries the Suspect message ahead of the ping (buddy system), so the member
  refutes in its ack instead of waiting for gossip to reach it.

A probe also pings over TCP alongside the indirect probes (memberlist's fallback): a member
that answers over TCP is alive even if its datagrams are lost, and is not suspected.

Known differences from memberlist: a relay gives up (and nacks) after `relay_timeout()`, within
the requester's indirect phase, where memberlist waits a full ProbeTimeout and its nack usually
arrives after the requester stopped counting (footnote 5 of the Lifeguard paper asks for a
fraction of the requester's timeout; swift-cluster-membership#6 describes the same bug). The
probe timeout is scaled by the health score too (the Lifeguard paper's LHA-Probe; memberlist
scales the interval only). Dead and left members are reaped when a probe round wraps, as in
memberlist, so in a large cluster with a long round they may outlive GossipToTheDeadTime by up
to a round.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from controlplane.gossip.awareness import Awareness
from controlplane.gossip.broadcast import BroadcastQueue, message_size, packet_overhead
from controlplane.gossip.config import GossipConfig
from controlplane.gossip.suspicion import Suspicion
from controlplane.gossip.types import (
    Ack,
    Address,
    Alive,
    Dead,
    EventKind,
    IndirectPing,
    Member,
    MemberEvent,
    MemberRecord,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Output,
    Packet,
    Ping,
    PushPull,
    PushPullRequest,
    SendPacket,
    Suspect,
    TcpPing,
    UserMessage,
    UserMsg,
    UserState,
)

ALIVE = MemberState.ALIVE
SUSPECT = MemberState.SUSPECT
DEAD = MemberState.DEAD
LEFT = MemberState.LEFT


@dataclass(slots=True)
class Counters:
    """What this node did and saw, for metrics and the simulation's reports."""

    probes: int = 0  # probes started
    acks: int = 0  # probes answered (directly or through a relay) in time
    indirect_probes: int = 0  # probes that needed indirect pings
    nacks: int = 0  # nacks received from relays
    probe_failures: int = 0  # probes with no ack by the end of the interval
    tcp_rescues: int = 0  # probes failed over UDP but answered over TCP
    suspicions_raised: int = 0  # members this node suspected first-hand
    suspicions_refuted: int = 0  # members seen going from suspect back to alive
    deaths_declared: int = 0  # suspicion timeouts that ran out here
    refutations: int = 0  # accusations about this node it answered with a new incarnation
    relays: int = 0  # indirect pings this node performed for others
    packets_received: int = 0
    messages_received: int = 0
    misdirected_pings: int = 0  # pings meant for another name (a stale address)
    address_conflicts: int = 0  # alive news claiming a known name from another address
    push_pulls: int = 0  # push-pulls initiated (joins included)
    push_pull_failures: int = 0


class _Record:
    """This node's mutable record of one member (`Member` is its frozen view)."""

    __slots__ = ("_wire", "addr", "incarnation", "meta", "name", "state", "state_change")

    def __init__(
        self,
        name: str,
        addr: Address,
        incarnation: int,
        state: MemberState,
        meta: NodeMeta,
        now: float,
    ) -> None:
        self.name = name
        self.addr = addr
        self.incarnation = incarnation
        self.state = state
        self.meta = meta
        self.state_change = now
        self._wire: MemberRecord | None = None

    def wire(self) -> MemberRecord:
        """The push-pull form, rebuilt only when the record changed (push-pulls send every
        record, and most have not changed since the last one). Incarnation and state are
        enough to tell: new metadata comes with a new incarnation, and a new address only
        with a return from dead or left."""
        w = self._wire
        if w is None or w.incarnation != self.incarnation or w.state is not self.state:
            w = self._wire = MemberRecord(
                self.name, self.addr, self.incarnation, self.state, self.meta
            )
        return w

    def view(self) -> Member:
        return Member(
            self.name, self.addr, self.incarnation, self.state, self.meta, self.state_change
        )


class _Timer:
    __slots__ = ("active", "fn")

    def __init__(self, fn: Callable[[float], None]) -> None:
        self.fn = fn
        self.active = True


class _Probe:
    """Our probe in flight: its seq, whom, and the nacks the relays owe us."""

    __slots__ = (
        "deadline",
        "expected_nacks",
        "incarnation",
        "nacks",
        "seq",
        "target",
        "tcp_acked",
        "timers",
    )

    def __init__(self, seq: int, target: _Record, deadline: float) -> None:
        self.seq = seq
        self.target = target.name
        self.incarnation = target.incarnation  # what a failure will suspect
        self.deadline = deadline
        self.expected_nacks = 0
        self.nacks = 0
        self.tcp_acked = False
        self.timers: tuple[_Timer, ...] = ()  # cancelled by the ack


class _Relay:
    """An indirect ping we perform for `requester`: its ack (or nack) goes back there."""

    __slots__ = ("nack", "requester", "seq", "timer")

    def __init__(self, seq: int, requester: Address, nack: bool) -> None:
        self.seq = seq
        self.requester = requester
        self.nack = nack
        self.timer: _Timer | None = None


class SwimNode:
    def __init__(
        self,
        name: str,
        addr: Address,
        meta: NodeMeta,
        config: GossipConfig,
        *,
        now: float,
        rng: random.Random,
        incarnation: int = 0,
    ) -> None:
        self.name = name
        self.addr = addr
        self.config = config
        self.counters = Counters()
        self._rng = rng
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._me = _Record(name, addr, incarnation, ALIVE, meta, now)
        self._members: dict[str, _Record] = {name: self._me}
        self._order: list[str] = [name]  # probe order, reshuffled each round
        self._probe_index = 0
        self._waiting: dict[int, _Probe | _Relay] = {}  # seq -> who waits for its ack
        self._suspicions: dict[str, Suspicion] = {}
        self._queue = BroadcastQueue()
        self._seq = 0
        self._left = False
        self._user_state = b""
        self._outputs: list[Output] = []
        self._timers: list[tuple[float, int, _Timer]] = []
        self._timer_seq = 0
        self._queue.queue(self._alive_message(), name)  # goes with the first gossip round
        # Random phases, so that a cluster started at one instant does not probe in lockstep.
        self._at(now + rng.random() * config.probe_interval, self._probe_round)
        self._next_gossip = now + rng.random() * config.gossip_interval
        self._gossip_armed = True  # the first round is armed below
        self._at(self._next_gossip, self._gossip_round)
        self._at(now + rng.random() * config.push_pull_interval, self._push_pull_round)

    # ---- views ------------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def meta(self) -> NodeMeta:
        return self._me.meta

    @property
    def health_score(self) -> int:
        """Lifeguard's local health score: 0 is healthy, higher means "I am probably slow"."""
        return self._awareness.score

    @property
    def left(self) -> bool:
        return self._left

    @property
    def leave_finished(self) -> bool:
        """After `leave()`: the news has been sent as often as gossip requires, or there is
        nobody left to tell. The driver can stop the node then (or after its own timeout)."""
        if not self._left:
            return False
        if self.name not in self._queue:
            return True
        return not any(
            r.state in (ALIVE, SUSPECT) for r in self._members.values() if r is not self._me
        )

    def members(self) -> list[Member]:
        """Every member this node knows of, itself included, dead and left ones until reaped."""
        return [record.view() for record in self._members.values()]

    def member(self, name: str) -> Member | None:
        record = self._members.get(name)
        return record.view() if record is not None else None

    def member_count(self, *states: MemberState) -> int:
        """How many known members are in one of `states` (all of them when none is given)."""
        if not states:
            return len(self._members)
        return sum(1 for record in self._members.values() if record.state in states)

    # ---- inputs -----------------------------------------------------------------------------

    def take_outputs(self) -> list[Output]:
        outputs, self._outputs = self._outputs, []
        return outputs

    def next_deadline(self) -> float:
        """When `tick` has something to do next (the rounds are periodic: always soon)."""
        timers = self._timers
        while timers and not timers[0][2].active:
            heapq.heappop(timers)
        return timers[0][0] if timers else math.inf

    def tick(self, now: float) -> None:
        """Run every timer due at or before `now`."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if timer.active:
                timer.active = False
                timer.fn(now)

    def receive_packet(self, now: float, src: Address, packet: Packet) -> None:
        """A datagram arrived from `src`; its messages are handled in order."""
        self.counters.packets_received += 1
        self.counters.messages_received += len(packet.messages)
        members = self._members
        for message in packet.messages:
            if type(message) is Alive:
                if self._news(members.get(message.name), message.incarnation, message.addr):
                    self._on_alive(now, message)
                continue
            match message:
                case Suspect():
                    self._on_suspect(now, message)
                case Dead():
                    self._on_dead(now, message)
                case Ping():
                    self._on_ping(now, message, src)
                case Ack(seq):
                    self._on_ack(seq)
                case IndirectPing():
                    self._on_indirect_ping(now, message, src)
                case Nack(seq):
                    self._on_nack(seq)
                case UserMsg(data):
                    self._outputs.append(UserMessage(packet.sender, data))

    def tcp_ping_result(self, now: float, seq: int, acked: bool) -> None:
        """The outcome of a `TcpPing`: whether the Ack came back in time."""
        del now  # the probe is judged at its deadline, as memberlist does
        waiter = self._waiting.get(seq)
        if acked and isinstance(waiter, _Probe):
            waiter.tcp_acked = True

    def handle_tcp_ping(self, now: float, src: Address, ping: Ping) -> Ack | None:
        """Server side of a `TcpPing`: the Ack to write back, or None (not meant for us)."""
        del now, src  # answering needs neither
        if ping.target and ping.target != self.name:
            self.counters.misdirected_pings += 1
            return None
        return Ack(ping.seq)

    def join(self, now: float, seeds: list[Address]) -> None:
        """Start a push-pull with each seed (results come back through `push_pull_result`)."""
        del now  # joining needs no timer: the rounds already run
        for seed in seeds:
            if seed != self.addr:
                self._start_push_pull(seed, join=True)

    def handle_push_pull(self, now: float, src: Address, request: PushPull) -> PushPull:
        """Server side of a push-pull: answer with our state, then merge theirs."""
        del src  # the request names its sender; the address adds nothing
        response = self._local_state(request.join)
        self._merge(now, request)
        return response

    def push_pull_result(self, now: float, dst: Address, response: PushPull | None) -> None:
        """Client side: the answer to our `PushPullRequest` to `dst`, or None if it failed."""
        del dst  # a failure needs no action against the peer: probes judge its health
        if response is None:
            self.counters.push_pull_failures += 1
            return
        self._merge(now, response)

    def leave(self, now: float) -> None:
        """Leave gracefully: tell everyone (a Dead from ourselves means "left"), stop probing.
        Keep the node running until `leave_finished` so the news gets out."""
        if self._left:
            return
        self._left = True
        self._on_dead(now, Dead(self.name, self._me.incarnation, self.name))

    def update_meta(self, now: float, meta: NodeMeta) -> None:
        """Publish new metadata under a new incarnation, so it overrides the old everywhere."""
        del now  # our own record's state does not change
        self._me.meta = meta
        self._me.incarnation += 1
        self._broadcast(self._alive_message(), self.name)

    def queue_broadcast(self, data: bytes, key: bytes | None = None) -> None:
        """Piggyback `data` to every member; a later broadcast with the same `key` replaces this
        one if it has not gone out yet. Members do not relay it: the layer above re-broadcasts
        what is news to it (as NetworkDB does), so it decides how far a payload travels."""
        message = UserMsg(data)
        room = self.config.packet_budget - packet_overhead(self.name)
        if message_size(message) > room:
            raise ValueError(
                f"a broadcast of {len(data)} bytes does not fit a {self.config.packet_budget}"
                "-byte packet: send it in a push-pull user state, or split it"
            )
        self._broadcast(message, ("user", key) if key is not None else None)

    def set_user_state(self, data: bytes) -> None:
        """The layer above's full state, sent in every push-pull (NetworkDB's bulk sync)."""
        self._user_state = data

    # ---- timers -----------------------------------------------------------------------------

    def _at(self, when: float, fn: Callable[[float], None]) -> _Timer:
        timer = _Timer(fn)
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, timer))
        return timer

    def _scaled(self, duration: float) -> float:
        return self._awareness.scale(duration) if self.config.awareness else duration

    def _health(self, delta: int) -> None:
        if self.config.awareness:
            self._awareness.apply(delta)

    # ---- probing ----------------------------------------------------------------------------

    def _probe_round(self, now: float) -> None:
        interval = self._scaled(self.config.probe_interval)
        target = None if self._left else self._next_probe_target(now)
        if target is not None:
            self._start_probe(now, target, interval)
        # Scheduled after the probe's own deadline, so at equal times that one is judged first.
        self._at(now + interval, self._probe_round)

    def _next_probe_target(self, now: float) -> _Record | None:
        checked = 0
        while checked < len(self._order):
            if self._probe_index >= len(self._order):
                self._new_round(now)
                checked += 1
                continue
            record = self._members[self._order[self._probe_index]]
            self._probe_index += 1
            if record is self._me or record.state >= DEAD:
                checked += 1
                continue
            return record
        return None

    def _new_round(self, now: float) -> None:
        """Forget members dead or left for longer than GossipToTheDeadTime, and reshuffle."""
        horizon = now - self.config.gossip_to_the_dead_time
        reaped = [
            r
            for r in self._members.values()
            if r.state >= DEAD and r.state_change < horizon and r is not self._me
        ]
        for record in reaped:
            del self._members[record.name]
            self._event(EventKind.REAPED, record)
        if reaped:
            self._order = [name for name in self._order if name in self._members]
        self._rng.shuffle(self._order)
        self._probe_index = 0

    def _start_probe(self, now: float, target: _Record, interval: float) -> None:
        self.counters.probes += 1
        self._seq += 1
        probe = _Probe(self._seq, target, now + interval)
        self._waiting[probe.seq] = probe
        messages: list[Message] = []
        if target.state is SUSPECT and self.config.buddy:
            # First, so that the refutation rides on the ack the ping triggers.
            messages.append(Suspect(target.name, target.incarnation, self.name))
        messages.append(Ping(probe.seq, target.name, self.name, self.addr))
        self._send(target.addr, messages)
        timeout = self._scaled(self.config.probe_timeout)
        probe.timers = (
            self._at(now + timeout, lambda t: self._probe_timed_out(t, probe)),
            self._at(probe.deadline, lambda t: self._probe_failed(t, probe)),
        )

    def _probe_timed_out(self, now: float, probe: _Probe) -> None:
        """No direct ack in time: ask others to probe the target for us, and try TCP."""
        if self._waiting.get(probe.seq) is not probe:
            return
        target = self._members.get(probe.target)
        if target is None:
            return
        self.counters.indirect_probes += 1
        peers = self._random_members(
            self.config.indirect_checks, lambda r: r.state is ALIVE and r is not target
        )
        nack = self.config.nacks
        request = IndirectPing(probe.seq, target.name, target.addr, nack, self.name, self.addr)
        for peer in peers:
            self._send(peer.addr, [request])
        probe.expected_nacks = len(peers) if nack else 0
        if self.config.tcp_pings:
            ping = Ping(probe.seq, target.name, self.name, self.addr)
            self._outputs.append(TcpPing(target.addr, ping, probe.deadline - now))

    def _probe_failed(self, now: float, probe: _Probe) -> None:
        """The probe interval ran out without an ack: suspect the target."""
        if self._waiting.pop(probe.seq, None) is not probe:
            return
        if probe.tcp_acked:
            # Alive, but its UDP (or ours) is broken: not a failure of the member.
            self.counters.tcp_rescues += 1
            self._health(-1)
            return
        self.counters.probe_failures += 1
        # Missing nacks mean our own links or processing are at fault, not only the target's.
        expected = probe.expected_nacks
        self._health(expected - probe.nacks if expected else 1)
        self._on_suspect(now, Suspect(probe.target, probe.incarnation, self.name))

    def _on_ack(self, seq: int) -> None:
        waiter = self._waiting.pop(seq, None)
        if waiter is None:
            return  # late, duplicated or unknown
        if isinstance(waiter, _Probe):
            self.counters.acks += 1
            for timer in waiter.timers:
                timer.active = False
            self._health(-1)
        else:
            if waiter.timer is not None:
                waiter.timer.active = False
            self._send(waiter.requester, [Ack(waiter.seq)])

    def _on_nack(self, seq: int) -> None:
        waiter = self._waiting.get(seq)
        if isinstance(waiter, _Probe):
            self.counters.nacks += 1
            waiter.nacks += 1

    def _on_ping(self, now: float, ping: Ping, src: Address) -> None:
        ack = self.handle_tcp_ping(now, src, ping)
        if ack is not None:
            self._send(ping.source_addr if ping.source_addr[1] else src, [ack])

    def _on_indirect_ping(self, now: float, request: IndirectPing, src: Address) -> None:
        self.counters.relays += 1
        self._seq += 1
        requester = request.source_addr if request.source_addr[1] else src
        relay = _Relay(request.seq, requester, request.nack)
        self._waiting[self._seq] = relay
        self._send(request.target_addr, [Ping(self._seq, request.target, self.name, self.addr)])
        seq = self._seq
        relay.timer = self._at(
            now + self.config.relay_timeout(), lambda t: self._relay_timed_out(seq, relay)
        )

    def _relay_timed_out(self, seq: int, relay: _Relay) -> None:
        if self._waiting.get(seq) is not relay:
            return
        del self._waiting[seq]
        if relay.nack:
            self._send(relay.requester, [Nack(relay.seq)])

    # ---- membership news --------------------------------------------------------------------

    def _news(self, record: _Record | None, incarnation: int, addr: Address) -> bool:
        """Whether an alive claim may change anything (`_on_alive` decides). Most gossip
        repeats what we know; this filter keeps that cheap, the hot path of a large cluster.
        Claims about ourselves always go through (they may call for a refutation)."""
        return (
            record is None
            or record is self._me
            or incarnation > record.incarnation
            or addr != record.addr
        )

    def _on_alive(self, now: float, alive: Alive) -> None:
        record = self._members.get(alive.name)
        if record is self._me:
            self._on_alive_about_me(alive)
            return
        if record is None:
            record = _Record(alive.name, alive.addr, alive.incarnation, ALIVE, alive.meta, now)
            self._add_member(record)
            self._broadcast(alive, alive.name)
            self._event(EventKind.JOIN, record)
            return
        if alive.addr != record.addr:
            reclaim_after = self.config.dead_node_reclaim_time
            reclaimable = record.state is LEFT or (
                record.state is DEAD
                and reclaim_after > 0
                and now - record.state_change > reclaim_after
            )
            if not reclaimable:
                self.counters.address_conflicts += 1
                return
        elif alive.incarnation <= record.incarnation:
            return
        self._suspicions.pop(alive.name, None)
        self._broadcast(alive, alive.name)
        changed = alive.meta != record.meta or alive.addr != record.addr
        record.incarnation = alive.incarnation
        record.addr = alive.addr
        record.meta = alive.meta
        if record.state is not ALIVE:
            if record.state is SUSPECT:
                self.counters.suspicions_refuted += 1
            record.state = ALIVE
            record.state_change = now
            self._event(EventKind.ALIVE_AGAIN, record)
        elif changed:
            self._event(EventKind.UPDATE, record)

    def _on_alive_about_me(self, alive: Alive) -> None:
        """Someone vouches for us with other data (e.g. our previous life before a restart):
        outbid it, so our current record wins everywhere."""
        me = self._me
        if self._left or alive.incarnation < me.incarnation:
            return
        if alive.incarnation == me.incarnation and alive.meta == me.meta and alive.addr == me.addr:
            return
        self._refute(alive.incarnation)

    def _on_suspect(self, now: float, suspect: Suspect) -> None:
        record = self._members.get(suspect.name)
        if record is None or suspect.incarnation < record.incarnation:
            return
        suspicion = self._suspicions.get(suspect.name)
        if suspicion is not None:
            if suspicion.confirm(suspect.source):
                # New evidence: pass it on so others can count it, and move our deadline.
                self._broadcast(suspect, suspect.name)
                self._arm_suspicion(now, suspect.name, suspicion)
            return
        if record.state is not ALIVE:
            return
        if record is self._me:
            self._refute(suspect.incarnation)
            return
        if suspect.source == self.name:
            self.counters.suspicions_raised += 1
        self._broadcast(suspect, suspect.name)
        record.incarnation = suspect.incarnation
        record.state = SUSPECT
        record.state_change = now
        self._event(EventKind.SUSPECT, record)
        config = self.config
        n = len(self._members)
        expected = config.suspicion_confirmations(n) if config.dynamic_suspicion else 0
        low = config.suspicion_min_timeout(n)
        high = config.suspicion_max_timeout(n)
        suspicion = Suspicion(suspect.source, expected, low, high, now)
        self._suspicions[suspect.name] = suspicion
        self._arm_suspicion(now, suspect.name, suspicion)

    def _arm_suspicion(self, now: float, name: str, suspicion: Suspicion) -> None:
        """(Re)schedule the check of a suspicion at its current deadline; stale checks of the
        same suspicion find the deadline moved and do nothing."""

        def expire(t: float) -> None:
            if self._suspicions.get(name) is not suspicion or t < suspicion.deadline:
                return
            del self._suspicions[name]
            record = self._members[name]
            if record.state is SUSPECT:
                self.counters.deaths_declared += 1
                self._on_dead(t, Dead(name, record.incarnation, self.name))

        self._at(max(now, suspicion.deadline), expire)

    def _on_dead(self, now: float, dead: Dead) -> None:
        record = self._members.get(dead.name)
        if record is None or dead.incarnation < record.incarnation:
            return
        self._suspicions.pop(dead.name, None)
        if record.state >= DEAD:
            return
        if record is self._me and not self._left:
            self._refute(dead.incarnation)
            return
        self._broadcast(dead, dead.name)
        record.incarnation = dead.incarnation
        record.state = LEFT if dead.source == dead.name else DEAD
        record.state_change = now
        self._event(EventKind.LEFT if record.state is LEFT else EventKind.DEAD, record)

    def _refute(self, accused: int) -> None:
        """Answer an accusation about ourselves with an incarnation that beats it."""
        me = self._me
        me.incarnation = max(me.incarnation, accused) + 1
        self.counters.refutations += 1
        self._health(1)  # being accused suggests we are slow to answer
        self._broadcast(self._alive_message(), self.name)

    def _alive_message(self) -> Alive:
        me = self._me
        return Alive(me.name, me.incarnation, me.addr, me.meta)

    def _add_member(self, record: _Record) -> None:
        """Insert at a random place of the probe order, so a newcomer waits half a round on
        average before its first probe rather than a whole round."""
        self._members[record.name] = record
        order = self._order
        order.append(record.name)
        swap = int(self._rng.random() * len(order))
        order[swap], order[-1] = order[-1], order[swap]

    def _event(self, kind: EventKind, record: _Record) -> None:
        if record is not self._me:
            self._outputs.append(MemberEvent(kind, record.view()))

    # ---- dissemination ----------------------------------------------------------------------

    def _send(self, dst: Address, messages: list[Message]) -> None:
        """Send `messages`, topped up with broadcasts to fill the packet budget."""
        room = self.config.packet_budget - packet_overhead(self.name)
        for message in messages:
            room -= message_size(message)
        messages += self._queue.take(room, self._retransmit_limit())
        self._outputs.append(SendPacket(dst, Packet(self.name, tuple(messages))))

    def _retransmit_limit(self) -> int:
        return self.config.retransmit_limit(len(self._members))

    def _broadcast(self, message: Message, key: Hashable | None) -> None:
        """Queue `message` for gossip, and wake the gossip round if it idles."""
        self._queue.queue(message, key)
        if not self._gossip_armed:
            self._gossip_armed = True
            self._at(self._next_gossip, self._gossip_round)

    def _gossip_round(self, now: float) -> None:
        """Gossip to `gossip_nodes` members every `gossip_interval` while broadcasts wait.
        With none queued the round stops re-arming itself (it would send nothing: an idle
        lab node woke 50 times a second for it) until `_broadcast` queues one, which goes
        at the round due then (at once if that time has passed)."""
        config = self.config
        self._next_gossip = now + config.gossip_interval
        if not self._queue:
            self._gossip_armed = False
            return
        self._at(self._next_gossip, self._gossip_round)
        horizon = now - config.gossip_to_the_dead_time
        targets = self._random_members(
            config.gossip_nodes,
            lambda r: r.state <= SUSPECT or (r.state is DEAD and r.state_change >= horizon),
        )
        room = config.packet_budget - packet_overhead(self.name)
        limit = self._retransmit_limit()
        for target in targets:
            messages = self._queue.take(room, limit)
            if not messages:
                break
            self._outputs.append(SendPacket(target.addr, Packet(self.name, tuple(messages))))

    def _random_members(self, k: int, accept: Callable[[_Record], bool]) -> list[_Record]:
        """Up to `k` distinct random members other than us that `accept`, by rejection
        sampling over the probe order (3n attempts at most, as memberlist's kRandomNodes)."""
        order = self._order
        members = self._members
        n = len(order)
        picked: list[_Record] = []
        uniform = self._rng.random  # int(random() * n): randrange's cost, without its checks
        for _ in range(3 * n):
            if len(picked) >= k:
                break
            record = members[order[int(uniform() * n)]]
            if record is self._me or record in picked or not accept(record):
                continue
            picked.append(record)
        return picked

    # ---- push-pull --------------------------------------------------------------------------

    def _push_pull_round(self, now: float) -> None:
        self._at(now + self.config.push_pull_period(len(self._members)), self._push_pull_round)
        if self._left:
            return
        peers = self._random_members(1, lambda r: r.state is ALIVE)
        if peers:
            self._start_push_pull(peers[0].addr, join=False)

    def _start_push_pull(self, dst: Address, *, join: bool) -> None:
        self.counters.push_pulls += 1
        self._outputs.append(PushPullRequest(dst, self._local_state(join)))

    def _local_state(self, join: bool) -> PushPull:
        records = tuple(r.wire() for r in self._members.values())
        return PushPull(join, records, self._user_state, self.name)

    def _merge(self, now: float, state: PushPull) -> None:
        members = self._members
        for r in state.members:
            if r.state is ALIVE:
                if self._news(members.get(r.name), r.incarnation, r.addr):
                    self._on_alive(now, Alive(r.name, r.incarnation, r.addr, r.meta))
            elif r.state is LEFT:
                self._on_dead(now, Dead(r.name, r.incarnation, r.name))
            else:
                # Second-hand death is only a suspicion here: the member gets its chance to
                # refute, and our own timer decides.
                self._on_suspect(now, Suspect(r.name, r.incarnation, self.name))
        if state.user_state:
            self._outputs.append(UserState(state.sender, state.user_state, state.join))
