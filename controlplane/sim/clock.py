"""A virtual clock and event loop for deterministic simulation.

Simulated nodes never sleep: they schedule callbacks at virtual times, and `Simulator` runs them
in time order as fast as the CPU allows. Ties are broken by scheduling order, and every random
choice comes from `Simulator.rng` (seeded from the constructor), so one seed always replays the
same run. Exceptions raised by callbacks propagate out of `step()`/`run_*()` so a test sees them
at the instant they happen.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any, TypeVarTuple

Ts = TypeVarTuple("Ts")

# Rebuild the heap once this many cancelled timers sit in it and they outnumber the live ones:
# protocols re-arm timers constantly (election timeouts, probes), and lazy deletion alone would
# let the heap grow without bound.
_COMPACT_MIN = 256


class Timer:
    """A scheduled callback; `cancel()` makes it a no-op (it is skipped when its time comes)."""

    __slots__ = ("_active", "_args", "_fn", "_sim", "when")

    def __init__(
        self, sim: Simulator, when: float, fn: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        self._sim = sim
        self.when = when
        self._fn = fn
        self._args = args
        self._active = True

    @property
    def active(self) -> bool:
        """True until the timer fires or is cancelled."""
        return self._active

    def cancel(self) -> None:
        """Idempotent, and harmless after the timer fired."""
        if self._active:
            self._active = False
            self._sim._forget_cancelled()

    def __repr__(self) -> str:
        state = "active" if self._active else "done"
        return f"<Timer at {self.when:.6f} {getattr(self._fn, '__qualname__', self._fn)} {state}>"


class Simulator:
    """Virtual time, a seeded RNG and a heap of timers ordered by (time, sequence number)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0  # virtual seconds; read it, never assign it
        self.events_run = 0
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0
        self._live = 0
        self._cancelled = 0

    @property
    def pending(self) -> int:
        """Number of timers still due to fire."""
        return self._live

    def call_at(self, when: float, fn: Callable[[*Ts], object], *args: *Ts) -> Timer:
        """Schedule `fn(*args)` at virtual time `when` (not in the past: that is a caller bug)."""
        if when < self.now:
            raise ValueError(f"cannot schedule at {when}: the virtual time is already {self.now}")
        timer = Timer(self, when, fn, args)
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, timer))
        self._live += 1
        return timer

    def call_later(self, delay: float, fn: Callable[[*Ts], object], *args: *Ts) -> Timer:
        """Schedule `fn(*args)` after `delay` virtual seconds (0 runs after the current event)."""
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        return self.call_at(self.now + delay, fn, *args)

    def next_time(self) -> float | None:
        """Virtual time of the next live timer, or None when nothing is scheduled."""
        heap = self._heap
        while heap and not heap[0][2]._active:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def step(self) -> bool:
        """Run the next live timer, advancing the clock to it; False when nothing is scheduled."""
        heap = self._heap
        while heap:
            when, _, timer = heapq.heappop(heap)
            if not timer._active:
                self._cancelled -= 1
                continue
            timer._active = False
            self._live -= 1
            self.now = when
            self.events_run += 1
            timer._fn(*timer._args)
            return True
        return False

    def run_until(self, when: float) -> None:
        """Run every timer due at or before `when`, then leave the clock at `when`."""
        if when < self.now:
            raise ValueError(f"cannot run until {when}: the virtual time is already {self.now}")
        while True:
            nxt = self.next_time()
            if nxt is None or nxt > when:
                break
            self.step()
        self.now = when

    def run_for(self, duration: float) -> None:
        """Advance virtual time by `duration`, running whatever falls due."""
        self.run_until(self.now + duration)

    def run_while(self, predicate: Callable[[], bool], until: float) -> bool:
        """Run timers while `predicate()` holds, up to virtual time `until`.

        The predicate is checked before every event. Returns True when the run stopped because
        the predicate turned false (the clock stays at that event), False when `until` was
        reached with the predicate still true (the clock is then at `until`). Tests use it as
        "wait for a condition, with a virtual timeout": `assert sim.run_while(lambda: not x, t)`.
        """
        if until < self.now:
            raise ValueError(f"cannot run until {until}: the virtual time is already {self.now}")
        while predicate():
            nxt = self.next_time()
            if nxt is None or nxt > until:
                self.now = until
                return False
            self.step()
        return True

    def run_until_quiet(self, until: float) -> bool:
        """Run until nothing is scheduled (True) or virtual time `until` is reached (False).

        When the simulation goes quiet the clock stays at the last event; otherwise it is left
        at `until`. Periodic timers (heartbeats, probes) keep a simulation from ever going quiet.
        """
        if until < self.now:
            raise ValueError(f"cannot run until {until}: the virtual time is already {self.now}")
        while True:
            nxt = self.next_time()
            if nxt is None:
                return True
            if nxt > until:
                self.now = until
                return False
            self.step()

    def _forget_cancelled(self) -> None:
        self._live -= 1
        self._cancelled += 1
        if self._cancelled > _COMPACT_MIN and self._cancelled > self._live:
            self._heap = [entry for entry in self._heap if entry[2]._active]
            heapq.heapify(self._heap)
            self._cancelled = 0
