"""The cheaper causal paths give what the general ones give: the per-run body encoder,
the constructor-free rebuild of a built-in op, the shared deadline timer of causal submits
(and its `SubmitTimeout`), and each waiting caller's own future."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

import worldstate
from consistency import VectorClock
from regions import RegionKey
from tests.fix_services import Backend
from worldstate import (
    ChangeInventory,
    ClaimResource,
    CosmeticEffect,
    EmitEvent,
    ModifyTerrain,
    MoveCreature,
    PickUpItem,
    PlaceStructure,
    SetAutomation,
    SetPowerGrid,
    SubmitTimeout,
    TransferCreature,
    TransferItems,
    ValidationError,
)
from worldstate.node._deadlines import Deadlines
from worldstate.operations import BUILTIN_OPERATIONS, Operation
from worldstate.protocol import _causal as wire
from worldstate.protocol._ops import op_from_dict, op_to_dict
from worldstate.results import Accepted

from .fix_world import open_world

P = (5.0, 6.0, 7.0)
KEY = RegionKey(0, 0, 0)


def one_of_each() -> list[Operation]:
    stamp: dict[str, Any] = {"server_id": "gs-9", "hlc": 123456, "priority": 3}
    ops: list[Operation] = [
        PlaceStructure(
            structure_id="s1",
            kind="wall",
            lo=(1, 2, 3),
            hi=(4, 5, 6),
            owner="p",
            data={"hp": 3, "tags": ["a", "b"]},
            **stamp,
        ),
        ClaimResource(resource_id="r", claimant="p", position=P, amount=2.5, **stamp),
        ModifyTerrain(center=P, radius=3.0, delta=-1.5, **stamp),
        ChangeInventory(inventory_id="inv", item="gold", delta=-4, **stamp),
        TransferItems(from_inventory="a", to_inventory="b", item="gold", quantity=2, **stamp),
        PickUpItem(item_id="i", picker="p", position=P, **stamp),
        EmitEvent(position=P, stream="chat", payload={"text": "hé", "n": [1, 2.5, None]}, **stamp),
        TransferCreature(creature_id=7, to_server="gs-2", position=P, **stamp),
        TransferCreature(creature_id=8, to_server="gs-2", **stamp),
        MoveCreature(creature_id=9, position=P, velocity=(1.0, 0.0, -2.0), **stamp),
        CosmeticEffect(entity_id=1, state={"glow": True}, position=P, **stamp),
        SetAutomation(entity_id=2, state={"on": 1}, region=KEY, **stamp),
        SetPowerGrid(entity_id=3, position=P, **stamp),
    ]
    assert {type(o) for o in ops} == set(BUILTIN_OPERATIONS)
    return ops


@dataclass(frozen=True, kw_only=True)
class Shout(EmitEvent):
    """A game's own causal type (not built in: the general paths)."""

    volume: int = 3


def test_body_encoder_writes_what_encode_body_writes() -> None:
    base = VectorClock({"gs-1": 40, "gs-3": 7, "gs-9": 11})
    for origin in ("gs-9", "gs-0", "gs-5"):
        encode = wire.body_encoder(origin, base)
        for seq, op in enumerate([*one_of_each(), Shout(position=P, stream="s")], start=1):
            region = KEY if seq % 2 else None
            want = wire.encode_body(seq, base.with_counter(origin, seq - 1), region, op)
            got = encode(seq, op, region)
            assert orjson.loads(got) == orjson.loads(want)
            if origin == "gs-9" and seq > 1:
                assert got == want  # the origin already in the clock: the same bytes


def test_rebuilt_builtin_ops_equal_their_constructor() -> None:
    types = {t.__name__: t for t in (*BUILTIN_OPERATIONS, Shout)}
    for op in [*one_of_each(), Shout(position=P, stream="s", volume=9)]:
        record = orjson.loads(orjson.dumps(op_to_dict(op)))
        again = op_from_dict(record, types)
        assert again == op and type(again) is type(op)
        assert list(again.__dict__) == list(op.__dict__)  # the field order too


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("op_id", "not-a-uuid"),
        ("hlc", -1),
        ("priority", 2**40),
        ("position", [1.0, 2.0]),
        ("stream", ""),
        ("payload", [1, 2]),
    ],
)
def test_rebuilding_still_checks_every_field(field: str, value: object) -> None:
    op = EmitEvent(position=P, stream="chat", payload={"a": 1}, server_id="gs-1")
    record = orjson.loads(orjson.dumps(op_to_dict(op)))
    record["f"][field] = value
    with pytest.raises(ValidationError):
        op_from_dict(record, {"EmitEvent": EmitEvent})


async def test_deadlines_fail_only_what_is_still_waiting() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(grain=0.01)
    late: asyncio.Future[int] = loop.create_future()
    done: asyncio.Future[int] = loop.create_future()
    later: asyncio.Future[int] = loop.create_future()
    d.add(late, 0.02)
    d.add(done, 0.02)
    d.add(later, 30.0)
    done.set_result(1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(late, 5)  # the outer bound only guards the test
    assert done.result() == 1
    assert not later.done() and len(d) == 1
    d.close()
    assert len(d) == 0
    later.cancel()


async def test_deadlines_share_one_timer() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines(grain=0.05)
    futs: list[asyncio.Future[None]] = [loop.create_future() for _ in range(500)]
    for i, f in enumerate(futs):
        d.add(f, 0.01 + i * 0.0001)  # 500 distinct deadlines within 50 ms
    fired = 0
    real = d._fire

    def counting(lp: asyncio.AbstractEventLoop) -> None:
        nonlocal fired
        fired += 1
        real(lp)

    d._fire = counting  # type: ignore[method-assign,assignment]
    timer = d._timer
    assert timer is not None
    timer.cancel()
    d._timer = loop.call_at(timer.when(), d._fire, loop)
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert all(isinstance(r, TimeoutError) for r in results)
    assert fired <= 3, fired  # not one callback per deadline
    d.close()


@contextlib.asynccontextmanager
async def stalled_appends(world: worldstate.World) -> Any:
    """Make the world's causal appends wait until released."""
    gate = asyncio.Event()
    real = world.store.run

    async def run(body: Callable[..., Any], what: str, **kw: Any) -> Any:
        if what.startswith("append"):
            await gate.wait()
        return await real(body, what, **kw)

    world.store.run = run  # type: ignore[method-assign]
    try:
        yield gate
    finally:
        gate.set()
        world.store.run = real  # type: ignore[method-assign]


async def test_causal_submit_times_out_and_the_op_still_lands(backend: Backend) -> None:
    async with open_world(backend, "gs-1") as w:
        op = EmitEvent(position=P, stream="chat", payload={"n": 1})
        async with stalled_appends(w) as gate:
            with pytest.raises(SubmitTimeout) as info:
                await w.submit(op, timeout=0.2)
            assert info.value.may_have_applied
            gate.set()
            # the op was queued and is appended all the same; resubmitting learns that
            assert await asyncio.wait_for(w.submit(op), 30) == Accepted(op.op_id)
        assert w.causal.stats()["appended"] == 1


async def test_a_caller_that_gives_up_does_not_cancel_the_others(backend: Backend) -> None:
    async with open_world(backend, "gs-1") as w:
        op = EmitEvent(position=P, stream="chat", payload={"n": 2})
        async with stalled_appends(w) as gate:
            first = asyncio.create_task(w.submit(op))
            second = asyncio.create_task(w.submit(op))
            await asyncio.sleep(0.1)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            gate.set()
            assert await asyncio.wait_for(second, 30) == Accepted(op.op_id)
        assert first.cancelled()
        assert w.causal.stats()["appended"] == 1
        assert not w.causal._inflight  # nothing left waiting


def test_op_ids_are_uuids() -> None:
    # guards the rebuild's op_id handling: a UUID object, not the text
    op = EmitEvent(position=P, stream="chat", server_id="gs-1")
    again = op_from_dict(orjson.loads(orjson.dumps(op_to_dict(op))), {"EmitEvent": EmitEvent})
    assert isinstance(again.op_id, uuid.UUID) and again.op_id == op.op_id
