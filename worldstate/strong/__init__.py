"""The strong class: one writer per region and per inventory shard, owner-resident state,
group commit of deltas, fenced and idempotent."""

from __future__ import annotations

from worldstate.strong._inventory import ShardKey, shard_of
from worldstate.strong._path import StrongPath, to_result

__all__ = ["ShardKey", "StrongPath", "shard_of", "to_result"]
