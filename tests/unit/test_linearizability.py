"""The linearizability checker: hand-written histories, a brute-force oracle, random histories."""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable, Sequence
from typing import Any

import pytest

from controlplane.sim.linearizability import (
    UNKNOWN,
    KVModel,
    Model,
    Operation,
    check,
)

KV = KVModel()


def put(client: int, call: float, ret: float | None, value: Any, key: str = "x") -> Operation:
    return Operation(client, call, ret, ("put", key, value), None)


def get(client: int, call: float, ret: float | None, value: Any, key: str = "x") -> Operation:
    return Operation(client, call, ret, ("get", key, None), value)


def cas(
    client: int, call: float, ret: float | None, expected: Any, new: Any, ok: bool, key: str = "x"
) -> Operation:
    return Operation(client, call, ret, ("cas", key, (expected, new)), ok)


def verdict(*ops: Operation) -> bool | None:
    return check(KV, ops).ok


# Hand-written histories


def test_empty_and_sequential_histories() -> None:
    assert verdict() is True
    assert verdict(put(1, 0, 1, 1), get(1, 2, 3, 1), put(2, 4, 5, 2), get(3, 6, 7, 2)) is True
    assert verdict(get(1, 0, 1, None)) is True


def test_stale_read_after_a_completed_write_fails_with_an_explanation() -> None:
    stale = get(3, 4, 5, 1)
    result = check(KV, [put(1, 0, 1, 1), put(2, 2, 3, 2), stale])
    assert result.ok is False
    part = result.partitions[0]
    assert [op.input[2] for op in part.linearization] == [1, 2]
    assert part.state == 2
    assert part.unplaced == (stale,)
    assert "illegal from this state" in result.explanation
    assert "longest linearizable prefix found: 2 operations" in result.explanation


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    assert verdict(put(1, 0, 1, 1), put(2, 2, 5, 2), get(3, 3, 4, 1)) is True
    assert verdict(put(1, 0, 1, 1), put(2, 2, 5, 2), get(3, 3, 4, 2)) is True


def test_concurrent_writes_may_be_observed_in_either_order() -> None:
    writes = [put(1, 0, 10, 1), put(2, 0, 10, 2)]
    # One set of readers sees 1 then 2, another sees 2 then 1: both orders are legal.
    assert verdict(*writes, get(3, 1, 2, 1), get(3, 3, 4, 2), get(4, 5, 6, 2)) is True
    assert verdict(*writes, get(3, 1, 2, 2), get(3, 3, 4, 1), get(4, 5, 6, 1)) is True
    # Overlapping reads by different clients may disagree on the order.
    assert verdict(*writes, get(3, 1, 4, 1), get(4, 1, 4, 2), get(3, 5, 6, 2)) is True
    # But once a client saw 1 after 2, nobody may see 2 again.
    assert verdict(*writes, get(3, 1, 2, 2), get(4, 3, 4, 1), get(3, 5, 6, 2)) is False
    # Two clients whose sequential reads see the writes in opposite orders: impossible.
    bad = [get(3, 1, 2, 1), get(4, 3, 4, 2), get(3, 5, 6, 2), get(4, 7, 8, 1)]
    assert verdict(*writes, *bad) is False


def test_lost_write_fails() -> None:
    assert verdict(put(1, 0, 1, 1), get(2, 2, 3, None)) is False
    assert verdict(put(1, 0, 1, 1), put(2, 2, 3, 2), get(3, 4, 5, 1), get(1, 6, 7, 2)) is False


def test_a_read_cannot_see_a_value_before_it_is_written() -> None:
    assert verdict(get(1, 0, 1, 7), put(2, 2, 3, 7)) is False
    assert verdict(get(1, 0, 1, 8)) is False


def test_cas_semantics() -> None:
    assert verdict(cas(1, 0, 1, None, 1, True), get(2, 2, 3, 1)) is True
    assert verdict(put(1, 0, 1, 1), cas(2, 2, 3, 1, 2, True), get(3, 4, 5, 2)) is True
    assert verdict(put(1, 0, 1, 1), cas(2, 2, 3, 5, 2, False), get(3, 4, 5, 1)) is True
    # A cas that claims success although the value was something else.
    assert verdict(put(1, 0, 1, 1), cas(2, 2, 3, 5, 2, True)) is False
    # A cas that claims failure although the value matched.
    assert verdict(put(1, 0, 1, 1), cas(2, 2, 3, 1, 2, False)) is False
    # A failed cas must not change the value.
    assert verdict(put(1, 0, 1, 1), cas(2, 2, 3, 5, 2, False), get(3, 4, 5, 2)) is False
    # Two concurrent cas from the same expected value: only one may win.
    race = [put(1, 0, 1, 0), cas(2, 2, 5, 0, 1, True), cas(3, 2, 5, 0, 2, True)]
    assert verdict(*race) is False
    race[2] = cas(3, 2, 5, 0, 2, False)
    assert verdict(*race, get(4, 6, 7, 1)) is True


def test_unknown_outcome_write_that_took_effect() -> None:
    history = [put(1, 0, 1, 1), put(2, 2, None, 2), get(3, 5, 6, 2)]
    assert verdict(*history) is True


def test_unknown_outcome_write_that_did_not_take_effect() -> None:
    history = [put(1, 0, 1, 1), put(2, 2, None, 2), get(3, 5, 6, 1), get(3, 7, 8, 1)]
    assert verdict(*history) is True


def test_unknown_outcome_write_may_take_effect_late_or_never() -> None:
    assert verdict(put(1, 0, None, 2), get(2, 1, 2, None), get(2, 100, 101, None)) is True
    assert verdict(put(1, 0, None, 2), get(2, 1, 2, None), get(2, 100, 101, 2)) is True
    # Once it is seen, it cannot be undone...
    history = [put(1, 0, 1, 1), put(2, 2, None, 2), get(3, 3, 4, 2), get(3, 5, 6, 1)]
    assert verdict(*history) is False
    # ...and it cannot explain a read that finished before it was called.
    assert verdict(get(1, 0, 1, 2), put(2, 2, None, 2)) is False


def test_unknown_outcome_cas_and_read() -> None:
    history = [put(1, 0, 1, 1), cas(2, 2, None, 1, 2, False), get(3, 3, 4, 2)]
    assert verdict(*history) is True  # the recorded output of an unknown operation is ignored
    history = [put(1, 0, 1, 1), cas(2, 2, None, 9, 2, True), get(3, 3, 4, 2)]
    assert verdict(*history) is False  # it could only fail, so it cannot have written 2
    # An unknown-outcome read constrains nothing, whatever it recorded.
    assert verdict(put(1, 0, 1, 1), get(2, 2, None, 42)) is True


def test_touching_intervals_are_sequential_only_for_the_same_client() -> None:
    # Client 1 reads right when its write returned: it must see its own write.
    assert verdict(put(1, 0, 1, 1), get(1, 1, 2, None)) is False
    assert verdict(put(1, 0, 1, 1), get(1, 1, 1, 1), get(1, 1, 2, 1)) is True
    # Another client calling at that instant is concurrent with the write.
    assert verdict(put(1, 0, 1, 1), get(2, 1, 2, None)) is True


def test_history_is_partitioned_per_key() -> None:
    history = [
        put(1, 0, 1, 1, key="x"),
        put(2, 0, 1, 1, key="y"),
        get(3, 2, 3, 1, key="x"),
        get(3, 4, 5, None, key="y"),
    ]
    result = check(KV, history)
    assert result.ok is False
    assert [p.ok for p in result.partitions] == [True, False]
    assert "partition 2 of 2" in result.explanation
    assert "'y'" in result.explanation
    assert check(KV, history[:3]).explanation.startswith("linearizable: 3 operations")


def test_input_order_does_not_matter() -> None:
    history = [put(1, 0, 1, 1), put(2, 2, 5, 2), get(3, 3, 4, 1), get(1, 6, 7, 2)]
    for perm in itertools.permutations(history):
        assert verdict(*perm) is True


def test_malformed_histories_are_refused() -> None:
    with pytest.raises(ValueError, match="returns before it is called"):
        check(KV, [put(1, 2, 1, 1)])
    with pytest.raises(ValueError, match="overlapping operations"):
        check(KV, [put(1, 0, 2, 1), get(1, 1, 3, 1)])
    # After an unknown outcome the client may go on while that operation is still pending.
    assert verdict(put(1, 0, None, 1), get(1, 1, 3, 1), get(1, 3, 4, 1)) is True


def test_unknown_kv_operation_is_refused() -> None:
    with pytest.raises(ValueError, match="put, get or cas"):
        check(KV, [Operation(1, 0, 1, ("incr", "x", 1), None)])


def test_gives_up_at_the_timeout() -> None:
    # Many concurrent writes and a value nobody wrote: the search must try every order.
    history = [put(i, 0, 100, i) for i in range(12)] + [get(99, 200, 201, -1)]
    result = check(KV, history, timeout_s=0.0)
    assert result.ok is None
    assert "gave up" in result.explanation
    assert check(KV, history, timeout_s=None).ok is False


class Counter(Model[int]):
    """Relies on the default partition (everything together) and read_only (nothing)."""

    def init(self) -> int:
        return 0

    def step(self, state: int, input: Any, output: Any) -> tuple[bool, int]:
        if input == "incr":
            return True, state + 1
        return (output is UNKNOWN or output == state), state


def test_custom_model_with_default_partition() -> None:
    history = [
        Operation(1, 0, 3, "incr", None),
        Operation(2, 1, 2, "incr", None),
        Operation(3, 4, 5, "read", 2),
        Operation(4, 4, None, "read", 0),  # unknown reads are kept: Counter never says read-only
    ]
    result = check(Counter(), history)
    assert result.ok is True
    assert len(result.partitions) == 1
    assert result.partitions[0].state == 2
    assert check(Counter(), [*history[:2], Operation(3, 4, 5, "read", 1)]).ok is False


# A brute-force oracle on small random histories


def precedes(ops: Sequence[Operation], i: int, j: int) -> bool:
    """Real-time order as the checker defines it (same-client ties go by history order)."""
    a, b = ops[i], ops[j]
    if a.ret is None:
        return False
    same_client_tie = a.client == b.client and (a.call, i) < (b.call, j)
    return a.ret < b.call or (a.ret == b.call and same_client_tie)


def brute_force(model: KVModel, ops: Sequence[Operation]) -> bool:
    """Try every subset of unknown-outcome ops and every order respecting real time."""
    done = [i for i, op in enumerate(ops) if op.ret is not None]
    unknown = [i for i, op in enumerate(ops) if op.ret is None]
    for r in range(len(unknown) + 1):
        for extra in itertools.combinations(unknown, r):
            for order in itertools.permutations(done + list(extra)):
                if any(precedes(ops, j, i) for n, i in enumerate(order) for j in order[n + 1 :]):
                    continue
                state: Hashable = model.init()
                for i in order:
                    op = ops[i]
                    output = UNKNOWN if op.ret is None else op.output
                    legal, state = model.step(state, op.input, output)
                    if not legal:
                        break
                else:
                    return True
    return False


def random_small_history(rng: random.Random) -> list[Operation]:
    """Up to 6 operations on a coarse time grid (so intervals often touch), clients sequential."""
    ops: list[Operation] = []
    values = [None, 1, 2, 3]
    free = {client: float(rng.randint(0, 3)) for client in (1, 2, 3)}
    for _ in range(rng.randint(1, 6)):
        client = rng.randint(1, 3)
        call = free[client] + rng.randint(0, 2)
        ret = None if rng.random() < 0.2 else call + rng.randint(0, 3)
        free[client] = call if ret is None else ret
        kind = rng.choice(["put", "get", "cas"])
        if kind == "put":
            ops.append(put(client, call, ret, rng.choice(values[1:])))
        elif kind == "get":
            ops.append(get(client, call, ret, rng.choice(values)))
        else:
            exp, new = rng.choice(values), rng.choice(values[1:])
            ops.append(cas(client, call, ret, exp, new, rng.random() < 0.5))
    return ops


def test_agrees_with_brute_force_on_small_random_histories() -> None:
    rng = random.Random(2024)
    outcomes = {True: 0, False: 0}
    for _ in range(1500):
        ops = random_small_history(rng)
        known = [op for op in ops if not (op.ret is None and op.input[0] == "get")]
        expected = brute_force(KV, known)
        assert check(KV, ops).ok is expected, ops
        outcomes[expected] += 1
    assert min(outcomes.values()) > 200  # both verdicts are well exercised


# Random histories from a real execution


def generate(
    rng: random.Random, n_ops: int, clients: int = 5, keys: Sequence[str] = ("x",)
) -> list[Operation]:
    """Run a sequential KV store with each operation taking effect inside its random interval.

    Each client issues operations back to back (sometimes in the same instant its previous one
    returned); now and then an outcome is lost (the client then continues under a new id), and
    such an operation took effect or not at random. Values written are unique.
    """
    specs: list[tuple[float, int, float, float | None, tuple[Any, ...], bool]] = []
    per_client = n_ops // clients
    next_value = itertools.count(1)
    next_client = itertools.count(clients)
    for client in range(clients):
        t = rng.uniform(0.0, 1.0)
        for _ in range(per_client):
            call = t
            point = call + rng.uniform(0.0, 1.0)
            ret: float | None = point + rng.uniform(0.0, 1.0)
            key = rng.choice(keys)
            kind = rng.choice(["put", "get", "get", "cas"])
            if kind == "put":
                inp: tuple[Any, ...] = ("put", key, next(next_value))
            elif kind == "get":
                inp = ("get", key, None)
            else:
                inp = ("cas", key, (rng.choice([None, *range(1, 20)]), next(next_value)))
            applied = True
            if rng.random() < 0.02:
                ret, applied = None, rng.random() < 0.5
            specs.append((point, client, call, ret, inp, applied))
            if ret is None:
                client = next(next_client)
                t = point + rng.uniform(0.0, 1.0)
            else:
                t = ret if rng.random() < 0.2 else ret + rng.uniform(0.0, 0.3)
    store: dict[str, Any] = {}
    ops: list[Operation] = []
    for _, client, call, ret, inp, applied in sorted(specs, key=lambda s: s[0]):
        kind, key, arg = inp
        output: Any = None
        if applied:
            if kind == "put":
                store[key] = arg
            elif kind == "get":
                output = store.get(key)
            else:
                output = store.get(key) == arg[0]
                if output:
                    store[key] = arg[1]
        ops.append(Operation(client, call, ret, inp, output))
    rng.shuffle(ops)
    return ops


def corrupt_one_read(rng: random.Random, ops: list[Operation]) -> list[Operation]:
    """Make one completed read return a value that was overwritten before it started, or else
    a value nobody wrote: either way the history is no longer linearizable."""
    reads = [i for i, op in enumerate(ops) if op.input[0] == "get" and op.ret is not None]
    rng.shuffle(reads)
    puts = [op for op in ops if op.input[0] == "put" and op.ret is not None]
    for i in reads:
        read = ops[i]
        assert read.ret is not None
        key = read.input[1]
        for old in puts:
            assert old.ret is not None
            if old.input[1] != key or old.ret >= read.call:
                continue
            overwritten = any(
                new.input[1] == key and new.call > old.ret and new.ret < read.call  # type: ignore[operator]
                for new in puts
            )
            if overwritten and old.input[2] != read.output:
                return replace_output(ops, i, old.input[2])
    return replace_output(ops, reads[0], -1)


def replace_output(ops: list[Operation], i: int, output: Any) -> list[Operation]:
    op = ops[i]
    return [*ops[:i], Operation(op.client, op.call, op.ret, op.input, output), *ops[i + 1 :]]


def test_random_real_executions_pass_and_one_corrupted_read_fails() -> None:
    for seed in range(150):
        rng = random.Random(seed)
        ops = generate(rng, n_ops=60, clients=rng.randint(2, 6), keys=("x", "y"))
        result = check(KV, ops, timeout_s=None)
        assert result.ok is True, f"seed {seed}:\n{result.explanation}"
        bad = check(KV, corrupt_one_read(rng, ops), timeout_s=None)
        assert bad.ok is False, f"seed {seed}"
        failed = [p for p in bad.partitions if p.ok is False]
        assert len(failed) == 1 and failed[0].unplaced


def test_a_few_hundred_operations_on_one_key_are_decided() -> None:
    """Both verdicts are reached (no timeout) on histories of the size the simulation makes;
    how fast is a benchmark's business, not a test's (shared machines are noisy)."""
    for seed in range(5):
        rng = random.Random(1000 + seed)
        ops = generate(rng, n_ops=400, clients=5)
        assert check(KV, ops, timeout_s=None).ok is True
        assert check(KV, corrupt_one_read(rng, ops), timeout_s=None).ok is False
