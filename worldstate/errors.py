"""The worldstate error tree. Every error says what was wrong and what to do, and carries
its facts as attributes (and survives pickling, for process pools and logs).

Four category bases tell a caller what to do without knowing every class:

=====================  ==================================================================
`RetryableError`       retry later with the SAME op_id (never applied twice):
                       `Overloaded`, `BusUnavailable`, `StoreUnavailable`, `SubmitTimeout`
`AuthorityLost`        this server may not write there now: `Fenced`, `RegionOwned`,
                       `NotAuthoritative` (reacquire, hand off, or forward)
`ValidationError`      invalid input, nothing changed (also a `ValueError`)
`WorldClosed`          the world is closed; ``.cause`` holds the crash that closed it, if any
=====================  ==================================================================
"""

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


class RetryableError(WorldStateError):
    """Category: a transient failure. Retry later with the same ``op_id``: an op that did
    apply is never applied twice, and the retry returns its first outcome."""


class AuthorityLost(WorldStateError):
    """Category: this server holds no (live, unfenced) authority for what it tried to write."""


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


class Fenced(AuthorityLost):
    """The caller's lease epoch is stale: another owner took the region over."""

    def __init__(self, key: Any, epoch: int, current: int, owner: str | None = None) -> None:
        self.key, self.epoch, self.current, self.owner = key, epoch, current, owner
        by = f" (now held by {owner!r})" if owner else ""
        super().__init__(
            f"region {key}: write carries epoch {epoch} but the lease is at epoch "
            f"{current}{by}; this server is no longer authoritative — drop local state and "
            "reacquire or hand the region off"
        )


class RegionOwned(AuthorityLost):
    """Another live server holds the region's lease."""

    def __init__(self, key: Any, owner: str, epoch: int, expires_at: float) -> None:
        self.key, self.owner, self.epoch, self.expires_at = key, owner, epoch, expires_at
        super().__init__(
            f"region {key} is held by {owner!r} (epoch {epoch}) until {expires_at:.3f}; "
            "ask the mesh coordinator for a hand-off or wait for the lease to expire"
        )


class NotAuthoritative(AuthorityLost):
    """This server may not perform strong writes now (minority partition, or no lease)."""

    def __init__(self, message: str, *, key: Any = None) -> None:
        self.key = key
        super().__init__(message)


class StoreUnavailable(RetryableError):
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


class Overloaded(RetryableError):
    """A bounded queue is full (a region's strong pipeline): the operation was not taken;
    retry it later with the same op_id."""


class BusUnavailable(RetryableError):
    """The message bus could not be reached in time (a QoS-1 publish or a forwarded op), or
    lost its connection (an open `World.updates` stream ends with it; a new one may be
    opened at once)."""


class BusRefused(BusUnavailable):
    """The broker answered but would not have us: wrong credentials, not authorized, or a
    TLS certificate that does not check out. Retrying will not help; fix the configuration
    (the message says which)."""


class SubmitTimeout(RetryableError):
    """A submit's deadline (``submit(op, timeout=...)``, default `Config.submit_timeout`)
    passed before its outcome was known. ``may_have_applied`` says whether the op could
    have been committed anyway: resubmit the same op to learn its outcome."""

    def __init__(self, message: str, *, op_id: Any = None, may_have_applied: bool = True) -> None:
        self.op_id, self.may_have_applied = op_id, may_have_applied
        super().__init__(message)


class WorldClosed(WorldStateError):
    """The world was closed (or its bus was closed); open a new one with `worldstate.connect`.
    When a supervised background loop crashed, ``cause`` holds its exception."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        self.cause = cause
        super().__init__(message)


__all__ = [
    "AuthorityLost",
    "BusRefused",
    "BusUnavailable",
    "CorruptRegion",
    "Fenced",
    "HandoffFailed",
    "NotAuthoritative",
    "Overloaded",
    "RegionOwned",
    "RetryableError",
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


# -- history (worldstate.history) ---------------------------------------------------------------


class CursorExpired(WorldStateError):
    """A resume point (cursor or time) is older than what the causal log still holds: the
    events after it were pruned (``Config.event_retention``)."""

    def __init__(self, message: str, *, cursor: Any = None) -> None:
        self.cursor = cursor
        super().__init__(
            f"{message}; the events after it were pruned from the causal log — resync from a "
            "checkpoint (worldstate checkpoint restore) or reload the regions of interest, "
            "then subscribe again without since="
        )


class CheckpointNotFound(WorldStateError, LookupError):
    """No complete checkpoint has that id or name."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(
            f"no checkpoint named or with id {ref!r}; see `worldstate checkpoint list`"
        )


class RestoreRefused(WorldStateError):
    """A restore would overwrite regions that live servers hold (pass force=True /
    ``--force`` to fence them and restore anyway)."""

    def __init__(self, leases: list[tuple[str, str, float]]) -> None:
        self.leases = leases
        shown = ", ".join(f"{k} held by {o!r}" for k, o, _ in leases[:5])
        more = f" and {len(leases) - 5} more" if len(leases) > 5 else ""
        super().__init__(
            f"{len(leases)} live lease(s): {shown}{more}; stop those servers (or wait for the "
            "leases to expire), or restore with --force to fence them (their regions' epochs "
            "go up and their next write is refused)"
        )


class ExportFormatError(ValidationError):
    """A checkpoint file that cannot be imported: not a worldstate checkpoint, a newer
    format version, truncated or corrupt. Nothing was imported."""
