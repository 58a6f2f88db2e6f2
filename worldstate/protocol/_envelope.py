"""The signed envelope every bus message travels in, and the rules that check it. Pure: no I/O.

Wire layout (network byte order)::

    magic "WS" | version u8 | flags u8 | key id u32 | incarnation u64 | seq u64 | conn u32
    | sent_at f64 | epoch i64 | sender length u8 | sender (UTF-8) | mac (16 bytes) | body

- ``key id`` names the world bus key (``worldstate keys list``) the MAC was made with.
- ``incarnation`` is the sender's bus start time in microseconds (a restart is newer), ``seq``
  counts its messages from 1 within that incarnation, ``conn`` counts its connections (it
  lets a last will be told apart from a replay of an older will).
- ``sent_at`` is the sender's wall clock (seconds since the Unix epoch) when it signed.
- ``epoch`` is the coordinator lease epoch the sender acts under (-1: none).
- ``mac`` is ``Poly1305(HMAC-SHA256(server_key, topic NUL header), body)`` where ``header``
  is every byte before the MAC (so the one-time Poly1305 key is unique per message and binds
  the topic and every header field) and ``server_key = HMAC-SHA256(world_key[key id],
  "worldstate bus v1" NUL sender)`` (`derive_server_key`): the key a server signs with is
  named after it, so a revoked server id is refused whatever key id it uses.

Flags: ``WILL`` (bit 0) marks a last will, signed when the connection is made and published
by the broker when it dies, so it is exempt from the freshness window (see `ReplayGuard`).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.poly1305 import Poly1305

MAGIC = b"WS"
VERSION = 1
FLAG_WILL = 0x01
MAC_BYTES = 16
_HEAD = struct.Struct("!2sBBIQQIdqB")
HEADER_BYTES = _HEAD.size
MAX_SENDER_BYTES = 255
OVERHEAD = HEADER_BYTES + MAX_SENDER_BYTES + MAC_BYTES
"""The most bytes an envelope adds to a body."""
NO_EPOCH = -1
_DERIVE_LABEL = b"worldstate bus v1\0"

DROP_REASONS = (
    "malformed",
    "oversized",
    "unknown_key",
    "revoked",
    "forged",
    "replayed",
    "stale",
)
"""Why a received message was dropped (the keys of the drop counters):

- ``malformed``: not an envelope (too short, bad magic or version, bad sender).
- ``oversized``: the body is larger than the bus accepts.
- ``unknown_key``: signed with a key id this server does not know (or no longer accepts).
- ``revoked``: the sender's id or the key id was revoked (``worldstate keys revoke``).
- ``forged``: the MAC does not match, or the sender is not the one the topic names.
- ``replayed``: a sequence number already seen, an older incarnation, an old will.
- ``stale``: sent outside the freshness window, before this server subscribed, or a
  retained copy on a topic that is never retained.
"""


class EnvelopeError(Exception):
    """A message that fails a check; ``reason`` is one of `DROP_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in DROP_REASONS, reason
        self.reason = reason
        super().__init__(f"bus message dropped ({reason}): {detail}")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed (not yet verified) envelope. ``signed`` is the header, ``mac`` its MAC."""

    flags: int
    key_id: int
    incarnation: int
    seq: int
    conn: int
    sent_at: float
    epoch: int
    sender: str
    mac: bytes
    header: bytes
    body: memoryview

    @property
    def will(self) -> bool:
        return bool(self.flags & FLAG_WILL)


def derive_server_key(world_key: bytes, sender: str) -> bytes:
    """The key ``sender`` signs with: HMAC-SHA256 of the world key over a label and the id."""
    return hmac.new(world_key, _DERIVE_LABEL + sender.encode(), hashlib.sha256).digest()


class Signer:
    """The MAC of one (key, sender): a one-time Poly1305 key derived per message with
    HMAC-SHA256 over the topic and the header (unique: it holds the sender's incarnation and
    sequence number), then Poly1305 over the body. Poly1305 runs several times faster than
    HMAC-SHA256 over large eventual batches; the prepared HMAC state is copied per message."""

    __slots__ = ("_base",)

    def __init__(self, server_key: bytes) -> None:
        self._base = hmac.new(server_key, digestmod=hashlib.sha256)

    def mac(self, topic: str, header: bytes, body: bytes | memoryview) -> bytes:
        h = self._base.copy()
        h.update(topic.encode())
        h.update(b"\0")
        h.update(header)
        return Poly1305.generate_tag(h.digest(), body)


def seal(
    signer: Signer,
    topic: str,
    body: bytes,
    *,
    key_id: int,
    sender: str,
    incarnation: int,
    seq: int,
    conn: int,
    sent_at: float,
    epoch: int = NO_EPOCH,
    flags: int = 0,
) -> bytes:
    """The envelope carrying ``body`` on ``topic`` (relative to the bus prefix)."""
    name = sender.encode()
    if len(name) > MAX_SENDER_BYTES:
        raise ValueError(f"sender id is {len(name)} bytes; the envelope limit is 255")
    header = (
        _HEAD.pack(MAGIC, VERSION, flags, key_id, incarnation, seq, conn, sent_at, epoch, len(name))
        + name
    )
    return b"".join((header, signer.mac(topic, header, body), body))


def parse(payload: bytes) -> Envelope:
    """Split an envelope into its fields; `EnvelopeError` (``malformed``) if it is not one."""
    if len(payload) < HEADER_BYTES + MAC_BYTES:
        raise EnvelopeError("malformed", f"{len(payload)} bytes is too short for an envelope")
    magic, version, flags, kid, inc, seq, conn, sent_at, epoch, n = _HEAD.unpack_from(payload)
    if magic != MAGIC or version != VERSION:
        raise EnvelopeError("malformed", "not a worldstate envelope (bad magic or version)")
    end = HEADER_BYTES + n
    if n == 0 or len(payload) < end + MAC_BYTES:
        raise EnvelopeError("malformed", "truncated sender or MAC")
    try:
        sender = payload[HEADER_BYTES:end].decode()
    except UnicodeDecodeError:
        raise EnvelopeError("malformed", "sender id is not UTF-8") from None
    if sent_at != sent_at or sent_at in (float("inf"), float("-inf")):
        raise EnvelopeError("malformed", "sent_at is not a finite time")
    view = memoryview(payload)
    return Envelope(
        flags,
        kid,
        inc,
        seq,
        conn,
        sent_at,
        epoch,
        sender,
        payload[end : end + MAC_BYTES],
        payload[:end],
        view[end + MAC_BYTES :],
    )


def check_mac(signer: Signer, topic: str, env: Envelope) -> None:
    """Raise `EnvelopeError` (``forged``) unless ``env`` was signed for ``topic``."""
    if not hmac.compare_digest(signer.mac(topic, env.header, env.body), env.mac):
        raise EnvelopeError("forged", f"bad MAC for sender {env.sender!r} on {topic!r}")


# -- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeySet:
    """What a server knows of the world's bus keys (read from the store).

    ``keys`` are the accepted world keys by id (revoked ones are absent), ``current`` the
    newest; ``activation`` says from when (wall clock) each key signs (absent: always): a
    rotation makes the new key accepted everywhere first and the signing key only once every
    server has had time to read it. ``revoked_servers`` are the server ids whose messages
    are refused."""

    current: int
    keys: Mapping[int, bytes]
    revoked_keys: frozenset[int] = frozenset()
    revoked_servers: frozenset[str] = frozenset()
    activation: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError(f"current key {self.current} is not among the accepted keys")

    def signing_key(self, now: float) -> int:
        """The newest accepted key that is active at ``now`` (the oldest if none is yet)."""
        active = [k for k in self.keys if self.activation.get(k, 0.0) <= now]
        return max(active) if active else min(self.keys)


@dataclass(slots=True)
class KeyRing:
    """The signers derived from a `KeySet`, cached per (key id, sender)."""

    keys: KeySet
    _signers: dict[tuple[int, str], Signer] = field(default_factory=dict)

    def replace(self, keys: KeySet) -> None:
        if keys != self.keys:
            self.keys = keys
            self._signers.clear()

    def signer(self, key_id: int, sender: str) -> Signer:
        """The signer for ``sender`` under ``key_id``; `EnvelopeError` if it is refused."""
        s = self._signers.get((key_id, sender))
        if s is not None:
            return s
        ks = self.keys
        if sender in ks.revoked_servers or key_id in ks.revoked_keys:
            raise EnvelopeError("revoked", f"sender {sender!r} or key {key_id} is revoked")
        world_key = ks.keys.get(key_id)
        if world_key is None:
            raise EnvelopeError("unknown_key", f"key id {key_id} is not known here")
        s = Signer(derive_server_key(world_key, sender))
        if len(self._signers) > 4096:
            self._signers.clear()
        self._signers[(key_id, sender)] = s
        return s


# -- replay ---------------------------------------------------------------------------------

WINDOW = 1024
"""Sequence numbers below the highest seen by less than this are checked one by one (QoS 1
retries may arrive out of order); older ones are refused."""


INCARNATIONS = 4
"""Incarnations per sender tracked at once (a restart's predecessor may still have messages
in flight)."""


@dataclass(slots=True)
class _Window:
    highest: int = 0
    seen: int = 0
    """Bit i set: ``highest - i`` was seen."""
    conn: int = 0
    """The newest connection number seen; a will of an older one is a replay."""


@dataclass(slots=True)
class ReplayGuard:
    """Freshness and replay rules for one receiver.

    A live (not retained) message is accepted once: its (sender, incarnation, seq) must not
    have been seen, its ``sent_at`` must lie within ``max_age`` seconds before now (and no
    more than ``skew`` after), and not before this receiver started listening (less
    ``skew``): a broker never delivers to a new subscriber what was published before it
    subscribed, so anything older is a replay. The `INCARNATIONS` most recently heard
    incarnations of each sender are tracked, each with its own window (only a key holder can
    make a sender have more; the live one, heard often, is never the one forgotten). A
    retained copy
    (replayed by the broker on subscription) is state that may be old by design; it is
    accepted only on the topics that are retained at all, without the freshness or sequence
    checks. A last will is accepted once per connection.
    """

    max_age: float
    skew: float
    started_at: float
    peers: dict[str, dict[int, _Window]] = field(default_factory=dict)

    def _window(self, env: Envelope) -> _Window:
        incs = self.peers.get(env.sender)
        if incs is None:
            if len(self.peers) > 100_000:  # senders hold a key: this only guards memory
                self.peers.clear()
            incs = self.peers[env.sender] = {}
        w = incs.pop(env.incarnation, None)
        if w is None:
            if len(incs) >= INCARNATIONS:
                del incs[next(iter(incs))]  # the least recently heard
            w = _Window()
        incs[env.incarnation] = w  # most recently heard last
        return w

    def check(self, env: Envelope, *, now: float, retained: bool, retained_ok: bool) -> None:
        """Raise `EnvelopeError` if ``env`` must be dropped, else record it."""
        if retained:
            if not retained_ok:
                raise EnvelopeError("stale", "a retained message on a topic that is never retained")
            return
        if env.will:
            w = self._window(env)
            if env.conn < w.conn:
                raise EnvelopeError("replayed", f"{env.sender!r}: the will of an old connection")
            w.conn = env.conn + 1  # one will per connection
            return
        if env.sent_at > now + self.skew:
            raise EnvelopeError("stale", f"sent {env.sent_at - now:.1f} s in the future")
        if env.sent_at < now - self.max_age or env.sent_at < self.started_at - self.skew:
            raise EnvelopeError("stale", f"sent {now - env.sent_at:.1f} s ago")
        w = self._window(env)
        seq = env.seq
        if seq > w.highest:
            shift = seq - w.highest
            w.seen = ((w.seen << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            w.highest = seq
        else:
            back = w.highest - seq
            if back >= WINDOW or w.seen >> back & 1:
                raise EnvelopeError("replayed", f"{env.sender!r}: seq {seq} already seen")
            w.seen |= 1 << back
        if env.conn > w.conn:
            w.conn = env.conn


__all__ = [
    "DROP_REASONS",
    "FLAG_WILL",
    "HEADER_BYTES",
    "MAC_BYTES",
    "NO_EPOCH",
    "OVERHEAD",
    "Envelope",
    "EnvelopeError",
    "KeyRing",
    "KeySet",
    "ReplayGuard",
    "Signer",
    "check_mac",
    "derive_server_key",
    "parse",
    "seal",
]
