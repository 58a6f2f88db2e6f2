"""The world's bus keys and revocations, kept in the store (one ``ws_meta`` row).

Every server reads them at start and polls them (``Config.bus_key_refresh``); the operator
changes them with ``worldstate keys rotate|revoke|list``. The row is JSON::

    {"current": 2,
     "keys": {"1": {"k": "<64 hex>", "at": 1700000000.0, "revoked_at": null}, ...},
     "servers": {"gs-7": {"at": 1700000100.0, "reason": "host compromised"}}}

Key material never leaves this module except as `KeySet` values for the signing bus; the
listing (`describe`) carries ids and times only. ``ws_meta`` therefore holds secrets (this
row and the causal key): the read-only inspector role is not granted it
(``deploy/cockroach/roles.sql``).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from worldstate.errors import ValidationError
from worldstate.protocol._envelope import KeySet
from worldstate.store import schema as s

if TYPE_CHECKING:
    from worldstate.store import Store

ROW = "bus_keyring"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: int
    created_at: float
    revoked_at: float | None
    current: bool
    active_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Keyring:
    """What ``keys list`` shows: key ids and states, revoked servers (no key material)."""

    keys: tuple[KeyInfo, ...]
    revoked_servers: dict[str, tuple[float, str]]


def _fresh(now: float) -> dict[str, Any]:
    return {
        "current": 1,
        "keys": {"1": {"k": secrets.token_hex(32), "at": now, "revoked_at": None}},
        "servers": {},
    }


async def _read(conn: AsyncConnection) -> dict[str, Any] | None:
    m = s.meta
    raw = (await conn.execute(select(m.c.value).where(m.c.name == ROW))).scalar_one_or_none()
    if raw is None:
        return None
    doc = orjson.loads(raw)
    assert isinstance(doc, dict)
    return doc


async def _write(conn: AsyncConnection, doc: dict[str, Any]) -> None:
    m = s.meta
    await conn.execute(update(m).where(m.c.name == ROW).values(value=orjson.dumps(doc).decode()))


async def ensure(conn: AsyncConnection, now: float) -> dict[str, Any]:
    """The keyring row, created (one random key, id 1) by the first server that asks."""
    ins = s.insert_for(conn.dialect.name, s.meta).values(
        name=ROW, value=orjson.dumps(_fresh(now)).decode()
    )
    await conn.execute(ins.on_conflict_do_nothing(index_elements=["name"]))
    doc = await _read(conn)
    assert doc is not None
    return doc


def keyset(doc: dict[str, Any]) -> KeySet:
    live = {int(k): v for k, v in doc["keys"].items() if not v["revoked_at"]}
    keys = {k: bytes.fromhex(v["k"]) for k, v in live.items()}
    revoked = frozenset(int(k) for k, v in doc["keys"].items() if v["revoked_at"])
    activation = {k: float(v.get("active_at", 0.0)) for k, v in live.items()}
    return KeySet(int(doc["current"]), keys, revoked, frozenset(doc["servers"]), activation)


async def load(conn: AsyncConnection, now: float) -> KeySet:
    """The keys a server signs and verifies with (creating them if the world has none)."""
    return keyset(await ensure(conn, now))


def describe(doc: dict[str, Any] | None) -> Keyring:
    if doc is None:
        return Keyring((), {})
    cur = int(doc["current"])
    infos = tuple(
        KeyInfo(int(k), float(v["at"]), v["revoked_at"], int(k) == cur, v.get("active_at", 0.0))
        for k, v in sorted(doc["keys"].items(), key=lambda kv: int(kv[0]))
    )
    servers = {sid: (float(v["at"]), str(v.get("reason", ""))) for sid, v in doc["servers"].items()}
    return Keyring(infos, servers)


async def read(conn: AsyncConnection) -> Keyring:
    """The listing, read-only (an empty one if no server ever started)."""
    return describe(await _read(conn))


DEFAULT_GRACE = 30.0
"""Seconds between a rotation and the moment the new key starts signing: longer than any
server's ``Config.bus_key_refresh``, so every server accepts the new key before anyone
signs with it (nothing is dropped during a routine rotation)."""


async def rotate(
    conn: AsyncConnection,
    now: float,
    *,
    retire_previous: bool = False,
    grace: float = DEFAULT_GRACE,
) -> int:
    """Add a new key: accepted at once, signing from ``now + grace``; the previous ones stay
    accepted. ``retire_previous`` (after a compromise): the new key signs at once and every
    previous key is revoked (servers that have not re-read yet are cut off until they do).
    Returns the new key id."""
    doc = await ensure(conn, now)
    kid = max(int(k) for k in doc["keys"]) + 1
    if retire_previous:
        for v in doc["keys"].values():
            v["revoked_at"] = v["revoked_at"] or now
    doc["keys"][str(kid)] = {
        "k": secrets.token_hex(32),
        "at": now,
        "revoked_at": None,
        "active_at": now if retire_previous else now + grace,
    }
    doc["current"] = kid
    await _write(conn, doc)
    return kid


async def revoke_key(conn: AsyncConnection, key_id: int, now: float) -> None:
    doc = await ensure(conn, now)
    entry = doc["keys"].get(str(key_id))
    if entry is None:
        raise ValidationError(f"no bus key {key_id}; see `worldstate keys list`")
    if int(doc["current"]) == key_id:
        raise ValidationError(
            f"key {key_id} is the current key: rotate first (`worldstate keys rotate`)"
        )
    if float(doc["keys"][str(doc["current"])].get("active_at", 0.0)) > now:
        raise ValidationError(
            f"the current key {doc['current']} does not sign yet (it activates "
            f"{doc['keys'][str(doc['current'])]['active_at'] - now:.0f} s from now); revoke "
            f"key {key_id} after that, or rotate with --retire-previous"
        )
    entry["revoked_at"] = entry["revoked_at"] or now
    await _write(conn, doc)


async def revoke_server(conn: AsyncConnection, server_id: str, now: float, reason: str) -> None:
    """Refuse every message signed in ``server_id``'s name from now on (permanent: the
    machine must rejoin under a new id)."""
    doc = await ensure(conn, now)
    doc["servers"].setdefault(server_id, {"at": now, "reason": reason[:200]})
    await _write(conn, doc)


__all__ = [
    "DEFAULT_GRACE",
    "ROW",
    "KeyInfo",
    "Keyring",
    "describe",
    "ensure",
    "keyset",
    "load",
    "loader",
    "read",
    "revoke_key",
    "revoke_server",
    "rotate",
]


def loader(store: Store, clock: Callable[[], float]) -> Callable[[], Awaitable[KeySet]]:
    """A ``load_keys`` callable for `worldstate.bus.SignedBus` reading through ``store``
    (a `worldstate.store.Store`) with ``clock``."""

    async def load_keys() -> KeySet:
        ks: KeySet = await store.run(lambda c: load(c, clock()), "read the bus keys")
        return ks

    return load_keys
