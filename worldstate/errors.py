"""The worldstate error tree. Every error says what was wrong and what to do, and carries
its facts as attributes (and survives pickling, for process pools and logs)."""

from __future__ import annotations

from typing import Any


class WorldStateError(Exception):
    """Base of every error worldstate raises on purpose."""

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[WorldStateError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class ValidationError(WorldStateError, ValueError):
    """An input was refused at the boundary; nothing was changed."""


class VersionConflict(WorldStateError):
    """``store_region`` expected one version and found another: reload, reapply, retry."""

    def __init__(self, key: Any, expected: int | None, actual: int) -> None:
        self.key, self.expected, self.actual = key, expected, actual
        want = "absent (version 0)" if expected == 0 else f"version {expected}"
        super().__init__(
            f"region {key}: expected {want} but the store holds version {actual}; "
            "load the region again, reapply your change and retry"
        )


class Fenced(WorldStateError):
    """The caller's lease epoch is stale: another owner took the region over."""

    def __init__(self, key: Any, epoch: int, current: int, owner: str | None = None) -> None:
        self.key, self.epoch, self.current, self.owner = key, epoch, current, owner
        by = f" (now held by {owner!r})" if owner else ""
        super().__init__(
            f"region {key}: write carries epoch {epoch} but the lease is at epoch "
            f"{current}{by}; this server is no longer authoritative — drop local state and "
            "reacquire or hand the region off"
        )


class RegionOwned(WorldStateError):
    """Another live server holds the region's lease."""

    def __init__(self, key: Any, owner: str, epoch: int, expires_at: float) -> None:
        self.key, self.owner, self.epoch, self.expires_at = key, owner, epoch, expires_at
        super().__init__(
            f"region {key} is held by {owner!r} (epoch {epoch}) until {expires_at:.3f}; "
            "ask the mesh coordinator for a hand-off or wait for the lease to expire"
        )


class NotAuthoritative(WorldStateError):
    """This server may not perform strong writes now (minority partition, or no lease)."""

    def __init__(self, message: str, *, key: Any = None) -> None:
        self.key = key
        super().__init__(message)


class StoreUnavailable(WorldStateError):
    """The durable store could not be reached, or retries were exhausted."""

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        self.attempts = attempts
        super().__init__(message)


class CorruptRegion(WorldStateError):
    """A region's stored state failed its checksum and no valid version is left in history."""

    def __init__(self, key: Any, versions_checked: list[int]) -> None:
        self.key, self.versions_checked = key, versions_checked
        super().__init__(
            f"region {key}: the current row and all {len(versions_checked)} kept versions "
            f"{versions_checked} fail their checksums; restore it from a backup or store a "
            "fresh snapshot with store_region(..., expected_version=None)"
        )


class Overloaded(WorldStateError):
    """A bounded queue is full (a region's strong pipeline): the operation was not taken;
    retry it later with the same op_id."""


class BusUnavailable(WorldStateError):
    """The message bus could not be reached in time (a QoS-1 publish or a forwarded op)."""


class WorldClosed(WorldStateError):
    """The world was closed (or lost its bus); open a new one with `worldstate.connect`."""


class SubmitTimeout(WorldStateError):
    """A submit's deadline (``submit(op, timeout=...)``, default ``Config.submit_timeout``)
    passed before its outcome was known. ``may_have_applied`` says whether the op could
    still have taken effect (it was inside a commit, or with its owner); either way,
    resubmitting the same op_id is safe and returns its outcome."""

    def __init__(self, op_id: Any, timeout: float, *, may_have_applied: bool) -> None:
        self.op_id, self.timeout, self.may_have_applied = op_id, timeout, may_have_applied
        maybe = "it may have applied" if may_have_applied else "it was withdrawn and did not apply"
        super().__init__(
            f"op {op_id}: no outcome within {timeout:g}s ({maybe}); resubmit the same op_id "
            "to learn its outcome (it never applies twice)"
        )


__all__ = [
    "BusUnavailable",
    "CorruptRegion",
    "Fenced",
    "NotAuthoritative",
    "Overloaded",
    "RegionOwned",
    "StoreUnavailable",
    "SubmitTimeout",
    "ValidationError",
    "VersionConflict",
    "WorldClosed",
    "WorldStateError",
]


class HandoffFailed(WorldStateError):
    """A hand-off or assignment step failed; the region stays where it was (or, if the
    release went through, unowned until the coordinator places it again)."""

    def __init__(self, key: Any, server: str, step: str, reason: str) -> None:
        self.key, self.server, self.step, self.reason = key, server, step, reason
        super().__init__(
            f"region {key}: {step} on {server!r} failed: {reason}; the coordinator will "
            "place the region again on its next cycle — retry the hand-off if still wanted"
        )
