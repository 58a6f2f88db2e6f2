"""One server's shared services: the context, the supervisor, authority, routing, region
views and the update fan-out. Imports only what lies below it (vocabulary, validation,
protocol, store, cache, bus); the paths and the mesh take these, never a `World`."""

from __future__ import annotations

from worldstate.node._authority import Authority
from worldstate.node._context import NodeContext
from worldstate.node._fanout import Fanout
from worldstate.node._routing import Prepared, Router
from worldstate.node._tasks import LoopExited, Supervisor
from worldstate.node._views import NOTICE_TOPIC, RegionViews

__all__ = [
    "NOTICE_TOPIC",
    "Authority",
    "Fanout",
    "LoopExited",
    "NodeContext",
    "Prepared",
    "RegionViews",
    "Router",
    "Supervisor",
]
