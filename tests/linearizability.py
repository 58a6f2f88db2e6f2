"""A linearizability checker for test histories (Wing & Gong's search with Lowe's memoisation,
as in Porcupine, github.com/anishathalye/porcupine).

A history is a list of `Operation`s, each observed by a client: what it asked (``input``),
what it got (``output``) and when it was invoked and returned. The history is linearizable
under a `Model` when every operation can be given a single instant between its invocation and
its return such that running the operations one by one in that order, through the model,
produces exactly the observed outputs.

- **P-compositionality.** Linearizability is local: a history is linearizable iff every
  per-object sub-history is. The model's ``partition`` splits the history (by ``key`` by
  default) and each part is searched on its own, which keeps the search small.
- **Search.** Operations become call/return entries sorted by time in a linked list. The search
  repeatedly tries to linearize a call that is still pending (no earlier return is pending);
  reaching a return entry whose call is not yet linearized means the choice so far was wrong,
  so it backtracks. Each reached ``(set of linearized ops, model state)`` is memoised, so
  equivalent orders are explored once.
- **Ties.** A return and a call at the same instant are treated as overlapping (calls sort
  first), as Porcupine does: timing resolution never makes a correct history fail.
- **Unknown outcomes.** An operation that never returned (timed out, connection lost) has
  ``return_time=None``: it is treated as returning after everything else, with any output
  accepted (`UNKNOWN`), so it may take effect at any point after its invocation, or never
  (taking effect at the very end is indistinguishable from not at all).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final


class _Unknown:
    """The output of an operation whose outcome was never observed."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


class HistoryError(ValueError):
    """A malformed history (e.g. an operation returning before it was invoked)."""


class CheckBudgetExceeded(RuntimeError):
    """The search took more steps than ``max_steps`` allowed; the answer is unknown."""


@dataclass(frozen=True)
class Operation:
    """One operation as a client saw it. ``return_time=None``: it never returned, and its
    ``output`` is ignored (treated as `UNKNOWN`)."""

    client: Hashable
    key: Hashable
    input: Any
    output: Any = UNKNOWN
    invoke_time: float = 0.0
    return_time: float | None = None

    @property
    def completed(self) -> bool:
        return self.return_time is not None


Partitioner = Callable[[Sequence[Operation]], dict[Hashable, list[Operation]]]
Step = Callable[[Any, Any, Any], tuple[bool, Any]]


def partition_by_key(history: Sequence[Operation]) -> dict[Hashable, list[Operation]]:
    """Sub-histories per ``Operation.key``, in order of first appearance."""
    parts: dict[Hashable, list[Operation]] = {}
    for op in history:
        parts.setdefault(op.key, []).append(op)
    return parts


@dataclass(frozen=True)
class Model:
    """A sequential specification of one object.

    ``init``: the object's initial state (hashable: it is memoised).
    ``step(state, input, output) -> (ok, new_state)``: whether ``output`` is what the object
    would answer to ``input`` in ``state``, and the state after. With ``output is UNKNOWN``
    every output is acceptable (return ``ok=True`` and the state the operation leads to).
    ``partition``: splits a history into independent objects.
    """

    name: str
    init: Hashable
    step: Step
    partition: Partitioner = partition_by_key


@dataclass(frozen=True)
class CheckResult:
    """``ok``: the whole history is linearizable. When not, ``bad_key`` is the first partition
    (in order of first appearance) that is not, and ``longest_prefix`` the longest sequence of
    its operations that could be linearized before the search got stuck. ``linearizations``
    holds one valid order per partition checked successfully."""

    ok: bool
    bad_key: Hashable | None = None
    longest_prefix: tuple[Operation, ...] = ()
    linearizations: dict[Hashable, tuple[Operation, ...]] = field(default_factory=dict)
    steps: int = 0


class _Entry:
    __slots__ = ("is_call", "match", "next", "op_index", "output", "prev", "value")

    def __init__(self, is_call: bool, op_index: int, value: Any, output: Any) -> None:
        self.is_call = is_call
        self.op_index = op_index
        self.value = value  # the input, for calls
        self.output = output  # the output, for returns
        self.match: _Entry | None = None  # a call's return entry
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _check_op(op: object) -> Operation:
    if not isinstance(op, Operation):
        raise HistoryError(f"history entries must be Operations, got {type(op).__name__}")
    if not math.isfinite(op.invoke_time):
        raise HistoryError(f"{op}: invoke_time must be finite")
    if op.return_time is not None and (
        math.isnan(op.return_time) or op.return_time < op.invoke_time
    ):
        raise HistoryError(f"{op}: return_time must be >= invoke_time")
    return op


def _build(ops: Sequence[Operation]) -> _Entry:
    """The sorted call/return entry list behind a head sentinel."""
    events: list[tuple[float, int, int, _Entry]] = []
    for i, op in enumerate(ops):
        call = _Entry(True, i, op.input, None)
        ret = _Entry(False, i, None, op.output if op.completed else UNKNOWN)
        call.match = ret
        end = math.inf if op.return_time is None else op.return_time
        # At equal times calls sort before returns (kind 0 < 1): touching ops overlap.
        events.append((op.invoke_time, 0, i, call))
        events.append((end, 1, i, ret))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(False, -1, None, None)
    prev = head
    for *_, entry in events:
        prev.next = entry
        entry.prev = prev
        prev = entry
    return head


def _lift(call: _Entry) -> None:
    """Unlink a call and its return from the list."""
    assert call.prev is not None and call.match is not None
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret = call.match
    assert ret.prev is not None
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Entry) -> None:
    """Undo `_lift` (in reverse order, so the neighbours' links are restored exactly)."""
    ret = call.match
    assert ret is not None and ret.prev is not None and call.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


def _check_part(
    model: Model, ops: Sequence[Operation], budget: list[int]
) -> tuple[bool, tuple[Operation, ...]]:
    """Search one partition. Returns (ok, linearization if ok else longest prefix)."""
    head = _build(ops)
    state: Any = model.init
    linearized = 0
    stack: list[tuple[_Entry, Any]] = []
    seen: set[tuple[int, Any]] = set()
    best: list[_Entry] = []
    entry = head.next
    while head.next is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise CheckBudgetExceeded("linearizability search exceeded max_steps")
        assert entry is not None
        if entry.is_call:
            ret = entry.match
            assert ret is not None
            ok, new_state = model.step(state, entry.value, ret.output)
            if ok:
                new_linearized = linearized | (1 << entry.op_index)
                memo = (new_linearized, new_state)
                if memo not in seen:
                    seen.add(memo)
                    stack.append((entry, state))
                    if len(stack) > len(best):
                        best = [e for e, _ in stack]
                    state, linearized = new_state, new_linearized
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return whose call is not linearized yet: undo the last choice.
            if not stack:
                return False, tuple(ops[e.op_index] for e in best)
            call, state = stack.pop()
            linearized &= ~(1 << call.op_index)
            _unlift(call)
            entry = call.next
    return True, tuple(ops[e.op_index] for e, _ in stack)


def check(
    model: Model, history: Sequence[Operation], *, max_steps: int | None = None
) -> CheckResult:
    """Whether ``history`` is linearizable under ``model`` (see the module docstring).

    ``max_steps`` bounds the total search effort; exceeding it raises `CheckBudgetExceeded`.
    """
    ops = [_check_op(op) for op in history]
    limit = max_steps if max_steps is not None else 1 << 62
    budget = [limit]  # shared by all partitions, counted down by the search
    orders: dict[Hashable, tuple[Operation, ...]] = {}
    for key, part in model.partition(ops).items():
        ok, order = _check_part(model, part, budget)
        if not ok:
            return CheckResult(False, key, order, orders, limit - budget[0])
        orders[key] = order
    return CheckResult(True, None, (), orders, limit - budget[0])


# -- models --------------------------------------------------------------------------------


def _register_step(state: Any, inp: Any, out: Any) -> tuple[bool, Any]:
    kind = inp[0]
    if kind == "write":
        return True, inp[1]
    if kind == "read":
        return out is UNKNOWN or out == state, state
    raise HistoryError(f"register model: unknown operation {inp!r}")


def register_model(initial: Hashable = None) -> Model:
    """A read/write register per key. Inputs ``("write", value)`` (output ignored) and
    ``("read",)`` (output: the value read). Starts at ``initial``."""
    return Model("register", initial, _register_step)


def _inventory_step(state: Any, inp: Any, out: Any) -> tuple[bool, Any]:
    kind = inp[0]
    if kind == "add":
        applies = state + inp[1] >= 0
        expected = "ok" if applies else "rejected"
        after = state + inp[1] if applies else state
        return out is UNKNOWN or out == expected, after
    if kind == "read":
        return out is UNKNOWN or out == state, state
    raise HistoryError(f"inventory model: unknown operation {inp!r}")


def inventory_model(initial: int = 0) -> Model:
    """An item count per key that never goes below zero. ``("add", delta)`` answers ``"ok"``
    and applies when ``count + delta >= 0``, else answers ``"rejected"`` and changes nothing;
    ``("read",)`` answers the count."""
    return Model("inventory", initial, _inventory_step)
