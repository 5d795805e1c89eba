"""A Raft cluster in deterministic simulation: faults, crashes, membership changes, clients.

Every node runs the real `RaftNode` core. What the asyncio driver does with gRPC and fsync is
done here over the simulated network and a simulated disk whose unsynced writes are lost in a
crash. A run checks, as it goes and at the end:

- election safety: at most one leader per term;
- state machine safety: every node applies the same entry at each index, in order, and an
  entry once applied anywhere never changes;
- linearizability of the clients' key-value history (put, get through ReadIndex, cas);
- liveness: once the faults stop, a leader emerges and a final write commits.

A failing seed replays with `python -m controlplane.sim.raft_cluster --seed N`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from controlplane.raft.codec import decode_conf_change, encode_conf_change
from controlplane.raft.core import Config, RaftError, RaftNode
from controlplane.raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Role,
    Snapshot,
)
from controlplane.sim.clock import Simulator, Timer
from controlplane.sim.linearizability import KVModel, Operation, check
from controlplane.sim.network import Faults, SimNetwork

TICK = 0.1
FSYNC_DELAY = (0.0005, 0.003)


class SafetyViolation(AssertionError):
    pass


@dataclass
class SimDisk:
    """What a node has on disk. `save` goes to a volatile buffer until `sync`; a crash
    (`lose_unsynced`) throws the buffer away."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    _pending: list[tuple[list[Entry], HardState | None, Snapshot | None]] = field(
        default_factory=list
    )

    def save(self, entries: list[Entry], hs: HardState | None, snap: Snapshot | None) -> None:
        self._pending.append((entries, hs, snap))

    def sync(self) -> None:
        for entries, hs, snap in self._pending:
            if snap is not None:
                self.save_snapshot(snap)
            if entries:
                first = entries[0].index
                self.entries = [e for e in self.entries if e.index < first] + entries
            if hs is not None:
                self.hard_state = hs
        self._pending.clear()

    def save_snapshot(self, snap: Snapshot) -> None:
        """As the real storage: entries after the snapshot survive only if the log agrees
        with it at its index; otherwise they are a stale tail of another history."""
        if self.snapshot is None or snap.meta.index > self.snapshot.meta.index:
            meta = snap.meta
            agrees = any(e.index == meta.index and e.term == meta.term for e in self.entries)
            self.snapshot = snap
            self.entries = [e for e in self.entries if agrees and e.index > meta.index]

    def lose_unsynced(self) -> None:
        self._pending.clear()


class KVStateMachine:
    """The replicated key-value map; entries are JSON `[op_id, kind, key, arg]`."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def apply(self, payload: bytes) -> Any:
        _op_id, kind, key, arg = json.loads(payload)
        if kind == "put":
            self.data[key] = arg
            return None
        expected, new = arg
        if self.data.get(key) == expected:
            self.data[key] = new
            return True
        return False

    def snapshot(self) -> bytes:
        return json.dumps(self.data, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        self.data = json.loads(data) if data else {}


@dataclass
class PendingOp:
    client: int
    call: float
    input: tuple[str, str, Any]
    node: int
    term: int = 0
    index: int = 0  # for writes: the log index; for reads: waiting on a ReadIndex
    read_context: bytes = b""


class SimNode:
    def __init__(self, cluster: RaftSim, node_id: int, disk: SimDisk) -> None:
        self.cluster = cluster
        self.id = node_id
        self.disk = disk
        self.sm = KVStateMachine()
        snapshot = disk.snapshot
        if snapshot is not None:
            self.sm.restore(snapshot.data)
        self.core = RaftNode(
            Config(id=node_id, election_tick=10, heartbeat_tick=1),
            hard_state=disk.hard_state,
            snapshot=snapshot,
            entries=list(disk.entries),
            rng=cluster.sim.rng,
        )
        self.applied_index = self.core.log.applied
        self.inbox: list[Message] = []
        self.busy = False  # a Ready is being persisted
        self.crash_when_writing = False  # chaos: crash once the next entries are sent, unsynced
        self.tick_due = False
        self.pending_writes: dict[int, PendingOp] = {}
        self.pending_reads: dict[bytes, PendingOp] = {}
        self.waiting_reads: list[tuple[int, PendingOp]] = []
        self.last_snapshot = snapshot.meta.index if snapshot else 0
        self.timers: list[Timer] = []
        self.alive = True
        cluster.net.attach(node_id, self.receive)
        self.timers.append(cluster.sim.call_later(TICK * cluster.sim.rng.random(), self.tick))

    def tick(self) -> None:
        """As the driver: a tick that comes while a Ready is being persisted waits for it,
        and several missed ticks collapse into one."""
        if not self.alive:
            return
        self.tick_due = True
        self.timers.append(self.cluster.sim.call_later(TICK, self.tick))
        self.pump()

    def receive(self, _src: int, message: Message) -> None:
        self.inbox.append(message)
        self.pump()

    def pump(self) -> None:
        """Step queued messages and start handling a Ready, unless one is being persisted."""
        if not self.alive or self.busy:
            return
        inbox, self.inbox = self.inbox, []
        for message in inbox:
            self.core.step(message)
        if self.tick_due:
            self.tick_due = False
            self.core.tick()
            self.cluster.promote_learner(self)
        if self.core.has_ready():
            rd = self.core.ready()
            self.cluster.observe_soft_state(self)
            early, late = rd.split_messages()
            self.send(early)  # a leader replicates while its own fsync runs
            if self.crash_when_writing and rd.entries and early and not self.cluster.stopped:
                self.crash_when_writing = False  # the crash comes before the fsync's delay
                self.cluster.sim.call_later(0.0, self.cluster.crash_node, self, "crash-before-sync")
            self.disk.save(rd.entries, rd.hard_state, rd.snapshot)
            self.busy = True
            sync = rd.must_sync(self.disk.hard_state)
            delay = self.cluster.sim.rng.uniform(*FSYNC_DELAY) if sync else 0.0
            self.timers.append(
                self.cluster.sim.call_later(delay, self.finish_ready, rd, late, sync)
            )

    def send(self, messages: list[Message]) -> None:
        for message in messages:
            if message.type is MessageType.SNAPSHOT:
                self.cluster.stream_snapshot(self, message)
            elif self.cluster.net.can_reach(self.id, message.to):
                self.cluster.net.send(self.id, message.to, message)
            else:
                self.core.report_unreachable(message.to)  # as a broken gRPC stream would

    def finish_ready(self, rd: Ready, late: list[Message], sync: bool) -> None:
        """The write (and its fsync, when needed) completed: send, apply, advance. An
        unsynced write stays volatile until a later synced one, and a crash loses it."""
        if not self.alive:
            return
        if sync:
            self.disk.sync()
        self.send(late)
        if rd.snapshot is not None:
            self.cluster.snapshots_installed += 1
            self.sm.restore(rd.snapshot.data)
            self.applied_index = rd.snapshot.meta.index
            self.cluster.forget_pending_upto(self, rd.snapshot.meta.index)
        for entry in rd.committed_entries:
            self.apply(entry)
        for read in rd.read_states:
            op = self.pending_reads.pop(read.context, None)
            if op is not None:
                self.waiting_reads.append((read.index, op))
        self.core.advance(rd)
        self.serve_reads()
        self.maybe_snapshot()
        self.busy = False
        self.pump()

    def apply(self, entry: Entry) -> None:
        if entry.index != self.applied_index + 1:
            raise SafetyViolation(
                f"node {self.id} applied {entry.index} after {self.applied_index}"
            )
        self.cluster.check_applied(self.id, entry)
        self.applied_index = entry.index
        result: Any = None
        if entry.type is EntryType.CONF_CHANGE:
            self.core.apply_conf_change(decode_conf_change(entry.data))
        elif entry.data:
            result = self.sm.apply(entry.data)
        op = self.pending_writes.pop(entry.index, None)
        if op is not None:
            if op.term == entry.term:
                self.cluster.complete(op, result)
            else:
                self.cluster.retry_or_fail(op, definitely_lost=True)

    def serve_reads(self) -> None:
        still = []
        for index, op in self.waiting_reads:
            if index <= self.applied_index:
                self.cluster.complete(op, self.sm.data.get(op.input[1]))
            else:
                still.append((index, op))
        self.waiting_reads = still

    def maybe_snapshot(self) -> None:
        interval = self.cluster.snapshot_interval
        if self.applied_index - self.last_snapshot < interval:
            return
        snap = self.core.snapshot_taken(self.applied_index, self.sm.snapshot())
        self.disk.save_snapshot(snap)  # written atomically, as the real storage does
        self.core.compact(self.applied_index - 5)
        self.last_snapshot = self.applied_index

    def crash(self) -> None:
        self.alive = False
        for timer in self.timers:
            timer.cancel()
        self.cluster.net.detach(self.id)
        self.disk.lose_unsynced()


class RaftSim:
    def __init__(self, seed: int, *, nodes: int = 3, duration: float = 20.0) -> None:
        self.seed = seed
        self.sim = Simulator(seed)
        rng = self.sim.rng
        self.faults = Faults(
            drop=rng.choice([0.0, 0.01, 0.05, 0.1]),
            duplicate=rng.choice([0.0, 0.02, 0.05]),
            delay_min=0.001,
            delay_max=rng.choice([0.005, 0.02, 0.06]),
        )
        self.net: SimNetwork[int, Message] = SimNetwork(self.sim, self.faults)
        self.duration = duration
        self.snapshot_interval = rng.choice([15, 40, 1000])
        self.membership_changes = rng.random() < 0.5
        self.disks: dict[int, SimDisk] = {}
        self.nodes: dict[int, SimNode] = {}
        self.leaders: dict[int, int] = {}
        self.applied_log: dict[int, tuple[int, int, bytes]] = {}
        self.history: list[Operation] = []
        self.clients: dict[int, PendingOp | None] = {}
        self.next_op = 0
        self.next_node_id = nodes + 1
        self.trace: list[str] = []
        self.stopped = False
        self.snapshots_installed = 0  # followers that caught up from a leader's snapshot
        ids = list(range(1, nodes + 1))
        bootstrap = [
            Entry(
                1,
                i + 1,
                EntryType.CONF_CHANGE,
                encode_conf_change(ConfChange(ConfChangeType.PROMOTE, node_id)),
            )
            for i, node_id in enumerate(ids)
        ]
        for node_id in ids:
            disk = SimDisk(HardState(term=1, commit=len(ids)), None, list(bootstrap))
            self.disks[node_id] = disk
            self.nodes[node_id] = SimNode(self, node_id, disk)

    # ---- checks -----------------------------------------------------------------------------

    def observe_soft_state(self, node: SimNode) -> None:
        if node.core.role is Role.LEADER:
            term = node.core.term
            other = self.leaders.setdefault(term, node.id)
            if other != node.id:
                raise SafetyViolation(f"two leaders in term {term}: {other} and {node.id}")

    def check_applied(self, node_id: int, entry: Entry) -> None:
        seen = self.applied_log.setdefault(entry.index, (entry.term, entry.type, entry.data))
        if seen != (entry.term, entry.type, entry.data):
            raise SafetyViolation(
                f"node {node_id} applied a different entry at index {entry.index}: "
                f"term {entry.term} vs {seen[0]}"
            )

    # ---- clients ----------------------------------------------------------------------------

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive]

    def start_op(self, client: int) -> None:
        if self.stopped:
            return
        rng = self.sim.rng
        key = rng.choice(["a", "b", "c"])
        kind = rng.choice(["put", "put", "get", "get", "cas"])
        arg: Any = None
        if kind == "put":
            self.next_op += 1
            arg = self.next_op
        elif kind == "cas":
            self.next_op += 1
            arg = (rng.choice([None, *range(max(1, self.next_op - 5), self.next_op)]), self.next_op)
        op = PendingOp(client=client, call=self.sim.now, input=(kind, key, arg), node=0)
        self.clients[client] = op
        self.sim.call_later(3.0, self.give_up, op)
        self.submit(op)

    def submit(self, op: PendingOp) -> None:
        if self.clients.get(op.client) is not op:
            return
        live = self.live_nodes()
        leaders = [n for n in live if n.core.role is Role.LEADER]
        node = self.sim.rng.choice(leaders or live) if live else None
        if node is None:
            self.sim.call_later(0.05, self.submit, op)
            return
        op.node = node.id
        kind, key, arg = op.input
        try:
            if kind == "get":
                self.next_op += 1
                op.read_context = f"read-{self.next_op}".encode()
                node.core.read_index(op.read_context)
                node.pending_reads[op.read_context] = op
            else:
                op_id = f"{op.client}:{op.call}"
                payload = json.dumps([op_id, kind, key, arg]).encode()
                op.index = node.core.propose(payload)
                op.term = node.core.term
                node.pending_writes[op.index] = op
        except RaftError:
            self.sim.call_later(0.02, self.submit, op)  # not leader: never entered a log
            return
        node.pump()

    def complete(self, op: PendingOp, output: Any) -> None:
        if self.clients.get(op.client) is not op:
            return
        kind = op.input[0]
        self.history.append(
            Operation(op.client, op.call, self.sim.now, op.input, None if kind == "put" else output)
        )
        self.clients[op.client] = None
        self.sim.call_later(self.sim.rng.uniform(0.0, 0.05), self.start_op, op.client)

    def retry_or_fail(self, op: PendingOp, *, definitely_lost: bool) -> None:
        if definitely_lost and self.clients.get(op.client) is op:
            self.sim.call_later(0.02, self.submit, op)

    def give_up(self, op: PendingOp) -> None:
        """The client's deadline: the outcome is unknown (it may still be applied later)."""
        if self.clients.get(op.client) is not op:
            return
        self.history.append(Operation(op.client, op.call, None, op.input, None))
        self.clients[op.client] = None
        self.start_op(op.client)

    def forget_pending_upto(self, node: SimNode, index: int) -> None:
        for i in [i for i in node.pending_writes if i <= index]:
            del node.pending_writes[i]  # outcome unknown: the client's deadline will decide

    # ---- faults and membership ----------------------------------------------------------------

    def promote_learner(self, node: SimNode) -> None:
        """Leader housekeeping, as RaftDriver does: promote a learner that has caught up."""
        learner = node.core.learner_to_promote()
        if learner:
            change = ConfChange(ConfChangeType.PROMOTE, learner)
            with contextlib.suppress(RaftError):
                node.core.propose_conf_change(change, encode_conf_change(change))

    def chaos(self) -> None:
        """One random fault, then schedule the next."""
        rng = self.sim.rng
        if self.sim.now > self.duration * 0.75:
            return
        choice = rng.random()
        live = self.live_nodes()
        leaders = [n for n in live if n.core.role is Role.LEADER]
        if choice < 0.1 and leaders:
            leaders[0].crash_when_writing = True  # the leader's next entries die unsynced
        elif choice < 0.25 and len(live) > 1:
            self.crash_node(rng.choice(live), "crash")
        elif choice < 0.5:
            ids = list(self.nodes)
            rng.shuffle(ids)
            cut = rng.randrange(1, len(ids))
            self.trace.append(f"{self.sim.now:.2f} partition {ids[:cut]} | {ids[cut:]}")
            self.net.partition(ids[:cut], ids[cut:])
            self.sim.call_later(rng.uniform(0.5, 4.0), self.heal)
        elif choice < 0.6:
            if leaders:
                self.trace.append(f"{self.sim.now:.2f} isolate leader {leaders[0].id}")
                self.net.isolate(leaders[0].id)
                self.sim.call_later(rng.uniform(0.5, 4.0), self.heal)
        elif choice < 0.75 and self.membership_changes:
            self.change_membership()
        elif choice < 0.8:
            voters = [v for v in (leaders[0].core.voters if leaders else ()) if v != leaders[0].id]
            if leaders and voters:
                target = rng.choice(sorted(voters))
                self.trace.append(f"{self.sim.now:.2f} transfer {leaders[0].id} -> {target}")
                leaders[0].core.transfer_leadership(target)
                leaders[0].pump()
        self.sim.call_later(rng.uniform(0.3, 2.0), self.chaos)

    def crash_node(self, victim: SimNode, kind: str) -> None:
        if not victim.alive:
            return
        self.trace.append(f"{self.sim.now:.2f} {kind} {victim.id}")
        victim.crash()
        self.sim.call_later(self.sim.rng.uniform(0.2, 3.0), self.restart, victim.id)

    def change_membership(self) -> None:
        leaders = [n for n in self.live_nodes() if n.core.role is Role.LEADER]
        if not leaders:
            return
        leader = leaders[0]
        voters = sorted(leader.core.voters)
        rng = self.sim.rng
        try:
            if len(voters) < 5 and rng.random() < 0.6:
                node_id = self.next_node_id
                self.next_node_id += 1
                change = ConfChange(ConfChangeType.ADD_LEARNER, node_id)
                leader.core.propose_conf_change(change, encode_conf_change(change))
                self.disks[node_id] = SimDisk()
                self.nodes[node_id] = SimNode(self, node_id, self.disks[node_id])
                self.trace.append(f"{self.sim.now:.2f} add learner {node_id}")
            elif len(voters) > 3:
                victim = rng.choice([v for v in voters if v != leader.id])
                change = ConfChange(ConfChangeType.REMOVE, victim)
                leader.core.propose_conf_change(change, encode_conf_change(change))
                self.trace.append(f"{self.sim.now:.2f} remove {victim}")
        except RaftError as err:
            self.trace.append(f"{self.sim.now:.2f} membership change refused: {err}")
        leader.pump()

    def restart(self, node_id: int) -> None:
        if self.nodes[node_id].alive:
            return
        self.trace.append(f"{self.sim.now:.2f} restart {node_id}")
        self.nodes[node_id] = SimNode(self, node_id, self.disks[node_id])

    def heal(self) -> None:
        self.net.heal()

    def stream_snapshot(self, sender: SimNode, message: Message) -> None:
        """Snapshots travel on their own reliable stream (gRPC over TCP in the real transport):
        delivered whole if the peer is reachable, and the sender learns whether it was."""
        ok = self.net.can_reach(sender.id, message.to) and self.net.is_attached(message.to)
        delay = self.sim.rng.uniform(0.01, 0.1)
        if ok:
            self.sim.call_later(delay, self._deliver_snapshot, message)
        self.sim.call_later(delay, self._snapshot_reported, sender, message.to, not ok)

    def _deliver_snapshot(self, message: Message) -> None:
        node = self.nodes.get(message.to)
        if node is not None and node.alive:
            node.receive(message.frm, message)

    def _snapshot_reported(self, sender: SimNode, to: int, failed: bool) -> None:
        if sender.alive and self.nodes[sender.id] is sender:
            sender.core.report_snapshot(to, failed=failed)
            sender.pump()

    # ---- the run ----------------------------------------------------------------------------

    def run(self, clients: int = 3) -> None:
        for client in range(clients):
            self.clients[client] = None
            self.sim.call_later(0.5 + 0.1 * client, self.start_op, client)
        self.sim.call_later(1.0, self.chaos)
        self.sim.run_until(self.duration)
        # Faults stop: heal, restart everyone, calm network; then the cluster must make progress.
        self.net.heal()
        self.net.faults = Faults()
        for node_id, node in list(self.nodes.items()):
            if not node.alive:
                self.restart(node_id)
        self.stopped = True
        for client, op in self.clients.items():
            if op is not None:  # still in flight: it may or may not take effect
                self.history.append(Operation(client, op.call, None, op.input, None))
            self.clients[client] = None
        self.sim.run_until(self.duration + 5.0)
        self.check_liveness()
        self.check_history()

    def check_liveness(self) -> None:
        leaders = [n for n in self.live_nodes() if n.core.role is Role.LEADER]
        if len(leaders) != 1:
            raise SafetyViolation(f"no single leader after healing: {[n.id for n in leaders]}")
        leader = leaders[0]
        index = leader.core.propose(b"")
        leader.pump()
        self.sim.run_until(self.sim.now + 3.0)
        if leader.core.learners:
            raise SafetyViolation(f"learners never promoted: {sorted(leader.core.learners)}")
        members = leader.core.voters | leader.core.learners
        for node_id in members:
            if self.nodes[node_id].applied_index < index:
                raise SafetyViolation(
                    f"node {node_id} did not apply the final write {index} after healing "
                    f"(applied {self.nodes[node_id].applied_index})"
                )

    def check_history(self) -> None:
        result = check(KVModel(), self.history, timeout_s=20.0)
        if result.ok is False:
            raise SafetyViolation("history is not linearizable:\n" + result.explanation)

    def summary(self) -> str:
        stats = self.net.stats
        return (
            f"seed={self.seed} ops={len(self.history)} applied={len(self.applied_log)} "
            f"terms={len(self.leaders)} sent={stats.sent} dropped={stats.dropped} "
            f"faults={self.faults} snapshot_interval={self.snapshot_interval} "
            f"membership={self.membership_changes}"
        )


def run_seed(seed: int, *, duration: float = 20.0) -> RaftSim:
    sim = RaftSim(seed, nodes=3 if seed % 2 else 5, duration=duration)
    try:
        sim.run()
    except SafetyViolation as err:
        trace = "\n".join(sim.trace[-40:])
        raise SafetyViolation(
            f"{err}\n{sim.summary()}\nlast events:\n{trace}\n"
            f"replay: python -m controlplane.sim.raft_cluster --seed {seed}"
        ) from err
    return sim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Replay Raft simulation seeds.")
    parser.add_argument("--seed", type=int, action="append", required=True)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args(argv)
    status = 0
    for seed in args.seed:
        try:
            print(run_seed(seed, duration=args.duration).summary())
        except SafetyViolation as err:
            print(f"FAILED {err}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
