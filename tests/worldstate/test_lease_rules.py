"""The pure lease and fence rules (`worldstate.store._lease_rules`), table-driven: the SQL
(`store/leases.py`, `check_fence`, the strong commit) and the simulation both use them."""

from __future__ import annotations

import pytest

from regions import RegionKey
from worldstate import Fenced, RegionOwned
from worldstate.store._lease_rules import (
    RELEASED,
    LeaseRow,
    check_fence,
    decide_acquire,
    decide_release,
    decide_renew,
)

K = RegionKey(1, 2, 3)
NOW, TTL = 100.0, 3.0


@pytest.mark.parametrize(
    ("row", "owner", "epoch", "expires", "write"),
    [
        (None, "a", 1, NOW + TTL, "insert"),
        (LeaseRow("a", 4, NOW + 1.0), "a", 4, NOW + TTL, "extend"),  # live holder: renewal
        (LeaseRow("a", 4, NOW + 9.0), "a", 4, NOW + 9.0, "extend"),  # never shortened
        (LeaseRow("b", 4, NOW - 0.1), "a", 5, NOW + TTL, "take"),  # expired: epoch + 1
        (LeaseRow("a", 4, RELEASED), "a", 5, NOW + TTL, "take"),  # released: epoch + 1
    ],
)
def test_acquire(row: LeaseRow | None, owner: str, epoch: int, expires: float, write: str) -> None:
    grant = decide_acquire(K, row, owner, NOW, TTL)
    assert (grant.lease.owner, grant.lease.epoch, grant.lease.expires_at) == (owner, epoch, expires)
    assert grant.write == write


def test_acquire_refuses_another_live_owner() -> None:
    with pytest.raises(RegionOwned) as e:
        decide_acquire(K, LeaseRow("b", 2, NOW + 1), "a", NOW, TTL)
    assert e.value.owner == "b"


@pytest.mark.parametrize(
    ("row", "epoch", "ok"),
    [
        (LeaseRow("a", 3, NOW + 1), 3, True),
        (LeaseRow("a", 3, NOW - 1), 3, True),  # just expired, nobody took over
        (LeaseRow("a", 3, RELEASED), 3, False),  # a renewal never revives a release
        (LeaseRow("a", 4, NOW + 1), 3, False),
        (LeaseRow("b", 3, NOW + 1), 3, False),
        (None, 3, False),
    ],
)
def test_renew(row: LeaseRow | None, epoch: int, ok: bool) -> None:
    if ok:
        assert decide_renew(K, row, "a", epoch, NOW, TTL).expires_at >= NOW + TTL
    else:
        with pytest.raises(Fenced):
            decide_renew(K, row, "a", epoch, NOW, TTL)


def test_renew_never_moves_the_expiry_back() -> None:
    assert decide_renew(K, LeaseRow("a", 3, NOW + 50), "a", 3, NOW, TTL).expires_at == NOW + 50


def test_release() -> None:
    assert decide_release(LeaseRow("a", 3, NOW + 1), "a", 3)
    assert not decide_release(LeaseRow("a", 4, NOW + 1), "a", 3)
    assert not decide_release(LeaseRow("b", 3, NOW + 1), "a", 3)
    assert not decide_release(None, "a", 3)


def test_fence() -> None:
    assert check_fence(K, LeaseRow("a", 3, NOW + 1), 3, "a", NOW) == 3
    assert check_fence(K, None, 0, "a", NOW) == 0
    assert check_fence(K, LeaseRow("b", 3, NOW - 1), None, "a", NOW) == 3  # no epoch carried
    with pytest.raises(Fenced):
        check_fence(K, LeaseRow("a", 4, NOW + 1), 3, "a", NOW)
    with pytest.raises(RegionOwned):
        check_fence(K, LeaseRow("b", 3, NOW + 1), 3, "a", NOW)
    with pytest.raises(RegionOwned):
        check_fence(K, LeaseRow("b", 3, NOW + 1), None, "a", NOW)
