"""The lease and fence rules, once, as pure functions over a lease row's values.

The SQL in `worldstate.store.leases`, `region_state.check_fence` and the strong commit's
fence check (`strong_commit`) read the row, call these, and write what they decide; the
deterministic simulation (``tests/sim``) checks its invariants against the same functions.

Rules: a region with no lease row, or whose lease has expired, can be acquired; acquiring
bumps the epoch (the fencing token) — except that the live holder re-acquiring is a renewal
and keeps it. A release keeps the row and its epoch but ends the lease at once
(``expires_at = RELEASED``), so the next acquirer (even the same server) gets epoch + 1.
Renewal succeeds only for the holder at its epoch, never for a released row, and never moves
the expiry backwards. A write is fenced unless it carries the region's current epoch, and
refused while another server holds a live lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from regions import RegionKey
from worldstate.errors import Fenced, RegionOwned
from worldstate.objects import Lease

RELEASED = 0.0
"""``expires_at`` of a released lease: expired for everyone, and never renewed."""


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """The values of a lease row that the rules look at."""

    owner: str
    epoch: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class Grant:
    """What an acquire or renewal decided: the lease to return and how to write it.

    ``write`` is ``"insert"`` (no row yet), ``"extend"`` (only ``expires_at`` changes) or
    ``"take"`` (owner, epoch, ``expires_at`` and ``acquired_at`` change)."""

    lease: Lease
    write: str


def decide_acquire(
    key: RegionKey, row: LeaseRow | None, owner: str, now: float, ttl: float
) -> Grant:
    """Acquire ``key`` for ``owner`` at ``now`` (raises `RegionOwned` if another live owner
    holds it)."""
    expires = now + ttl
    if row is None:
        return Grant(Lease(key, owner, 1, expires), "insert")
    if row.expires_at > now:
        if row.owner != owner:
            raise RegionOwned(key, row.owner, row.epoch, row.expires_at)
        # the live holder re-acquiring renews; never shorten a lease already granted
        return Grant(Lease(key, owner, row.epoch, max(expires, row.expires_at)), "extend")
    return Grant(Lease(key, owner, row.epoch + 1, expires), "take")


def decide_renew(
    key: RegionKey, row: LeaseRow | None, owner: str, epoch: int, now: float, ttl: float
) -> Lease:
    """Renew ``owner``'s lease at ``epoch`` (raises `Fenced` when the row is gone, another
    owner's, at another epoch, or released). The epoch is kept even if the lease had just
    expired, as long as nobody took the region over."""
    if row is None or row.owner != owner or row.epoch != epoch or row.expires_at <= RELEASED:
        current = row.epoch if row is not None else 0
        raise Fenced(key, epoch, current, row.owner if row is not None else None)
    return Lease(key, owner, epoch, max(now + ttl, row.expires_at))


def decide_release(row: LeaseRow | None, owner: str, epoch: int) -> bool:
    """Whether a release by ``owner`` at ``epoch`` ends the lease (sets ``RELEASED``)."""
    return row is not None and row.owner == owner and row.epoch == epoch


def check_fence(
    key: RegionKey,
    row: LeaseRow | None,
    epoch: int | None,
    writer: str,
    now: float,
    *,
    exclusive: bool = False,
) -> int:
    """Refuse a write by ``writer`` under a stale ``epoch`` (`Fenced`) or into another live
    owner's region (`RegionOwned`); returns the current epoch the write is recorded under.
    ``epoch=None`` skips the epoch comparison (a write that carries no epoch).
    ``exclusive``: only the lease's owner may write at all (the strong path's group commits:
    a lapsed lease of another server is `Fenced` too, and so is no lease)."""
    current = row.epoch if row is not None else 0
    if epoch is not None and epoch != current:
        raise Fenced(key, epoch, current, row.owner if row is not None else None)
    if row is not None and row.expires_at > now and row.owner != writer:
        raise RegionOwned(key, row.owner, row.epoch, row.expires_at)
    if exclusive and (row is None or row.owner != writer):
        raise Fenced(key, current if epoch is None else epoch, current, row.owner if row else None)
    return current


def lease_row(r: Any) -> LeaseRow | None:
    """A SQL result row of ``ws_leases`` (or None) as a `LeaseRow`."""
    if r is None:
        return None
    return LeaseRow(str(r.owner), int(r.epoch), float(r.expires_at))


__all__ = [
    "RELEASED",
    "Grant",
    "LeaseRow",
    "check_fence",
    "decide_acquire",
    "decide_release",
    "decide_renew",
    "lease_row",
]
