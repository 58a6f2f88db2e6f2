"""Encoding of region state: bytes for the store and the cache, with a checksum.

The payload is compact JSON (orjson): ``{"f": 1, "o": [[id, kind, lo, hi, data], ...]}``.
The checksum is BLAKE2b-128 over the region key, the version and the payload, so a row
whose bytes rot, or that is swapped with another region's or another version's, fails it.
"""

from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any

import orjson

from worldstate.objects import WorldObject

FORMAT = 1


class CodecError(ValueError):
    """A payload that does not decode: corrupt, truncated or of an unknown format."""


def encode_objects(objects: tuple[WorldObject, ...] | list[WorldObject]) -> bytes:
    rows = [[o.id, o.kind, o.lo, o.hi, dict(o.data)] for o in objects]
    return orjson.dumps({"f": FORMAT, "o": rows})


def decode_objects(payload: bytes) -> tuple[WorldObject, ...]:
    try:
        doc = orjson.loads(payload)
        if not isinstance(doc, dict) or doc.get("f") != FORMAT:
            raise CodecError(
                f"unknown payload format {doc.get('f') if isinstance(doc, dict) else None!r}"
            )
        out = []
        empty: Any = MappingProxyType({})
        for oid, kind, lo, hi, data in doc["o"]:
            out.append(
                WorldObject(
                    oid,
                    kind,
                    (lo[0], lo[1], lo[2]),
                    (hi[0], hi[1], hi[2]),
                    MappingProxyType(data) if data else empty,
                )
            )
        return tuple(out)
    except CodecError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise CodecError(f"payload does not decode: {e}") from None


def checksum(region: int, version: int, payload: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(region.to_bytes(8, "big", signed=True))
    h.update(version.to_bytes(8, "big", signed=True))
    h.update(payload)
    return h.digest()


def encode_cache_entry(epoch: int, owner: str | None, stored_at: float, payload: bytes) -> bytes:
    """Cache value: a length-prefixed JSON header (lease facts as read) then the payload."""
    head = orjson.dumps({"e": epoch, "w": owner, "t": stored_at})
    return len(head).to_bytes(4, "big") + head + payload


def decode_cache_entry(blob: bytes) -> tuple[int, str | None, float, bytes]:
    try:
        n = int.from_bytes(blob[:4], "big")
        head = orjson.loads(blob[4 : 4 + n])
        epoch, owner, stored_at = head["e"], head["w"], head["t"]
        if not isinstance(epoch, int) or not isinstance(stored_at, (int, float)):
            raise CodecError("bad cache header")
        if owner is not None and not isinstance(owner, str):
            raise CodecError("bad cache header")
        return epoch, owner, float(stored_at), blob[4 + n :]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise CodecError(f"cache entry does not decode: {e}") from None
