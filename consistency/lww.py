"""Last-writer-wins for the eventual path: a scalar rule and a vectorised entity table.

The rule
--------
A write is identified by ``(hlc, server_id)``. Write ``a`` beats write ``b`` when
``a.hlc > b.hlc``, or when the HLCs are equal and ``a.server_id < b.server_id`` (the *lowest*
server id wins ties; ids compare as Python strings, by code point, the same on every
server). A write never beats itself (equal HLC and server), so re-applying a write is a
no-op. Because this is a total order on ``(hlc, server_id)``, the state after merging any set
of writes is the same whatever order they arrive in — the convergence the eventual class
promises. (One server never issues two writes with the same HLC: its hybrid clock is strictly
monotonic; the one exception, several rows for one entity in one batch, is settled below.)

The table
---------
`EntityTable` holds the latest write per entity in dense numpy arrays kept sorted by entity id
(``int64``): ids, HLC (``int64``), writer (an ``int32`` code into an interned server list,
compared through a rank array that follows string order) and position (``float64``,
``(N, 3)``). Rows are found through an id → row lookup array while ids are non-negative and
dense (below ``max(4 N, 65536)``, at most 4 Mi; the usual case for game entity ids), else with
``np.searchsorted``. A batch of 10,000 rows is a handful of array operations, no per-entity
Python: a few hundred microseconds for an existing-entity tick. New entities are inserted in
id order (an O(N) copy per batch that brings new ids).
"""

from __future__ import annotations

import io
import numbers
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from consistency.classes import ConsistencyInputError
from consistency.hlc import MAX_TIMESTAMP
from consistency.vector_clock import check_server_id

MAX_SERVERS = 65_535
"""Most distinct writer ids one table tracks (bounds memory against forged server ids)."""

_DIRECT_MIN = 1 << 16
_DIRECT_MAX = 1 << 22
_DIRECT_FACTOR = 4
_ROW3 = np.dtype((np.void, 24))  # one (x, y, z) float64 row, for fast 1-D fancy indexing

_SNAPSHOT_MAGIC = b"WSLWW\x00v1"
_HEADER = struct.Struct("<8sQI")  # magic, rows, servers
_NAME_LEN = struct.Struct("<H")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def lww_wins(a_hlc: int, a_server: str, b_hlc: int, b_server: str) -> bool:
    """True when write ``a`` beats write ``b``: higher HLC, or equal HLC and lower server id.
    False for the same write (equal HLC and server)."""
    if a_hlc != b_hlc:
        return a_hlc > b_hlc
    return a_server < b_server


def lww_wins_many(
    a_hlc: npt.ArrayLike, a_rank: npt.ArrayLike, b_hlc: npt.ArrayLike, b_rank: npt.ArrayLike
) -> BoolArray:
    """Elementwise `lww_wins` with servers given as ranks (lower rank = lower server id; rank
    order must follow server-id string order). Arguments broadcast against each other."""
    ah, bh = np.asarray(a_hlc, np.int64), np.asarray(b_hlc, np.int64)
    ar, br = np.asarray(a_rank), np.asarray(b_rank)
    return np.asarray((ah > bh) | ((ah == bh) & (ar < br)), dtype=np.bool_)


def _check_ids(ids: object) -> IntArray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ConsistencyInputError(f"entity ids must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind == "u":
        if arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise ConsistencyInputError("entity ids must fit in int64")
    elif arr.dtype.kind != "i" and not (arr.size == 0 and arr.dtype.kind == "f"):
        raise ConsistencyInputError(f"entity ids must be integers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_positions(positions: object, n: int) -> FloatArray:
    arr = np.asarray(positions)
    if arr.dtype.kind not in "iuf":
        raise ConsistencyInputError(f"positions must be numeric, got dtype {arr.dtype}")
    if arr.shape != (n, 3):
        raise ConsistencyInputError(f"positions must have shape ({n}, 3), got {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ConsistencyInputError("positions must be finite (no NaN or infinity)")
    return out


def _check_hlc(hlc: object, n: int) -> int | IntArray:
    if isinstance(hlc, numbers.Integral) and not isinstance(hlc, bool):
        value = int(hlc)
        if not 0 <= value <= MAX_TIMESTAMP:
            raise ConsistencyInputError(f"hlc must be in 0..{MAX_TIMESTAMP}, got {value}")
        return value
    arr = np.asarray(hlc)
    if arr.dtype.kind not in "iu" or arr.shape != (n,):
        raise ConsistencyInputError(
            f"hlc must be an int or an integer array of shape ({n},), got {arr.dtype} {arr.shape}"
        )
    if n and (int(arr.min()) < 0 or int(arr.max()) > MAX_TIMESTAMP):
        raise ConsistencyInputError(f"every hlc must be in 0..{MAX_TIMESTAMP}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_server(server_id: object) -> str:
    try:
        return check_server_id(server_id)
    except ConsistencyInputError as exc:
        raise ConsistencyInputError(f"writer {exc}") from None


def _last_writes(ids: IntArray, hlc: int | IntArray) -> IntArray:
    """Indices of the one row per distinct id that wins within a batch: the highest HLC and,
    among equal HLCs, the last row. O(n log n) sort, then O(n) group reductions."""
    order = np.argsort(ids)
    s_ids = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], s_ids[1:] != s_ids[:-1])))
    if isinstance(hlc, int):
        return np.maximum.reduceat(order, starts)
    s_hlc = hlc[order]
    top = np.repeat(np.maximum.reduceat(s_hlc, starts), np.diff(np.append(starts, ids.size)))
    return np.maximum.reduceat(np.where(s_hlc == top, order, -1), starts)


class EntityTable:
    """The latest write (position, HLC, writer) per entity, merged by last-writer-wins.

    Entities appear on their first write; there are no deletes (a despawn is a state the game
    writes, so that it too converges by LWW).
    """

    __slots__ = (
        "_code",
        "_code_of",
        "_direct",
        "_direct_stale",
        "_hlc",
        "_ids",
        "_pos",
        "_rank",
        "_servers",
    )

    def __init__(self) -> None:
        self._ids: IntArray = np.empty(0, np.int64)
        self._hlc: IntArray = np.empty(0, np.int64)
        self._code: npt.NDArray[np.int32] = np.empty(0, np.int32)
        self._pos: FloatArray = np.empty((0, 3), np.float64)
        self._servers: list[str] = []
        self._code_of: dict[str, int] = {}
        self._rank: npt.NDArray[np.int32] = np.empty(0, np.int32)
        # id -> row lookup table, used while ids are non-negative and dense enough (the usual
        # case for game entity ids): a gather instead of a binary search per id.
        self._direct: npt.NDArray[np.int32] | None = None
        self._direct_stale = False

    # -- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._ids.size)

    @property
    def ids(self) -> IntArray:
        """Every entity id, ascending (a copy)."""
        return self._ids.copy()

    def _direct_index(self) -> npt.NDArray[np.int32] | None:
        if self._direct_stale:
            self._direct_stale = False
            self._direct = None
            n = self._ids.size
            if n:
                lo, hi = int(self._ids[0]), int(self._ids[-1])
                if lo >= 0 and hi < min(max(_DIRECT_FACTOR * n, _DIRECT_MIN), _DIRECT_MAX):
                    table = np.full(hi + 1, -1, np.int32)
                    table[self._ids] = np.arange(n, dtype=np.int32)
                    self._direct = table
        return self._direct

    def _rows(self, ids: IntArray) -> tuple[IntArray, BoolArray]:
        """For each id: ``(row, True)`` when present, else ``(insertion point, False)``."""
        n = self._ids.size
        if n == 0:
            return np.zeros(ids.size, np.int64), np.zeros(ids.size, np.bool_)
        direct = self._direct_index()
        if direct is None:
            idx = np.searchsorted(self._ids, ids)
            found = self._ids[np.minimum(idx, n - 1)] == ids
            found &= idx < n
            return idx, found
        if ids.size and int(ids.min()) >= 0 and int(ids.max()) < direct.size:
            idx = direct[ids].astype(np.int64)
        else:
            inside = (ids >= 0) & (ids < direct.size)
            idx = np.full(ids.size, -1, np.int64)
            idx[inside] = direct[ids[inside]]
        found = idx >= 0
        if not found.all():
            miss = ~found
            idx[miss] = np.searchsorted(self._ids, ids[miss])
        return idx, found

    def contains(self, ids: npt.ArrayLike) -> BoolArray:
        """Mask of the given ids present in the table."""
        return self._rows(_check_ids(ids))[1]

    def positions_of(self, ids: npt.ArrayLike) -> FloatArray:
        """``(N, 3)`` positions of the given ids; NaN rows for ids not in the table."""
        query = _check_ids(ids)
        idx, found = self._rows(query)
        out = np.full((query.size, 3), np.nan)
        out[found] = self._pos[idx[found]]
        return out

    def hlc_of(self, ids: npt.ArrayLike) -> IntArray:
        """HLC of each id's current write; -1 for ids not in the table."""
        query = _check_ids(ids)
        idx, found = self._rows(query)
        out = np.full(query.size, -1, np.int64)
        out[found] = self._hlc[idx[found]]
        return out

    def writers_of(self, ids: npt.ArrayLike) -> list[str | None]:
        """Server id of each id's current write; None for ids not in the table."""
        query = _check_ids(ids)
        idx, found = self._rows(query)
        codes = self._code[idx[found]].tolist()
        it = iter(codes)
        return [self._servers[next(it)] if f else None for f in found.tolist()]

    # -- writing -----------------------------------------------------------------------------

    def apply_batch(
        self,
        ids: npt.ArrayLike,
        positions: npt.ArrayLike,
        hlc: int | npt.ArrayLike,
        server_id: str,
    ) -> int:
        """Merge a batch of writes by ``server_id``; return how many rows were applied.

        ``hlc`` is one timestamp for the whole batch or one per row. Several rows for the same
        entity in one batch are settled like any writes (highest HLC) and, on equal HLC —
        always the case with one batch HLC — the *last* row wins. Raises
        `ConsistencyInputError` (and changes nothing) on malformed input: non-integer ids,
        positions not ``(N, 3)`` finite floats, HLCs out of range, a bad server id.
        """
        return int(self.apply_batch_mask(ids, positions, hlc, server_id).sum())

    def apply_batch_mask(
        self,
        ids: npt.ArrayLike,
        positions: npt.ArrayLike,
        hlc: int | npt.ArrayLike,
        server_id: str,
    ) -> BoolArray:
        """As `apply_batch`, but return the mask of input rows that were applied (rows
        superseded within the batch or beaten by the table's current write are False)."""
        id_arr = _check_ids(ids)
        n = id_arr.size
        pos = _check_positions(positions, n)
        stamp = _check_hlc(hlc, n)
        server = _check_server(server_id)
        if n == 0:
            return np.zeros(0, np.bool_)
        code = self._intern(server)
        return self._apply(id_arr, pos, stamp, code)

    def merge(self, other: EntityTable) -> int:
        """Merge every write of ``other`` into this table (e.g. a peer's snapshot after a
        partition heals); return how many entities changed. Commutative and idempotent."""
        if not isinstance(other, EntityTable):
            raise ConsistencyInputError(f"merge takes an EntityTable, got {type(other).__name__}")
        applied = 0
        for code in np.unique(other._code).tolist():
            rows = other._code == code
            local = self._intern(other._servers[code])
            applied += int(
                self._apply(other._ids[rows], other._pos[rows], other._hlc[rows], local).sum()
            )
        return applied

    def _intern(self, server: str) -> int:
        code = self._code_of.get(server)
        if code is not None:
            return code
        if len(self._servers) >= MAX_SERVERS:
            raise ConsistencyInputError(
                f"more than {MAX_SERVERS} distinct writers; refusing writer {server!r}"
            )
        code = len(self._servers)
        self._servers.append(server)
        self._code_of[server] = code
        order = sorted(range(len(self._servers)), key=self._servers.__getitem__)
        rank = np.empty(len(order), np.int32)
        rank[np.asarray(order, np.intp)] = np.arange(len(order), dtype=np.int32)
        self._rank = rank
        return code

    def _has_duplicates(self, ids: IntArray, idx: IntArray, found: BoolArray) -> bool:
        if ids.size < 2 or bool((ids[1:] > ids[:-1]).all()):
            return False  # strictly ascending: the common, cheap case
        rows = idx[found]
        if rows.size > 1:
            # Scatter each row's position and read it back: a row written twice reads back
            # another position. (Which write survives does not matter for detection.)
            probe = np.arange(rows.size)
            scratch = np.empty(self._ids.size, np.intp)
            scratch[rows] = probe
            if bool((scratch[rows] != probe).any()):
                return True
        fresh = np.sort(ids[~found])
        return bool((fresh[1:] == fresh[:-1]).any())

    def _apply(self, ids: IntArray, pos: FloatArray, hlc: int | IntArray, code: int) -> BoolArray:
        n = ids.size
        idx, found = self._rows(ids)
        sel: IntArray | None = None
        if self._has_duplicates(ids, idx, found):
            sel = _last_writes(ids, hlc)
            ids, pos, idx, found = ids[sel], pos[sel], idx[sel], found[sel]
            if not isinstance(hlc, int):
                hlc = hlc[sel]
        applied = np.zeros(ids.size, np.bool_)

        # Existing entities: apply where the incoming write wins.
        if found.all():
            src: IntArray | None = None
            rows = idx
        else:
            src = np.flatnonzero(found)
            rows = idx[src]
        if rows.size:
            in_hlc = hlc if isinstance(hlc, int) or src is None else hlc[src]
            cur_hlc = self._hlc[rows]
            wins: BoolArray = np.greater(in_hlc, cur_hlc)
            tie: BoolArray = np.equal(in_hlc, cur_hlc)
            if tie.any():  # equal HLCs: the lower server id wins
                tie_rows = rows[tie]
                wins[tie] = self._rank[self._code[tie_rows]] > self._rank[code]
            src_rows = pos.view(_ROW3).reshape(-1)
            table_rows = self._pos.view(_ROW3).reshape(-1)
            if src is None and wins.all():  # the usual tick: every row is newer
                table_rows[rows] = src_rows
                self._hlc[rows] = in_hlc
                self._code[rows] = code
                applied[:] = True
            else:
                win_src = np.flatnonzero(wins) if src is None else src[wins]
                win_rows = rows[wins]
                table_rows[win_rows] = src_rows[win_src]
                self._hlc[win_rows] = in_hlc if isinstance(in_hlc, int) else in_hlc[wins]
                self._code[win_rows] = code
                applied[win_src] = True

        # New entities: insert (they win by default), keeping ids sorted.
        if src is not None and src.size < ids.size:
            fresh = np.flatnonzero(~found)
            fresh = fresh[np.argsort(ids[fresh])]
            at = idx[fresh]
            new_hlc = np.full(at.size, hlc, np.int64) if isinstance(hlc, int) else hlc[fresh]
            self._ids = np.insert(self._ids, at, ids[fresh])
            self._hlc = np.insert(self._hlc, at, new_hlc)
            self._code = np.insert(self._code, at, np.int32(code))
            self._pos = np.insert(self._pos, at, pos[fresh], axis=0)
            self._direct_stale = True
            applied[fresh] = True

        if sel is None:
            return applied
        out = np.zeros(n, np.bool_)
        out[sel[applied]] = True
        return out

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The table as bytes (little-endian, versioned header; writers not referenced by any
        row are left out). `EntityTable.restore` reads it back."""
        used, codes = np.unique(self._code, return_inverse=True)
        names = [self._servers[c] for c in used.tolist()]
        buf = io.BytesIO()
        buf.write(_HEADER.pack(_SNAPSHOT_MAGIC, self._ids.size, len(names)))
        for name in names:
            raw = name.encode("utf-8")
            buf.write(_NAME_LEN.pack(len(raw)))
            buf.write(raw)
        buf.write(self._ids.astype("<i8").tobytes())
        buf.write(self._hlc.astype("<i8").tobytes())
        buf.write(codes.astype("<i4").tobytes())
        buf.write(self._pos.astype("<f8").tobytes())
        return buf.getvalue()

    @classmethod
    def restore(cls, data: bytes) -> EntityTable:
        """A table from `snapshot` bytes. The bytes are treated as untrusted: any truncation,
        corruption or invalid value raises `ConsistencyInputError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ConsistencyInputError(f"snapshot must be bytes, got {type(data).__name__}")
        view = memoryview(data).cast("B")
        if len(view) < _HEADER.size:
            raise ConsistencyInputError("entity snapshot is truncated (no header)")
        magic, n_rows, n_servers = _HEADER.unpack_from(view, 0)
        if magic != _SNAPSHOT_MAGIC:
            raise ConsistencyInputError("not an entity snapshot (bad magic or version)")
        if n_servers > MAX_SERVERS:
            raise ConsistencyInputError(f"entity snapshot names {n_servers} writers")
        offset = _HEADER.size
        names: list[str] = []
        for _ in range(n_servers):
            if offset + _NAME_LEN.size > len(view):
                raise ConsistencyInputError("entity snapshot is truncated (writer names)")
            (length,) = _NAME_LEN.unpack_from(view, offset)
            offset += _NAME_LEN.size
            raw = bytes(view[offset : offset + length])
            if len(raw) != length:
                raise ConsistencyInputError("entity snapshot is truncated (writer names)")
            offset += length
            try:
                names.append(_check_server(raw.decode("utf-8")))
            except UnicodeDecodeError:
                raise ConsistencyInputError("entity snapshot has a non-UTF-8 writer id") from None
        if len(set(names)) != len(names):
            raise ConsistencyInputError("entity snapshot repeats a writer id")
        body = 8 + 8 + 4 + 24
        if len(view) - offset != n_rows * body:
            raise ConsistencyInputError(
                f"entity snapshot has {len(view) - offset} bytes of rows, expected "
                f"{n_rows} x {body}"
            )
        ids = np.frombuffer(view, "<i8", n_rows, offset).astype(np.int64)
        offset += 8 * n_rows
        hlc = np.frombuffer(view, "<i8", n_rows, offset).astype(np.int64)
        offset += 8 * n_rows
        codes = np.frombuffer(view, "<i4", n_rows, offset).astype(np.int32)
        offset += 4 * n_rows
        pos = np.frombuffer(view, "<f8", 3 * n_rows, offset).astype(np.float64).reshape(-1, 3)
        if n_rows > 1 and not bool((ids[1:] > ids[:-1]).all()):
            raise ConsistencyInputError("entity snapshot ids are not strictly ascending")
        if n_rows and (int(hlc.min()) < 0):
            raise ConsistencyInputError("entity snapshot has a negative hlc")
        if n_rows and (int(codes.min()) < 0 or int(codes.max()) >= n_servers):
            raise ConsistencyInputError("entity snapshot refers to an unknown writer")
        if not np.isfinite(pos).all():
            raise ConsistencyInputError("entity snapshot has a non-finite position")
        table = cls()
        for name in names:
            table._intern(name)
        table._ids, table._hlc, table._code, table._pos = ids, hlc, codes, pos
        table._direct_stale = True
        return table

    def copy(self) -> EntityTable:
        new = EntityTable()
        new._ids, new._hlc = self._ids.copy(), self._hlc.copy()
        new._code, new._pos = self._code.copy(), self._pos.copy()
        new._servers = list(self._servers)
        new._code_of = dict(self._code_of)
        new._rank = self._rank.copy()
        new._direct_stale = True
        return new

    def __eq__(self, other: object) -> bool:
        """Same entities with the same positions, HLCs and writers (by id, not by code)."""
        if not isinstance(other, EntityTable):
            return NotImplemented
        if not (
            np.array_equal(self._ids, other._ids)
            and np.array_equal(self._hlc, other._hlc)
            and np.array_equal(self._pos, other._pos)
        ):
            return False
        mine: Sequence[Any] = np.asarray(self._servers, dtype=object)[self._code].tolist()
        theirs: Sequence[Any] = np.asarray(other._servers, dtype=object)[other._code].tolist()
        return list(mine) == list(theirs)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EntityTable({self._ids.size} entities, {len(self._servers)} writers)"
