"""MQTT topic names and topic filters: validation and matching (pure functions, no I/O).

The rules are MQTT's (3.1.1 §4.7, 5.0 §4.7), so the in-process bus and a real broker agree:

- A topic name is a non-empty UTF-8 string of levels separated by ``/``; levels may be empty
  (``a//b``, ``/a``). It may not contain the wildcards ``+`` or ``#``.
- A topic filter (a subscription pattern) may use ``+`` for exactly one whole level and ``#``
  for any number of trailing levels, including none (``a/#`` matches ``a`` itself).
  ``+`` and ``#`` must occupy a whole level; ``#`` must be the last level.
- Topics starting with ``$`` (``$SYS/...``) are the broker's: a filter whose first level is a
  wildcard does not match them.

We refuse more than MQTT does: NUL and every other control character (they break logs and
some brokers refuse them), and names longer than the caller's byte limit.
"""

from __future__ import annotations

import unicodedata

from worldstate.errors import ValidationError

MQTT_MAX_TOPIC_BYTES = 65_535
"""The protocol's hard limit on a topic's UTF-8 length."""


def _check_text(value: object, what: str, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{what} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(f"{what} {value!r:.80} is not valid UTF-8 (lone surrogate)") from None
    if size > max_bytes:
        raise ValidationError(f"{what} is {size} bytes long in UTF-8; the limit is {max_bytes}")
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise ValidationError(f"{what} {value!r:.80} contains a control character {ch!r}")
    return value


def validate_topic(
    topic: object, *, what: str = "topic", max_bytes: int = MQTT_MAX_TOPIC_BYTES
) -> str:
    """Return ``topic`` if it is a valid topic name to publish to, else raise
    `ValidationError` saying what is wrong."""
    name = _check_text(topic, what, max_bytes)
    if "+" in name or "#" in name:
        raise ValidationError(
            f"{what} {name!r:.80} contains a wildcard ('+' or '#'): wildcards are allowed in "
            "subscription patterns only"
        )
    return name


def validate_filter(
    pattern: object, *, what: str = "pattern", max_bytes: int = MQTT_MAX_TOPIC_BYTES
) -> str:
    """Return ``pattern`` if it is a valid topic filter to subscribe to, else raise
    `ValidationError` saying what is wrong."""
    text = _check_text(pattern, what, max_bytes)
    levels = text.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            if i != len(levels) - 1:
                raise ValidationError(f"{what} {text!r:.80}: '#' must be the last level")
        elif level != "+" and ("+" in level or "#" in level):
            raise ValidationError(
                f"{what} {text!r:.80}: a wildcard must be a whole level "
                f"(level {i} is {level!r}); write e.g. 'a/+/c' or 'a/#'"
            )
    return text


def has_wildcards(pattern: str) -> bool:
    return "+" in pattern or "#" in pattern


def matches(pattern: str, topic: str) -> bool:
    """Whether the topic name ``topic`` matches the topic filter ``pattern``.

    Both are assumed valid (see `validate_topic`, `validate_filter`); matching is exact,
    case-sensitive and level by level.
    """
    if not has_wildcards(pattern):
        return pattern == topic
    if topic.startswith("$") and pattern[0] in "+#":
        return False
    p_levels = pattern.split("/")
    t_levels = topic.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True  # matches the parent level too: 'a/#' matches 'a'
        if i >= len(t_levels):
            return False
        if p != "+" and p != t_levels[i]:
            return False
    return len(p_levels) == len(t_levels)


__all__ = [
    "MQTT_MAX_TOPIC_BYTES",
    "has_wildcards",
    "matches",
    "validate_filter",
    "validate_topic",
]
