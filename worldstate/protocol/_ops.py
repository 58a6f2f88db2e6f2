"""Operations as bytes on the bus (strong ops forwarded to a region's owner), validated on
the way in exactly as a local `submit` validates them."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from regions import RegionKey
from worldstate.errors import ValidationError
from worldstate.operations import BUILTIN_OPERATIONS, Operation

_AS_IS = frozenset({str, int, float, bool, type(None)})


def _plain(v: Any) -> Any:
    t = type(v)
    if t in _AS_IS:
        return v
    if t is tuple:
        return list(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, RegionKey):
        return {"__region__": [v.ix, v.iy, v.iz]}
    if isinstance(v, Mapping):
        return dict(v)
    if isinstance(v, tuple):
        return list(v)
    return v


_FIELDS: dict[type[Operation], tuple[str, ...]] = {}
_DIGESTED: dict[type[Operation], tuple[str, ...]] = {}


def _field_names(cls: type[Operation]) -> tuple[str, ...]:
    got = _FIELDS.get(cls)
    if got is None:
        got = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return got


def op_to_dict(op: Operation) -> dict[str, Any]:
    return {
        "t": type(op).__name__,
        "f": {n: _plain(getattr(op, n)) for n in _field_names(type(op))},
    }


_INIT_NAMES: dict[type[Operation], frozenset[str]] = {}
_PLAIN_OPS = frozenset(BUILTIN_OPERATIONS)
"""Built-in types: plain frozen dataclasses (no slots, every field an init field, a
generated ``__init__``), which `op_from_dict` may fill without calling the constructor."""


def op_from_dict(doc: object, types: Mapping[str, type[Operation]]) -> Operation:
    """Rebuild an operation of a registered type; anything malformed is `ValidationError`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("t"), str):
        raise ValidationError("operation record must be an object with a type name 't'")
    cls = types.get(doc["t"])
    if cls is None:
        raise ValidationError(f"unknown operation type {doc['t']!r:.60}")
    fields = doc.get("f")
    if not isinstance(fields, dict):
        raise ValidationError("operation record has no field object 'f'")
    names = _INIT_NAMES.get(cls)
    if names is None:
        names = _INIT_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = fields.keys() - names
    if unknown:
        raise ValidationError(f"unknown fields for {cls.__name__}: {sorted(unknown)[:5]}")
    kwargs: dict[str, Any] = {}
    for k, v in fields.items():
        t = type(v)
        if t is str or t is int or t is float or v is None:
            pass  # the common case: taken as it is (the operation checks its fields)
        elif t is list:
            v = tuple(v)
        elif isinstance(v, dict) and len(v) == 1 and "__region__" in v:
            r = v["__region__"]
            if not (isinstance(r, list) and len(r) == 3 and all(type(x) is int for x in r)):
                raise ValidationError("bad region key in operation record")
            try:
                v = RegionKey(*r)
            except ValueError as e:
                raise ValidationError(str(e)) from None
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    if cls in _PLAIN_OPS and len(kwargs) == len(names):
        # every field present, in a built-in type: what its generated __init__ does (set
        # each field, then __post_init__, which checks and normalises them), without the
        # keyword-argument call and the frozen per-field setattr; in declaration order,
        # as __init__ would leave __dict__
        op = object.__new__(cls)
        op.__dict__.update({n: kwargs[n] for n in _field_names(cls)})
        op.__post_init__()
        return op
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValidationError(f"bad {cls.__name__} record: {e}") from None


_NOT_DIGESTED = frozenset({"op_id", "server_id", "hlc"})
DIGEST_BYTES = 16


def _digested_names(cls: type[Operation]) -> tuple[str, ...]:
    got = _DIGESTED.get(cls)
    if got is None:
        got = _DIGESTED[cls] = tuple(n for n in _field_names(cls) if n not in _NOT_DIGESTED)
    return got


def op_digest(op: Operation) -> bytes:
    """A stable digest (16 bytes, BLAKE2b) of what an operation asks for: its type and every
    field except the ``op_id`` it is filed under and the ``server_id`` and ``hlc`` each submit
    stamps anew. The same op resubmitted (from any server, at any time) has the same digest;
    an op that reuses an ``op_id`` for different fields has another. Independent of dict
    order and of the process (no ``hash()``). ``op_digest(op).hex()`` is the text form the
    strong commit records with an outcome."""
    cls = type(op)
    body = orjson.dumps(
        [cls.__name__, {n: _plain(getattr(op, n)) for n in _digested_names(cls)}],
        option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY,
        default=_plain,
    )
    return hashlib.blake2b(body, digest_size=DIGEST_BYTES, person=b"ws-op-digest").digest()


def encode_op(op: Operation) -> bytes:
    return orjson.dumps(op_to_dict(op))


def decode_op(payload: bytes, types: Mapping[str, type[Operation]]) -> Operation:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise ValidationError(f"operation record is not JSON: {e}") from None
    return op_from_dict(doc, types)
