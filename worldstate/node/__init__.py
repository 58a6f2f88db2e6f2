"""One server's shared services: the context, the supervisor, authority, routing,
region views and the update fan-out. Imports only what lies below it."""

from __future__ import annotations

__all__ = []
