"""Deliberately broken variants of the REAL code: each patches worldstate for the length of
one run, and the harness must catch it (`test_broken_variant_is_caught`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from regions import RegionKey
from worldstate.node._authority import Authority


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _no_fencing() -> contextlib.AbstractContextManager[None]:
    from worldstate.store import _lease_rules

    def check_fence(
        key: Any, row: Any, epoch: Any, writer: str, now: float, *, exclusive: bool = False
    ) -> int:
        return row.epoch if row is not None else 0

    return _patched(_lease_rules, "check_fence", check_fence)


def _never_demote() -> contextlib.AbstractContextManager[None]:
    from worldstate.mesh import _agent

    return _patched(_agent.MembershipAgent, "decide", lambda self: False)


def _ignore_expiry() -> contextlib.AbstractContextManager[None]:
    """Trust a held lease whatever its expiry says (until the store refuses a renewal)."""

    def holds(self: Authority, key: RegionKey) -> bool:
        return key in self._leases and self.authoritative

    return _patched(Authority, "holds", holds)


BROKEN_VARIANTS: dict[
    str, tuple[Callable[[], contextlib.AbstractContextManager[None]], frozenset[str]]
] = {
    "no-fencing": (_no_fencing, frozenset({"fencing"})),
    "never-demote": (_never_demote, frozenset({"timely-demotion"})),
    # a server trusting an expired lease: two believers, or a write under a believer
    "ignore-expiry": (_ignore_expiry, frozenset({"lease-exclusive", "fencing"})),
}
"""name → (patch of the real code, the invariants expected to catch it)."""


__all__ = ["BROKEN_VARIANTS"]
