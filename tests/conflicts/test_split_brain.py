"""Split brain: at most one side of any partition keeps authority."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflicts import PartitionRule, decide_partition, surviving_side


def set_partitions(items: list[str]) -> Iterator[list[list[str]]]:
    """Every partition of ``items`` into non-empty sides."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]


def expected_survivor(members: list[str], sides: list[list[str]]) -> frozenset[str] | None:
    n = len(members)
    for side in sides:
        if 2 * len(side) > n or (2 * len(side) == n and min(members) in side):
            return frozenset(side)
    return None


@pytest.mark.parametrize("n", range(1, 10))
def test_every_partition_of_up_to_nine_servers_has_at_most_one_survivor(n: int) -> None:
    members = [f"gs-{i}" for i in range(n)]
    verdicts: dict[frozenset[str], bool] = {}  # a side's verdict depends on the side alone

    def keeps(side: list[str]) -> bool:
        key = frozenset(side)
        if key not in verdicts:
            verdicts[key] = decide_partition(members, side).keeps_authority
        return verdicts[key]

    count = 0
    for sides in set_partitions(members):
        count += 1
        survivor = surviving_side(members, sides)
        keeping = [s for s in sides if keeps(s)]
        assert len(keeping) <= 1
        assert survivor == (frozenset(keeping[0]) if keeping else None)
        assert survivor == expected_survivor(members, sides)
    bell = [1, 1, 2, 5, 15, 52, 203, 877, 4140, 21147]
    assert count == bell[n]


@given(
    st.lists(st.text("abcxyz019-", min_size=1, max_size=4), min_size=1, max_size=9, unique=True),
    st.data(),
)
def test_random_ids_and_sides(members: list[str], data: st.DataObject) -> None:
    labels = data.draw(st.lists(st.integers(0, 3), min_size=len(members), max_size=len(members)))
    sides = [[m for m, lab in zip(members, labels, strict=True) if lab == k] for k in range(4)]
    sides = [s for s in sides if s]
    assert surviving_side(members, sides) == expected_survivor(members, sides)
    # every server of the surviving side, and no other, keeps authority by its own view
    for side in sides:
        for me in side:
            verdict = decide_partition(members, side, self_id=me)
            assert verdict.keeps_authority == (frozenset(side) == surviving_side(members, sides))


TABLE = [
    # membership, sides, survivor, rule of the survivor (or None)
    ("abcde", ["abc", "de"], "abc", PartitionRule.MAJORITY),
    ("abcde", ["de", "abc"], "abc", PartitionRule.MAJORITY),
    ("abcd", ["ab", "cd"], "ab", PartitionRule.HALF_WITH_LOWEST),
    ("abcd", ["cd", "ab"], "ab", PartitionRule.HALF_WITH_LOWEST),
    ("abcd", ["bc", "ad"], "ad", PartitionRule.HALF_WITH_LOWEST),
    ("abc", ["a", "b", "c"], None, None),
    ("abcd", ["a", "b", "cd"], None, None),
    ("abcdef", ["abc", "def"], "abc", PartitionRule.HALF_WITH_LOWEST),
    ("a", ["a"], "a", PartitionRule.MAJORITY),
    ("ab", ["a", "b"], "a", PartitionRule.HALF_WITH_LOWEST),
]


@pytest.mark.parametrize(("members", "sides", "survivor", "rule"), TABLE)
def test_table(
    members: str, sides: list[str], survivor: str | None, rule: PartitionRule | None
) -> None:
    got = surviving_side(list(members), [list(s) for s in sides])
    assert got == (frozenset(survivor) if survivor else None)
    if survivor:
        verdict = decide_partition(list(members), list(survivor))
        assert verdict.keeps_authority and verdict.rule is rule


def test_verdicts_and_reasons() -> None:
    members = ["gs-1", "gs-2", "gs-3", "gs-4"]
    keep = decide_partition(members, ["gs-1", "gs-2", "new-9"], self_id="gs-2")
    assert keep.keeps_authority and keep.rule is PartitionRule.HALF_WITH_LOWEST
    assert keep.heard == {"gs-1", "gs-2"}  # a server outside the membership does not count
    assert "lowest id 'gs-1'" in keep.reason
    lose = decide_partition(members, ["gs-3", "gs-4"])
    assert not lose.keeps_authority and lose.rule is PartitionRule.HALF_WITHOUT_LOWEST
    minority = decide_partition(members, ["gs-4"])
    assert minority.rule is PartitionRule.MINORITY and "demotes" in minority.reason
    assert decide_partition(members, members).rule is PartitionRule.MAJORITY
    assert keep.to_dict() == {
        "keeps_authority": True,
        "rule": "half_with_lowest",
        "heard": ["gs-1", "gs-2"],
        "membership": members,
        "reason": keep.reason,
    }
