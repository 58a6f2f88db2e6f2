"""Consistency classes and their machinery (pure parts: clocks, causal buffer, routing)."""
