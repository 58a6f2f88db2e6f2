"""Deterministic conflict detection and resolution (pure, no I/O)."""
