"""Validation of the ids games hand us (server, object, inventory, item, stream ids)."""

from __future__ import annotations

import unicodedata

from worldstate.errors import ValidationError


def check_id(value: object, name: str, max_length: int = 200) -> str:
    """Return ``value`` if it is a usable id, else raise `ValidationError`.

    Ids are stored and compared literally: quotes, semicolons and any printable unicode are
    allowed (SQL always uses bound parameters). Refused: non-strings, empty strings, strings
    longer than ``max_length`` characters, and control characters (which break logs, MQTT
    topics and terminal output). ``/``, ``+`` and ``#`` are refused too: ids appear in MQTT
    topic levels.
    """
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{name} must not be empty")
    if len(value) > max_length:
        raise ValidationError(f"{name} is {len(value)} characters long; the limit is {max_length}")
    for ch in value:
        if ch in "/+#" or unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValidationError(f"{name} {value!r:.60} contains a forbidden character {ch!r}")
    return value
