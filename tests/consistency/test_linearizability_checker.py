"""The linearizability checker (tests/linearizability.py) is itself tested: known histories,
a brute-force cross-check, and randomized histories from a sequential simulation."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.linearizability import (
    UNKNOWN,
    CheckBudgetExceeded,
    HistoryError,
    Model,
    Operation,
    check,
    inventory_model,
    register_model,
)


def op(
    key: Hashable, inp: tuple[Any, ...], out: Any, start: float, end: float | None, client: int = 0
) -> Operation:
    return Operation(client, key, inp, out, start, end)


def W(v: int, start: float, end: float | None, key: str = "k") -> Operation:
    return op(key, ("write", v), "ok", start, end)


def R(v: Any, start: float, end: float | None, key: str = "k") -> Operation:
    return op(key, ("read",), v, start, end)


def A(delta: int, out: Any, start: float, end: float | None, key: str = "inv") -> Operation:
    return op(key, ("add", delta), out, start, end)


def N(count: int, start: float, end: float | None, key: str = "inv") -> Operation:
    return op(key, ("read",), count, start, end)


def replay_ok(model: Model, order: Sequence[Operation]) -> bool:
    state: Any = model.init
    for o in order:
        ok, state = model.step(state, o.input, o.output if o.completed else UNKNOWN)
        if not ok:
            return False
    return True


REG = register_model(0)
INV = inventory_model(0)

GOOD_REGISTER = {
    "sequential": [W(1, 0, 1), R(1, 2, 3), W(2, 4, 5), R(2, 6, 7)],
    "read during write sees old": [W(1, 0, 10), R(0, 1, 2)],
    "read during write sees new": [W(1, 0, 10), R(1, 1, 2)],
    "old then new during write": [W(1, 0, 10), R(0, 1, 2), R(1, 3, 4)],
    "concurrent writes either order": [W(1, 0, 5), W(2, 1, 6), R(1, 7, 8)],
    "touching intervals overlap": [W(1, 0, 5), R(0, 5, 6)],
    "concurrent reads see new then old while both overlap the write": [
        W(1, 0, 10),
        R(1, 1, 5),
        R(0, 2, 3),
    ],
    "pending write may take effect": [W(1, 0, 1), W(2, 2, None), R(2, 3, 4)],
    "pending write may not take effect": [W(1, 0, 1), W(2, 2, None), R(1, 3, 4)],
    "pending write takes effect late": [W(2, 2, None), R(0, 3, 4), R(2, 5, 6)],
}

BAD_REGISTER = {
    "stale read after completed write": [W(1, 0, 1), W(2, 2, 3), R(1, 4, 5)],
    "read of a value never written": [W(1, 0, 1), R(7, 2, 3)],
    "new then old in real-time order": [W(1, 0, 1), W(2, 2, 20), R(2, 3, 4), R(1, 5, 6)],
    "read before the write started": [R(1, 0, 1), W(1, 2, 3)],
    "read before a pending write started": [R(2, 0, 1), W(2, 2, None)],
    "pending write seen, then unseen": [W(1, 0, 1), W(2, 2, None), R(2, 3, 4), R(1, 5, 6)],
}

GOOD_INVENTORY = {
    "adds and reads": [A(5, "ok", 0, 1), A(-3, "ok", 2, 3), N(2, 4, 5), A(-3, "rejected", 6, 7)],
    "concurrent removes, one rejected": [
        A(5, "ok", 0, 1),
        A(-3, "ok", 2, 5),
        A(-3, "rejected", 3, 4),
    ],
    "rejected then ok after a concurrent add": [
        A(-2, "rejected", 0, 10),
        A(2, "ok", 1, 2),
        A(-2, "ok", 3, 4),
        N(0, 11, 12),
    ],
    "pending remove may or may not apply": [A(5, "ok", 0, 1), A(-3, UNKNOWN, 2, None), N(2, 3, 4)],
    "pending remove not applied": [A(5, "ok", 0, 1), A(-3, UNKNOWN, 2, None), N(5, 3, 4)],
}

BAD_INVENTORY = {
    "going negative": [A(5, "ok", 0, 1), A(-3, "ok", 2, 3), A(-3, "ok", 4, 5)],
    "concurrent removes both ok": [A(5, "ok", 0, 1), A(-3, "ok", 2, 5), A(-3, "ok", 3, 4)],
    "negative read": [A(1, "ok", 0, 1), N(-1, 2, 3)],
    "rejected with enough stock": [A(5, "ok", 0, 1), A(-3, "rejected", 2, 3)],
    "lost update": [A(1, "ok", 0, 1), A(1, "ok", 2, 3), N(1, 4, 5)],
}


@pytest.mark.parametrize("name", list(GOOD_REGISTER))
def test_good_register_histories_pass(name: str) -> None:
    result = check(REG, GOOD_REGISTER[name])
    assert result.ok, name
    assert result.bad_key is None
    (order,) = result.linearizations.values()
    assert sorted(map(id, order)) == sorted(map(id, GOOD_REGISTER[name]))
    assert replay_ok(REG, order)


@pytest.mark.parametrize("name", list(BAD_REGISTER))
def test_bad_register_histories_fail(name: str) -> None:
    result = check(REG, BAD_REGISTER[name])
    assert not result.ok, name
    assert result.bad_key == "k"


@pytest.mark.parametrize("name", list(GOOD_INVENTORY))
def test_good_inventory_histories_pass(name: str) -> None:
    result = check(INV, GOOD_INVENTORY[name])
    assert result.ok, name
    assert replay_ok(INV, result.linearizations["inv"])


@pytest.mark.parametrize("name", list(BAD_INVENTORY))
def test_bad_inventory_histories_fail(name: str) -> None:
    result = check(INV, BAD_INVENTORY[name])
    assert not result.ok, name
    assert result.bad_key == "inv"


def test_keys_are_checked_separately_and_bad_key_named() -> None:
    history = [W(1, 0, 1, "a"), W(1, 0, 1, "b"), R(1, 2, 3, "a"), R(0, 2, 3, "b"), R(1, 4, 5, "c")]
    result = check(REG, history)
    assert not result.ok
    assert result.bad_key == "b"
    assert set(result.linearizations) == {"a"}
    assert result.longest_prefix == (history[1],)  # the write to b linearizes, the read cannot
    good = check(REG, history[:3])
    assert good.ok
    assert set(good.linearizations) == {"a", "b"}


def test_empty_history_is_linearizable() -> None:
    assert check(REG, []).ok


def test_malformed_histories_are_rejected() -> None:
    with pytest.raises(HistoryError):
        check(REG, [W(1, 5, 4)])
    with pytest.raises(HistoryError):
        check(REG, [W(1, math.inf, None)])
    with pytest.raises(HistoryError):
        check(REG, [("write", 1)])  # type: ignore[list-item]
    with pytest.raises(HistoryError):
        check(REG, [op("k", ("cas", 1, 2), "ok", 0, 1)])


def test_budget() -> None:
    history = [W(i, 0, 100) for i in range(12)] + [R(99, 101, 102)]
    with pytest.raises(CheckBudgetExceeded):
        check(REG, history, max_steps=50)


# -- brute force cross-check ----------------------------------------------------------------


def brute_force(model: Model, history: Sequence[Operation]) -> bool:
    """Every permutation respecting real-time order, replayed through the model."""
    n = len(history)
    for perm in itertools.permutations(range(n)):
        position = {i: p for p, i in enumerate(perm)}
        respects = all(
            position[a] < position[b]
            for a in range(n)
            for b in range(n)
            if history[a].return_time is not None
            and history[a].return_time < history[b].invoke_time  # type: ignore[operator]
        )
        if respects and replay_ok(model, [history[i] for i in perm]):
            return True
    return False


@st.composite
def small_histories(draw: st.DrawFn) -> tuple[str, list[Operation]]:
    kind = draw(st.sampled_from(["register", "inventory"]))
    ops: list[Operation] = []
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, 8))
        end: int | None = start + draw(st.integers(0, 6))
        if draw(st.integers(0, 5)) == 0:
            end = None
        if kind == "register":
            if draw(st.booleans()):
                ops.append(W(draw(st.integers(1, 2)), start, end))
            else:
                ops.append(R(draw(st.integers(0, 2)), start, end))
        elif draw(st.booleans()):
            out = draw(st.sampled_from(["ok", "rejected"]))
            ops.append(A(draw(st.sampled_from([-2, -1, 1, 2])), out, start, end))
        else:
            ops.append(N(draw(st.integers(0, 3)), start, end))
    return kind, ops


@given(small_histories())
@settings(max_examples=300)
def test_agrees_with_brute_force(case: tuple[str, list[Operation]]) -> None:
    kind, history = case
    model = REG if kind == "register" else INV
    assert check(model, history).ok == brute_force(model, history)


# -- randomized: histories from a sequential simulation --------------------------------------


def simulate(
    rng: random.Random, kind: str, n_ops: int, overlap: bool
) -> tuple[Model, list[Operation]]:
    """Run ops one at a time against the model (linearization point i*10), then give each an
    interval around its point: tight and disjoint, or wide and overlapping. Some ops in the
    overlapping mode never return."""
    model = REG if kind == "register" else INV
    keys = ["a", "b", "c"]
    state: dict[str, Any] = dict.fromkeys(keys, model.init)
    history: list[Operation] = []
    next_value = 1
    for i in range(n_ops):
        key = rng.choice(keys)
        if kind == "register":
            if rng.random() < 0.5:
                inp: tuple[Any, ...] = ("write", next_value)
                next_value += 1
            else:
                inp = ("read",)
        else:
            inp = ("add", rng.choice([-3, -2, -1, 1, 2, 3])) if rng.random() < 0.6 else ("read",)
        _, after = model.step(state[key], inp, UNKNOWN)
        if inp[0] == "read":
            out: Any = state[key]
        elif inp[0] == "add":
            out = "ok" if after != state[key] or inp[1] == 0 else "rejected"
        else:
            out = "ok"
        state[key] = after
        point = i * 10.0
        spread = 25.0 if overlap else 4.0
        start = point - rng.uniform(0, spread)
        end: float | None = point + rng.uniform(0, spread)
        if overlap and rng.random() < 0.1:
            end = None
        history.append(Operation(rng.randrange(4), key, inp, out, start, end))
    rng.shuffle(history)  # the checker must not depend on input order
    return model, history


@given(
    st.sampled_from(["register", "inventory"]),
    st.booleans(),
    st.integers(1, 60),
    st.integers(0, 2**32 - 1),
)
@settings(max_examples=100)
def test_simulated_histories_pass_and_mutants_fail(
    kind: str, overlap: bool, n_ops: int, seed: int
) -> None:
    rng = random.Random(seed)
    model, history = simulate(rng, kind, n_ops, overlap)
    result = check(model, history)
    assert result.ok
    for key, order in result.linearizations.items():
        assert all(o.key == key for o in order)
        assert replay_ok(model, order)
    assert sum(map(len, result.linearizations.values())) == len(history)

    reads = [i for i, o in enumerate(history) if o.input == ("read",) and o.completed]
    if reads:
        i = rng.choice(reads)
        never = -999 if kind == "register" else -1  # never written / never reachable
        mutant = list(history)
        mutant[i] = Operation(
            history[i].client,
            history[i].key,
            ("read",),
            never,
            history[i].invoke_time,
            history[i].return_time,
        )
        bad = check(model, mutant)
        assert not bad.ok
        assert bad.bad_key == history[i].key
