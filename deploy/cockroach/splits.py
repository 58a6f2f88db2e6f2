#!/usr/bin/env python3
"""Print CockroachDB ``ALTER TABLE … SPLIT AT`` statements at Morton (Z-order) boundaries.

Region keys are 63-bit Morton codes: each axis index (``floor(metres / region_size)``, in
``[-2**20, 2**20)``) is offset by ``2**20`` to 21 unsigned bits, and the bits are interleaved
x, y, z from bit 0 (see ``regions/morton.py``). An aligned octree cell of ``2**b`` regions per
side is therefore one contiguous key range of ``8**b`` codes, starting at the code of its low
corner. Splitting a table at cell starts gives each piece of space its own range, so ranges
(and their leaseholders) follow the world instead of waiting for load-based splitting.

Two modes:

* whole key space (default): ``--depth D`` splits at ``k * 2**(63 - 3*D)`` for
  ``k = 1 … 8**D - 1``. Depth 1 is the 8 octants around the world origin (splits at multiples
  of ``2**60``), depth 2 the 64 sub-octants (multiples of ``2**57``), …
* ``--bounds LOX,LOY,LOZ,HIX,HIY,HIZ`` (metres, as ``WORLDSTATE_WORLD_BOUNDS``): only the
  cells that intersect the game's world, sized so the box's longest side spans about
  ``2**D`` cells. Use this for a real game: the whole-key-space splits below depth 1 all fall
  hundreds of thousands of kilometres from any plausible world.

Standard library only, so it runs anywhere Python 3.11 does (no install of worldstate)::

    python3 deploy/cockroach/splits.py --depth 1
    python3 deploy/cockroach/splits.py --depth 3 --bounds=-64000,-64000,-4000,64000,64000,4000

The block between the ``BEGIN GENERATED`` / ``END GENERATED`` markers of ``schema.sql`` is this
script's output for the command named in the marker; tests check that they agree.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Sequence

AXIS_BITS = 21
AXIS_OFFSET = 1 << (AXIS_BITS - 1)
CODE_BITS = 3 * AXIS_BITS
REGION_SIZE = 2000.0

# Tables whose primary key starts with region_key (a prefix value is a valid split point):
# the region rows, and (schema version 2) every spatial table of the strong path.
REGION_TABLES = (
    "ws_regions",
    "ws_region_history",
    "ws_leases",
    "ws_objects",
    "ws_items",
    "ws_resources",
    "ws_terrain",
    "ws_events",
)

MAX_SPLITS = 10_000
"""Per table. Each split is a range with its own Raft group; tens of thousands per table
is rarely what anyone wants from a hand-run script."""


def interleave(ux: int, uy: int, uz: int) -> int:
    """Morton code of three unsigned 21-bit axis values (x in bit 0, y in 1, z in 2, …)."""
    code = 0
    for bit in range(AXIS_BITS):
        code |= ((ux >> bit) & 1) << (3 * bit)
        code |= ((uy >> bit) & 1) << (3 * bit + 1)
        code |= ((uz >> bit) & 1) << (3 * bit + 2)
    return code


def whole_space_splits(depth: int) -> list[int]:
    """Split points that cut the whole key space into ``8**depth`` equal octree cells."""
    step = 1 << (CODE_BITS - 3 * depth)
    return [k * step for k in range(1, 8**depth)]


def axis_index_range(lo: float, hi: float, region_size: float) -> tuple[int, int]:
    """Inclusive range of region indices that a ``[lo, hi)`` interval in metres touches."""
    first = math.floor(lo / region_size)
    last = max(first, math.ceil(hi / region_size) - 1)
    if first < -AXIS_OFFSET or last >= AXIS_OFFSET:
        raise ValueError(
            f"[{lo}, {hi}) m at region size {region_size} m is outside the key space "
            f"(indices [{-AXIS_OFFSET}, {AXIS_OFFSET}))"
        )
    return first, last


def bounded_splits(
    lo: Sequence[float], hi: Sequence[float], depth: int, region_size: float = REGION_SIZE
) -> list[int]:
    """Starts of the octree cells intersecting the world box, cells sized so the box's
    longest side spans about ``2**depth`` of them. The first start is left out when it is 0."""
    ranges = [axis_index_range(a, b, region_size) for a, b in zip(lo, hi, strict=True)]
    longest = max(last - first + 1 for first, last in ranges)
    cell_bits = max(0, math.ceil(math.log2(longest)) - depth) if longest > 1 else 0
    cells = [
        range((first + AXIS_OFFSET) >> cell_bits, ((last + AXIS_OFFSET) >> cell_bits) + 1)
        for first, last in ranges
    ]
    count = len(cells[0]) * len(cells[1]) * len(cells[2])
    if count > MAX_SPLITS:
        raise ValueError(f"{count} splits per table (more than {MAX_SPLITS}): lower --depth")
    starts = {
        interleave(cx << cell_bits, cy << cell_bits, cz << cell_bits)
        for cx in cells[0]
        for cy in cells[1]
        for cz in cells[2]
    }
    starts.discard(0)
    return sorted(starts)


def render(splits: Sequence[int], tables: Iterable[str], command: str) -> str:
    """The SQL block: one ``SPLIT AT`` (then ``SCATTER``) per table, values in key order."""
    lines = [
        f"-- BEGIN GENERATED: {command}",
        f"-- {len(splits)} split points per table at Morton cell boundaries; re-running is",
        "-- harmless (splitting at an existing boundary is a no-op).",
    ]
    for table in tables:
        lines.append(f"ALTER TABLE {table} SPLIT AT VALUES")
        lines.extend(
            f"    ({value}){',' if i < len(splits) - 1 else ';'}" for i, value in enumerate(splits)
        )
        lines.append(f"ALTER TABLE {table} SCATTER;")
    lines.append("-- END GENERATED")
    return "\n".join(lines) + "\n"


def parse_bounds(text: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 6 or not all(math.isfinite(p) for p in parts):
        raise argparse.ArgumentTypeError(
            "--bounds takes six finite numbers lox,loy,loz,hix,hiy,hiz"
        )
    lo = (parts[0], parts[1], parts[2])
    hi = (parts[3], parts[4], parts[5])
    if not all(a < b for a, b in zip(lo, hi, strict=True)):
        raise argparse.ArgumentTypeError("--bounds: every lo must be below its hi")
    return lo, hi


def _num(value: float) -> str:
    """A number as typed on a command line (``64000``, not ``64000.0`` or ``6.4e+04``)."""
    return str(int(value)) if value.is_integer() else repr(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print CockroachDB SPLIT AT statements at Morton cell boundaries.",
    )
    parser.add_argument("--depth", type=int, default=1, help="octree levels (default 1)")
    parser.add_argument(
        "--bounds",
        type=parse_bounds,
        default=None,
        help="world box in metres, lox,loy,loz,hix,hiy,hiz (default: the whole key space)",
    )
    parser.add_argument("--region-size", type=float, default=REGION_SIZE, help="metres")
    parser.add_argument(
        "--tables",
        default=",".join(REGION_TABLES),
        help="comma-separated tables whose primary key starts with region_key "
        f"(default {','.join(REGION_TABLES)})",
    )
    args = parser.parse_args(argv)
    depth: int = args.depth
    if not 1 <= depth <= 7:
        parser.error("--depth must be between 1 and 7")
    tables = [t.strip() for t in str(args.tables).split(",") if t.strip()]
    if not tables or not all(t.replace("_", "").isalnum() for t in tables):
        parser.error("--tables takes plain table names")

    command = f"python3 deploy/cockroach/splits.py --depth {depth}"
    try:
        if args.bounds is None:
            if 8**depth - 1 > MAX_SPLITS:
                parser.error(f"--depth {depth} over the whole key space is too many splits")
            splits = whole_space_splits(depth)
        else:
            lo, hi = args.bounds
            splits = bounded_splits(lo, hi, depth, args.region_size)
            command += " --bounds=" + ",".join(_num(v) for v in (*lo, *hi))
            if args.region_size != REGION_SIZE:
                command += f" --region-size {_num(args.region_size)}"
    except ValueError as e:
        parser.error(str(e))
    if args.tables != ",".join(REGION_TABLES):
        command += f" --tables {','.join(tables)}"
    sys.stdout.write(render(splits, tables, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
