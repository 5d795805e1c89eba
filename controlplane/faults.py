"""The network faults a lab injects into one node's own transports, so chaos needs no root.

A `FaultPlan` says, from this node's point of view: which hosts it can neither reach nor hear
from (a partition; the lab installs the mirror plan on the other side too), and how its
outbound traffic is shaped (delay with jitter, loss), for every destination or per
destination host. `Faults` holds the plan a process runs with and makes the decisions the
transports ask for; its random source is injectable so every decision is reproducible in tests.

Hosts are compared without ports: on one machine every lab node has its own loopback address,
and a partition cuts every port of a host (2377 gRPC and 7946 gossip alike).

How loss shows: a datagram (a gossip UDP packet, a Raft message, which Raft resends on its
own) is dropped; a request over TCP pays retransmissions instead (`transmit_delay`), as TCP
turns loss into latency, and fails only when every retransmission is lost.

This module is pure (no I/O, no asyncio) and imports nothing of the project above it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.numbers import is_number

MAX_DELAY_MS = 60_000  # beyond a minute every timeout of the swarm fires: a typo, not a test
RETRANSMIT_TIMEOUT = 0.2  # seconds, Linux's minimum TCP retransmission timeout
MAX_RETRANSMITS = 6  # then a TCP request gives up, as a connection would


class FaultPlanError(ValueError):
    """A plan (JSON from the lab API) is malformed; the message names the field and the fix."""


def host_of(address: str) -> str:
    """'127.77.180.11:2377' -> '127.77.180.11'; a bare host stays as it is; '[::1]:2377' ->
    '::1'."""
    host, sep, port = address.rpartition(":")
    if sep and is_number(port) and host and (host.startswith("[") or ":" not in host):
        return host.strip("[]")
    return address.strip("[]")


@dataclass(frozen=True)
class Shaping:
    """How outbound traffic toward some destination is degraded."""

    delay: float = 0.0  # seconds, one way
    jitter: float = 0.0  # seconds; each delay is uniform in delay +/- jitter (never below 0)
    loss: float = 0.0  # probability in [0, 1] that a datagram or a TCP segment is lost

    @property
    def clean(self) -> bool:
        return self.delay == 0 and self.jitter == 0 and self.loss == 0

    def to_json(self) -> dict[str, float]:
        return {
            "delay_ms": round(self.delay * 1000, 3),
            "jitter_ms": round(self.jitter * 1000, 3),
            "loss_percent": round(self.loss * 100, 3),
        }

    @staticmethod
    def from_json(raw: Any, where: str) -> Shaping:
        if not isinstance(raw, Mapping):
            raise FaultPlanError(f"{where} must be an object, got {type(raw).__name__}")
        _refuse_unknown(raw, {"delay_ms", "jitter_ms", "loss_percent"}, where)
        delay = _number(raw, "delay_ms", where, 0, MAX_DELAY_MS)
        jitter = _number(raw, "jitter_ms", where, 0, MAX_DELAY_MS)
        loss = _number(raw, "loss_percent", where, 0, 100)
        return Shaping(delay / 1000, jitter / 1000, loss / 100)


NO_SHAPING = Shaping()


@dataclass(frozen=True)
class FaultPlan:
    partitioned: frozenset[str] = frozenset()  # hosts this node can neither reach nor hear from
    shaping: Shaping = NO_SHAPING  # toward every destination without its own entry in `links`
    links: Mapping[str, Shaping] = field(default_factory=dict)  # destination host -> shaping

    def is_partitioned(self, host: str) -> bool:
        return host_of(host) in self.partitioned

    def toward(self, host: str) -> Shaping:
        return self.links.get(host_of(host), self.shaping)

    @property
    def clean(self) -> bool:
        return not self.partitioned and self.shaping.clean and not self.links

    def with_partition(self, hosts: Iterable[str]) -> FaultPlan:
        return FaultPlan(frozenset(host_of(h) for h in hosts), self.shaping, self.links)

    def with_shaping(self, shaping: Shaping, toward: str | None = None) -> FaultPlan:
        """This plan with `shaping` toward every destination without its own entry, or toward
        one host only (a clean shaping then removes that host's entry)."""
        if toward is None:
            return FaultPlan(self.partitioned, shaping, self.links)
        links = {h: s for h, s in self.links.items() if h != host_of(toward)}
        if not shaping.clean:
            links[host_of(toward)] = shaping
        return FaultPlan(self.partitioned, self.shaping, links)

    def to_json(self) -> dict[str, Any]:
        return {
            "partitioned": sorted(self.partitioned),
            **self.shaping.to_json(),
            "links": {host: s.to_json() for host, s in sorted(self.links.items())},
        }

    @staticmethod
    def from_json(raw: Any) -> FaultPlan:
        """Parse the lab API's JSON; absent fields mean no fault of that kind."""
        if not isinstance(raw, Mapping):
            raise FaultPlanError(f"a fault plan is a JSON object, got {type(raw).__name__}")
        _refuse_unknown(
            raw, {"partitioned", "delay_ms", "jitter_ms", "loss_percent", "links"}, "the plan"
        )
        hosts = raw.get("partitioned", [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise FaultPlanError(
                'partitioned must be a list of host addresses, e.g. ["127.77.0.12"]'
            )
        shaping = Shaping.from_json(
            {k: v for k, v in raw.items() if k in ("delay_ms", "jitter_ms", "loss_percent")},
            "the plan",
        )
        links = raw.get("links", {})
        if not isinstance(links, Mapping):
            raise FaultPlanError(
                'links must map a destination host to its shaping, e.g. {"127.77.0.12": '
                '{"delay_ms": 200}}'
            )
        return FaultPlan(
            frozenset(host_of(h) for h in hosts),
            shaping,
            {host_of(h): Shaping.from_json(s, f"links[{h!r}]") for h, s in links.items()},
        )


def _refuse_unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FaultPlanError(
            f"unknown field {unknown[0]!r} in {where}; the fields are {', '.join(sorted(known))}"
        )


def _number(raw: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float:
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultPlanError(f"{key} in {where} must be a number, got {value!r}")
    if not low <= value <= high:
        raise FaultPlanError(f"{key} in {where} must be between {low} and {high}, got {value}")
    return float(value)


class Faults:
    """The plan one process runs with, and the decisions the transports ask of it."""

    def __init__(self, plan: FaultPlan | None = None, rng: random.Random | None = None) -> None:
        self.plan = plan or FaultPlan()
        self.local_host = ""  # this node's host, which its outbound calls name (see faults_grpc)
        self._rng = rng or random.Random()

    def install(self, plan: FaultPlan) -> None:
        self.plan = plan

    def is_partitioned(self, host: str) -> bool:
        return self.plan.is_partitioned(host)

    def should_drop(self, dest: str) -> bool:
        """Whether a datagram to `dest` is lost: cut off by a partition, or by chance."""
        if self.plan.clean:  # the usual case, on every message: decide without parsing
            return False
        if self.plan.is_partitioned(dest):
            return True
        loss = self.plan.toward(dest).loss
        return loss > 0 and self._rng.random() < loss

    def delay_for(self, dest: str) -> float:
        """Seconds a datagram to `dest` spends on the way (0 without a delay fault)."""
        if self.plan.clean:
            return 0.0
        shaping = self.plan.toward(dest)
        if shaping.jitter == 0:
            return shaping.delay
        return max(0.0, shaping.delay + self._rng.uniform(-shaping.jitter, shaping.jitter))

    def transmit_delay(self, dest: str) -> float | None:
        """Seconds a request over TCP to `dest` takes to get through: the delay plus one
        retransmission timeout (doubling) per lost attempt; None when it cannot get through
        (partitioned, or every retransmission lost)."""
        if self.plan.clean:
            return 0.0
        if self.plan.is_partitioned(dest):
            return None
        loss = self.plan.toward(dest).loss
        waited, timeout = 0.0, RETRANSMIT_TIMEOUT
        for _attempt in range(MAX_RETRANSMITS + 1):
            if not (loss > 0 and self._rng.random() < loss):
                return waited + self.delay_for(dest)
            waited += timeout
            timeout *= 2
        return None


FAULTS = Faults()
"""This process's faults: a node process has one network, so one plan for all its transports."""
