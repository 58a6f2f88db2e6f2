"""The eventual class: local writes, batched per region per tick, LWW by HLC."""

from __future__ import annotations

from worldstate.eventual._path import EventualPath

__all__ = ["EventualPath"]
