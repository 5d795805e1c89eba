"""The workload of `swarmlab chaos run`: clients that drive the Docker Engine API of the live
managers (network create/remove, service create/scale/update/remove) while faults hit the lab,
recording every call and its answer, and keeping a `Ledger` of what the answers promise.

An answer is one of three outcomes: `ok` (acknowledged: the write happened), `rejected` (a 4xx,
or a create or update whose connection was refused: nothing happened) or `unknown` (a 5xx, a
timeout, a cut connection: it may or may not have happened, e.g. a proposal that timed out can
still commit). The ledger keeps, per object, whether it must exist, must be gone, or may be
either, and the replica counts and generations it may have; `chaos_checks` compares the swarm
against it.

Every create uses a fresh name, so an unknown attempt never collides with a later one, and two
clients never touch the same object at once (a scale racing an update would make the expected
state a matter of which landed first). One race is made on purpose: a service create and the
remove of its network, sent together (through two managers when two run); one of them must
lose, never both win and leave a service whose network is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from controlplane.lab.engine import EngineClient, EngineError

log = logging.getLogger("controlplane.lab.chaos_workload")

CALL_TIMEOUT = 15.0  # seconds; longer than a Raft proposal's deadline, so most calls answer
PAUSE = (0.1, 0.4)  # seconds between a client's calls
MAX_NETWORKS = 10  # live networks the workload keeps at most
MAX_SERVICES = 4  # live services
REPLICAS = (1, 3)
IMAGE = "busybox"
RACE = "network rm during service create"  # the deliberate race (see the module docstring)


class Presence(enum.Enum):
    PRESENT = "present"  # acknowledged create, no remove since that may have happened
    ABSENT = "absent"  # refused create, or acknowledged remove
    EITHER = "either"  # an unknown outcome decides


@dataclass
class TrackedObject:
    kind: str  # network | service
    name: str
    presence: Presence
    id: str = ""
    network: str = ""  # a service's network
    replicas: set[int] = field(default_factory=set)  # a service's possible replica counts
    generations: set[int] = field(default_factory=set)  # its possible CHAOS_GENERATION values

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "presence": self.presence.value,
            "id": self.id,
        }
        if self.kind == "service":
            shown |= {
                "network": self.network,
                "replicas": sorted(self.replicas),
                "generations": sorted(self.generations),
            }
        return shown


@dataclass(frozen=True)
class Change:
    """What a scale or an update writes: `replicas` or `generations`, and the new value."""

    field: str
    value: int


@dataclass(frozen=True)
class CallRecord:
    at: float  # seconds from the start of the run
    client: int
    node: str  # the manager the call went to
    op: str  # e.g. "network create"
    target: str  # the object's name
    outcome: str  # ok | rejected | unknown
    status: int | None  # HTTP status, None without an answer
    detail: str  # the error message, empty when ok
    took: float  # seconds
    acknowledged: bool = False  # the object's create was acknowledged and no remove sent since
    race: int = 0  # the calls of one deliberate race share its number (0: none)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "client": self.client,
            "node": self.node,
            "op": self.op,
            "target": self.target,
            "outcome": self.outcome,
            "status": self.status,
            "detail": self.detail,
            "took": round(self.took, 3),
            "acknowledged": self.acknowledged,
            "race": self.race,
        }


@dataclass
class Ledger:
    """What the acknowledged answers promise about the swarm's objects."""

    objects: dict[str, TrackedObject] = field(default_factory=dict)  # by name
    calls: list[CallRecord] = field(default_factory=list)
    busy: set[str] = field(default_factory=set)  # names a client is working on

    def of_kind(self, kind: str, *presences: Presence) -> list[TrackedObject]:
        return [o for o in self.objects.values() if o.kind == kind and o.presence in presences]

    def idle(self, kind: str) -> list[TrackedObject]:
        """Acknowledged objects no client is working on: what a next call may pick."""
        return [o for o in self.of_kind(kind, Presence.PRESENT) if o.name not in self.busy]

    def account(self, op: str, obj: TrackedObject, outcome: str, change: Change | None) -> None:
        """What one answer tells about the object: an acknowledged create makes it present,
        a refused one absent, an unknown one either; the same for a remove (a refused remove
        changes nothing); a scale or an update acknowledged leaves one possible value, an
        unknown one adds a possible value."""
        if op.endswith("create"):
            obj.presence = {
                "ok": Presence.PRESENT,
                "rejected": Presence.ABSENT,
                "unknown": Presence.EITHER,
            }[outcome]
        elif op.endswith("rm"):
            if outcome == "ok":
                obj.presence = Presence.ABSENT
            elif outcome == "unknown":
                obj.presence = Presence.EITHER
        elif change is not None and outcome != "rejected":
            values = obj.replicas if change.field == "replicas" else obj.generations
            if outcome == "ok":
                values.clear()
            values.add(change.value)

    def races(self) -> dict[int, list[CallRecord]]:
        """The calls of each deliberate race, by its number."""
        races: dict[int, list[CallRecord]] = {}
        for call in self.calls:
            if call.race:
                races.setdefault(call.race, []).append(call)
        return races

    def summary(self) -> dict[str, dict[str, int]]:
        """Per operation, how many calls ended in each outcome."""
        counts: dict[str, dict[str, int]] = {}
        for call in self.calls:
            per_op = counts.setdefault(call.op, {"ok": 0, "rejected": 0, "unknown": 0})
            per_op[call.outcome] += 1
        return counts


class Outcome(Exception):
    """How a call ended when it did not end `ok` (internal to the workload)."""

    def __init__(self, outcome: str, status: int | None, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.status = status
        self.detail = detail


class Workload:
    """`clients` concurrent clients, each calling a random live manager (from `managers()`,
    the (name, host:2375) of managers whose process runs) until `stop()`."""

    def __init__(
        self,
        managers: Callable[[], Sequence[tuple[str, str]]],
        seed: int,
        clients: int = 2,
        prefix: str = "chaos",
        pause: tuple[float, float] = PAUSE,
    ) -> None:
        self.ledger = Ledger()
        self._managers = managers
        self._rng = random.Random(seed)
        self._clients = clients
        self._pause = pause  # seconds between a client's calls, drawn uniformly
        self.prefix = prefix
        self._sequence = 0
        self._races = 0
        self._started = time.monotonic()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._started = time.monotonic()
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(1, self._clients + 1)]

    async def stop(self) -> Ledger:
        """Let every call in flight finish (it is recorded), then stop."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        return self.ledger

    async def remove_leftovers(self, timeout: float = 60.0) -> int:
        """Remove this run's objects that may still exist (services first, then their
        networks, which stay in use until the tasks are gone), so runs do not pile objects
        up in the lab; returns how many were removed."""
        live = list(self._managers())
        if not live:
            return 0
        left = [
            o
            for kind in ("service", "network")
            for o in self.ledger.of_kind(kind, Presence.PRESENT, Presence.EITHER)
        ]
        removed = 0
        deadline = time.monotonic() + timeout
        async with EngineClient(live[0][1], timeout=CALL_TIMEOUT) as engine:
            for obj in left:
                while True:
                    try:
                        await engine.request("DELETE", f"/{obj.kind}s/{obj.id or obj.name}")
                        removed += 1
                        break
                    except EngineError as err:
                        if err.status == 404:
                            break
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.5)  # a network still in use by stopping tasks
        return removed

    async def _client(self, client: int) -> None:
        while not self._stopping.is_set():
            live = list(self._managers())
            if live:
                node, address = self._rng.choice(live)
                async with EngineClient(address, timeout=CALL_TIMEOUT) as engine:
                    await self._one_call(client, node, engine, live)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._rng.uniform(*self._pause))

    def _fresh_name(self, kind: str) -> str:
        self._sequence += 1
        return f"{self.prefix}-{kind}-{self._sequence}"

    def _choose(self) -> tuple[str, TrackedObject | None]:
        """The next operation and the object it works on (None for a create)."""
        ledger = self.ledger
        networks = ledger.idle("network")
        services = ledger.idle("service")
        used = {o.network for o in ledger.of_kind("service", Presence.PRESENT, Presence.EITHER)}
        free_networks = [n for n in networks if n.name not in used]
        options: list[tuple[str, TrackedObject | None, int]] = []
        if len(ledger.of_kind("network", Presence.PRESENT)) < MAX_NETWORKS:
            options.append(("network create", None, 4))
        options += [("network rm", n, 1) for n in free_networks]
        live_services = ledger.of_kind("service", Presence.PRESENT, Presence.EITHER)
        if networks and len(live_services) < MAX_SERVICES:
            options.append(("service create", self._rng.choice(networks), 4))
        if free_networks and len(live_services) < MAX_SERVICES:
            options.append((RACE, self._rng.choice(free_networks), 1))
        for service in services:
            options += [("service scale", service, 2), ("service update", service, 2)]
            options.append(("service rm", service, 1))
        op, target, _weight = self._rng.choices(options, weights=[w for *_x, w in options])[0]
        return op, target

    async def _one_call(
        self, client: int, node: str, engine: EngineClient, live: Sequence[tuple[str, str]]
    ) -> None:
        op, target = self._choose()
        if op == RACE:
            assert target is not None
            await self._race(client, (node, engine), live, target)
            return
        if op == "network create":
            obj = TrackedObject("network", self._fresh_name("net"), Presence.EITHER)
        elif op == "service create":
            assert target is not None
            obj = self._new_service(target)
        else:
            assert target is not None
            obj = target
        await self._tracked(client, node, engine, op, obj)

    def _new_service(self, network: TrackedObject) -> TrackedObject:
        return TrackedObject(
            "service",
            self._fresh_name("svc"),
            Presence.EITHER,
            network=network.name,
            replicas={self._rng.randint(*REPLICAS)},
            generations={0},
        )

    async def _race(
        self,
        client: int,
        creating: tuple[str, EngineClient],
        live: Sequence[tuple[str, str]],
        network: TrackedObject,
    ) -> None:
        """A service create on `network` and the remove of `network`, sent together; the
        remove goes through another manager when another runs."""
        self._races += 1
        race = self._races
        service = self._new_service(network)
        # Both are the race's before anything yields: no other client may pick them meanwhile.
        self.ledger.objects[service.name] = service
        self.ledger.busy |= {service.name, network.name}
        others = [m for m in live if m[0] != creating[0]] or list(live)
        node, address = self._rng.choice(others)
        async with EngineClient(address, timeout=CALL_TIMEOUT) as engine:
            await asyncio.gather(
                self._tracked(client, *creating, "service create", service, race),
                self._tracked(client, node, engine, "network rm", network, race),
            )

    async def _tracked(
        self,
        client: int,
        node: str,
        engine: EngineClient,
        op: str,
        obj: TrackedObject,
        race: int = 0,
    ) -> None:
        """Make one call on `obj`, account its answer in the ledger and record it."""
        ledger = self.ledger
        name = obj.name
        ledger.objects[name] = obj
        ledger.busy.add(name)
        change = self._planned_change(op, obj)
        acknowledged = obj.presence is Presence.PRESENT
        started = time.monotonic()
        status: int | None = 200
        outcome, detail = "ok", ""
        try:
            await self._call(op, obj, engine, change)
        except Outcome as ended:
            outcome, status, detail = ended.outcome, ended.status, ended.detail
        finally:
            ledger.busy.discard(name)
        took = time.monotonic() - started
        ledger.account(op, obj, outcome, change)
        record = CallRecord(
            started - self._started,
            client,
            node,
            op,
            name,
            outcome,
            status,
            detail,
            took,
            acknowledged,
            race,
        )
        ledger.calls.append(record)
        log.info(
            "event=chaos_call op=%r target=%s node=%s outcome=%s status=%s took=%.3f race=%d",
            op,
            name,
            node,
            outcome,
            status,
            took,
            race,
        )

    def _planned_change(self, op: str, obj: TrackedObject) -> Change | None:
        """The new value a scale (replicas) or an update (generation) is about to write."""
        if op == "service scale":
            return Change("replicas", self._rng.randint(*REPLICAS))
        if op == "service update":
            return Change("generations", max(obj.generations) + 1)
        return None

    async def _call(
        self, op: str, obj: TrackedObject, engine: EngineClient, change: Change | None
    ) -> None:
        """Make the call; raise `Outcome` unless it is acknowledged."""
        try:
            if op == "network create":
                body = {"Name": obj.name, "Driver": "overlay", "CheckDuplicate": True}
                obj.id = (await engine.request("POST", "/networks/create", body))["Id"]
            elif op == "network rm":
                await engine.request("DELETE", f"/networks/{obj.id}")
            elif op == "service create":
                spec = self._service_spec(obj, min(obj.replicas), 0)
                obj.id = (await engine.request("POST", "/services/create", spec))["ID"]
            elif op == "service rm":
                await engine.request("DELETE", f"/services/{obj.id}")
            else:
                assert change is not None
                await self._update(obj, engine, change)
        except EngineError as err:
            kind = "rejected" if 400 <= err.status < 500 else "unknown"
            raise Outcome(kind, err.status, str(err)) from None
        except aiohttp.ClientConnectorError as err:
            # No connection: a POST was never sent. aiohttp resends an idempotent request
            # (DELETE) once when the connection drops, so a refused connection there may be
            # the retry of a delete the node applied before it died.
            outcome = "unknown" if op.endswith("rm") else "rejected"
            raise Outcome(outcome, None, f"{type(err).__name__}: {err}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise Outcome("unknown", None, f"{type(err).__name__}: {err}") from None

    async def _update(self, obj: TrackedObject, engine: EngineClient, change: Change) -> None:
        """A scale or an update (a new CHAOS_GENERATION: every task replaced), on the version
        just read, as `docker service scale/update` do."""
        current = await engine.request("GET", f"/services/{obj.id}")
        spec = current["Spec"]
        if change.field == "replicas":
            spec["Mode"] = {"Replicated": {"Replicas": change.value}}
        else:
            spec["TaskTemplate"]["ContainerSpec"]["Env"] = [f"CHAOS_GENERATION={change.value}"]
        version = str(current["Version"]["Index"])
        await engine.request(
            "POST", f"/services/{obj.id}/update", spec, params={"version": version}
        )

    @staticmethod
    def _service_spec(obj: TrackedObject, replicas: int, generation: int) -> dict[str, Any]:
        return {
            "Name": obj.name,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": IMAGE,
                    "Args": ["sleep", "86400"],
                    "Env": [f"CHAOS_GENERATION={generation}"],
                },
                "Networks": [{"Target": obj.network}],
            },
            "Mode": {"Replicated": {"Replicas": replicas}},
        }
