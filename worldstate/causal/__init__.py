"""The causal class: vector-clocked events, delivered in causal order, durable log."""

from __future__ import annotations

from worldstate.causal._path import CausalPath

__all__ = ["CausalPath"]
