"""A simulated datagram network with faults, on top of the virtual clock.

Endpoints are any hashable addresses; payloads are opaque objects handed over by reference (a
receiver must not mutate them if the sender may still hold them). Every random choice comes
from one RNG derived from the simulator's, so a seed replays the same drops, delays and order.

Decisions, chosen to behave like a real network:

- Faults (`Faults`) apply per message when it is sent: it is lost, or delayed by a uniform
  random delay (which reorders messages unless `reorder=False`), and possibly duplicated (the
  copy gets its own delay). `SimNetwork.faults` may be replaced at any time; per-link overrides
  model one slow or lossy link.
- Partitions, isolation and blocked links are checked when a message is sent. A message already
  in flight when a partition starts is still delivered (it was on the wire), and a message sent
  across a partition is lost even if the partition heals before it would have arrived.
- `partition(*groups)`: nodes in different groups cannot talk; every address not listed in any
  group (including ones attached later) belongs to one implicit extra group, so
  `partition({a})` cuts `a` off from everyone else. A node can always reach itself.
- `detach(addr)` is a crash: messages to it that are in flight are lost on arrival, even if it
  was attached again (restarted) meanwhile, as a new process would not see them. A detached node
  cannot send. Messages it sent before crashing are still delivered.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from controlplane.sim.clock import Simulator

A = TypeVar("A", bound=Hashable)
P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Faults:
    """Per-message fault probabilities and delay bounds (seconds). Replace, never mutate."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay_min: float = 0.001
    delay_max: float = 0.005
    reorder: bool = True  # False keeps each link FIFO despite the random delays

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name} is a probability in [0, 1], got {value}")
        if not 0.0 <= self.delay_min <= self.delay_max:
            raise ValueError(
                f"Faults needs 0 <= delay_min <= delay_max, got {self.delay_min}, {self.delay_max}"
            )


@dataclass(slots=True)
class NetStats:
    """Message counters; `sent + duplicated == delivered + dropped + in_flight` always holds."""

    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    dropped_loss: int = 0  # random loss (Faults.drop)
    dropped_partition: int = 0  # partition, isolation or blocked link at send time
    dropped_down: int = 0  # sender or receiver detached (crashed)
    in_flight: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_loss + self.dropped_partition + self.dropped_down


class _Endpoint(Generic[A, P]):
    """One attachment of an address; a restart creates a new one, which orphans old messages."""

    __slots__ = ("deliver",)

    def __init__(self, deliver: Callable[[A, P], object]) -> None:
        self.deliver = deliver


class SimNetwork(Generic[A, P]):
    """Delivers `payload`s between attached addresses through the simulator's event heap."""

    def __init__(
        self, sim: Simulator, faults: Faults | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.sim = sim
        self.faults = faults if faults is not None else Faults()
        self.stats = NetStats()
        self._rng = rng if rng is not None else random.Random(sim.rng.getrandbits(64))
        self._endpoints: dict[A, _Endpoint[A, P]] = {}
        self._link_faults: dict[tuple[A, A], Faults] = {}
        self._group: dict[A, int] = {}
        self._isolated: set[A] = set()
        self._blocked: set[tuple[A, A]] = set()
        self._last_arrival: dict[tuple[A, A], float] = {}

    # Endpoints

    def attach(self, addr: A, deliver: Callable[[A, P], object]) -> None:
        """Start receiving at `addr`: `deliver(src, payload)` is called for each arrival."""
        if addr in self._endpoints:
            raise ValueError(f"address {addr!r} is already attached; detach it first")
        self._endpoints[addr] = _Endpoint(deliver)

    def detach(self, addr: A) -> None:
        """Crash `addr`: it stops sending and receiving; its in-flight inbound messages are lost."""
        self._endpoints.pop(addr, None)

    def is_attached(self, addr: A) -> bool:
        return addr in self._endpoints

    # Sending

    def send(self, src: A, dst: A, payload: P) -> None:
        """Put a message on the wire; faults and partitions decide whether and when it arrives."""
        stats = self.stats
        stats.sent += 1
        endpoint = self._endpoints.get(dst)
        if endpoint is None or src not in self._endpoints:
            stats.dropped_down += 1
            return
        if not self.can_reach(src, dst):
            stats.dropped_partition += 1
            return
        faults = (
            self._link_faults.get((src, dst), self.faults) if self._link_faults else self.faults
        )
        rng = self._rng
        if faults.drop and rng.random() < faults.drop:
            stats.dropped_loss += 1
            return
        self._schedule(faults, endpoint, src, dst, payload)
        if faults.duplicate and rng.random() < faults.duplicate:
            stats.duplicated += 1
            self._schedule(faults, endpoint, src, dst, payload)

    def set_link_faults(self, src: A, dst: A, faults: Faults | None) -> None:
        """Override the faults of the one-way link src -> dst (None: back to `self.faults`)."""
        if faults is None:
            self._link_faults.pop((src, dst), None)
        else:
            self._link_faults[(src, dst)] = faults

    # Partitions

    def partition(self, *groups: Iterable[A]) -> None:
        """Split the network into `groups` (replacing any previous split; no groups: no split).

        Addresses not listed form one more group together. Isolation and blocked links are kept.
        """
        group: dict[A, int] = {}
        for index, members in enumerate(groups):
            for addr in members:
                if group.setdefault(addr, index) != index:
                    raise ValueError(f"address {addr!r} is listed in more than one group")
        self._group = group

    def isolate(self, addr: A) -> None:
        """Cut `addr` off from every other node, in both directions, until `heal()`."""
        self._isolated.add(addr)

    def block(self, src: A, dst: A) -> None:
        """Lose every message sent from `src` to `dst` (one way) until `unblock` or `heal()`."""
        self._blocked.add((src, dst))

    def unblock(self, src: A, dst: A) -> None:
        self._blocked.discard((src, dst))

    def heal(self) -> None:
        """Remove every partition, isolation and blocked link (link fault overrides stay)."""
        self._group = {}
        self._isolated.clear()
        self._blocked.clear()

    def can_reach(self, src: A, dst: A) -> bool:
        """Whether a message sent now from `src` to `dst` passes partitions and blocks."""
        if src == dst:
            return True
        if self._group and self._group.get(src, -1) != self._group.get(dst, -1):
            return False
        if self._isolated and (src in self._isolated or dst in self._isolated):
            return False
        return not self._blocked or (src, dst) not in self._blocked

    # Delivery

    def _schedule(
        self, faults: Faults, endpoint: _Endpoint[A, P], src: A, dst: A, payload: P
    ) -> None:
        sim = self.sim
        arrival = sim.now + self._rng.uniform(faults.delay_min, faults.delay_max)
        if not faults.reorder:
            # Equal times keep send order: the heap breaks ties by scheduling sequence.
            link = (src, dst)
            arrival = max(arrival, self._last_arrival.get(link, arrival))
            self._last_arrival[link] = arrival
        self.stats.in_flight += 1
        sim.call_at(arrival, self._arrive, endpoint, src, dst, payload)

    def _arrive(self, endpoint: _Endpoint[A, P], src: A, dst: A, payload: P) -> None:
        stats = self.stats
        stats.in_flight -= 1
        if self._endpoints.get(dst) is not endpoint:
            stats.dropped_down += 1
            return
        stats.delivered += 1
        endpoint.deliver(src, payload)
