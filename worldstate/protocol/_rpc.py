"""Request/reply over the bus: the one helper every caller uses (forwarded strong ops, the
coordinator's commands).

A request carries a random correlation id ``r``; the answer comes back on the requester's
reply topic with the same ``r``. `Rpc.call` publishes and waits for the answer with a
deadline; `Rpc.on_reply` is the reply topic's handler. An answer nobody waits for (late,
duplicated, forged, malformed) is dropped and counted.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson

from worldstate.bus import Bus, Message
from worldstate.errors import WorldClosed

__all__ = ["Rpc", "new_request_id"]


def new_request_id() -> str:
    """A fresh correlation id (32 hex digits)."""
    return uuid.uuid4().hex


class Rpc:
    """The pending requests of one bus client (see the module docs)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.dropped_replies = 0
        self.calls = 0

    async def call(
        self, topic: str, request: dict[str, Any], timeout: float, *, qos: int = 1
    ) -> dict[str, Any]:
        """Publish ``request`` (a JSON object; ``"r"`` is added) on ``topic`` and return the
        answer. Raises `TimeoutError` when none came within ``timeout`` seconds (the request
        may or may not have been acted on), and what the publish raises."""
        req = new_request_id()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        self.calls += 1
        try:
            await self.bus.publish(topic, orjson.dumps({**request, "r": req}), qos=qos)
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(req, None)

    def on_reply(self, msg: Message) -> None:
        try:
            doc = orjson.loads(msg.payload)
            fut = self._pending.get(doc["r"]) if isinstance(doc, dict) else None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            fut = None
        if fut is None or fut.done() or not isinstance(doc, dict):
            self.dropped_replies += 1
            return
        fut.set_result(doc)

    def fail_all(self, why: str) -> None:
        """End every waiting call with `WorldClosed` (the owner is closing)."""
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(WorldClosed(why))
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)
