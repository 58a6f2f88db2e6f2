"""The strong class: one writer per region, group commit, fenced and idempotent."""

from __future__ import annotations

from worldstate.strong._path import RegionPipeline, StrongPath, to_result

__all__ = ["RegionPipeline", "StrongPath", "to_result"]
