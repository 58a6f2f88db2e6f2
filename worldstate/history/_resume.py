"""Resuming an update stream from a cursor: replay from the log, then live, no gap and no
duplicate.

When ``world.updates(interest, since=cursor)`` opens, the stream is registered at once (so
it receives every live delivery from this moment) but holds those back, and the point ``L``
the causal path has delivered up to is noted. A task then reads from the durable log every
event after ``cursor`` and up to ``L`` in the interest, in the log's causal linearisation
(`worldstate.history._events`), and hands them to the stream; then the held live updates
follow. Every live causal delivery comes after ``L`` (the path delivers each event once, in
causal order, and only once it is in the log), so nothing is missed or doubled, and nothing
replayed can depend on anything live: had a live event preceded a replayed one, the path
would have delivered it before ``L``. Live causal events at or before ``cursor`` (a cursor
from a server further ahead) are dropped by the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from worldstate.errors import WorldStateError
from worldstate.history._events import read_events
from worldstate.operations import Operation
from worldstate.store import Store
from worldstate.updates import CausalDelivery, Cursor, UpdateStream

log = logging.getLogger("worldstate.history")


def start_resume(
    stream: UpdateStream,
    *,
    since: Cursor,
    live_from: Cursor,
    store: Store,
    server_id: str,
    op_types: Mapping[str, type[Operation]],
    spawn: Callable[[Coroutine[Any, Any, None], str], object],
) -> None:
    """Put ``stream`` in resume mode and start its replay task with ``spawn`` (the
    world's supervisor, as a job) (module docstring)."""
    stream.resume_after(since)
    regions = None if stream.keys is None else sorted(k.morton for k in stream.keys)

    async def replay() -> None:
        try:
            async for event in read_events(
                store,
                regions=regions,
                since=since,
                until=live_from,
                exclude_origin=server_id,
                op_types=op_types,
            ):
                if stream.failed:
                    return  # closed or overloaded meanwhile: nobody to replay to
                d = event.payload
                if isinstance(d, CausalDelivery) and (d.region is not None or regions is None):
                    await stream.wait_room()
                    stream.put_replayed(d)
        except WorldStateError as e:
            stream.fail(e)
            return
        except Exception as e:  # a bug must end the stream loudly, not hang it
            log.exception("replaying the causal log for an update stream failed")
            stream.fail(WorldStateError(f"replaying the causal log failed: {e}"))
            return
        stream.release()

    stream.task = spawn(replay(), f"ws-resume-{server_id}")  # type: ignore[assignment]


__all__ = ["start_resume"]
