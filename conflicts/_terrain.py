"""Terrain edits: batch resolution (MERGE by default, or exclusive like structures)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress

import numpy as np

from conflicts._admit import admit
from conflicts._candidates import TerrainEdit, unique_candidates
from conflicts._decisions import trusted_decision
from conflicts._kinds import AnyStrategy, ConflictType, Rule, Strategy, as_any_strategy
from conflicts._merge import TerrainGroup, balls_of, merge_terrain
from conflicts._overlap import join
from conflicts._policy import STRATEGY_TEXT, precedence_key_fn, strategy_text
from conflicts._resolution import Resolution, make_resolution

_TYPE = ConflictType.TERRAIN_OVERLAP


def _g(x: float) -> str:
    return f"{x:.6g}"


def describe_edit(e: TerrainEdit) -> str:
    """``sphere(x, y, z; r=R)``: a terrain edit as a decision subject."""
    x, y, z = e.center
    return f"sphere({_g(x)}, {_g(y)}, {_g(z)}; r={_g(e.radius)})"


def describe_group(g: TerrainGroup) -> str:
    """``terrain box(lo..hi)``: an overlap group as a decision subject."""
    lo = ", ".join(_g(v) for v in g.lo)
    hi = ", ".join(_g(v) for v in g.hi)
    return f"terrain box({lo} .. {hi})"


def resolve_terrain_checked(
    items: list[TerrainEdit], strategy: AnyStrategy, method: str
) -> Resolution[TerrainEdit]:
    """`resolve_terrain` on already-validated, de-duplicated input."""
    rule = Rule.of(strategy)
    if strategy is Strategy.MERGE:
        merged = merge_terrain(items, method=method)
        decisions = [
            trusted_decision(
                conflict_type=_TYPE,
                rule=Rule.MERGE,
                subject=describe_group(g),
                winners=g.op_ids,
                reason=f"{len(g.edits)} overlapping terrain edits merged: "
                f"{STRATEGY_TEXT[Strategy.MERGE]}, none is lost",
            )
            for g in merged.groups
            if len(g.edits) > 1
        ]
        return make_resolution(
            merged.edits,
            [],
            decisions,
            {_TYPE: rule},
            terrain=merged if merged.edits else None,
            presorted=True,
        )

    ordered = sorted(items, key=precedence_key_fn(strategy))
    first, second = join(balls_of(ordered), method)
    admitted, beaten = admit(np.zeros(len(ordered), dtype=bool), first, second)
    decisions = []
    for row, wins in beaten.items():
        e = ordered[row]
        w = ordered[wins[0]]
        more = f" (and {len(wins) - 1} more)" if len(wins) > 1 else ""
        decisions.append(
            trusted_decision(
                conflict_type=_TYPE,
                rule=rule,
                subject=describe_edit(e),
                winners=tuple(ordered[i].op_id for i in wins),
                losers=(e.op_id,),
                reason=f"terrain edit overlaps {describe_edit(w)} by op {w.op_id}{more}; "
                f"{strategy_text(strategy)}",
            )
        )
    winners = list(compress(ordered, admitted.tolist()))
    losers = list(compress(ordered, (~admitted).tolist()))
    return make_resolution(
        winners,
        losers,
        decisions,
        {_TYPE: rule},
        terrain=merge_terrain(winners, method=method) if winners else None,
    )


def resolve_terrain(
    edits: Iterable[TerrainEdit],
    *,
    strategy: AnyStrategy | str = Strategy.MERGE,
    method: str = "rtree",
) -> Resolution[TerrainEdit]:
    """Resolve concurrent terrain edits.

    Under MERGE (the default) every edit wins, none is lost: the resolution's ``terrain`` is
    the `TerrainMerge` of all edits (deltas add, commutatively), and each group of two or
    more overlapping edits is recorded in a MERGE decision. Under any other strategy,
    overlapping edits conflict as structures do: in precedence order an edit is admitted
    unless it overlaps one already admitted; ``terrain`` is then the merge of the winners.
    """
    items = unique_candidates(edits, (TerrainEdit,), "resolve_terrain")
    return resolve_terrain_checked(items, as_any_strategy(strategy), method)
