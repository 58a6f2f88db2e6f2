"""Checks for the scalar fields of candidates and records (ids, ints, reals).

The primitive rules here are the ones `worldstate` applies too (it sits above and imports
them): `id_problem` for every id, `MAX_MAGNITUDE` for coordinates, radii and deltas. Each rule
is a pure predicate that returns what is wrong (or None), so each layer raises its own error
type from the same rule and nothing `worldstate` accepts can be refused down here.
"""

from __future__ import annotations

import math
import numbers
import operator

from conflicts._errors import ConflictInputError

MAX_ID_LENGTH = 256
"""Longest accepted id (op, server, structure, resource, item, creature), in characters."""

MAX_MAGNITUDE = 1e12
"""Largest accepted coordinate, radius or density delta magnitude (metres; the whole
addressable world is about 2.1e9 m across). It keeps overlap and merge arithmetic (squares,
sums) far from float overflow, so no result can be an artefact of infinity."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def id_problem(value: object, name: str, max_length: int = MAX_ID_LENGTH) -> str | None:
    """What is wrong with ``value`` as an id, or None: the one id rule.

    An id is a non-empty `str` of at most ``max_length`` (never more than `MAX_ID_LENGTH`)
    characters, every one printable in Python's sense (`str.isprintable`): no control,
    format, surrogate, private-use or unassigned characters and no separator but the ASCII
    space (so NUL, U+00A0 and U+200B are refused). Ids then compare the same way as Python
    strings, numpy unicode arrays (which drop trailing NULs) and SQL text, and print as
    they are.
    """
    limit = min(max_length, MAX_ID_LENGTH)
    if type(value) is str and 0 < len(value) <= limit and value.isprintable():
        return None  # the common case, checked in one line
    if not isinstance(value, str):
        return f"{name} must be a str, got {type(value).__name__}"
    if not value:
        return f"{name} must not be empty"
    if len(value) > limit:
        return f"{name} is {len(value)} characters long; the limit is {limit}"
    bad = next(ch for ch in value if not ch.isprintable())
    return f"{name} {value!r:.60} contains a non-printable character {bad!r}"


def magnitude_problem(value: float, name: str) -> str | None:
    """What is wrong with ``value`` as a coordinate, radius or delta, or None: the one
    magnitude rule (finite and ``|value| <= MAX_MAGNITUDE``)."""
    if -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
        return None
    return f"{name} must be within +-{MAX_MAGNITUDE:g}, got {value}"


def check_id(value: object, name: str) -> str:
    """``value`` if `id_problem` finds nothing wrong with it, else `ConflictInputError`."""
    problem = id_problem(value, name)
    if problem is not None:
        raise ConflictInputError(problem)
    return value  # type: ignore[return-value]  # id_problem proved it a str


def check_int(value: object, name: str, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    """An integer (numpy integers accepted, bool refused) within ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConflictInputError(f"{name} must be an int, got {type(value).__name__}")
    out = operator.index(value)
    if not lo <= out <= hi:
        raise ConflictInputError(f"{name} must be within {lo}..{hi}, got {out}")
    return out


def check_real(value: object, name: str, *, allow_inf: bool = False) -> float:
    """A real number (int, float or numpy scalar; bool refused) that is not NaN, and is
    finite unless ``allow_inf``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConflictInputError(f"{name} must be a number, got {type(value).__name__}")
    out = float(value)
    if math.isnan(out) or (not allow_inf and math.isinf(out)):
        raise ConflictInputError(f"{name} must be finite, got {out}")
    return out


def check_magnitude(value: float, name: str) -> float:
    """``value`` if `magnitude_problem` finds nothing wrong with it."""
    problem = magnitude_problem(value, name)
    if problem is not None:
        raise ConflictInputError(problem)
    return value
