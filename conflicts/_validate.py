"""Checks for the scalar fields of candidates and records (ids, ints, reals)."""

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


def check_id(value: object, name: str) -> str:
    """A non-empty, printable `str` of at most `MAX_ID_LENGTH` characters.

    Printable excludes control characters (NUL among them), so ids compare the same way as
    Python strings and as numpy unicode arrays (which drop trailing NULs).
    """
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable():
        return value  # the common case, checked in one line
    if not isinstance(value, str):
        raise ConflictInputError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ConflictInputError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ConflictInputError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if not value.isprintable():
        raise ConflictInputError(f"{name} contains non-printable characters: {value!r}")
    return value


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
    """``value`` if ``|value| <= MAX_MAGNITUDE``."""
    if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
        raise ConflictInputError(f"{name} must be within +-{MAX_MAGNITUDE:g}, got {value}")
    return value
