"""Linearizability checking of client histories (Wing & Gong search with Lowe's memoization).

A history is a list of `Operation`s, each with the virtual time a client called it and the time
it saw the result. It is linearizable when every operation can be given one instant inside its
interval such that, applied in that order, a sequential `Model` produces exactly the observed
outputs. Simulation tests record their clients' histories and assert `check(...).ok`.

How the search works: calls and returns become one time-ordered doubly-linked list. Depth-first,
the checker takes any operation whose call comes before the first remaining return, applies it
to the model and unlinks it; reaching a return whose operation was not taken means the choices
so far were wrong, so it backtracks. A memo of (set of taken operations, model state) prunes
configurations already explored (and, for unknown-outcome operations, ones that took a superset
of them), which keeps a few hundred operations by a handful of concurrent clients well under a
second. The cost grows exponentially with the number of concurrent clients, mostly on histories
that fail; `timeout_s` bounds it. Models split histories into independent partitions (per key
for `KVModel`), each checked on its own.

Semantics a harness should know:

- `ret=None` means the outcome is unknown (timeout, crash): the operation may take effect at
  any instant after its call, or never. The model then sees `UNKNOWN` as its output. Unknown
  read-only operations are dropped, as they constrain nothing.
- Intervals that merely touch (one returns at the instant another is called) are concurrent,
  except for two operations of the same client, which are sequential: a client that issues its
  next operation in the same virtual instant as it got the previous result still gets
  read-your-writes checked.
- A client is sequential: its operations with known outcomes must not overlap (`check` raises
  ValueError otherwise; concurrent requests need distinct client ids). After an unknown outcome
  it may go on. Operations of one client at the same instant count in history order.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

S = TypeVar("S", bound=Hashable)

_CLOCK_CHECK_EVERY = 4096  # search steps between two looks at the wall clock
_PREFIX_LINES = 20  # how many operations of the linearizable prefix an explanation shows


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()
"""The output a model sees for an operation whose result the client never learned."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation; `ret is None` means the client never learned the outcome."""

    client: int
    call: float
    ret: float | None
    input: Any
    output: Any


class Model(Protocol[S]):
    """A sequential specification. States must be hashable (they are memoized).

    Subclass it explicitly to inherit the default `partition` and `read_only`.
    """

    def init(self) -> S:
        """The state before any operation."""
        ...

    def step(self, state: S, input: Any, output: Any) -> tuple[bool, S]:
        """Whether `output` is legal for `input` from `state`, and the state after it.

        `output` is `UNKNOWN` for an operation whose outcome is unknown: the model must then
        accept it and return the state it leads to (the checker handles "never happened").
        """
        ...

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        """Independent sub-histories, each linearizable on its own iff the whole is."""
        return [list(history)]

    def read_only(self, input: Any) -> bool:
        """Whether `input` never changes the state (unknown-outcome reads are then dropped)."""
        return False


class KVModel(Model[Hashable]):
    """A key-value register map; its state is the value of one key (None: absent).

    Inputs: `("put", key, value)` -> None, `("get", key, None)` -> the value or None,
    `("cas", key, (expected, new))` -> whether the value was `expected` (then it becomes `new`;
    `expected=None` means "absent"). Histories are partitioned per key.
    """

    def init(self) -> Hashable:
        return None

    def step(self, state: Hashable, input: Any, output: Any) -> tuple[bool, Hashable]:
        kind, _, arg = input
        if kind == "get":
            return (output is UNKNOWN or output == state), state
        if kind == "put":
            return (output is None or output is UNKNOWN), arg
        if kind == "cas":
            expected, new = arg
            swapped = state == expected
            after = new if swapped else state
            return (output is UNKNOWN or output == swapped), after
        raise ValueError(f"KVModel does not know operation {kind!r} (use put, get or cas)")

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        by_key: dict[Hashable, list[Operation]] = {}
        for op in history:
            by_key.setdefault(op.input[1], []).append(op)
        return list(by_key.values())

    def read_only(self, input: Any) -> bool:
        return bool(input[0] == "get")


@dataclass(frozen=True)
class PartitionResult:
    """The verdict on one partition.

    `linearization` is a valid order of the operations that took effect when `ok` is True, and
    the longest linearizable prefix found otherwise; `unplaced` lists, on failure, the completed
    operations that could come next after that prefix and none of which fits.
    """

    ok: bool | None
    operations: tuple[Operation, ...]
    linearization: tuple[Operation, ...]
    state: Any  # the model state after `linearization`
    unplaced: tuple[Operation, ...]
    explanation: str


@dataclass(frozen=True)
class CheckResult:
    """`ok`: True linearizable, False not, None gave up at the timeout (and found no violation)."""

    ok: bool | None
    partitions: tuple[PartitionResult, ...]
    elapsed_s: float

    @property
    def explanation(self) -> str:
        """A human-readable report of every partition that failed or timed out."""
        if self.ok:
            ops = sum(len(p.operations) for p in self.partitions)
            return f"linearizable: {ops} operations in {len(self.partitions)} partitions"
        return "\n\n".join(p.explanation for p in self.partitions if not p.ok)


def check(
    model: Model[S], history: Iterable[Operation], *, timeout_s: float | None = 10.0
) -> CheckResult:
    """Check `history` against `model`; `timeout_s` (wall clock, None: none) bounds the search."""
    started = time.monotonic()
    deadline = None if timeout_s is None else started + timeout_s
    ops = list(history)
    _validate(ops)
    kept = [op for op in ops if not (op.ret is None and model.read_only(op.input))]
    parts = model.partition(kept)
    results = tuple(
        _check_partition(model, part, index, len(parts), deadline)
        for index, part in enumerate(parts)
    )
    verdicts = [r.ok for r in results]
    ok = False if False in verdicts else (None if None in verdicts else True)
    return CheckResult(ok, results, time.monotonic() - started)


class _Node:
    """A call or return event in the search's doubly-linked list."""

    __slots__ = ("is_call", "match", "next", "op", "prev")

    def __init__(self, op: int, is_call: bool) -> None:
        self.op = op
        self.is_call = is_call
        self.match: _Node | None = None  # a call's return event
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _event_list(ops: Sequence[Operation]) -> tuple[_Node, list[int], list[int]]:
    """Build the event list; also return each operation's call and return positions in it."""
    inf = float("inf")
    keys: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        keys.append((op.call, 0, i))  # at equal times calls come first: touching is concurrent
        keys.append((inf if op.ret is None else op.ret, 1, i))
    keys.sort()
    head = _Node(-1, False)
    calls: dict[int, _Node] = {}
    call_pos = [0] * len(ops)
    ret_pos = [0] * len(ops)
    prev = head
    for pos, (_, kind, i) in enumerate(keys):
        node = _Node(i, kind == 0)
        if kind == 0:
            calls[i] = node
            call_pos[i] = pos
        else:
            calls[i].match = node
            ret_pos[i] = pos
        node.prev = prev
        prev.next = node
        prev = node
    return head, call_pos, ret_pos


def _client_sequences(ops: Sequence[Operation]) -> list[list[int]]:
    """Each client's operations in issue order: by call time, then by position in the history."""
    by_client: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        by_client.setdefault(op.client, []).append(i)
    for indices in by_client.values():
        indices.sort(key=lambda i: ops[i].call)  # stable: history order breaks ties
    return list(by_client.values())


def _validate(ops: Sequence[Operation]) -> None:
    for op in ops:
        if op.ret is not None and op.ret < op.call:
            raise ValueError(f"operation returns before it is called: {op}")
    for indices in _client_sequences(ops):
        last: Operation | None = None
        for i in indices:
            op = ops[i]
            if last is not None and last.ret is not None and op.call < last.ret:
                raise ValueError(
                    f"client {op.client} has overlapping operations {last} and {op}: a client "
                    "waits for each result, so give concurrent requests different client ids"
                )
            if op.ret is not None:
                last = op


def _same_client_order(ops: Sequence[Operation]) -> list[int]:
    """For each op, the op of the same client that returned exactly when it was called, or -1.

    Unknown-outcome operations never complete, so the next one may overlap them.
    """
    after = [-1] * len(ops)
    for indices in _client_sequences(ops):
        last = -1
        for i in indices:
            if last >= 0 and ops[last].ret == ops[i].call:
                after[i] = last
            if ops[i].ret is not None:
                last = i
    return after


def _lift(call: _Node) -> None:
    ret = call.match
    assert call.prev is not None and ret is not None and ret.prev is not None
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    ret = call.match
    assert call.prev is not None and ret is not None and ret.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


def _check_partition(
    model: Model[S], ops: Sequence[Operation], index: int, count: int, deadline: float | None
) -> PartitionResult:
    head, call_pos, ret_pos = _event_list(ops)
    after = _same_client_order(ops)
    inputs = [op.input for op in ops]
    outputs = [UNKNOWN if op.ret is None else op.output for op in ops]
    unknown = [op.ret is None for op in ops]
    to_place = len(ops) - sum(unknown)
    placed = bytearray(len(ops))
    step = model.step

    # A configuration is (completed ops taken, unknown-outcome ops taken, state). Taking an
    # unknown-outcome op is optional, so a configuration that took a subset of the unknown ops
    # another one took (all else equal) can do everything the other can: once explored, it
    # prunes the other. Without this, each unknown op doubles the work on a failing history.
    state = model.init()
    known = 0  # bitset of the completed ops taken
    maybe = 0  # bitset of the unknown-outcome ops taken
    done = 0  # number of completed ops taken
    stack: list[tuple[_Node, S]] = []
    seen: dict[tuple[int, S], list[int]] = {}
    best: list[int] = []
    best_done = -1
    countdown = _CLOCK_CHECK_EVERY
    ok: bool | None = True
    node = head.next
    while done < to_place:
        countdown -= 1
        if countdown == 0:
            countdown = _CLOCK_CHECK_EVERY
            if deadline is not None and time.monotonic() > deadline:
                ok = None
                break
        # While a completed operation remains, its return lies ahead: `node` is never None.
        assert node is not None
        if not node.is_call:
            # A return whose operation was not taken: the choices above it were wrong.
            if not stack:
                ok = False
                break
            node, state = stack.pop()
            i = node.op
            if unknown[i]:
                maybe &= ~(1 << i)
            else:
                known &= ~(1 << i)
                done -= 1
            placed[i] = 0
            _unlift(node)
            node = node.next
            continue
        i = node.op
        before = after[i]
        if before >= 0 and not placed[before]:
            node = node.next
            continue
        legal, new_state = step(state, inputs[i], outputs[i])
        if not legal:
            node = node.next
            continue
        new_known, new_maybe = (known, maybe | 1 << i) if unknown[i] else (known | 1 << i, maybe)
        key = (new_known, new_state)
        prior = seen.get(key)
        if prior is None:
            seen[key] = [new_maybe]
        elif new_maybe in prior or any(p & ~new_maybe == 0 for p in prior):
            node = node.next
            continue
        else:
            prior[:] = [p for p in prior if new_maybe & ~p]  # drop those this one prunes
            prior.append(new_maybe)
        stack.append((node, state))
        state, known, maybe = new_state, new_known, new_maybe
        placed[i] = 1
        _lift(node)
        if not unknown[i]:
            done += 1
            if done > best_done:
                best_done = done
                best = [entry[0].op for entry in stack]
        node = head.next

    if ok:
        order = tuple(ops[entry[0].op] for entry in stack)
        return PartitionResult(True, tuple(ops), order, state, (), "")
    return _explain(model, ops, ok, best, call_pos, ret_pos, after, index, count)


def _explain(
    model: Model[S],
    ops: Sequence[Operation],
    ok: bool | None,
    best: list[int],
    call_pos: list[int],
    ret_pos: list[int],
    after: list[int],
    index: int,
    count: int,
) -> PartitionResult:
    """Describe the deepest point the search reached and why nothing fits after it."""
    state = model.init()
    for i in best:
        state = model.step(state, ops[i].input, UNKNOWN if ops[i].ret is None else ops[i].output)[1]
    in_prefix = set(best)
    rest = [i for i in range(len(ops)) if i not in in_prefix and ops[i].ret is not None]
    first_ret = min(ret_pos[i] for i in rest)
    candidates = sorted(
        (i for i in rest if call_pos[i] < first_ret and (after[i] < 0 or after[i] in in_prefix)),
        key=lambda i: call_pos[i],
    )

    verdict = "not linearizable" if ok is False else "gave up at the timeout (no verdict)"
    lines = [
        f"partition {index + 1} of {count}: {verdict}; {len(ops)} operations",
        f"longest linearizable prefix found: {len(best)} operations",
    ]
    if len(best) > _PREFIX_LINES:
        lines.append(f"  ... {len(best) - _PREFIX_LINES} earlier operations")
    for n, i in enumerate(best[-_PREFIX_LINES:], start=max(1, len(best) - _PREFIX_LINES + 1)):
        lines.append(f"  {n}. {_describe(ops[i])}")
    lines.append(f"state after the prefix: {state!r}")
    if ok is False:
        lines.append("none of these completed operations can come next:")
        for i in candidates:
            legal = model.step(state, ops[i].input, ops[i].output)[0]
            why = "legal here, but nothing fits after it" if legal else "illegal from this state"
            lines.append(f"  {_describe(ops[i])}   ({why})")
    return PartitionResult(
        ok,
        tuple(ops),
        tuple(ops[i] for i in best),
        state,
        tuple(ops[i] for i in candidates) if ok is False else (),
        "\n".join(lines),
    )


def _describe(op: Operation) -> str:
    ret = "?" if op.ret is None else f"{op.ret:.6g}"
    output = "unknown" if op.ret is None else repr(op.output)
    return f"client {op.client} [{op.call:.6g}, {ret}] {op.input!r} -> {output}"
