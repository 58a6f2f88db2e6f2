"""The envelope and its checks, as pure functions: each field covered by the MAC, replay and
freshness rules, wills, revocation."""

from __future__ import annotations

import pytest

from worldstate.protocol._envelope import (
    FLAG_WILL,
    HEADER_BYTES,
    EnvelopeError,
    KeyRing,
    KeySet,
    ReplayGuard,
    Signer,
    check_mac,
    derive_server_key,
    parse,
    seal,
)

K1, K2 = b"\x01" * 32, b"\x02" * 32
NOW = 1_800_000_000.0


def ring(**kw: object) -> KeyRing:
    return KeyRing(KeySet(1, {1: K1, 2: K2}, **kw))  # type: ignore[arg-type]


def make(
    body: bytes = b"hello",
    *,
    topic: str = "ops/gs-2",
    sender: str = "gs-1",
    kid: int = 1,
    seq: int = 1,
    inc: int = 7,
    conn: int = 1,
    at: float = NOW,
    flags: int = 0,
    key: bytes | None = None,
) -> bytes:
    signer = Signer(derive_server_key(key or {1: K1, 2: K2}[kid], sender))
    return seal(
        signer,
        topic,
        body,
        key_id=kid,
        sender=sender,
        incarnation=inc,
        seq=seq,
        conn=conn,
        sent_at=at,
        flags=flags,
    )


def verify(payload: bytes, topic: str = "ops/gs-2", r: KeyRing | None = None) -> bytes:
    env = parse(payload)
    check_mac((r or ring()).signer(env.key_id, env.sender), topic, env)
    return bytes(env.body)


def test_a_sealed_message_opens_with_the_same_keys() -> None:
    assert verify(make(b"x" * 1000)) == b"x" * 1000
    assert verify(make(kid=2)) == b"hello"


@pytest.mark.parametrize("offset", range(0, HEADER_BYTES + 4 + 16 + 5))
def test_every_byte_is_covered(offset: int) -> None:
    """Flip any byte (header, sender, MAC or body): the message no longer verifies."""
    good = bytearray(make())
    good[offset] ^= 0x40
    with pytest.raises(EnvelopeError) as e:
        verify(bytes(good))
    assert e.value.reason in ("malformed", "forged", "unknown_key")


@pytest.mark.parametrize(
    ("payload", "topic", "reason"),
    [
        (b"", "ops/gs-2", "malformed"),
        (b"{}", "ops/gs-2", "malformed"),
        (make()[:30], "ops/gs-2", "malformed"),
        (make()[:-1], "ops/gs-2", "forged"),  # truncated body
        (make(), "ops/gs-3", "forged"),  # replayed on another topic
        (make(key=b"\x09" * 32), "ops/gs-2", "forged"),  # another world's key
        (make(kid=1, key=K2), "ops/gs-2", "forged"),  # key id lies
    ],
)
def test_bad_messages_are_refused_with_a_reason(payload: bytes, topic: str, reason: str) -> None:
    with pytest.raises(EnvelopeError) as e:
        verify(payload, topic)
    assert e.value.reason == reason


def test_unknown_and_revoked_keys_and_servers() -> None:
    r = KeyRing(KeySet(1, {1: K1}, frozenset({2}), frozenset({"gs-9"})))
    with pytest.raises(EnvelopeError, match="revoked"):
        verify(make(kid=2), r=r)
    with pytest.raises(EnvelopeError, match="revoked"):
        verify(make(sender="gs-9"), r=r)
    with pytest.raises(EnvelopeError, match="unknown_key"):
        verify(make(kid=2), r=KeyRing(KeySet(1, {1: K1})))
    # a revocation reaches signers already cached
    cached = ring()
    verify(make(sender="gs-9"), r=cached)
    cached.replace(KeySet(1, {1: K1, 2: K2}, revoked_servers=frozenset({"gs-9"})))
    with pytest.raises(EnvelopeError, match="revoked"):
        verify(make(sender="gs-9"), r=cached)


def guard() -> ReplayGuard:
    return ReplayGuard(max_age=30.0, skew=2.0, started_at=NOW - 100)


def check(g: ReplayGuard, payload: bytes, *, now: float = NOW, retained: bool = False) -> None:
    g.check(parse(payload), now=now, retained=retained, retained_ok=retained)


def test_each_message_is_accepted_once_in_any_order() -> None:
    g = guard()
    for seq in (1, 3, 2, 10, 5):
        check(g, make(seq=seq))
    for seq in (1, 2, 3, 5, 10):
        with pytest.raises(EnvelopeError, match="replayed"):
            check(g, make(seq=seq))
    check(g, make(seq=10 + 2000))
    with pytest.raises(EnvelopeError, match="replayed"):
        check(g, make(seq=11))  # fell out of the window: refused, never accepted twice


def test_a_restart_is_a_new_window_and_old_incarnations_are_bounded() -> None:
    g = guard()
    check(g, make(inc=7, seq=5))
    check(g, make(inc=8, seq=1))  # a restart; the predecessor may still have some in flight
    check(g, make(inc=7, seq=6))
    with pytest.raises(EnvelopeError, match="replayed"):
        check(g, make(inc=7, seq=6))
    for inc in (9, 10, 11):  # four more: the least recently heard (8) is forgotten...
        check(g, make(inc=inc, seq=1))
        check(g, make(inc=7, seq=6 + inc))  # ...never the live one, heard all along
    with pytest.raises(EnvelopeError, match="replayed"):
        check(g, make(inc=7, seq=6))


def test_freshness_window() -> None:
    g = guard()
    with pytest.raises(EnvelopeError, match="stale"):
        check(g, make(at=NOW - 31))
    with pytest.raises(EnvelopeError, match="stale"):
        check(g, make(at=NOW + 3))
    late_start = ReplayGuard(max_age=30.0, skew=2.0, started_at=NOW)
    with pytest.raises(EnvelopeError, match="stale"):  # published before we subscribed
        check(late_start, make(at=NOW - 5))
    check(g, make(at=NOW - 29))


def test_retained_copies_only_on_retained_topics() -> None:
    g = guard()
    old = make(at=NOW - 3600)
    check(g, old, retained=True)  # state replayed on subscription may be old
    with pytest.raises(EnvelopeError, match="stale"):
        g.check(parse(old), now=NOW, retained=True, retained_ok=False)


def test_a_will_is_accepted_once_per_connection() -> None:
    g = guard()
    check(g, make(seq=1, conn=1))
    will = make(seq=2, conn=1, at=NOW - 3600, flags=FLAG_WILL)  # signed when connecting
    check(g, will)
    with pytest.raises(EnvelopeError, match="replayed"):
        check(g, will)
    check(g, make(seq=3, conn=2))  # reconnected
    with pytest.raises(EnvelopeError, match="replayed"):
        check(g, will)
    check(g, make(seq=4, conn=2, flags=FLAG_WILL))


def test_a_new_key_signs_only_from_its_activation() -> None:
    ks = KeySet(2, {1: K1, 2: K2}, activation={1: 0.0, 2: NOW + 30})
    assert ks.signing_key(NOW) == 1
    assert ks.signing_key(NOW + 30) == 2
    assert KeySet(2, {2: K2}, activation={2: NOW + 30}).signing_key(NOW) == 2  # nothing else
