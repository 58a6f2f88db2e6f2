"""The one error `regions` raises: bad geometry input."""

from __future__ import annotations


class GeometryError(ValueError):
    """A position, box, sphere or key that is not valid world geometry.

    `worldstate` surfaces it as `worldstate.ValidationError`.
    """
