"""NetworkDB in deterministic simulation, over a simple model of the membership layer.

Every node runs the real `NetworkDB` core. The SWIM layer below it is modelled, not run, so that
what is measured here is NetworkDB alone:

- Failure detection is perfect, after `detect_delay`: when a node crashes, is cut off or comes
  back, every node that can (or can no longer) reach it is told so that long after, if it is
  still true then. A graceful leave is told the same way.
- A `ClusterBroadcast` rides on the membership layer's gossip: it reaches `retransmit_limit(n)`
  random members (memberlist's RetransmitMult * ceil(log10(n + 1))), each copy lost with the
  datagram loss rate and delayed by up to one gossip interval. NetworkDB passes on the network
  events that are news to it, so this is an epidemic, as in Swarm.
- The push-pull runs with one random member every push-pull interval (memberlist's
  PushPullInterval, which is also NetworkDB's `bulk_sync_interval`) and when a node starts,
  carrying `local_state()` both ways over a reliable stream.
- `SendTo` datagrams cross the `SimNetwork` with its loss and delays; bulk syncs are TCP
  exchanges that arrive whole when the peer is reachable and report None otherwise.

The scenarios measure: how long an entry written on one member of a network takes to be seen by
all members (with datagram loss), that nodes outside the network never hold it, how long the
entries of a failed member take to be hidden everywhere and to come back when it returns, that a
member restarted under the same name gets the entries of its previous run deleted, how long a
network leave takes to remove the entries, and when tombstones are gone from every node.

`python -m controlplane.sim.networkdb_cluster --nodes 100 --seed 1` prints the figures.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial

from controlplane.gossip.networkdb import NetworkDB, NetworkDBConfig, NodeStatus
from controlplane.gossip.networkdb_queue import retransmit_limit
from controlplane.gossip.networkdb_types import (
    BulkSyncRequest,
    ClusterBroadcast,
    Message,
    NetworkEvent,
    NetworkState,
    Output,
    SendTo,
    TableGossip,
    TableSync,
    WatchEvent,
    WatchEventType,
)
from controlplane.sim.clock import Simulator, Timer
from controlplane.sim.network import Faults, SimNetwork

NET = "overlay-1"
TABLE = "endpoint_table"
TCP_DELAY = (0.002, 0.02)  # one way, for push-pulls and bulk syncs
CONNECT_TIMEOUT = 0.5  # how long a bulk sync to an unreachable node takes to fail
POLL = 0.01  # how often a waiting scenario checks its condition (times come from watch events)


class SimFailure(AssertionError):
    """An invariant broke or a convergence deadline passed; the message has the seed."""


@dataclass
class SimNode:
    """One node: its NetworkDB, and what its watch on TABLE of NET reported, with times."""

    name: str
    db: NetworkDB
    running: bool = True
    timer: Timer | None = None
    view: dict[str, tuple[bytes, float]] = field(default_factory=dict)  # key -> value, since
    removed: dict[str, float] = field(default_factory=dict)  # key -> last time it disappeared

    def observe(self, now: float, event: WatchEvent) -> None:
        if event.type is WatchEventType.DELETE:
            self.view.pop(event.key, None)
            self.removed[event.key] = now
        else:
            self.view[event.key] = (event.value, now)

    def sees(self, key: str) -> bytes | None:
        held = self.view.get(key)
        return held[0] if held is not None else None


class NetworkDBSim:
    """A cluster of `members` nodes that will join network NET, plus `outsiders` that won't."""

    def __init__(
        self,
        seed: int,
        *,
        members: int,
        outsiders: int = 0,
        loss: float = 0.1,
        config: NetworkDBConfig | None = None,
        detect_delay: float = 0.5,
    ) -> None:
        self.seed = seed
        self.sim = Simulator(seed)
        self.config = config if config is not None else NetworkDBConfig.lab()
        self.loss = loss
        self.detect_delay = detect_delay
        faults = Faults(drop=loss, delay_min=0.0005, delay_max=0.005)
        self.net: SimNetwork[str, TableGossip] = SimNetwork(self.sim, faults)
        self.members = [f"node-{i:03d}" for i in range(members)]
        self.outsiders = [f"outside-{i:03d}" for i in range(outsiders)]
        self.datagrams_to_outsiders = 0
        self._sides: tuple[list[str], list[str]] = ([], [])
        self.nodes: dict[str, SimNode] = {}
        for name in self.members + self.outsiders:
            self.nodes[name] = self._new_node(name)
        for node in self.nodes.values():
            for other in self.nodes:
                if other != node.name:
                    node.db.node_alive(0.0, other)
            self._pump(node)
            first = self.sim.rng.uniform(0, self.config.bulk_sync_interval)
            self.sim.call_later(first, self._push_pull, node)

    # ---- wiring -------------------------------------------------------------------------------

    def _new_node(self, name: str) -> SimNode:
        db = NetworkDB(name, self.config, random.Random(self.sim.rng.getrandbits(64)))
        node = SimNode(name, db)
        db.watch(TABLE, NET, on_event=lambda event: node.observe(self.sim.now, event))
        self.net.attach(name, lambda src, message: self._receive(node, src, message))
        return node

    def _pump(self, node: SimNode) -> None:
        """Carry out the node's outputs and make sure it is ticked at its next deadline."""
        if not node.running:
            return
        for output in node.db.take_outputs():
            self._dispatch(node, output)
        due = max(node.db.next_deadline(), self.sim.now)
        if node.timer is None or not node.timer.active or due < node.timer.when:
            if node.timer is not None:
                node.timer.cancel()
            node.timer = self.sim.call_at(due, self._tick, node)

    def _tick(self, node: SimNode) -> None:
        node.timer = None
        if node.running:
            node.db.tick(self.sim.now)
            self._pump(node)

    def _input(self, node: SimNode, fn: Callable[[NetworkDB, float], object]) -> None:
        """Feed an input to a running node (of the current run: not one that was replaced)."""
        if node.running and self.nodes.get(node.name) is node:
            fn(node.db, self.sim.now)
            self._pump(node)

    def _dispatch(self, node: SimNode, output: Output) -> None:
        match output:
            case SendTo(dst, message):
                if dst in self.outsiders:
                    self.datagrams_to_outsiders += 1
                self.net.send(node.name, dst, message)
            case ClusterBroadcast(message, _key):
                self._piggyback(node, message)
            case BulkSyncRequest(dst, request):
                self._bulk_sync(node, dst, request)

    def _receive(self, node: SimNode, src: str, message: Message) -> None:
        self._input(node, lambda db, now: db.receive(now, src, message))

    def _reachable(self, src: str, dst: str) -> bool:
        return self.nodes[dst].running and self.net.can_reach(src, dst)

    def _others(self, name: str) -> list[str]:
        return [n for n in self.nodes if n != name and self._reachable(name, n)]

    def _piggyback(self, node: SimNode, message: NetworkEvent) -> None:
        rng = self.sim.rng
        others = self._others(node.name)
        count = min(len(others), retransmit_limit(self.config.retransmit_mult, len(self.nodes)))
        for dst in rng.sample(others, count):
            if rng.random() >= self.loss:
                delay = rng.uniform(0, self.config.gossip_interval)
                self.sim.call_later(delay, self._receive, self.nodes[dst], node.name, message)

    def _bulk_sync(self, node: SimNode, dst: str, request: TableSync) -> None:
        rng = self.sim.rng
        if not self._reachable(node.name, dst):
            self.sim.call_later(CONNECT_TIMEOUT, self._sync_result, node, dst, None)
            return
        peer = self.nodes[dst]

        def answer() -> None:
            if not self._reachable(node.name, dst) or self.nodes[dst] is not peer:
                self._sync_result(node, dst, None)
                return
            response = peer.db.bulk_sync_request(self.sim.now, node.name, request)
            self._pump(peer)
            self.sim.call_later(rng.uniform(*TCP_DELAY), self._sync_result, node, dst, response)

        self.sim.call_later(rng.uniform(*TCP_DELAY), answer)

    def _sync_result(self, node: SimNode, dst: str, response: TableSync | None) -> None:
        self._input(node, lambda db, now: db.bulk_sync_result(now, dst, response))

    def _push_pull(self, node: SimNode) -> None:
        if not node.running or self.nodes.get(node.name) is not node:
            return
        rng = self.sim.rng
        others = self._others(node.name)
        if others:
            peer = self.nodes[rng.choice(others)]
            mine, theirs = node.db.local_state(), peer.db.local_state()
            self.sim.call_later(rng.uniform(*TCP_DELAY), self._merge_state, peer, node.name, mine)
            self.sim.call_later(rng.uniform(*TCP_DELAY), self._merge_state, node, peer.name, theirs)
        self.sim.call_later(self.config.bulk_sync_interval, self._push_pull, node)

    def _merge_state(self, node: SimNode, src: str, state: NetworkState) -> None:
        self._input(node, lambda db, now: db.merge_remote_state(now, src, state))

    # ---- the membership model -------------------------------------------------------------------

    def _tell_later(self, observer: str, subject: str, failed: bool) -> None:
        node = self.nodes[observer]
        self.sim.call_later(self.detect_delay, self._tell, node, subject, failed)

    def _tell(self, observer: SimNode, subject: str, failed: bool) -> None:
        """Report a membership change if it is still true (a perfect failure detector)."""
        reachable = self._reachable(observer.name, subject)
        if failed and not reachable:
            self._input(observer, lambda db, now: db.node_failed(now, subject))
        elif not failed and reachable:
            self._input(observer, lambda db, now: db.node_alive(now, subject))

    def split(self, side: list[str]) -> None:
        """Partition `side` from the other nodes (all keep running); both sides detect it."""
        rest = [n for n in self.nodes if n not in side]
        self.net.partition(side, rest)
        self._sides = (side, rest)
        self._tell_across(failed=True)

    def heal(self) -> None:
        self.net.heal()
        self._tell_across(failed=False)

    def _tell_across(self, *, failed: bool) -> None:
        side, rest = self._sides
        for a in side:
            for b in rest:
                if self.nodes[a].running and self.nodes[b].running:
                    self._tell_later(a, b, failed)
                    self._tell_later(b, a, failed)

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        node.running = False
        if node.timer is not None:
            node.timer.cancel()
        self.net.detach(name)
        for other in self.running():
            self._tell_later(other, name, failed=True)

    def restart(self, name: str) -> None:
        """Start `name` again with empty state, as a restarted process would be; it learns the
        members at once (its join) and the others see it alive after the detection delay."""
        node = self._new_node(name)
        self.nodes[name] = node
        for other in self.running(exclude=name):
            node.db.node_alive(self.sim.now, other)
            self._tell_later(other, name, failed=False)
        self._pump(node)
        self._push_pull(node)

    def running(self, exclude: str = "") -> list[str]:
        return [n for n, node in self.nodes.items() if node.running and n != exclude]

    # ---- actions and checks ---------------------------------------------------------------------

    def join(self, name: str) -> None:
        self._input(self.nodes[name], lambda db, now: db.join_network(now, NET))

    def leave(self, name: str) -> None:
        self._input(self.nodes[name], lambda db, now: db.leave_network(now, NET))

    def create(self, name: str, key: str, value: bytes) -> None:
        self._input(self.nodes[name], lambda db, now: db.create_entry(now, TABLE, NET, key, value))

    def delete(self, name: str, key: str) -> None:
        self._input(self.nodes[name], lambda db, now: db.delete_entry(now, TABLE, NET, key))

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float, what: str, poll: float = POLL
    ) -> None:
        end = self.sim.now + timeout
        while not predicate():
            if self.sim.now >= end:
                raise SimFailure(f"seed {self.seed}: {what} not within {timeout:.1f}s")
            self.sim.run_for(poll)

    def all_see(self, names: Iterable[str], key: str, value: bytes | None) -> bool:
        """Whether every node of `names` sees `value` at `key`, checking on the way that what
        its watch reported is what it reads."""
        result = True
        for name in names:
            node = self.nodes[name]
            watched = node.sees(key)
            entry = node.db.get_entry(TABLE, NET, key)
            if watched != (entry.value if entry is not None else None):
                raise SimFailure(f"seed {self.seed}: {name}'s watch disagrees with its reads")
            result = result and watched == value
        return result

    def seen_by_all_at(self, names: Iterable[str], key: str) -> float:
        """When the last of `names` started seeing `key` (they all see it)."""
        return max(self.nodes[n].view[key][1] for n in names)

    def gone_from_all_at(self, names: Iterable[str], key: str) -> float:
        return max(self.nodes[n].removed[key] for n in names)

    def check_outsiders(self) -> None:
        for name in self.outsiders:
            if self.nodes[name].db.records(NET):
                raise SimFailure(f"seed {self.seed}: {name}, not on {NET}, holds its entries")

    def check_views(self) -> None:
        """What each watch reported adds up to what the node reads."""
        for node in self.nodes.values():
            if node.running:
                read = {k: e.value for k, e in node.db.entries(NET, TABLE).items()}
                if read != {k: v for k, (v, _) in node.view.items()}:
                    raise SimFailure(f"seed {self.seed}: {node.name}'s watch disagrees")


# ---- scenarios --------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one run measured (virtual seconds)."""

    seed: int
    members: int
    outsiders: int
    loss: float
    network_formed: float = 0.0
    convergence: list[float] = field(default_factory=list)  # write -> seen by every member
    datagrams_per_entry: float = 0.0
    bulk_sync_only: float = 0.0  # write -> seen by every member, every gossip datagram lost
    hide: float = 0.0  # member isolated -> its entries hidden on every other member
    restore: float = 0.0  # healed -> its entries visible again everywhere
    partition_repair: float = 0.0  # halves healed -> what each wrote meanwhile seen by all
    restart_purge: float = 0.0  # restarted under the same name -> stale entries deleted
    network_leave: float = 0.0  # leave_network -> its entries gone from every member
    tombstone_reaped: float = 0.0  # delete -> no node holds a record of the entry
    datagrams_to_outsiders: int = 0

    def table(self) -> str:
        conv = sorted(self.convergence)
        p99 = conv[min(len(conv) - 1, int(len(conv) * 0.99))]
        rows = [
            ("members + outsiders, datagram loss",
             f"{self.members} + {self.outsiders}, {self.loss:.0%}"),
            ("network formed (all joined, every peer known)", f"{self.network_formed:.2f} s"),
            (f"entry seen by all members, p50 / p99 / max of {len(conv)}",
             f"{statistics.median(conv):.3f} / {p99:.3f} / {conv[-1]:.3f} s"),
            ("gossip datagrams per entry", f"{self.datagrams_per_entry:.0f}"),
            ("entry seen by all members with all gossip lost", f"{self.bulk_sync_only:.2f} s"),
            ("member cut off -> its entries hidden everywhere", f"{self.hide:.2f} s"),
            ("healed -> its entries back everywhere", f"{self.restore:.2f} s"),
            ("two halves healed -> their writes seen by all", f"{self.partition_repair:.2f} s"),
            ("restart under the same name -> old entries deleted", f"{self.restart_purge:.2f} s"),
            ("leave_network -> its entries gone everywhere", f"{self.network_leave:.2f} s"),
            ("delete -> tombstone reaped on every node", f"{self.tombstone_reaped:.2f} s"),
            ("datagrams to nodes outside the network", f"{self.datagrams_to_outsiders}"),
        ]  # fmt: skip
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def run_scenarios(
    seed: int,
    *,
    members: int,
    outsiders: int,
    loss: float = 0.1,
    writes: int = 20,
    config: NetworkDBConfig | None = None,
) -> Figures:
    """Form the network, then measure each behaviour in turn on the same cluster."""
    s = NetworkDBSim(seed, members=members, outsiders=outsiders, loss=loss, config=config)
    cfg, sim, rng = s.config, s.sim, s.sim.rng
    figures = Figures(seed, members, outsiders, loss)
    group = s.members
    deadline = 10 * cfg.bulk_sync_interval

    for name in group:
        sim.call_later(rng.uniform(0, 1.0), s.join, name)

    def formed() -> bool:
        return all(len(s.nodes[n].db.peers(NET)) == len(group) - 1 for n in group)

    s.wait_until(formed, 60.0, "network formation")
    figures.network_formed = sim.now

    # Fresh entries written on random members, one at a time.
    sent_before = s.net.stats.sent
    for i in range(writes):
        key, value = f"ep-{i}", f"10.0.{i // 256}.{i % 256}".encode()
        start = sim.now
        s.create(rng.choice(group), key, value)
        s.wait_until(partial(s.all_see, group, key, value), deadline, f"entry {key}")
        figures.convergence.append(s.seen_by_all_at(group, key) - start)
        s.check_outsiders()
        sim.run_for(rng.uniform(0, cfg.bulk_sync_interval / 3))
    figures.datagrams_per_entry = (s.net.stats.sent - sent_before) / writes

    # Every gossip datagram lost: the periodic bulk sync alone delivers the entry.
    faults = s.net.faults
    s.net.faults = replace(faults, drop=1.0)
    start = sim.now
    s.create(rng.choice(group), "no-gossip", b"x")
    s.wait_until(partial(s.all_see, group, "no-gossip", b"x"), deadline, "bulk sync alone")
    figures.bulk_sync_only = s.seen_by_all_at(group, "no-gossip") - start
    s.net.faults = faults

    # A member that owns an entry is cut off, then comes back.
    victim = rng.choice(group)
    others = [n for n in group if n != victim]
    s.create(victim, "victim-ep", b"v")
    s.wait_until(lambda: s.all_see(group, "victim-ep", b"v"), deadline, "the victim's entry")
    start = sim.now
    s.split([victim])
    s.wait_until(lambda: s.all_see(others, "victim-ep", None), deadline, "hiding its entries")
    figures.hide = s.gone_from_all_at(others, "victim-ep") - start
    if s.nodes[victim].sees("victim-ep") is None:
        raise SimFailure(f"seed {seed}: the isolated node lost sight of its own entry")
    start = sim.now
    s.heal()
    s.wait_until(lambda: s.all_see(group, "victim-ep", b"v"), deadline, "restoring its entries")
    figures.restore = s.seen_by_all_at(others, "victim-ep") - start

    # The members split in two halves for a while, and both write; healing merges them.
    half = rng.sample(group, len(group) // 2)
    s.split(half)
    sim.run_for(2 * s.detect_delay)
    written = {}
    across = [n for n in group if n not in half]
    for i, writer in enumerate([*half[:3], *across[:3]]):
        written[f"split-{i}"] = f"from {writer}".encode()
        s.create(writer, f"split-{i}", written[f"split-{i}"])
    sim.run_for(1.0)
    start = sim.now
    s.heal()

    def merged() -> bool:
        return all(s.all_see(group, key, value) for key, value in written.items())

    s.wait_until(merged, deadline, "merging the two halves")
    figures.partition_repair = max(s.seen_by_all_at(group, key) for key in written) - start

    # It crashes and comes back under the same name with empty state: the entries of its
    # previous run come back on the others when they see it return, and it deletes them.
    s.crash(victim)
    sim.run_for(2 * s.detect_delay)
    start = sim.now
    s.restart(victim)
    s.join(victim)

    def purged() -> bool:
        return all(
            s.nodes[n].db.node_status(victim) is NodeStatus.ALIVE
            and s.nodes[n].sees("victim-ep") is None
            for n in others
        )

    s.wait_until(purged, deadline, "purging the entries of the previous run")
    figures.restart_purge = sim.now - start

    # A member leaves the network: its entries go everywhere.
    leaver = rng.choice(others)
    stay = [n for n in group if n != leaver]
    s.create(leaver, "leaver-ep", b"l")
    s.wait_until(lambda: s.all_see(group, "leaver-ep", b"l"), deadline, "the leaver's entry")
    start = sim.now
    s.leave(leaver)
    s.wait_until(lambda: s.all_see(stay, "leaver-ep", None), deadline, "removing its entries")
    figures.network_leave = s.gone_from_all_at(stay, "leaver-ep") - start

    # A delete: the tombstone is gone from every node after the reap interval.
    holder = stay[0]
    key = next(iter(s.nodes[holder].view))
    start = sim.now
    s.delete(holder, key)

    def reaped() -> bool:
        return not any(r.key == key for n in s.nodes.values() for r in n.db.records(NET))

    limit = cfg.reap_entry_interval + deadline
    s.wait_until(reaped, limit, "reaping the tombstone", poll=cfg.reap_period / 2)
    figures.tombstone_reaped = sim.now - start

    # Every member that stayed agrees on the table, as its watch reported it.
    sim.run_for(2 * cfg.bulk_sync_interval)
    s.check_views()
    reference = s.nodes[holder].view.keys()
    for name in stay:
        if s.nodes[name].view.keys() != reference:
            raise SimFailure(f"seed {seed}: {name} disagrees with {holder} on the table")
    s.check_outsiders()
    figures.datagrams_to_outsiders = s.datagrams_to_outsiders
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure NetworkDB convergence in simulation.")
    parser.add_argument("--nodes", type=int, default=100, help="members of the network")
    parser.add_argument("--outsiders", type=int, default=20, help="nodes not on the network")
    parser.add_argument("--seed", type=int, action="append", default=None)
    parser.add_argument("--loss", type=float, default=0.1, help="datagram loss rate")
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--profile", choices=["lab", "docker"], default="lab")
    args = parser.parse_args(argv)
    config = NetworkDBConfig.lab() if args.profile == "lab" else NetworkDBConfig()
    status = 0
    for seed in args.seed or [1]:
        try:
            figures = run_scenarios(
                seed,
                members=args.nodes,
                outsiders=args.outsiders,
                loss=args.loss,
                writes=args.writes,
                config=config,
            )
        except SimFailure as err:
            print(f"FAILED {err}\nreplay: python -m controlplane.sim.networkdb_cluster "
                  f"--nodes {args.nodes} --seed {seed}")  # fmt: skip
            status = 1
            continue
        print(f"seed {seed}, profile {args.profile}:\n{figures.table()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
