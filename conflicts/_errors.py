"""The one error `conflicts` raises: bad input to a detector or resolver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from regions import GeometryError


class ConflictInputError(ValueError):
    """A candidate, policy, committed state or decision record that is not valid input.

    Raised instead of ever returning a wrong answer. It is a `ValueError`, so `worldstate`
    surfaces it as `worldstate.ValidationError`. Geometry errors from `regions` are wrapped
    in it (the original is kept as ``__cause__``).
    """


@contextmanager
def geometry_as_input_errors() -> Iterator[None]:
    """Re-raise `regions.GeometryError` as `ConflictInputError` (same message)."""
    try:
        yield
    except GeometryError as exc:
        raise ConflictInputError(str(exc)) from exc
