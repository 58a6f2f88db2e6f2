"""Split brain: which side of a network partition keeps authority.

The rule (DESIGN.md, "Mesh, membership, split brain"): the side that holds a strict
majority of the last agreed membership keeps authority; on an exact half, the side that
holds the membership's lowest server id keeps it; every other side demotes itself. For any
partition of the membership into sides, at most one side keeps authority: two strict
majorities would share a member, a strict majority leaves no exact half elsewhere, and only
one side can hold the lowest id. Server ids compare by code point.

This assumes symmetric views (a clean partition). With asymmetric reachability two servers
may each see a majority; fencing epochs in the store keep strong writes safe regardless.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from conflicts._errors import ConflictInputError
from conflicts._validate import check_id


class PartitionRule(StrEnum):
    """Why a side keeps or loses authority."""

    MAJORITY = "majority"
    HALF_WITH_LOWEST = "half_with_lowest"
    HALF_WITHOUT_LOWEST = "half_without_lowest"
    MINORITY = "minority"


def _server_set(value: object, name: str) -> frozenset[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConflictInputError(f"{name} must be an iterable of server ids")
    return frozenset(check_id(s, f"{name} server id") for s in value)


@dataclass(frozen=True, slots=True)
class PartitionVerdict:
    """Whether the side that hears ``heard`` keeps authority over ``membership``.

    ``heard`` is the view restricted to the membership (servers outside the last agreed
    membership do not count). ``reason`` is a sentence for logs and the operator.
    """

    keeps_authority: bool
    rule: PartitionRule
    heard: frozenset[str]
    membership: frozenset[str]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "keeps_authority": self.keeps_authority,
            "rule": self.rule.value,
            "heard": sorted(self.heard),
            "membership": sorted(self.membership),
            "reason": self.reason,
        }


def decide_partition(
    membership: Iterable[str], view: Iterable[str], *, self_id: str | None = None
) -> PartitionVerdict:
    """Decide for the side this server is on.

    ``membership``: the last agreed set of server ids (non-empty). ``view``: the servers
    this one can hear, itself included (``self_id``, when given, must be in it). Pure: the
    same sets give the same verdict on every server.
    """
    members = _server_set(membership, "membership")
    if not members:
        raise ConflictInputError("membership must not be empty")
    seen = _server_set(view, "view")
    if self_id is not None and check_id(self_id, "self_id") not in seen:
        raise ConflictInputError(f"view must include this server ({self_id!r})")
    return _decide(members, seen & members)


def _decide(members: frozenset[str], heard: frozenset[str]) -> PartitionVerdict:
    n, h = len(members), len(heard)
    lowest = min(members)
    if 2 * h > n:
        return PartitionVerdict(
            True,
            PartitionRule.MAJORITY,
            heard,
            members,
            f"hears {h} of {n} members, a strict majority: keeps authority",
        )
    if 2 * h == n and lowest in heard:
        return PartitionVerdict(
            True,
            PartitionRule.HALF_WITH_LOWEST,
            heard,
            members,
            f"hears exactly {h} of {n} members including the lowest id {lowest!r}: keeps authority",
        )
    if 2 * h == n:
        return PartitionVerdict(
            False,
            PartitionRule.HALF_WITHOUT_LOWEST,
            heard,
            members,
            f"hears exactly {h} of {n} members but not the lowest id {lowest!r}: demotes",
        )
    return PartitionVerdict(
        False,
        PartitionRule.MINORITY,
        heard,
        members,
        f"hears {h} of {n} members, no majority: demotes",
    )


def surviving_side(
    membership: Iterable[str], sides: Iterable[Iterable[str]]
) -> frozenset[str] | None:
    """The one side of a partition that keeps authority, or None if no side does.

    ``sides`` must partition ``membership`` exactly: non-empty, pairwise disjoint, covering
    every member and nothing else (else `ConflictInputError`). Each side is judged by
    `decide_partition` with itself as the view.
    """
    members = _server_set(membership, "membership")
    if not members:
        raise ConflictInputError("membership must not be empty")
    if isinstance(sides, (str, bytes)) or not isinstance(sides, Iterable):
        raise ConflictInputError("sides must be an iterable of sets of server ids")
    parts = [_server_set(s, "side") for s in sides]
    seen: set[str] = set()
    for part in parts:
        if not part:
            raise ConflictInputError("a side must not be empty")
        if part & seen:
            raise ConflictInputError(f"sides overlap on {sorted(part & seen)}")
        seen |= part
    if seen != members:
        raise ConflictInputError(
            f"sides must cover the membership exactly: missing {sorted(members - seen)}, "
            f"extra {sorted(seen - members)}"
        )
    survivors = [p for p in parts if _decide(members, p).keeps_authority]
    assert len(survivors) <= 1, "two sides kept authority"  # impossible; see module doc
    return survivors[0] if survivors else None
